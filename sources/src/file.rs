//! JSON-lines files as a source: backfills, replays and benchmarks.
//!
//! A file is cut into a fixed number of splits, byte ranges that start at line starts. Splits
//! play the part of Kafka partitions: each is read in order by one worker, its progress is
//! the byte offset of the next line, and a split that reaches its end is finished. A worker
//! reads its splits in turns of [`STINT_LINES`] lines each. The number of splits does not
//! depend on the number of workers, so the same file yields the same per-split order, and
//! so the same results, on any number of workers.
//!
//! A plan carries the file's [`FileIdentity`]; the sink records it, and a restart resumes
//! only the same file (or a grown copy of it: see [`FileSplits::resume`]) cut the same way.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{PartitionId, PartitionProgress, SourceBatch, SourcedEvent};
use crate::dead_letter::DeadLetter;
use crate::decode::{decode, DecodeLimits};

mod identity;

pub use identity::FileIdentity;

/// Errors reading an input file.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The file could not be opened, sought or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not the input the pipeline read before.
    #[error("{path} is not the file this pipeline read before: {why}")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

/// The layout of an input file: its name as a topic, and where each split starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSplits {
    /// `file:<canonical path>`, the topic under which offsets are stored.
    pub topic: Arc<str>,
    path: PathBuf,
    /// Byte offset where each split starts; one more entry holds the file's length.
    bounds: Vec<u64>,
    /// What the splits were cut from.
    identity: FileIdentity,
}

impl FileSplits {
    /// Cuts `path` into `splits` line-aligned byte ranges (some may be empty).
    pub fn plan(path: &Path, splits: usize) -> Result<FileSplits, FileSourceError> {
        let len = std::fs::metadata(path)
            .map_err(|source| FileSourceError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        FileSplits::cut(path, splits, len)
    }

    /// The plan of a file read before under `recorded`: refused unless it is the same file
    /// cut into as many splits, or that file grown. A grown file keeps the recorded split
    /// bounds, and its last split extends to the new end.
    pub fn resume(
        path: &Path,
        splits: usize,
        recorded: &FileIdentity,
    ) -> Result<FileSplits, FileSourceError> {
        let io_error = |source| FileSourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let why = recorded.mismatch(path, splits.max(1)).map_err(io_error)?;
        if let Some(why) = why {
            return Err(FileSourceError::Changed {
                path: path.to_path_buf(),
                why,
            });
        }
        let mut plan = FileSplits::cut(path, splits, recorded.length)?;
        let len = std::fs::metadata(&plan.path).map_err(io_error)?.len();
        *plan.bounds.last_mut().expect("a plan has bounds") = len;
        Ok(plan)
    }

    /// The file (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error saying that this file is not the input read before, because of `why`.
    pub fn changed(&self, why: String) -> FileSourceError {
        FileSourceError::Changed {
            path: self.path.clone(),
            why,
        }
    }

    /// The identity the splits were cut from.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Cuts `path` into `splits` ranges as if it were `len` bytes long.
    fn cut(path: &Path, splits: usize, len: u64) -> Result<FileSplits, FileSourceError> {
        let io_error = |source| FileSourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let path = path.canonicalize().map_err(io_error)?;
        let mut file = File::open(&path).map_err(io_error)?;
        let identity = FileIdentity::of(&mut file, splits.max(1), len).map_err(io_error)?;
        let splits = splits.max(1) as u64;
        let mut bounds = Vec::with_capacity(splits as usize + 1);
        bounds.push(0);
        for i in 1..splits {
            let nominal = (len * i / splits).max(*bounds.last().expect("non-empty"));
            bounds.push(next_line_start(&mut file, nominal, len).map_err(io_error)?);
        }
        bounds.push(len);
        let topic = format!("file:{}", path.display()).into();
        Ok(FileSplits {
            topic,
            path,
            bounds,
            identity,
        })
    }

    /// How many splits there are.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    /// True if there are no splits (never: a plan has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The partition id of split `index`.
    pub fn partition(&self, index: usize) -> PartitionId {
        PartitionId::new(self.topic.clone(), index as i32)
    }
}

/// The first line start at or after `offset` (a line start is 0 or just after a newline).
fn next_line_start(file: &mut File, offset: u64, len: u64) -> io::Result<u64> {
    if offset == 0 || offset >= len {
        return Ok(offset.min(len));
    }
    file.seek(SeekFrom::Start(offset - 1))?;
    let mut reader = BufReader::new(file);
    let mut skipped = Vec::new();
    let read = reader.read_until(b'\n', &mut skipped)?;
    Ok((offset - 1 + read as u64).min(len))
}

/// How many lines a source reads from one split before it turns to the next.
///
/// A file sorted by time, cut into splits, has each split at a different stretch of time.
/// Reading them a few hundred lines each in turn (as this source did until 6 December
/// 2026) kept the open sessions of every split's stretch in use at once, more than a
/// core's cache holds, and the session stage's updates missed it. A stint of 64Ki lines
/// (about 9 MB of a 145-byte-line file) keeps one stretch per reading worker in use.
///
/// Measured on the side-by-side file (2M events, 16 splits, 2 workers; alternating runs,
/// 6 December 2026): `--no-recommendations` 1.52–1.56 s with 512-line turns, 1.49 s with
/// 4,096, 1.33 s with 16,384, 1.27–1.32 s with 65,536, 1.21–1.24 s with 262,144 (a whole
/// split of that file); every table 2.44–2.47 s against 2.15–2.16 s with 65,536 and
/// 2.15–2.17 s with 131,072; `clickflow bench` 419–423k events/s against 442–446k.
///
/// Longer stints cost memory on a long backfill: the pipeline's watermark is the least of
/// the splits' clocks, so a split that waits for its turn holds it back by up to one
/// stint of its own events, and the windows and sessions of those lines stay open. 64Ki
/// lines a split is a fraction of what a backlog epoch holds anyway (a million lines a
/// worker, `max_epoch_messages`); the gain beyond it is small.
pub const STINT_LINES: usize = 65_536;

/// Which split a source reads now, and how many more lines it gives before the next
/// split's turn.
#[derive(Clone, Copy, Debug)]
struct Stint {
    split: usize,
    left: usize,
}

struct OpenSplit {
    /// The file, read through a 1 MiB buffer; `None` once the split is read to its end,
    /// which closes the file and frees the buffer. A run's memory peaks at the end of
    /// its input, when the last epoch's output is made: with the buffers of every split
    /// still held, 16 MiB of it was read buffers of splits read long before (heaptrack,
    /// the side-by-side file, 4 December 2026).
    reader: Option<BufReader<File>>,
    offset: u64,
    end: u64,
    /// Lines at or after this offset are held back.
    limit: Option<u64>,
}

/// One worker's reader over some splits of a file.
pub struct FileSource {
    partitions: Vec<PartitionId>,
    splits: Vec<OpenSplit>,
    limits: DecodeLimits,
    /// A line that crosses the end of its split's read buffer, gathered here.
    line: Vec<u8>,
    reported_finished: Vec<bool>,
    /// Lines read so far, and their bytes: the average line length that
    /// [`FileSource::remaining_lines`] estimates from.
    lines_read: u64,
    bytes_read: u64,
    /// The split being read and how many more lines it gives before the next one's turn.
    stint: Stint,
}

impl FileSource {
    /// Opens the splits `assigned` of `plan`, each with the byte offset to resume from
    /// (`None`: its start).
    pub fn open(
        plan: &FileSplits,
        assigned: &[(usize, Option<i64>)],
        limits: DecodeLimits,
    ) -> Result<FileSource, FileSourceError> {
        let io_error = |source| FileSourceError::Io {
            path: plan.path.clone(),
            source,
        };
        let mut splits = Vec::with_capacity(assigned.len());
        for &(index, resume) in assigned {
            let (start, end) = (plan.bounds[index], plan.bounds[index + 1]);
            let offset = resume
                .map(|o| (o.max(0) as u64).clamp(start, end))
                .unwrap_or(start);
            let mut file = File::open(&plan.path).map_err(io_error)?;
            file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
            splits.push(OpenSplit {
                reader: Some(BufReader::with_capacity(1 << 20, file)),
                offset,
                end,
                limit: None,
            });
        }
        Ok(FileSource {
            partitions: assigned.iter().map(|&(i, _)| plan.partition(i)).collect(),
            reported_finished: vec![false; splits.len()],
            splits,
            limits,
            line: Vec::with_capacity(1024),
            lines_read: 0,
            bytes_read: 0,
            stint: Stint {
                split: 0,
                left: STINT_LINES,
            },
        })
    }

    /// The splits this source reads, in the order `SourcedEvent::partition` indexes.
    pub fn partitions(&self) -> &[PartitionId] {
        &self.partitions
    }

    /// True once every split has been read to its end and reported finished.
    pub fn is_finished(&self) -> bool {
        self.reported_finished.iter().all(|f| *f)
    }

    /// About how many lines are left to read in this source's splits: their unread bytes at
    /// the average length of the lines read so far (`None` before the first line).
    pub fn remaining_lines(&self) -> Option<usize> {
        if self.lines_read == 0 {
            return None;
        }
        let unread: u64 = self
            .splits
            .iter()
            .map(|s| s.end.saturating_sub(s.offset))
            .sum();
        Some((unread as u128 * self.lines_read as u128 / self.bytes_read as u128) as usize)
    }

    /// Holds back lines of split `partition` at or after byte offset `limit`.
    pub fn set_limit(&mut self, partition: usize, limit: Option<i64>) {
        self.splits[partition].limit = limit.map(|l| l.max(0) as u64);
    }

    /// Reads up to `max_lines` lines into `batch`, from one split at a time: the split of
    /// the current stint until it has given [`STINT_LINES`] lines (or ends, or reaches its
    /// limit), then the next open split, round and round.
    pub fn poll(
        &mut self,
        batch: &mut SourceBatch,
        max_lines: usize,
    ) -> Result<(), FileSourceError> {
        self.report_finished(batch);
        let mut budget = max_lines.max(1);
        for _ in 0..self.splits.len() {
            let i = self.stint.split;
            if self.readable(i) {
                let read = self.read_lines(i, budget.min(self.stint.left), batch)?;
                budget -= read;
                self.stint.left -= read;
                let split = &mut self.splits[i];
                if split.offset >= split.end {
                    split.reader = None;
                    self.reported_finished[i] = true;
                    batch.progress.push(finished_progress(i, split.offset));
                } else {
                    batch.progress.push(PartitionProgress {
                        partition: i,
                        next_offset: split.offset as i64,
                        caught_up: false,
                        finished: false,
                    });
                }
                if self.stint.left > 0 && self.readable(i) {
                    // The poll is full; the stint goes on in the next one.
                    break;
                }
            }
            self.stint = Stint {
                split: (i + 1) % self.splits.len(),
                left: STINT_LINES,
            };
            if budget == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reports, once, each split that is read to its end but not yet reported finished (a
    /// split resumed at its end, or one whose end its last stint reached).
    fn report_finished(&mut self, batch: &mut SourceBatch) {
        for (i, split) in self.splits.iter_mut().enumerate() {
            if split.offset >= split.end && !self.reported_finished[i] {
                split.reader = None;
                self.reported_finished[i] = true;
                batch.progress.push(finished_progress(i, split.offset));
            }
        }
    }

    /// Whether split `i` has lines to give now: not at its end, nor held at its limit.
    fn readable(&self, i: usize) -> bool {
        let split = &self.splits[i];
        let stop = split.end.min(split.limit.unwrap_or(u64::MAX));
        split.reader.is_some() && split.offset < stop
    }

    /// Reads up to `max` lines of split `i` into `batch`, stopping early only at its end or
    /// its limit; returns the lines read, blank ones included.
    fn read_lines(
        &mut self,
        i: usize,
        max: usize,
        batch: &mut SourceBatch,
    ) -> Result<usize, FileSourceError> {
        let split = &mut self.splits[i];
        let stop = split.end.min(split.limit.unwrap_or(u64::MAX));
        let mut lines = 0;
        while lines < max && split.offset < stop {
            let Some(reader) = split.reader.as_mut() else {
                break;
            };
            let offset = split.offset as i64;
            let read = with_next_line(reader, &mut self.line, |line| {
                let payload = trim_line(line);
                if payload.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                match decode(payload, None, &self.limits) {
                    Ok(event) => batch.events.push(SourcedEvent {
                        partition: i,
                        offset,
                        event,
                    }),
                    Err(rejection) => batch.dead_letters.push(DeadLetter::new(
                        self.partitions[i].clone(),
                        offset,
                        rejection,
                        payload,
                    )),
                }
            })
            .map_err(|source| FileSourceError::Io {
                path: PathBuf::from(&*self.partitions[i].topic),
                source,
            })?;
            split.offset += read as u64;
            if read == 0 {
                // The file shrank under us: treat the split as ended here.
                split.end = split.offset;
                break;
            }
            lines += 1;
            self.lines_read += 1;
            self.bytes_read += read as u64;
        }
        Ok(lines)
    }
}

fn finished_progress(partition: usize, offset: u64) -> PartitionProgress {
    PartitionProgress {
        partition,
        next_offset: offset as i64,
        caught_up: true,
        finished: true,
    }
}

/// Hands the next line of `reader`, its newline included when it has one, to `take`, and
/// returns its length in bytes (0 at the end of the file, where `take` is not called).
///
/// A line that lies whole in the reader's buffer is read there, found by `memchr`'s
/// vectorised search; only one that crosses the buffer's end is gathered into `spill`.
/// (`BufRead::read_until` copied every line out of the buffer, after a word-at-a-time
/// search from `core`: `memchr_aligned` alone took 2.8% of all samples of a run on the
/// side-by-side file without the recommender. Reading in place, the run executes 2.1%
/// fewer instructions (callgrind, its first 200,000 lines); its wall time, 9 alternating
/// pairs on the whole file, 2.14–3.31 s against 2.47–3.25 s, 6 of the 9 faster, on a
/// machine whose speed drifted by 20%: 7 December 2026.)
fn with_next_line<R: BufRead>(
    reader: &mut R,
    spill: &mut Vec<u8>,
    take: impl FnOnce(&[u8]),
) -> io::Result<usize> {
    let buffered = reader.fill_buf()?;
    if let Some(newline) = memchr::memchr(b'\n', buffered) {
        take(&buffered[..=newline]);
        reader.consume(newline + 1);
        return Ok(newline + 1);
    }
    spill.clear();
    let read = reader.read_until(b'\n', spill)?;
    if read > 0 {
        take(spill);
    }
    Ok(read)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_whole_whether_or_not_they_cross_the_buffer() {
        // A 4-byte buffer: most of these lines cross its end, some lie inside it.
        let text: &[u8] = b"ab\n\nlonger than the buffer\r\nxy\nlast without newline";
        let mut reader = BufReader::with_capacity(4, text);
        let mut spill = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut line = None;
            let read = with_next_line(&mut reader, &mut spill, |l| line = Some(l.to_vec()))
                .expect("reading a slice does not fail");
            if read == 0 {
                assert!(line.is_none(), "nothing is handed on at the end");
                break;
            }
            let line = line.expect("a line is handed on");
            assert_eq!(line.len(), read);
            lines.push(line);
        }
        let expected: Vec<&[u8]> = vec![
            b"ab\n",
            b"\n",
            b"longer than the buffer\r\n",
            b"xy\n",
            b"last without newline",
        ];
        assert_eq!(lines, expected);
    }
}
