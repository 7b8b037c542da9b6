//! Which worker owns a key: a hash whose output is fixed by a specification.
//!
//! Every process of a cluster must send a key to the same worker, even when the processes
//! were built by different compilers, for different platforms or from different releases of
//! clickflow. `std::hash::Hash` promises none of that (its byte stream and integer
//! endianness are implementation details), and neither do seeded fast hashers. A key is
//! therefore written as an explicit byte string (integers little-endian, strings as their
//! UTF-8 bytes after their length) and hashed with XXH3-64, whose output the XXH3
//! specification fixes: the golden values in the tests below hold on any machine.
//!
//! The bytes are gathered into one buffer on the stack ([`KeyBytes`]) and hashed in one
//! call, every step inlined. XXH3's streaming state hashes the same bytes to the same
//! value, but it copied every piece into a buffer of its own through a call, and a route
//! is made for every event at every exchange. callgrind on the side-by-side file's first
//! 200,000 lines without the recommender (7 December 2026): 1.624G instructions against
//! 1.672G (2.9% fewer), where the streaming hasher and its copies had been about 5% of
//! them. Gathered into a `SmallVec` instead, the run took 1.713G: its growth checks cost
//! more than the streaming state's copies.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use clickflow_sources::EventType;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use timely::dataflow::operators::core::Exchange;
use timely::dataflow::StreamVec;

use crate::input::Accepted;
use crate::window::{Window, WindowStart};
use crate::Epoch;

/// A key's canonical bytes, gathered to be hashed in one call: in an array on the stack up
/// to 64 bytes (a window, an event type and an id of up to 39 bytes), in a vector beyond.
pub struct KeyBytes {
    inline: [u8; 64],
    len: usize,
    spilled: Vec<u8>,
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes {
            inline: [0; 64],
            len: 0,
            spilled: Vec::new(),
        }
    }
}

impl KeyBytes {
    /// Appends `bytes`.
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= self.inline.len() {
            self.inline[self.len..end].copy_from_slice(bytes);
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
        self.len = end;
    }

    /// The bytes appended so far.
    fn bytes(&self) -> &[u8] {
        if self.len <= self.inline.len() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

/// A key that can be routed to a worker.
pub trait RouteKey {
    /// Appends the key's canonical bytes to `bytes`.
    fn feed(&self, bytes: &mut KeyBytes);

    /// The key's routing hash: XXH3-64 (seed 0) of its canonical bytes.
    #[inline]
    fn route(&self) -> u64 {
        let mut bytes = KeyBytes::default();
        self.feed(&mut bytes);
        xxhash_rust::xxh3::xxh3_64(bytes.bytes())
    }
}

impl RouteKey for CompactString {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        bytes.put(&(self.len() as u64).to_le_bytes());
        bytes.put(self.as_bytes());
    }
}

/// A borrowed key routes as the key itself (no clone to build a tuple of keys).
impl<T: RouteKey + ?Sized> RouteKey for &T {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        (**self).feed(bytes);
    }
}

/// An id carried with its routing hash, and compared, sorted and hashed by the hash alone:
/// a stage that keys its state and arrangements by ids it must also write out as text
/// compares one integer where text compares bytes, and hashes once, where the id enters.
///
/// Two ids with the same 64-bit hash (XXH3) are taken for one; among a million ids the
/// chance of any such pair is about 3 in 10^8.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyedId {
    /// [`RouteKey::route`] of `id`.
    pub key: u64,
    /// The id.
    pub id: CompactString,
}

impl KeyedId {
    /// `id` with its routing hash.
    pub fn new(id: CompactString) -> KeyedId {
        KeyedId {
            key: id.route(),
            id,
        }
    }
}

impl PartialEq for KeyedId {
    fn eq(&self, other: &KeyedId) -> bool {
        self.key == other.key
    }
}

impl Eq for KeyedId {}

impl PartialOrd for KeyedId {
    fn partial_cmp(&self, other: &KeyedId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyedId {
    fn cmp(&self, other: &KeyedId) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl Hash for KeyedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// Routes as its id, from the hash it carries.
impl RouteKey for KeyedId {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        self.id.feed(bytes);
    }

    fn route(&self) -> u64 {
        self.key
    }
}

/// A stream whose records are each on the worker that owns their session ([`RouteKey::route`]
/// of the session id): what the stages that keep their state by session (the session stage,
/// the recommender's holding of items) read without an exchange of their own. Only
/// [`BySession::route`] and the split ([`crate::kpi::split`]), which exchanges its input
/// by session, make one.
pub struct BySession<'scope, D>(StreamVec<'scope, Epoch, D>);

impl<D: Clone + 'static> Clone for BySession<'_, D> {
    fn clone(&self) -> Self {
        BySession(self.0.clone())
    }
}

impl<'scope> BySession<'scope, Accepted> {
    /// Sends each event of `events` to the worker that owns its session.
    pub fn route(events: StreamVec<'scope, Epoch, Accepted>) -> Self {
        BySession(events.exchange(|event: &Accepted| event.session_id.route()))
    }
}

impl<'scope, D> BySession<'scope, D> {
    /// `records` as they are: the caller made each on the worker that owns its session.
    pub(crate) fn routed(records: StreamVec<'scope, Epoch, D>) -> Self {
        BySession(records)
    }

    /// The records, on their sessions' workers.
    pub(crate) fn into_stream(self) -> StreamVec<'scope, Epoch, D> {
        self.0
    }
}

impl RouteKey for Window {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        bytes.put(&self.start.to_le_bytes());
    }
}

/// The same bytes as its [`Window`]: a key routes alike with either.
impl RouteKey for WindowStart {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        bytes.put(&self.0.to_le_bytes());
    }
}

/// An id already hashed to 128 bits: its two words, each little-endian.
impl RouteKey for [u64; 2] {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        bytes.put(&self[0].to_le_bytes());
        bytes.put(&self[1].to_le_bytes());
    }
}

impl RouteKey for EventType {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        let code: u8 = match self {
            EventType::Click => 0,
            EventType::AddToCart => 1,
            EventType::Purchase => 2,
        };
        bytes.put(&[code]);
    }
}

impl<A: RouteKey, B: RouteKey> RouteKey for (A, B) {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        self.0.feed(bytes);
        self.1.feed(bytes);
    }
}

impl<A: RouteKey, B: RouteKey, C: RouteKey> RouteKey for (A, B, C) {
    #[inline]
    fn feed(&self, bytes: &mut KeyBytes) {
        self.0.feed(bytes);
        self.1.feed(bytes);
        self.2.feed(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_xxh3_64_as_specified() {
        // Test vectors of the XXH3 reference implementation (seed 0).
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let mut streamed = xxhash_rust::xxh3::Xxh3Default::new();
        streamed.update(b"");
        assert_eq!(streamed.digest(), 0x2D06_8005_38D3_94C2);
    }

    /// Regression: routing used fixed-seed foldhash, whose output no specification fixes.
    /// These values must never change: processes of one cluster built from different
    /// releases would send the same key to different workers. They were computed outside
    /// Rust, with Python's `xxhash` package over the canonical bytes described above.
    #[test]
    fn routing_hashes_are_golden() {
        let window = Window {
            start: 1_751_952_900_000,
            end: 1_751_952_960_000,
        };
        let session = CompactString::from("s9001");
        let user = CompactString::from("u42");
        assert_eq!(session.route(), 0x5a4b_fd20_c566_b2a6);
        assert_eq!((window, EventType::Purchase).route(), 0x990f_a819_dc5b_0060);
        assert_eq!(
            (window, EventType::Click, &user).route(),
            0xa935_52ae_0110_c3c8
        );
        assert_eq!(
            (window, EventType::Click, user.clone()).route(),
            0xa935_52ae_0110_c3c8
        );
        assert_eq!(
            (WindowStart(window.start), EventType::Click, user).route(),
            0xa935_52ae_0110_c3c8
        );
        // Past the 64 bytes gathered on the stack: the same hash of the same bytes.
        let long = CompactString::from("u".repeat(200));
        let mut streamed = xxhash_rust::xxh3::Xxh3Default::new();
        streamed.update(&window.start.to_le_bytes());
        streamed.update(&[0]);
        streamed.update(&200u64.to_le_bytes());
        streamed.update(long.as_bytes());
        assert_eq!((window, EventType::Click, &long).route(), streamed.digest());
        // Pieces put after the spill go on after the spilled bytes.
        let mut streamed = xxhash_rust::xxh3::Xxh3Default::new();
        streamed.update(&200u64.to_le_bytes());
        streamed.update(long.as_bytes());
        streamed.update(&window.start.to_le_bytes());
        streamed.update(&[2]);
        assert_eq!(
            (&long, window, EventType::Purchase).route(),
            streamed.digest()
        );
        let keyed = KeyedId::new(session.clone());
        assert_eq!(keyed.route(), session.route());
        assert_eq!((&keyed, &keyed).route(), (&session, &session).route());
    }
}
