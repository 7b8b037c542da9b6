//! The PostgreSQL delta sink.
//!
//! ```text
//!  worker 0 ──EpochOutput──► bounded channel ──► fold ──► writer ──► one transaction per fold
//!                            (full: the pipeline   (epochs    │        ├ deletes, then upserts of changed rows
//!                             waits: back-pressure) arriving  │        ├ dead letters (ON CONFLICT DO NOTHING)
//!                                                   while it  │        ├ clickflow_offsets (+ a checkpoint every few s)
//!                                                   writes)   ▼        └ clickflow_pipeline (watermark, retain_from)
//!                                                                      (retain_from per partition in clickflow_offsets)
//!                                                  retry with backoff on a lost connection
//! ```
//!
//! A sink that keeps up commits every epoch on its own; one that is behind commits the
//! epochs that arrived during its last transaction as one (see `merge.rs`).
//!
//! **Writers.** That is the single writer (`--sink-writers one`): every change travels to
//! worker 0 of process 0. With `--sink-writers per-worker` (and `auto`, when the server
//! allows prepared transactions) every worker of every process writes the rows of its own
//! keys over its own connection and a coordinator commits them together with the offsets by
//! two-phase commit ([`two_phase`]); the rest of this page holds for both.
//!
//! **Encoding.** An epoch's consolidated changes become, per table, the upsert of every row
//! inserted and the delete of every key only retracted. Small batches are sent as one
//! prepared statement over `unnest` of array parameters; large ones are copied in binary into
//! a temporary staging table and upserted from there with one `INSERT ... ON CONFLICT`.
//! `batch_time` is `now()`, the transaction's time.
//!
//! **Exactly once.** The offsets reached by the epoch are written in the same transaction
//! as its changes, so the tables always reflect exactly the input up to the stored offsets.
//! Every statement is idempotent (upserts of whole rows, dead letters unique per offset), so
//! re-sending an epoch whose commit acknowledgement was lost changes nothing.
//!
//! **Resume.** Offsets alone would lose the open windows and sessions held in memory. Every
//! few seconds the transaction also records a checkpoint of each partition (its offset and
//! clock), and every transaction records each partition's `retain_from`
//! (`clickflow_offsets`), the earliest event time of that partition open state depends on:
//! the start of the open windows, or the earliest event of it an open session holds. On start
//! ([`load_resume_plan`]) each partition restarts from its newest checkpoint whose clock is
//! before its own `retain_from`, so every event that open state depends on is read again, in
//! the same order, and judged late or not exactly as before, and a partition whose open
//! sessions are all recent replays minutes, not the longest open session of any partition. The dataflow
//! replays up to the committed offsets with its output discarded (the
//! [`EpochOutput::replay`](clickflow_dataflow::EpochOutput) flag), then goes on with new input.
//!
//! **Failure.** A lost connection is retried with exponential backoff (logged, password
//! hidden); meanwhile the fold and then the channel fill and the pipeline waits. At start, a
//! lost connection is retried a few times (about 9 s); a schema that does not match or
//! missing privileges are fatal errors ([`prepare`]).
//!
//! **Namespaces.** A pipeline's tables live in one PostgreSQL schema (`--schema`, default
//! `public`; every connection sets `search_path` to it), which records the input it belongs
//! to: a run with another input is refused at start ([`claim_input`]). Several pipelines
//! share a database side by side, each in its own schema.

mod alert_rows;
mod batch;
mod config;
mod copy_values;
mod error;
mod freshness;
mod input;
mod insight_rows;
mod link;
pub mod local_server;
mod merge;
mod models;
mod pipeline;
mod read_back;
mod resume;
mod schema;
mod sink;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod two_phase;
mod webhook;
mod write;

pub use alert_rows::load_alerts;
pub use config::{DatabaseUrl, SinkConfig, SinkWriters, WAKEUP_CHANNEL};
pub use error::SinkError;
pub use freshness::Freshness;
pub use input::claim_input;
pub use models::{read_labelled_predictions, record_model, LabelledPrediction, ModelSource};
pub use pipeline::{run_into_postgres, Observer, PipelineError, PipelineSpec};
pub use read_back::read_tables;
pub use resume::{load_resume_plan, load_user_history};
pub use schema::prepare;
pub use sink::{spawn_sink, SinkHandle, SinkMetrics};
pub use webhook::{spawn_notifier, Notifier, WebhookStats, WebhookUrl};
