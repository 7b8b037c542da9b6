//! Where clickflow's results go: PostgreSQL, exactly once, and from there the committed
//! changes to Kafka topics.
#![deny(missing_docs)]

pub mod changes;
mod outbox;
pub mod postgres;
