//! What makes a file the same input as before: its split count, the length its splits were
//! cut from, and hashes of its head and of the bytes just before that length.
//!
//! Offsets into a file are byte offsets inside splits. They mean something only for the
//! same bytes cut the same way: an edited file, or another `--input-splits`, would make a
//! restart skip or repeat lines. A file that only grew keeps every committed byte where it
//! was: its splits keep their bounds, and the last one extends to the new end, so tailing a
//! growing log continues from the committed offsets.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use xxhash_rust::xxh3::xxh3_128;

/// How much of the head is hashed.
const HEAD_BYTES: u64 = 64 * 1024;
/// How much is hashed just before the planned length (where an appended file continues).
const TAIL_BYTES: u64 = 4 * 1024;

/// The identity of a planned file, as recorded with the pipeline's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// Number of splits.
    pub splits: usize,
    /// The file's length when the splits were cut.
    pub length: u64,
    /// XXH3-128 of the first `min(length, 64 KiB)` bytes.
    pub head: u128,
    /// XXH3-128 of the `min(length, 4 KiB)` bytes that end at `length`.
    pub tail: u128,
}

impl FileIdentity {
    /// The identity of `file` cut into `splits` splits at `length` bytes.
    pub(super) fn of(file: &mut File, splits: usize, length: u64) -> io::Result<FileIdentity> {
        Ok(FileIdentity {
            splits,
            length,
            head: hash_range(file, 0, length.min(HEAD_BYTES))?,
            tail: hash_range(
                file,
                length.saturating_sub(TAIL_BYTES),
                length.min(TAIL_BYTES),
            )?,
        })
    }

    /// Why `path`, cut into `splits` splits, is not this input or a grown copy of it;
    /// `None` when it is.
    pub(super) fn mismatch(&self, path: &Path, splits: usize) -> io::Result<Option<String>> {
        if splits != self.splits {
            return Ok(Some(format!(
                "it was read in {} splits, and --input-splits is {splits}",
                self.splits
            )));
        }
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        if length < self.length {
            return Ok(Some(format!(
                "it was {} bytes long and is now {length}: it was truncated or replaced",
                self.length
            )));
        }
        let now = FileIdentity::of(&mut file, splits, self.length)?;
        if now.head != self.head || now.tail != self.tail {
            return Ok(Some(format!(
                "its first {} bytes changed since they were read: it was edited or replaced",
                self.length
            )));
        }
        Ok(None)
    }
}

fn hash_range(file: &mut File, start: u64, len: u64) -> io::Result<u128> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    Ok(xxh3_128(&bytes))
}

impl fmt::Display for FileIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "splits={} length={} head={:032x} tail={:032x}",
            self.splits, self.length, self.head, self.tail
        )
    }
}

impl FromStr for FileIdentity {
    type Err = String;

    fn from_str(text: &str) -> Result<FileIdentity, String> {
        let mut fields = std::collections::HashMap::new();
        for part in text.split_whitespace() {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=value"))?;
            fields.insert(name, value);
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| format!("no {name} in {text:?}"))
        };
        let bad = |name: &str| format!("bad {name} in {text:?}");
        Ok(FileIdentity {
            splits: field("splits")?.parse().map_err(|_| bad("splits"))?,
            length: field("length")?.parse().map_err(|_| bad("length"))?,
            head: u128::from_str_radix(field("head")?, 16).map_err(|_| bad("head"))?,
            tail: u128::from_str_radix(field("tail")?, 16).map_err(|_| bad("tail"))?,
        })
    }
}
