//! Where clickflow's results go: PostgreSQL, exactly once.
#![deny(missing_docs)]

pub mod postgres;
