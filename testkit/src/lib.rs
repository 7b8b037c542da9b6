//! Fixtures for clickflow's integration tests. Tests use real parts: a tansu broker (a
//! separate Kafka-protocol server) started per test, and a private PostgreSQL database per test;
//! and a small churn model where a test needs one.
#![deny(missing_docs)]

mod model;
mod postgres;
mod tansu;
mod tls;

pub use model::{model_of, small_model};
pub use postgres::{psql, server_url, TestDatabase};
pub use tansu::Tansu;
pub use tls::TestCerts;

/// An empty temporary directory that other users may enter and read (mode 0755), removed
/// when dropped: tests run as root start PostgreSQL servers as `postgres`, which must reach
/// the data directories and files inside it.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has free ports")
}
