//! The edge of clickflow: what a shop event is, where events come from, and what happens to
//! the ones that cannot be read.
//!
//! ```text
//!  synthetic shop ──► Kafka producer ──► topic `user-events` ──► KafkaSource ──┐
//!        │                                                                     ├─► SourceBatch
//!        └────────► JSON-lines file ──────────────────────────► FileSource ───┘   (events,
//!                                                                                  dead letters,
//!                                                                                  progress)
//! ```
//!
//! Every payload is decoded exactly once, by [`decode::decode`]; whatever cannot become an
//! [`Event`] becomes a [`DeadLetter`] that carries its reason and Kafka coordinates, so bad
//! input never stops the pipeline and never disappears.
#![deny(missing_docs)]

pub mod batch;
pub mod dead_letter;
pub mod decode;
pub mod encode;
pub mod event;
pub mod file;
pub mod kafka;
pub mod shop;
pub mod source;

pub use batch::{PartitionId, PartitionProgress, SourceBatch, SourcedEvent};
pub use dead_letter::{DeadLetter, RejectKind, Rejection};
pub use event::{Event, EventId, EventTime, EventType};
pub use source::{Source, SourceError};
