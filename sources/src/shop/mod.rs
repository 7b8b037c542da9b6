//! The synthetic shop: a deterministic, seeded stream of realistic shop events.
//!
//! Calibrated to public figures, so that an analyst finds its numbers plausible and a churn
//! model learns something real from it. The Retailrocket dataset (2.76M events: 2,664,312
//! views, 69,332 cart adds, 22,457 transactions) has 2.6 cart adds per 100 views and 32
//! purchases per 100 cart adds; the Baymard Institute's documented cart abandonment is about
//! 70%. The default shop lands near all three (its test measures them), with visits of a few
//! to a few dozen events, shoppers who come back over days ([`users`]), and a daily traffic
//! rhythm.
//!
//! Each visit has a hidden intent, drawn from its shopper's propensity; its events are the
//! traces of that intent (see [`visit`]): focus, dwell, cart adds, the shopper's earlier
//! purchases. Product popularity is Zipf-like, products belong to categories a visit browses
//! in, and some are bought together (see [`catalog`]); a product's price is fixed, and cart
//! adds and purchases carry it. A chosen fraction of events is delivered late (out of order) and a
//! chosen fraction of payloads is malformed, cycling through every rejection kind. With
//! `drift_at`, visits that start from that event time on behave differently (a behaviour
//! change that a model trained before it has not seen).
//!
//! The same [`ShopConfig`] (seed and start time included) always yields the same bytes.

mod catalog;
mod incident;
mod malformed;
mod users;
mod visit;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use compact_str::{format_compact, CompactString};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::encode::encode_into;
use crate::event::{Event, EventId, EventTime, EventType};
use catalog::{Catalog, CROSS_SELL_CART, CROSS_SELL_VIEW};
pub use incident::{Incident, IncidentError, IncidentKind};
use users::{rhythm, Shoppers};
pub use visit::EventMix;
use visit::{Behaviour, Intent, Step, Visit};

/// How the synthetic shop behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Shoppers in the pool. With the default 5M and 1,000 events/s, a shopper comes back
    /// after about two days on average (regulars sooner).
    pub users: u32,
    /// Number of distinct products.
    pub products: u32,
    /// Event time of the first event, Unix milliseconds.
    pub start_ms: EventTime,
    /// Events per second of event time, on average over a day (the simulated traffic).
    pub events_per_second: f64,
    /// How strongly traffic follows the hour of day, in [0, 1): 0 is a flat rate; 0.5 has
    /// three times as many visits at 20:00 UTC as at 08:00.
    pub daily_rhythm: f64,
    /// Share of events delivered out of order.
    pub late_fraction: f64,
    /// How far (event time) an out-of-order event may be delivered behind its time.
    pub max_lateness_ms: i64,
    /// Share of payloads that are malformed.
    pub malformed_fraction: f64,
    /// Visits that start at or after this event time behave differently (see [`visit`]).
    pub drift_at_ms: Option<EventTime>,
    /// Instead of realistic visits, draw every event's type from a fixed mix: for benchmark
    /// files of a given shape (see [`ShopConfig::side_by_side`]).
    pub mix: Option<EventMix>,
    /// Incidents staged at given event times (see [`incident`]).
    pub incidents: Vec<Incident>,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            seed: 42,
            users: 5_000_000,
            products: 1_000,
            start_ms: 1_751_932_800_000, // 2025-07-08T00:00:00Z
            events_per_second: 1_000.0,
            daily_rhythm: 0.5,
            late_fraction: 0.0,
            max_lateness_ms: 60_000,
            malformed_fraction: 0.0,
            drift_at_ms: None,
            mix: None,
            incidents: Vec::new(),
        }
    }
}

impl ShopConfig {
    /// The file of the side-by-side comparison with a batch engine: 10k users, about 50k
    /// visits of about 40 events (30 s to 15 min long), 60 minutes of event time for 2M
    /// events, click/add_to_cart/purchase = 70/20/10 %, 5 % of events out of order by up to
    /// 30 s, no daily rhythm, about 150 bytes a line.
    pub fn side_by_side(seed: u64) -> ShopConfig {
        ShopConfig {
            seed,
            users: 10_000,
            events_per_second: 2_000_000.0 / 3_600.0,
            daily_rhythm: 0.0,
            late_fraction: 0.05,
            max_lateness_ms: 30_000,
            mix: Some(EventMix {
                shares: [0.7, 0.2, 0.1],
                events_per_visit: 40.0,
                dwell_s: 7.5,
            }),
            ..ShopConfig::default()
        }
    }

    /// The shop every benchmark runs: the default shop's visits, 100k users, 5k products,
    /// 2M events per hour of event time (as the side-by-side file), no daily rhythm, 1% of
    /// events late by up to 20 s, nothing malformed. (At 20k events/s of event time, as
    /// before the visits were calibrated, 2M events spanned 100 s: 1.2M visits of under two
    /// events, all open at the end, which measures no shop.)
    pub fn benchmark(seed: u64) -> ShopConfig {
        ShopConfig {
            seed,
            users: 100_000,
            products: 5_000,
            events_per_second: 2_000_000.0 / 3_600.0,
            daily_rhythm: 0.0,
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

/// Mean events of a visit, measured on the default shop: turns the event rate into a visit
/// rate.
const EVENTS_PER_VISIT: f64 = 7.7;

/// Seconds between a buying visit's purchases of two carted items (one checkout).
const PAYMENT_GAP_S: f64 = 3.0;

/// The generator: an endless iterator of [`ShopRecord`]s.
pub struct Shop {
    config: ShopConfig,
    rng: ChaCha8Rng,
    shoppers: Shoppers,
    catalog: Catalog,
    /// Visits in progress, by slot; a finished visit frees its slot.
    visits: Vec<Option<Visit>>,
    free_slots: Vec<usize>,
    /// Visits by the event time of their next event.
    agenda: BinaryHeap<Reverse<(EventTime, usize)>>,
    /// When the next visit begins, in fractional milliseconds: at high rates visits arrive
    /// less than a millisecond apart, and rounding each wait down to whole milliseconds (as
    /// this shop once did) stopped the clock, starting visits without end.
    next_arrival: f64,
    /// Late events by the event time at which they are delivered.
    held_back: BinaryHeap<Reverse<(EventTime, u64, Event)>>,
    next_event_id: u64,
    next_session_id: u64,
    malformed_emitted: usize,
}

impl Shop {
    /// A shop that behaves as `config` says.
    pub fn new(config: ShopConfig) -> Shop {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let shoppers = Shoppers::new(config.seed, config.users);
        let catalog = Catalog::new(config.products);
        let mut shop = Shop {
            next_arrival: config.start_ms as f64,
            config,
            rng,
            shoppers,
            catalog,
            visits: Vec::new(),
            free_slots: Vec::new(),
            agenda: BinaryHeap::new(),
            held_back: BinaryHeap::new(),
            next_event_id: 0,
            next_session_id: 0,
            malformed_emitted: 0,
        };
        // Start in the steady state: the visits a running shop has in progress, begun over
        // the last minutes.
        let warm_up = shop.mean_visit_ms() as EventTime;
        shop.next_arrival = (shop.config.start_ms - warm_up) as f64;
        while shop.arrival() < shop.config.start_ms {
            let at = shop.arrival();
            let first = shop.config.start_ms + shop.rng.gen_range(0..warm_up.max(1));
            shop.begin_visit(at, first);
        }
        shop
    }

    /// The configuration this shop runs with.
    pub fn config(&self) -> &ShopConfig {
        &self.config
    }

    /// Mean events of a visit.
    fn events_per_visit(&self) -> f64 {
        self.config
            .mix
            .map_or(EVENTS_PER_VISIT, |mix| mix.events_per_visit)
    }

    /// The mean length of a visit in event time, roughly: its events times its dwell.
    fn mean_visit_ms(&self) -> f64 {
        let dwell_ms = self.config.mix.map_or(35_000.0, |mix| mix.dwell_s * 1000.0);
        self.events_per_visit() * dwell_ms
    }

    /// Opens a visit that begins at `at` with its first event at `first`, and schedules the
    /// next arrival.
    fn begin_visit(&mut self, at: EventTime, first: EventTime) {
        let user = self.shoppers.pick(self.rng.gen());
        let propensity = self.shoppers.propensity(user);
        let buys = self.rng.gen::<f64>() < 0.03 + 0.21 * propensity;
        let intent = match self.config.mix {
            Some(mix) => Intent::Mix(mix),
            None if buys => Intent::Buy,
            None => Intent::Browse,
        };
        let behaviour = match self.config.drift_at_ms {
            Some(drift) if at >= drift => Behaviour::DRIFTED,
            _ => Behaviour::NORMAL,
        };
        self.next_session_id += 1;
        let main = self.catalog.anywhere(&mut self.rng);
        let second = self.catalog.anywhere(&mut self.rng);
        let categories = (
            self.catalog.category_of(main),
            self.catalog.category_of(second),
        );
        let visit = Visit::new(
            format_compact!("u{user}"),
            format_compact!("s{}", self.next_session_id),
            intent,
            behaviour,
            categories,
        );
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.visits[slot] = Some(visit);
                slot
            }
            None => {
                self.visits.push(Some(visit));
                self.visits.len() - 1
            }
        };
        self.agenda.push(Reverse((first, slot)));
        let visits_per_ms = self.config.events_per_second.max(1e-6)
            * rhythm(at, self.config.daily_rhythm)
            * self.traffic_factor(at)
            / self.events_per_visit()
            / 1000.0;
        let wait = self.exponential(1.0 / visits_per_ms);
        self.next_arrival = self.next_arrival.max(at as f64) + wait.max(0.0);
    }

    /// How visits arrive at `at` relative to normal: the staged incidents' factors.
    fn traffic_factor(&self, at: EventTime) -> f64 {
        self.incidents_at(at)
            .map(IncidentKind::traffic_factor)
            .product()
    }

    /// The kinds of the incidents under way at `at`.
    fn incidents_at(&self, at: EventTime) -> impl Iterator<Item = IncidentKind> + '_ {
        let start = self.config.start_ms;
        self.config
            .incidents
            .iter()
            .filter(move |i| i.covers(start, at))
            .map(|i| i.kind)
    }

    /// True when an incident swallows `event`: a checkout outage every purchase, a cart bug
    /// nine cart adds in ten.
    fn swallowed(&mut self, event: &Event) -> bool {
        let mut swallowed = false;
        for kind in self.incidents_at(event.ts).collect::<Vec<_>>() {
            swallowed |= match (kind, event.event_type) {
                (IncidentKind::CheckoutOutage, EventType::Purchase) => true,
                (IncidentKind::CartBug, EventType::AddToCart) => self.rng.gen_bool(0.9),
                _ => false,
            };
        }
        swallowed
    }

    /// The millisecond in which the next visit begins.
    fn arrival(&self) -> EventTime {
        self.next_arrival.floor() as EventTime
    }

    /// An exponentially distributed duration of mean `mean_ms`.
    fn exponential(&mut self, mean_ms: f64) -> f64 {
        let uniform: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        -uniform.ln() * mean_ms
    }

    /// A product for a fresh (not revisiting) step of the visit in `slot`: the companion of
    /// its latest cart item now and then (always likelier for a second cart item), else one
    /// of its categories'.
    fn pick_product(&mut self, slot: usize, step: Step) -> u32 {
        let visit = self.visits[slot].as_ref().expect("scheduled visits exist");
        let cross_sell = match step {
            Step::AddToCart => CROSS_SELL_CART,
            _ => CROSS_SELL_VIEW,
        };
        match visit.cart.last() {
            Some(&carted) if self.rng.gen::<f64>() < cross_sell => self.catalog.companion(carted),
            _ => self.catalog.browse(&mut self.rng, visit.categories),
        }
    }

    /// The next event of the simulation in event-time order (before any delay).
    fn simulate(&mut self) -> Event {
        loop {
            let next_event = self.agenda.peek().map(|Reverse((t, _))| *t);
            if next_event.is_none_or(|t| self.arrival() < t) {
                let at = self.arrival();
                self.begin_visit(at, at);
                continue;
            }
            let Reverse((now, slot)) = self.agenda.pop().expect("peeked");
            let event = self.step(now, slot);
            if self.config.incidents.is_empty() || !self.swallowed(&event) {
                return event;
            }
        }
    }

    /// The next event of the visit in `slot`, at `now`.
    fn step(&mut self, now: EventTime, slot: usize) -> Event {
        let rolls: [f64; 4] = self.rng.gen();
        let visit = self.visits[slot].as_mut().expect("scheduled visits exist");
        let action = visit.next(rolls);
        let product = match action.product {
            Some(product) => product,
            None if action.revisit => {
                let visit = self.visits[slot].as_ref().expect("exists");
                visit.seen[self.rng.gen_range(0..visit.seen.len())]
            }
            None => self.pick_product(slot, action.step),
        };
        let visit = self.visits[slot].as_mut().expect("exists");
        match action.step {
            Step::View => {
                if !visit.seen.contains(&product) {
                    visit.seen.push(product);
                }
            }
            Step::AddToCart => visit.cart.push(product),
            Step::Purchase => {}
        }
        self.next_event_id += 1;
        let event_id = if self.next_event_id % 16 == 0 {
            EventId::Number(self.next_event_id as i64)
        } else {
            EventId::Text(format_compact!("e-{:09}", self.next_event_id))
        };
        let event_type = match action.step {
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
            price_cents: (action.step != Step::View).then(|| price_cents(product)),
        };
        if visit.done {
            self.visits[slot] = None;
            self.free_slots.push(slot);
        } else {
            let mean_ms = if action.step == Step::Purchase {
                PAYMENT_GAP_S * 1000.0
            } else {
                visit.dwell_s() * 1000.0
            };
            let next = now + self.exponential(mean_ms) as EventTime;
            self.agenda.push(Reverse((next.max(now + 1), slot)));
        }
        event
    }

    /// The next record to deliver.
    pub fn next_record(&mut self) -> ShopRecord {
        let malformed_fraction = self.malformed_fraction();
        if malformed_fraction > 0.0 && self.rng.gen_bool(malformed_fraction.min(1.0)) {
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

    /// The share of malformed payloads now: three in ten during a malformed storm.
    fn malformed_fraction(&self) -> f64 {
        let now = self
            .agenda
            .peek()
            .map_or(self.arrival(), |Reverse((t, _))| (*t).min(self.arrival()));
        let storm = self
            .incidents_at(now)
            .any(|kind| kind == IncidentKind::MalformedStorm);
        if storm {
            self.config.malformed_fraction.max(0.3)
        } else {
            self.config.malformed_fraction
        }
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

/// A product's price: fixed per product, between 5.00 and 204.99.
fn price_cents(product: u32) -> i64 {
    let mixed = u64::from(product).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    500 + (mixed % 20_000) as i64
}
