//! TLS to PostgreSQL against a real server that requires it: a private cluster started here
//! with a certificate from a test CA (made with the `openssl` command), whose `pg_hba.conf`
//! rejects every connection without TLS.

use clickflow_sinks::postgres::local_server::LocalServer;
use clickflow_sinks::postgres::tls::SslMode;
use clickflow_sinks::postgres::{DatabaseUrl, SinkError};
use clickflow_testkit::{free_port, TestCerts};

/// Whether the connection `url` opens is encrypted, as the server sees it.
fn connect(url: &str) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = DatabaseUrl::parse(url).map_err(|e| e.to_string())?;
        let client = url.connect().await.map_err(|e: SinkError| e.to_string())?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    })
}

#[test]
fn tls_modes_against_a_server_that_requires_tls() {
    let certs = TestCerts::new();
    let ca = certs.ca("ca").display().to_string();
    let other = certs.ca("other-ca").display().to_string();
    // For the name localhost only (no IP address).
    let (cert, key) = certs.server("server", "ca", "DNS:localhost");

    let port = free_port();
    let Some(server) = LocalServer::new(&certs.dir().join("data"), port) else {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql");
    };
    server.init(None).unwrap();
    server.install_file(&cert, "server.crt").unwrap();
    server.install_file(&key, "server.key").unwrap();
    server
        .write_hba(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
    server
        .start(&[
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ])
        .unwrap();
    let _stop = server.stop_on_drop();

    let at =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");

    // verify-full: the chain and the name.
    assert_eq!(
        connect(&at(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        )),
        Ok(true)
    );
    // The certificate names localhost only: verify-full to the IP is refused, verify-ca
    // (chain only) accepts it.
    let error = connect(&at(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap_err();
    assert!(
        error.contains("certificate") && error.contains("not valid for name"),
        "{error}"
    );
    assert_eq!(
        connect(&at(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        )),
        Ok(true)
    );
    // A root certificate the server's does not chain to is refused, saying why.
    let error = connect(&at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    // require and prefer encrypt without checking (as libpq).
    assert_eq!(connect(&at("127.0.0.1", "sslmode=require")), Ok(true));
    assert_eq!(connect(&at("127.0.0.1", "sslmode=prefer")), Ok(true));
    // disable: the server itself refuses a connection without TLS.
    let error = connect(&at("127.0.0.1", "sslmode=disable")).unwrap_err();
    assert!(error.contains("no encryption"), "{error}");

    // The flags win over the URL.
    let url = DatabaseUrl::parse(&at("localhost", "sslmode=disable"))
        .unwrap()
        .with_tls(Some(SslMode::VerifyFull), Some(ca.clone()))
        .unwrap();
    assert_eq!(url.tls().mode, SslMode::VerifyFull);
    assert!(url.to_string().ends_with("?sslmode=verify-full"), "{url}");
}
