//! A session as the stage keeps it: its facts, its products and its funnel steps, and the
//! gap rule's merging of the sessions of one id.

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use smallvec::SmallVec;

use crate::conversion::paths::{FunnelSteps, Path};
use crate::conversion::Sealing;
use crate::input::{product_hash, Accepted};
use crate::kpi::sessions::SessionRule;
use crate::operators::prefetch;
use crate::rows::SessionRow;
use crate::window::Window;

/// What is known of one session of an id (or of some of its events: spans merge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// All but the product set: what the row and the indexes read.
    pub(super) facts: SpanFacts,
    /// The products viewed, as sorted distinct hashes: a session views a few dozen at most.
    products: SmallVec<[u64; 4]>,
    /// What its events tell of its path through the ordered funnel.
    steps: FunnelSteps,
}

/// A span without its product set, only their number: what a session's row and the
/// state's indexes are made of, and what an epoch keeps of the spans it changes (copying
/// the product sets of every touched session, once per epoch, was a visible share of a
/// profile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SpanFacts {
    user_id: CompactString,
    /// The counts are 32-bit (and saturate) where the row's are 64-bit: 16 bytes less for
    /// each session held, and a session of four billion events is not one.
    views: u32,
    cart_adds: u32,
    purchases: u32,
    /// Its earliest event time: the session's start.
    pub(super) first: EventTime,
    /// Its latest event time.
    pub(super) last: EventTime,
    num_products: u32,
    /// Summed prices of the cart adds.
    cart_value_cents: i64,
    /// `(partition, earliest event time)` of each partition the session has events from, by
    /// partition: almost always one (a session's events share its Kafka key).
    pub(super) partitions: SmallVec<[(u32, EventTime); 1]>,
}

impl SpanFacts {
    /// The row of this span as the session `session_id`.
    pub(super) fn row(&self, session_id: &CompactString, closed: bool) -> SessionRow {
        SessionRow {
            session_id: session_id.clone(),
            user_id: self.user_id.clone(),
            num_views: self.views.into(),
            num_cart_adds: self.cart_adds.into(),
            num_purchases: self.purchases.into(),
            session_start: self.first,
            last_event: self.last,
            num_products: self.num_products.into(),
            cart_value_cents: self.cart_value_cents,
            closed,
        }
    }

    /// Its entry in the closing index: `(final_at, session_start)`.
    pub(super) fn closing(&self, rule: &SessionRule) -> (EventTime, EventTime) {
        (rule.final_at(self.last), self.first)
    }
}

impl Span {
    /// The span of one event.
    pub(crate) fn of(event: Accepted) -> Span {
        let mut span = Span {
            facts: SpanFacts {
                user_id: CompactString::default(),
                views: 0,
                cart_adds: 0,
                purchases: 0,
                first: event.ts,
                last: event.ts,
                num_products: 0,
                cart_value_cents: 0,
                partitions: SmallVec::new(),
            },
            products: SmallVec::new(),
            steps: FunnelSteps::default(),
        };
        span.facts.user_id = span.count(event);
        span
    }

    /// Folds one event into this span: what [`Span::merge`] of the event's own span does,
    /// without building that span. Almost every event joins the one session its id has
    /// open, and building a span per event, merging it and moving the merged span back into
    /// place took about a twelfth of the workers' time on the side-by-side file.
    pub(crate) fn add(&mut self, event: Accepted) {
        let user_id = self.count(event);
        if user_id < self.facts.user_id {
            self.facts.user_id = user_id;
        }
    }

    /// Counts `event` into every fact but the user, whose id it hands back (a span names the
    /// least of its events' users, which the caller decides).
    fn count(&mut self, event: Accepted) -> CompactString {
        let facts = &mut self.facts;
        match event.event_type {
            EventType::Click => facts.views = facts.views.saturating_add(1),
            EventType::AddToCart => {
                facts.cart_adds = facts.cart_adds.saturating_add(1);
                facts.cart_value_cents += event.price_cents.unwrap_or(0);
            }
            EventType::Purchase => facts.purchases = facts.purchases.saturating_add(1),
        }
        facts.first = facts.first.min(event.ts);
        facts.last = facts.last.max(event.ts);
        note_partition(&mut facts.partitions, event.partition, event.ts);
        if let Some(product) = event
            .product_id
            .as_deref()
            .filter(|_| event.event_type == EventType::Click)
        {
            note_product(&mut self.products, product_hash(product));
        }
        facts.num_products = u32::try_from(self.products.len()).unwrap_or(u32::MAX);
        self.steps.note(event.event_type, event.ts);
        event.user_id
    }

    /// Brings its product set into the cache ahead of an update, when it lies on the heap.
    pub(super) fn prefetch_products(&self) {
        if self.products.spilled() {
            prefetch(self.products.as_slice());
        }
    }

    /// Folds the events of `other` into this span.
    pub(crate) fn merge(&mut self, other: Span) {
        let (facts, theirs) = (&mut self.facts, other.facts);
        if theirs.user_id < facts.user_id {
            facts.user_id = theirs.user_id;
        }
        facts.views = facts.views.saturating_add(theirs.views);
        facts.cart_adds = facts.cart_adds.saturating_add(theirs.cart_adds);
        facts.purchases = facts.purchases.saturating_add(theirs.purchases);
        facts.first = facts.first.min(theirs.first);
        facts.last = facts.last.max(theirs.last);
        facts.cart_value_cents += theirs.cart_value_cents;
        for (partition, since) in theirs.partitions {
            note_partition(&mut facts.partitions, partition, since);
        }
        for product in other.products {
            note_product(&mut self.products, product);
        }
        facts.num_products = u32::try_from(self.products.len()).unwrap_or(u32::MAX);
        self.steps.merge(&other.steps);
    }

    /// Its path through the ordered funnel, keyed by the window it started in.
    pub(super) fn path(&self, sealing: &Sealing) -> (Window, Path) {
        let start = self.facts.first;
        (
            sealing.window.window_of(start),
            self.steps.path(start, sealing.funnel_window_ms),
        )
    }

    /// The row of this span as the session `session_id`.
    pub(crate) fn row(&self, session_id: &CompactString, closed: bool) -> SessionRow {
        self.facts.row(session_id, closed)
    }
}

/// The sessions of one id, sorted by start. Almost every id has one at a time, kept inline:
/// a heap allocation per id was a tenth of the stage's memory in a backfill.
pub(super) type Spans = SmallVec<[Span; 1]>;

/// Notes an event of `partition` at `since` in a span's partitions (sorted by partition,
/// each with its earliest event time).
fn note_partition(
    partitions: &mut SmallVec<[(u32, EventTime); 1]>,
    partition: u32,
    since: EventTime,
) {
    match partitions.binary_search_by_key(&partition, |&(p, _)| p) {
        Ok(at) => partitions[at].1 = partitions[at].1.min(since),
        Err(at) => partitions.insert(at, (partition, since)),
    }
}

/// Adds a product's hash to a span's sorted set of them.
fn note_product(products: &mut SmallVec<[u64; 4]>, product: u64) {
    if let Err(at) = products.binary_search(&product) {
        products.insert(at, product);
    }
}

/// Adds `event` to the sessions of one id (sorted by start, each more than the gap from
/// the next), merging every session it joins: those form one run of neighbours. An event
/// that joins exactly one session (almost every event) is counted into it in place.
pub(super) fn absorb(spans: &mut Spans, event: Accepted, rule: &SessionRule) {
    let from = spans.partition_point(|s| s.facts.last.saturating_add(rule.gap_ms) < event.ts);
    let mut to = from;
    while to < spans.len() && rule.joins(&spans[to].facts, event.ts) {
        to += 1;
    }
    if to == from + 1 {
        spans[from].add(event);
        return;
    }
    let mut new = Span::of(event);
    for mut joined in spans.drain(from..to) {
        // Merging is symmetric: fold the smaller span into the larger, so that a span
        // joining a long session adds its products to the session's set rather than the
        // session's whole set being inserted into the smaller one's.
        if joined.products.len() > new.products.len() {
            std::mem::swap(&mut joined, &mut new);
        }
        new.merge(joined);
    }
    spans.insert(from, new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowSize;

    fn event(ts: EventTime) -> Accepted {
        Accepted {
            partition: 0,
            user_id: "u".into(),
            session_id: "s".into(),
            event_type: EventType::Click,
            ts,
            price_cents: None,
            product_id: Some(compact_str::format_compact!("p{}", ts % 3)),
        }
    }

    fn sessions_of(times: &[EventTime], gap_ms: i64) -> Vec<(EventTime, EventTime, i64)> {
        let rule = SessionRule {
            gap_ms,
            window: WindowSize::from_millis(60_000),
        };
        let mut spans = Spans::new();
        for &ts in times {
            absorb(&mut spans, event(ts), &rule);
        }
        spans
            .iter()
            .map(|s| (s.facts.first, s.facts.last, i64::from(s.facts.views)))
            .collect()
    }

    #[test]
    fn events_more_than_the_gap_apart_are_separate_sessions_in_any_order() {
        let times = [0, 70_000, 71_000, 190_000];
        let expected = vec![(0, 0, 1), (70_000, 71_000, 2), (190_000, 190_000, 1)];
        assert_eq!(sessions_of(&times, 60_000), expected);
        assert_eq!(sessions_of(&[190_000, 71_000, 0, 70_000], 60_000), expected);
        // Exactly the gap apart is still one session.
        assert_eq!(sessions_of(&[0, 60_000], 60_000), vec![(0, 60_000, 2)]);
    }

    #[test]
    fn an_event_between_two_sessions_joins_them() {
        assert_eq!(
            sessions_of(&[0, 100_000, 50_000], 60_000),
            vec![(0, 100_000, 3)]
        );
        assert_eq!(
            sessions_of(
                &[0, 100_000, 200_000, 300_000, 150_000, 250_000, 50_000],
                60_000
            ),
            vec![(0, 300_000, 7)]
        );
    }

    /// Counting an event into a span in place is the merge of the event's own span, field
    /// by field, whatever the events' kinds, users, partitions, products and order.
    #[test]
    fn adding_an_event_equals_merging_its_span() {
        let kinds = [EventType::Click, EventType::AddToCart, EventType::Purchase];
        let events: Vec<Accepted> = (0..40u32)
            .map(|i| Accepted {
                partition: i % 3,
                user_id: compact_str::format_compact!("u{}", (i * 7) % 5),
                session_id: "s".into(),
                event_type: kinds[(i as usize * 5) % 3],
                ts: 1_000 * i64::from((i * 13) % 40),
                price_cents: (i % 4 != 0).then_some(i64::from(i) * 100),
                product_id: (i % 6 != 0).then(|| compact_str::format_compact!("p{}", i % 9)),
            })
            .collect();
        let mut added = Span::of(events[0].clone());
        let mut merged = Span::of(events[0].clone());
        for event in &events[1..] {
            added.add(event.clone());
            merged.merge(Span::of(event.clone()));
            assert_eq!(added, merged);
        }
        assert_eq!(added.facts.user_id, "u0");
        assert_eq!(added.facts.partitions.len(), 3);
    }

    #[test]
    fn products_are_counted_once_and_cart_value_summed() {
        let click = |product| {
            Span::of(Accepted {
                partition: 0,
                user_id: "u".into(),
                session_id: "s".into(),
                event_type: EventType::Click,
                ts: 0,
                price_cents: None,
                product_id: Some(compact_str::format_compact!("p{product}")),
            })
        };
        let mut span = click(7);
        span.merge(click(3));
        span.merge(click(7));
        span.merge(Span::of(Accepted {
            event_type: EventType::AddToCart,
            price_cents: Some(1999),
            product_id: Some("p9".into()),
            ..Accepted::new(
                0,
                clickflow_sources::Event {
                    event_id: clickflow_sources::EventId::Number(1),
                    user_id: "u".into(),
                    session_id: "s".into(),
                    product_id: None,
                    event_type: EventType::Click,
                    ts: 5,
                    price_cents: None,
                },
            )
        }));
        let row = span.row(&"s".into(), false);
        assert_eq!((row.num_views, row.num_products), (3, 2));
        assert_eq!((row.num_cart_adds, row.cart_value_cents), (1, 1999));
    }
}
