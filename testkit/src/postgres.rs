//! A private database per test on the local PostgreSQL server.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server tests use: `$CLICKFLOW_TEST_POSTGRES`, or the local one with trust auth.
pub fn server_url() -> String {
    std::env::var("CLICKFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped with it.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs one SQL statement on the server's `postgres` database with `psql`.
pub fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            &format!("{}/postgres", server_url()),
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ])
        .output()
        .expect("psql runs (install postgresql-client)");
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub fn create(label: &str) -> TestDatabase {
        let name = format!(
            "clickflow_test_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {name}"));
        TestDatabase {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }

    /// Runs `sql` in this database and returns psql's unaligned output.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|error| panic!("psql {sql:?} failed: {error}"))
    }

    /// Runs `sql` in this database: psql's unaligned output, or its error.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .args([&self.url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("psql runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Parts a killed run left prepared block the drop (and hold a server-wide slot).
        if let Ok(gids) =
            self.try_query("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
        {
            for gid in gids.lines().filter(|g| !g.is_empty()) {
                let _ = self.try_query(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")));
            }
        }
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", server_url()),
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
