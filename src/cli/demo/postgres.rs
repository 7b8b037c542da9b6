//! Finding a PostgreSQL for the demo: the configured server, or a private one started here.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clickflow_sinks::postgres::local_server::{current_uid, LocalServer};
use clickflow_sinks::postgres::{two_phase, DatabaseUrl};
use tokio_postgres::config::Host;

/// The demo's own database on the server.
pub const DEMO_DATABASE: &str = "clickflow_demo";

/// Whether something accepts TCP connections at the URL's host and port.
fn answers(url: &DatabaseUrl) -> bool {
    let config = url.config();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        // A Unix socket: let the connection itself tell.
        Some(Host::Unix(_)) => return true,
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let Ok(addresses) = (host.as_str(), port).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok())
}

/// A server for the demo: `url` if it answers, else a private cluster (said loudly), else an
/// error saying what to install or set.
///
/// The private cluster lives in a directory of this user's (`$TMPDIR/clickflow-demo-postgres-
/// <uid>`), mode 0700, owned by the user the server runs as; its superuser has a random
/// password (SCRAM), kept in the directory as `clickflow-password`. A directory of that name
/// that is not private to the server's user is refused rather than used: it was not made by
/// us.
pub fn demo_server(url: &DatabaseUrl) -> anyhow::Result<DatabaseUrl> {
    if answers(url) {
        return Ok(url.clone());
    }
    let data = std::env::temp_dir().join(format!("clickflow-demo-postgres-{}", current_uid()));
    let Some(server) = LocalServer::new(&data, 55432) else {
        bail!(
            "nothing answers at {url} and no PostgreSQL server is installed: install one \
             (Debian: `apt-get install postgresql`) or point --database-url / DATABASE_URL at a running server"
        );
    };
    let port = server.port();
    if server.initialized() || data.exists() {
        anyhow::ensure!(
            server.private_to_server_user(),
            "{} exists but is not private to the PostgreSQL user (mode 0700, its owner): it was \
             not made by clickflow and is not used; remove it, or point --database-url at a server",
            data.display()
        );
    }
    if !server.initialized() {
        let password = random_password()?;
        let pwfile = tempfile::NamedTempFile::new()?;
        std::fs::write(pwfile.path(), &password)?;
        server
            .init(Some(pwfile.path()))
            .map_err(anyhow::Error::msg)?;
        server
            .install_file(pwfile.path(), PASSWORD_FILE)
            .map_err(anyhow::Error::msg)?;
    }
    let password = std::fs::read_to_string(data.join(PASSWORD_FILE)).with_context(|| {
        format!(
            "reading the private server's password in {}",
            data.display()
        )
    })?;
    let private = DatabaseUrl::parse(&format!(
        "postgres://postgres:{}@127.0.0.1:{port}/postgres?sslmode=disable",
        password.trim()
    ))?;
    if data.join("postmaster.pid").is_file() && answers(&private) {
        eprintln!("nothing answers at {url}: using the private PostgreSQL already running on 127.0.0.1:{port}");
        return Ok(private);
    }
    tracing::warn!(data = %data.display(), port, "nothing answers at {url}: starting a private PostgreSQL for the demo");
    server.start(&[]).map_err(anyhow::Error::msg)?;
    eprintln!(
        "started a private PostgreSQL on 127.0.0.1:{port} (data in {}, password in {PASSWORD_FILE} there)",
        data.display()
    );
    Ok(private)
}

/// The private server's password file, in its data directory.
const PASSWORD_FILE: &str = "clickflow-password";

/// 128 random bits, hex.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The comment that marks a database clickflow created, and may drop again.
const CREATED_MARK: &str = "created by clickflow";

/// Creates the database `name` afresh (the demo's: the embedded broker is new on every start,
/// so offsets from an earlier demo mean nothing; the benchmark's: every run starts empty).
///
/// Only a database clickflow created is dropped: one it marked with a comment when it
/// created it, or one holding clickflow's migrations table (made before databases were
/// marked). Any other database of that name is left alone and the command stops, saying so:
/// `DATABASE_URL` may name a server with someone else's data.
pub fn fresh_database(server: &DatabaseUrl, name: &str) -> anyhow::Result<DatabaseUrl> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = server
            .connect()
            .await
            .with_context(|| format!("connecting to {server}"))?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if exists {
            if !created_by_clickflow(&client, server, name).await? {
                bail!(
                    "the database {name} on {server} exists and was not created by clickflow: \
                     it is left alone. Drop it yourself if it may go, or point --database-url \
                     (DATABASE_URL) at another server"
                );
            }
            // A run killed mid-epoch may have left parts prepared, which block the drop.
            two_phase::discard_prepared(&server.with_database(name)).await?;
        }
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        client
            .batch_execute(&format!(
                "COMMENT ON DATABASE {name} IS '{CREATED_MARK}: dropped and created again at \
                 every start of the command that uses it'"
            ))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(server.with_database(name))
}

/// True when the database `name` carries clickflow's mark, or holds its migrations table.
async fn created_by_clickflow(
    client: &tokio_postgres::Client,
    server: &DatabaseUrl,
    name: &str,
) -> anyhow::Result<bool> {
    let comment: Option<String> = client
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?
        .get(0);
    if comment.is_some_and(|c| c.starts_with(CREATED_MARK)) {
        return Ok(true);
    }
    let database = server
        .with_database(name)
        .connect()
        .await
        .with_context(|| format!("connecting to the database {name}"))?;
    Ok(database
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'clickflow_schema_migrations')",
            &[],
        )
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickflow_testkit::TestDatabase;

    #[test]
    fn only_a_database_clickflow_created_is_dropped() {
        let server = DatabaseUrl::parse(&clickflow_testkit::server_url())
            .unwrap()
            .with_database("postgres");
        let foreign = TestDatabase::create("foreign");
        foreign.query("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)");
        let error = fresh_database(&server, &foreign.name)
            .unwrap_err()
            .to_string();
        assert!(error.contains("was not created by clickflow"), "{error}");
        assert_eq!(
            foreign.query("SELECT count(*) FROM orders"),
            "1",
            "left alone"
        );

        // Created here: marked, and dropped and created again next time.
        let ours = TestDatabase::create("ours");
        ours.query("CREATE TABLE clickflow_schema_migrations (version int)");
        fresh_database(&server, &ours.name).unwrap();
        assert_eq!(
            ours.query(&format!(
                "SELECT left(shobj_description(oid, 'pg_database'), 20) FROM pg_database WHERE datname = '{}'",
                ours.name
            )),
            CREATED_MARK
        );
        ours.query("CREATE TABLE leftover (id int)");
        fresh_database(&server, &ours.name).unwrap();
        assert_eq!(ours.query("SELECT to_regclass('leftover') IS NULL"), "t");
    }
}
