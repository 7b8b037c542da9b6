//! The synthetic shop: a deterministic, seeded stream of realistic shop events.
//!
//! Each user has a buying propensity; each visit (session) moves click → add_to_cart →
//! purchase with probabilities that depend on that propensity and on how the visit has gone so
//! far, and keyed users leave sooner when they are unlikely to buy. So whether a visit ends in
//! a purchase is learnable from its views, cart adds and duration (the churn model's features).
//! Product popularity is Zipf-like. A chosen fraction of events is delivered late (out of
//! order) and a chosen fraction of payloads is malformed, cycling through every rejection kind.
//!
//! The same [`ShopConfig`] (seed and start time included) always yields the same bytes.

mod malformed;
mod session;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use compact_str::{format_compact, CompactString};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::encode::encode_into;
use crate::event::{Event, EventId, EventTime, EventType};
use session::{Step, Visit};

/// How the synthetic shop behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of distinct shoppers.
    pub users: u32,
    /// Number of distinct products.
    pub products: u32,
    /// Event time of the first event, Unix milliseconds.
    pub start_ms: EventTime,
    /// Events per second of event time (the simulated traffic).
    pub events_per_second: f64,
    /// Visits in progress at any moment.
    pub concurrent_sessions: usize,
    /// Share of events delivered out of order.
    pub late_fraction: f64,
    /// How far (event time) an out-of-order event may be delivered behind its time.
    pub max_lateness_ms: i64,
    /// Share of payloads that are malformed.
    pub malformed_fraction: f64,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            seed: 42,
            users: 10_000,
            products: 1_000,
            start_ms: 1_751_932_800_000, // 2025-07-08T00:00:00Z
            events_per_second: 1_000.0,
            concurrent_sessions: 2_000,
            late_fraction: 0.0,
            max_lateness_ms: 60_000,
            malformed_fraction: 0.0,
        }
    }
}

impl ShopConfig {
    /// The shop every benchmark runs: 100k users, 5k products, 20k events/s of event time over
    /// 20k concurrent sessions, 1% of events late by up to 20 s, nothing malformed.
    pub fn benchmark(seed: u64) -> ShopConfig {
        ShopConfig {
            seed,
            users: 100_000,
            products: 5_000,
            events_per_second: 20_000.0,
            concurrent_sessions: 20_000,
            late_fraction: 0.01,
            max_lateness_ms: 20_000,
            ..ShopConfig::default()
        }
    }
}

/// One generated record: an event, or a malformed payload.
#[derive(Clone, Debug, PartialEq)]
pub enum ShopRecord {
    /// A well-formed event.
    Event(Event),
    /// A payload that must be rejected, with the session key it is sent under.
    Malformed {
        /// The Kafka message key.
        key: CompactString,
        /// The payload bytes (never containing a newline).
        payload: Vec<u8>,
    },
}

impl ShopRecord {
    /// The Kafka message key.
    pub fn key(&self) -> &str {
        match self {
            ShopRecord::Event(event) => &event.session_id,
            ShopRecord::Malformed { key, .. } => key,
        }
    }

    /// Appends the payload bytes to `out`.
    pub fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            ShopRecord::Event(event) => encode_into(event, out),
            ShopRecord::Malformed { payload, .. } => out.extend_from_slice(payload),
        }
    }
}

/// The generator: an endless iterator of [`ShopRecord`]s.
pub struct Shop {
    config: ShopConfig,
    rng: ChaCha8Rng,
    propensity: Vec<f64>,
    product_cdf: Vec<f64>,
    visits: Vec<Visit>,
    /// Visits by the event time of their next event.
    agenda: BinaryHeap<Reverse<(EventTime, usize)>>,
    /// Late events by the event time at which they are delivered.
    held_back: BinaryHeap<Reverse<(EventTime, u64, Event)>>,
    next_event_id: u64,
    next_session_id: u64,
    malformed_emitted: usize,
    mean_think_ms: f64,
}

impl Shop {
    /// A shop that behaves as `config` says.
    pub fn new(config: ShopConfig) -> Shop {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        // Most shoppers rarely buy; a few buy often.
        let propensity = (0..config.users.max(1))
            .map(|_| rng.gen::<f64>().powi(2))
            .collect();
        let product_cdf = zipf_cdf(config.products.max(1) as usize, 1.1);
        let concurrent = config.concurrent_sessions.max(1);
        let mean_think_ms = 1000.0 * concurrent as f64 / config.events_per_second.max(1e-3);
        let mut shop = Shop {
            config,
            rng,
            propensity,
            product_cdf,
            visits: Vec::with_capacity(concurrent),
            agenda: BinaryHeap::with_capacity(concurrent),
            held_back: BinaryHeap::new(),
            next_event_id: 0,
            next_session_id: 0,
            malformed_emitted: 0,
            mean_think_ms,
        };
        for slot in 0..concurrent {
            let start = shop.config.start_ms + shop.think_time(1.0) as EventTime;
            let visit = shop.new_visit();
            shop.visits.push(visit);
            shop.agenda.push(Reverse((start, slot)));
        }
        shop
    }

    /// The configuration this shop runs with.
    pub fn config(&self) -> &ShopConfig {
        &self.config
    }

    fn new_visit(&mut self) -> Visit {
        let user = self.rng.gen_range(0..self.propensity.len());
        self.next_session_id += 1;
        Visit::new(
            format_compact!("u{user}"),
            format_compact!("s{}", self.next_session_id),
            self.propensity[user],
        )
    }

    fn think_time(&mut self, scale: f64) -> f64 {
        let uniform: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        -uniform.ln() * self.mean_think_ms * scale
    }

    fn pick_product(&mut self) -> u32 {
        let u: f64 = self.rng.gen();
        self.product_cdf.partition_point(|&c| c < u) as u32
    }

    /// The next event of the simulation in event-time order (before any delay).
    fn simulate(&mut self) -> Event {
        let Reverse((now, slot)) = self
            .agenda
            .pop()
            .expect("the agenda always holds every visit");
        let roll: f64 = self.rng.gen();
        let step = self.visits[slot].step(roll);
        let product = match step {
            Step::Purchase => self.visits[slot].cart_product.unwrap_or(0),
            _ => self.pick_product(),
        };
        if step == Step::AddToCart {
            self.visits[slot].cart_product = Some(product);
        }
        let visit = &self.visits[slot];
        self.next_event_id += 1;
        let event_id = if self.next_event_id % 16 == 0 {
            EventId::Number(self.next_event_id as i64)
        } else {
            EventId::Text(format_compact!("e-{:09}", self.next_event_id))
        };
        let event_type = match step {
            Step::View => EventType::Click,
            Step::AddToCart => EventType::AddToCart,
            Step::Purchase => EventType::Purchase,
        };
        let event = Event {
            event_id,
            user_id: visit.user_id.clone(),
            session_id: visit.session_id.clone(),
            product_id: Some(format_compact!("p{product}")),
            event_type,
            ts: now,
            price_cents: (step == Step::Purchase).then(|| price_cents(product)),
        };
        let leave: f64 = self.rng.gen();
        let next = if visit.leaves(step, leave) {
            *self.visits.get_mut(slot).expect("slot exists") = self.new_visit();
            now + self.think_time(2.0) as EventTime
        } else {
            let scale = 0.5 + visit.propensity;
            now + self.think_time(scale) as EventTime
        };
        self.agenda.push(Reverse((next.max(now + 1), slot)));
        event
    }

    /// The next record to deliver.
    pub fn next_record(&mut self) -> ShopRecord {
        if self.config.malformed_fraction > 0.0
            && self.rng.gen_bool(self.config.malformed_fraction.min(1.0))
        {
            let kind = self.malformed_emitted;
            self.malformed_emitted += 1;
            let event = self.simulate();
            return malformed::corrupt(event, kind);
        }
        let horizon = self
            .agenda
            .peek()
            .map(|Reverse((t, _))| *t)
            .unwrap_or(EventTime::MAX);
        if let Some(Reverse((release, _, _))) = self.held_back.peek() {
            if *release <= horizon {
                let Reverse((_, _, event)) = self.held_back.pop().expect("peeked");
                return ShopRecord::Event(event);
            }
        }
        let event = self.simulate();
        if self.config.late_fraction > 0.0 && self.rng.gen_bool(self.config.late_fraction.min(1.0))
        {
            let delay = self.rng.gen_range(1..=self.config.max_lateness_ms.max(1));
            let release = event.ts + delay;
            self.held_back
                .push(Reverse((release, self.next_event_id, event)));
            return self.next_record();
        }
        ShopRecord::Event(event)
    }

    /// The events held back to be delivered late, emptied: call this at the end of a finite
    /// run so that no generated event is lost.
    pub fn drain_held_back(&mut self) -> Vec<ShopRecord> {
        let mut held = std::mem::take(&mut self.held_back).into_sorted_vec();
        held.reverse();
        held.into_iter()
            .map(|Reverse((_, _, event))| ShopRecord::Event(event))
            .collect()
    }

    /// Exactly `count` records, lazily: what the shop delivers, and at the end the events
    /// still held back for late delivery, so a finite run ends with its stragglers rather
    /// than losing them.
    pub fn bounded(mut self, count: usize) -> impl Iterator<Item = ShopRecord> {
        let mut emitted = 0;
        let mut tail: std::vec::IntoIter<ShopRecord> = Vec::new().into_iter();
        std::iter::from_fn(move || {
            if emitted >= count {
                return None;
            }
            emitted += 1;
            if emitted + self.held_back.len() <= count && tail.len() == 0 {
                return Some(self.next_record());
            }
            if tail.len() == 0 {
                tail = self.drain_held_back().into_iter();
            }
            tail.next().or_else(|| Some(self.next_record()))
        })
    }

    /// [`Shop::bounded`], collected.
    pub fn take_records(self, count: usize) -> Vec<ShopRecord> {
        self.bounded(count).collect()
    }
}

impl Iterator for Shop {
    type Item = ShopRecord;

    fn next(&mut self) -> Option<ShopRecord> {
        Some(self.next_record())
    }
}

/// Cumulative popularity of `n` products under a Zipf law with exponent `s`.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / (rank as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// A product's price: fixed per product, between 5.00 and 204.99.
fn price_cents(product: u32) -> i64 {
    let mixed = u64::from(product).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    500 + (mixed % 20_000) as i64
}
