//! Change topics: every committed change of the result tables, published to Kafka
//! (`--emit-kafka BROKERS`) for the services that act on them.
//!
//! ```text
//!  sink's transaction ──► event_trends, churn_scores, alerts, … ──trigger──► clickflow_changes
//!  (the epoch's rows)      (the tables)                                      (the outbox, same
//!                                                                             transaction)
//!  publisher thread: read the outbox in seq order ─► produce (idempotent) ─► acknowledged
//!                    ─► delete those rows, record clickflow_publisher.last_seq
//! ```
//!
//! **Capture.** Statement-level triggers on each emitted table write every row a statement
//! inserts, updates or deletes (its transition tables) into `clickflow_changes`, in the
//! transaction that makes the change, with the row before and after (`row_to_json`, so a
//! message's row has exactly the table's columns and values), its key columns, and the
//! transaction's id. Publication therefore follows the
//! PostgreSQL commit: a change is in the outbox exactly when it is in the table, under both
//! sinks (the single writer's transactions and the per-worker writers' prepared parts alike).
//!
//! **Messages.** One topic per table (`clickflow.<table>` by default). The key is the row's
//! primary key as JSON (`{"alert_id": "purchases:1751965200000"}`), so a compacted topic keeps
//! each row's latest value. The value is a Debezium-style envelope:
//!
//! ```json
//! {"before": null,
//!  "after": {"alert_id": "purchases:1751965200000", "kind": "drop", "status": "open", …},
//!  "op": "c",
//!  "source": {"name": "clickflow", "schema": "public", "table": "alerts",
//!             "epoch": 48213, "seq": 1907, "ts_ms": 1751965261000},
//!  "ts_ms": 1751965261042}
//! ```
//!
//! `op` is `c` (a new key), `u` or `d`; a `d` is followed by a tombstone (the key with no
//! value), so compaction forgets the row. `source.epoch` is the commit that made the change
//! (its PostgreSQL transaction id: one dataflow epoch, or several folded together when the
//! sink was behind), `source.seq` the change's place in the feed, `source.ts_ms` the commit's
//! time and `ts_ms` the publication's. Both numbers only grow, also across restarts; the
//! headers `clickflow-epoch` and `clickflow-seq` carry them too.
//!
//! **Guarantee: at least once, in order per key, with a dedupe key.** The publisher deletes
//! changes from the outbox only once Kafka acknowledged them (`acks=all`, idempotent
//! producer, so a key's messages keep their order within its partition). A crash between the
//! acknowledgement and the delete publishes those changes again after the restart (counted
//! as republished): a consumer that keeps the last `seq` per key and drops anything not
//! above it sees every change exactly once and in order; a compacted topic converges to the
//! tables either way. Nothing is lost: the outbox holds a change until it is acknowledged.
//! Kafka transactions would make repeats invisible to `read_committed` consumers, but tansu
//! 0.6 has none and librdkafka's mock cluster accepts them without isolation, so nothing
//! here could test them: they are not used.

mod capture;
mod publisher;
mod topics;

pub use capture::{capture_changes, ChangeTable};
pub use publisher::{spawn_publisher, FeedConfig, FeedStats, Publisher};
