//! Which worker owns a key: a hash whose output is fixed by a specification.
//!
//! Every process of a cluster must send a key to the same worker, even when the processes
//! were built by different compilers, for different platforms or from different releases of
//! clickflow. `std::hash::Hash` promises none of that (its byte stream and integer
//! endianness are implementation details), and neither do seeded fast hashers. A key is
//! therefore written as an explicit byte string (integers little-endian, strings as their
//! UTF-8 bytes after their length) and hashed with XXH3-64, whose output the XXH3
//! specification fixes: the golden values in the tests below hold on any machine.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use clickflow_sources::EventType;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use timely::dataflow::operators::core::Exchange;
use timely::dataflow::StreamVec;

use crate::input::Accepted;
use crate::window::Window;
use crate::Epoch;

/// A key that can be routed to a worker.
pub trait RouteKey {
    /// Feeds the key's canonical bytes to `hasher`.
    fn feed(&self, hasher: &mut Xxh3Default);

    /// The key's routing hash: XXH3-64 (seed 0) of its canonical bytes.
    fn route(&self) -> u64 {
        let mut hasher = Xxh3Default::new();
        self.feed(&mut hasher);
        hasher.digest()
    }
}

impl RouteKey for CompactString {
    fn feed(&self, hasher: &mut Xxh3Default) {
        hasher.update(&(self.len() as u64).to_le_bytes());
        hasher.update(self.as_bytes());
    }
}

/// A borrowed key routes as the key itself (no clone to build a tuple of keys).
impl<T: RouteKey + ?Sized> RouteKey for &T {
    fn feed(&self, hasher: &mut Xxh3Default) {
        (**self).feed(hasher);
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
    fn feed(&self, hasher: &mut Xxh3Default) {
        self.id.feed(hasher);
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
    fn feed(&self, hasher: &mut Xxh3Default) {
        hasher.update(&self.start.to_le_bytes());
    }
}

impl RouteKey for EventType {
    fn feed(&self, hasher: &mut Xxh3Default) {
        let code: u8 = match self {
            EventType::Click => 0,
            EventType::AddToCart => 1,
            EventType::Purchase => 2,
        };
        hasher.update(&[code]);
    }
}

impl<A: RouteKey, B: RouteKey> RouteKey for (A, B) {
    fn feed(&self, hasher: &mut Xxh3Default) {
        self.0.feed(hasher);
        self.1.feed(hasher);
    }
}

impl<A: RouteKey, B: RouteKey, C: RouteKey> RouteKey for (A, B, C) {
    fn feed(&self, hasher: &mut Xxh3Default) {
        self.0.feed(hasher);
        self.1.feed(hasher);
        self.2.feed(hasher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_xxh3_64_as_specified() {
        // Test vectors of the XXH3 reference implementation (seed 0).
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let mut streamed = Xxh3Default::new();
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
            (window, EventType::Click, user).route(),
            0xa935_52ae_0110_c3c8
        );
        let keyed = KeyedId::new(session.clone());
        assert_eq!(keyed.route(), session.route());
        assert_eq!((&keyed, &keyed).route(), (&session, &session).route());
    }
}
