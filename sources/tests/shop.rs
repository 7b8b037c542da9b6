//! The synthetic shop: deterministic, realistic and honest about what it generates.

use std::collections::{HashMap, HashSet};

use clickflow_sources::decode::{decode, DecodeLimits};
use clickflow_sources::shop::{EventMix, Shop, ShopConfig, ShopRecord};
use clickflow_sources::{EventType, RejectKind};

fn bytes_of(config: ShopConfig, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for record in Shop::new(config).take_records(count) {
        out.extend_from_slice(record.key().as_bytes());
        out.push(b'\t');
        record.write_payload(&mut out);
        out.push(b'\n');
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let config = ShopConfig {
        late_fraction: 0.1,
        malformed_fraction: 0.05,
        ..ShopConfig::default()
    };
    let first = bytes_of(config.clone(), 5000);
    assert_eq!(first, bytes_of(config.clone(), 5000));
    assert_ne!(first, bytes_of(ShopConfig { seed: 7, ..config }, 5000));
}

#[test]
fn malformed_payloads_cover_every_decode_rejection_and_nothing_else_is_rejected() {
    let config = ShopConfig {
        malformed_fraction: 0.2,
        ..ShopConfig::default()
    };
    let mut kinds = HashSet::new();
    for record in Shop::new(config).take_records(2000) {
        let mut payload = Vec::new();
        record.write_payload(&mut payload);
        assert!(!payload.contains(&b'\n'), "payloads are JSON-lines safe");
        match (record, decode(&payload, None, &DecodeLimits::default())) {
            (ShopRecord::Event(event), Ok(decoded)) => assert_eq!(event, decoded),
            (ShopRecord::Malformed { .. }, Err(rejection)) => {
                kinds.insert(rejection.kind);
            }
            (record, result) => panic!("{record:?} decoded as {result:?}"),
        }
    }
    let expected: HashSet<_> = RejectKind::ALL
        .into_iter()
        .filter(|k| *k != RejectKind::Late)
        .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn out_of_order_events_are_delivered_late_but_never_lost() {
    let config = ShopConfig {
        late_fraction: 0.2,
        max_lateness_ms: 120_000,
        ..ShopConfig::default()
    };
    let records = Shop::new(config).take_records(5000);
    let mut highest = i64::MIN;
    let mut behind = 0;
    let mut ids = HashSet::new();
    for record in &records {
        let ShopRecord::Event(event) = record else {
            panic!("no malformed records asked for")
        };
        if event.ts < highest {
            behind += 1;
        }
        highest = highest.max(event.ts);
        assert!(ids.insert(event.event_id.clone()), "event ids are unique");
    }
    assert!(
        behind > 500,
        "about a fifth of events arrive out of order, got {behind}"
    );
    assert_eq!(records.len(), 5000);
}

/// What an analyst would measure on a stretch of shop events.
struct Rates {
    cart_per_view: f64,
    purchase_per_cart: f64,
    cart_abandonment: f64,
    session_conversion: f64,
    events_per_session: f64,
    median_events_per_session: usize,
    longest_session: usize,
}

/// Rates over the visits that begin in the first three quarters of `records` (the others may
/// be cut off by the end).
fn rates(records: &[ShopRecord]) -> Rates {
    let events = || {
        records.iter().map(|r| match r {
            ShopRecord::Event(e) => e,
            ShopRecord::Malformed { .. } => unreachable!("no malformed records asked for"),
        })
    };
    let first = events().map(|e| e.ts).min().unwrap();
    let last = events().map(|e| e.ts).max().unwrap();
    let cut = first + (last - first) * 3 / 4;
    let mut begun: HashMap<String, i64> = HashMap::new();
    for event in events() {
        begun
            .entry(event.session_id.to_string())
            .or_insert(event.ts);
    }
    let mut per_type: HashMap<EventType, usize> = HashMap::new();
    let mut sessions: HashMap<String, (usize, bool, bool)> = HashMap::new();
    let mut counted = 0;
    for event in events().filter(|e| begun[e.session_id.as_str()] < cut) {
        counted += 1;
        *per_type.entry(event.event_type).or_default() += 1;
        let session = sessions.entry(event.session_id.to_string()).or_default();
        session.0 += 1;
        match event.event_type {
            EventType::AddToCart => session.1 = true,
            EventType::Purchase => {
                assert!(session.1, "a purchase follows a cart add");
                session.2 = true;
            }
            EventType::Click => {}
        }
    }
    let count = |t| per_type.get(&t).copied().unwrap_or(0) as f64;
    let carted = sessions.values().filter(|s| s.1).count() as f64;
    let bought = sessions.values().filter(|s| s.2).count() as f64;
    let mut lengths: Vec<usize> = sessions.values().map(|s| s.0).collect();
    lengths.sort_unstable();
    Rates {
        cart_per_view: count(EventType::AddToCart) / count(EventType::Click),
        purchase_per_cart: count(EventType::Purchase) / count(EventType::AddToCart),
        cart_abandonment: 1.0 - bought / carted,
        session_conversion: bought / sessions.len() as f64,
        events_per_session: counted as f64 / sessions.len() as f64,
        median_events_per_session: lengths[lengths.len() / 2],
        longest_session: lengths[lengths.len() - 1],
    }
}

#[test]
fn the_default_shop_looks_like_a_shop() {
    // A slower shop than the default (the same visits, fewer at a time), so that the stretch
    // measured is long compared with a visit.
    let config = ShopConfig {
        events_per_second: 100.0,
        ..ShopConfig::default()
    };
    let records = Shop::new(config).take_records(400_000);
    let r = rates(&records);
    eprintln!(
        "cart/view {:.2}%, purchase/cart {:.1}%, cart abandonment {:.1}%, session conversion {:.2}%, events/session mean {:.1} median {} max {}",
        r.cart_per_view * 100.0,
        r.purchase_per_cart * 100.0,
        r.cart_abandonment * 100.0,
        r.session_conversion * 100.0,
        r.events_per_session,
        r.median_events_per_session,
        r.longest_session
    );
    // Retailrocket: 2.6 cart adds per 100 views, 32 purchases per 100 cart adds; Baymard:
    // about 70% of carts are abandoned.
    assert!((0.020..=0.032).contains(&r.cart_per_view), "cart/view");
    assert!(
        (0.26..=0.38).contains(&r.purchase_per_cart),
        "purchase/cart"
    );
    assert!((0.62..=0.78).contains(&r.cart_abandonment), "abandonment");
    assert!((3.0..=20.0).contains(&r.events_per_session), "visit length");
    assert!(
        r.longest_session >= 30,
        "some visits run to a few dozen events"
    );
    assert!(r.median_events_per_session >= 2);
}

#[test]
fn a_minute_of_traffic_involves_a_small_share_of_the_shoppers_who_come_back_over_days() {
    // One minute of the default shop: 60k events.
    let minute = Shop::new(ShopConfig::default()).take_records(60_000);
    let active: HashSet<String> = minute
        .iter()
        .map(|r| match r {
            ShopRecord::Event(e) => e.user_id.to_string(),
            ShopRecord::Malformed { .. } => unreachable!(),
        })
        .collect();
    let share = active.len() as f64 / f64::from(ShopConfig::default().users);
    assert!(
        share < 0.01,
        "{:.1}% of the pool active in a minute",
        share * 100.0
    );

    // Three days of a small shop: most returning shoppers come back on another day.
    let config = ShopConfig {
        users: 20_000,
        events_per_second: 2.0,
        ..ShopConfig::default()
    };
    let mut days: HashMap<String, HashSet<i64>> = HashMap::new();
    let mut per_hour = [0usize; 24];
    for record in Shop::new(config).take_records(3 * 86_400 * 2) {
        let ShopRecord::Event(event) = record else {
            unreachable!()
        };
        days.entry(event.user_id.to_string())
            .or_default()
            .insert(event.ts.div_euclid(86_400_000));
        per_hour[(event.ts.rem_euclid(86_400_000) / 3_600_000) as usize] += 1;
    }
    let returning = days.values().filter(|d| d.len() > 1).count();
    assert!(
        returning * 10 > days.len(),
        "{returning} of {} shoppers came back on another day",
        days.len()
    );
    // The daily rhythm: evenings are busier than mornings.
    assert!(
        per_hour[20] > 2 * per_hour[8],
        "20:00 {} vs 08:00 {}",
        per_hour[20],
        per_hour[8]
    );
}

#[test]
fn carts_and_purchases_carry_prices_and_popular_products_dominate() {
    let records = Shop::new(ShopConfig::default()).take_records(50_000);
    let mut per_product: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let ShopRecord::Event(event) = record else {
            unreachable!()
        };
        *per_product
            .entry(event.product_id.clone().unwrap().to_string())
            .or_default() += 1;
        let priced = event.event_type != EventType::Click;
        assert_eq!(event.price_cents.is_some_and(|p| p > 0), priced);
    }
    let top = per_product["p0"];
    let median = {
        let mut v: Vec<_> = per_product.values().copied().collect();
        v.sort();
        v[v.len() / 2]
    };
    assert!(
        top > 20 * median.max(1),
        "Zipf-like popularity: top {top}, median {median}"
    );
}

#[test]
fn after_the_drift_browsing_visits_cart_far_more() {
    let start = ShopConfig::default().start_ms;
    let drifted = ShopConfig {
        drift_at_ms: Some(start),
        ..ShopConfig::default()
    };
    let slow = |config: ShopConfig| ShopConfig {
        events_per_second: 100.0,
        ..config
    };
    let before = rates(&Shop::new(slow(ShopConfig::default())).take_records(200_000));
    let after = rates(&Shop::new(slow(drifted)).take_records(200_000));
    assert!(
        after.cart_per_view > 2.0 * before.cart_per_view,
        "cart/view {:.3} before, {:.3} after",
        before.cart_per_view,
        after.cart_per_view
    );
}

/// The shop delivers the rate it is given, however high: visits less than a millisecond
/// apart used to round their waits down to nothing, so the clock stood still and the shop
/// started visits without end (a demo at `--rate 125000` ran out of memory before its first
/// event), and below that rate it sent more than asked. Short visits, so that the steady
/// state comes within a second; the rate is measured over the six seconds after it.
#[test]
fn the_shop_keeps_its_rate_even_when_visits_arrive_within_a_millisecond() {
    let delivered = |rate: f64| {
        let config = ShopConfig {
            events_per_second: rate,
            daily_rhythm: 0.0,
            mix: Some(EventMix {
                shares: [0.7, 0.2, 0.1],
                events_per_visit: 4.0,
                dwell_s: 0.05,
            }),
            ..ShopConfig::default()
        };
        let from = config.start_ms + 2_000;
        let to = from + 6_000;
        let in_window = Shop::new(config)
            .take_records((rate * 10.0) as usize)
            .into_iter()
            .filter(|record| {
                matches!(record, ShopRecord::Event(event) if (from..to).contains(&event.ts))
            })
            .count();
        in_window as f64 / 6.0 / rate
    };
    // A visit's events are only about what the mix says, so the share delivered is not
    // exactly 1; what matters is that it does not change with the rate.
    let slow = delivered(1_000.0);
    assert!(
        (slow - 1.0).abs() < 0.25,
        "delivered {slow:.2} of 1000 events/s"
    );
    for rate in [20_000.0, 200_000.0] {
        let share = delivered(rate);
        assert!(
            (share / slow - 1.0).abs() < 0.05,
            "asked {rate} events/s, delivered {share:.3} of it (at 1000 events/s: {slow:.3})"
        );
    }
}
