//! For unit tests that talk to the test server.

use std::future::Future;

use clickflow_testkit::TestDatabase;

use super::DatabaseUrl;

/// A new database on the test server (dropped with the value) and its URL.
pub(crate) fn scratch_database(name: &str) -> (TestDatabase, DatabaseUrl) {
    let db = TestDatabase::create(name);
    let url = DatabaseUrl::parse(&db.url).expect("the test server's URL parses");
    (db, url)
}

/// Runs `future` to its end on a runtime of its own.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts")
        .block_on(future)
}
