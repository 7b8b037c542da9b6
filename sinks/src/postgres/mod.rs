//! The PostgreSQL delta sink.
//!
//! ```text
//!  worker 0 ──EpochOutput──► bounded channel ──► sink thread ──► one transaction per epoch
//!                            (full: the pipeline        │          ├ deletes, then upserts of changed rows
//!                             waits: back-pressure)     │          ├ dead letters (ON CONFLICT DO NOTHING)
//!                                                       │          ├ clickflow_offsets (+ a checkpoint every few s)
//!                                                       ▼          └ clickflow_pipeline (watermark, retain_from)
//!                                                  retry with backoff on a lost connection
//! ```
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
//! clock), and every transaction records `retain_from`, the earliest event time open state
//! depends on. On start ([`load_resume_plan`]) each partition restarts from its newest
//! checkpoint whose clock is before `retain_from`, so every event that open state depends on is
//! read again, in the same order, and judged late or not exactly as before. The dataflow
//! replays up to the committed offsets with its output discarded (the
//! [`EpochOutput::replay`](clickflow_dataflow::EpochOutput) flag), then goes on with new input.
//!
//! **Failure.** A lost connection is retried with exponential backoff (logged, password
//! hidden); meanwhile the channel fills and the pipeline waits. A schema that does not match
//! or missing privileges are fatal errors at start ([`prepare`]).

mod batch;
mod config;
mod error;
mod freshness;
mod merge;
mod pipeline;
mod read_back;
mod resume;
mod schema;
mod sink;
mod write;

pub use config::{DatabaseUrl, SinkConfig};
pub use error::SinkError;
pub use freshness::Freshness;
pub use pipeline::{run_into_postgres, Observer, PipelineError, PipelineSpec};
pub use read_back::{read_closed_sessions, read_tables};
pub use resume::load_resume_plan;
pub use schema::prepare;
pub use sink::{spawn_sink, SinkHandle, SinkMetrics};
