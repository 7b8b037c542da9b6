//! The interface the dataflow's workers read any source through.

use crate::batch::{PartitionId, SourceBatch};
use crate::file::{FileSource, FileSourceError};
use crate::kafka::{KafkaSource, KafkaSourceError};

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    /// Reading the input file failed.
    #[error(transparent)]
    File(#[from] FileSourceError),
}

impl SourceError {
    /// Whether trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Kafka(error) => error.is_retriable(),
            SourceError::File(_) => false,
        }
    }
}

/// A reader of some partitions of the input, owned by one worker.
pub trait Source {
    /// The partitions read, in the order `SourcedEvent::partition` indexes.
    fn partitions(&self) -> &[PartitionId];

    /// Moves up to `max` messages into `batch` without waiting for new ones.
    fn poll(&mut self, batch: &mut SourceBatch, max: usize) -> Result<(), SourceError>;

    /// True when nothing will ever arrive again (the end of a file); never for Kafka.
    fn is_finished(&self) -> bool;

    /// True while the source reads a backlog rather than what just arrived: a file until its
    /// end; a Kafka partition that has yet to read what it held when the source started, or
    /// has not reached its end for a while (see [`KafkaSource::backlogged`]). Workers then cut longer epochs: freshness means nothing
    /// there, and every row changes fewer times.
    fn backlogged(&self) -> bool;

    /// About how many messages are left before the source has read all it has, where it
    /// can tell: a file's unread bytes at the lines' average length so far; the distance of
    /// Kafka partitions from their last reported ends (more may arrive meanwhile). `None`
    /// where it cannot.
    fn remaining_messages(&self) -> Option<usize> {
        None
    }

    /// Errors the source's client met and retries on its own (a broker unreachable), since
    /// the last call: for the retry counter of `/metrics`. None, for sources without a
    /// client of their own.
    fn take_retried_errors(&mut self) -> u64 {
        0
    }

    /// Holds back every message of partition `partition` at or after offset `limit`
    /// (`None`: no limit). Lifting a limit delivers the held-back messages in order.
    fn set_limit(&mut self, partition: usize, limit: Option<i64>) -> Result<(), SourceError>;
}

impl Source for KafkaSource {
    fn partitions(&self) -> &[PartitionId] {
        KafkaSource::partitions(self)
    }

    fn poll(&mut self, batch: &mut SourceBatch, max: usize) -> Result<(), SourceError> {
        Ok(KafkaSource::poll(self, batch, max)?)
    }

    fn is_finished(&self) -> bool {
        false
    }

    fn backlogged(&self) -> bool {
        KafkaSource::backlogged(self)
    }

    fn remaining_messages(&self) -> Option<usize> {
        KafkaSource::remaining_messages(self)
    }

    fn take_retried_errors(&mut self) -> u64 {
        KafkaSource::take_retried(self)
    }

    fn set_limit(&mut self, partition: usize, limit: Option<i64>) -> Result<(), SourceError> {
        Ok(KafkaSource::set_limit(self, partition, limit)?)
    }
}

impl Source for FileSource {
    fn partitions(&self) -> &[PartitionId] {
        FileSource::partitions(self)
    }

    fn poll(&mut self, batch: &mut SourceBatch, max: usize) -> Result<(), SourceError> {
        Ok(FileSource::poll(self, batch, max)?)
    }

    fn is_finished(&self) -> bool {
        FileSource::is_finished(self)
    }

    fn backlogged(&self) -> bool {
        !FileSource::is_finished(self)
    }

    fn remaining_messages(&self) -> Option<usize> {
        FileSource::remaining_lines(self)
    }

    fn set_limit(&mut self, partition: usize, limit: Option<i64>) -> Result<(), SourceError> {
        FileSource::set_limit(self, partition, limit);
        Ok(())
    }
}
