//! The synthetic shop: deterministic, realistic and honest about what it generates.

use std::collections::{HashMap, HashSet};

use clickflow_sources::decode::{decode, DecodeLimits};
use clickflow_sources::shop::{Shop, ShopConfig, ShopRecord};
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

#[test]
fn sessions_follow_the_funnel_and_popular_products_dominate() {
    let records = Shop::new(ShopConfig::default()).take_records(50_000);
    let mut per_type: HashMap<EventType, usize> = HashMap::new();
    let mut per_product: HashMap<String, usize> = HashMap::new();
    let mut purchased: HashSet<String> = HashSet::new();
    let mut carted: HashSet<String> = HashSet::new();
    for record in &records {
        let ShopRecord::Event(event) = record else {
            unreachable!()
        };
        *per_type.entry(event.event_type).or_default() += 1;
        *per_product
            .entry(event.product_id.clone().unwrap().to_string())
            .or_default() += 1;
        match event.event_type {
            EventType::AddToCart => {
                carted.insert(event.session_id.to_string());
            }
            EventType::Purchase => {
                assert!(
                    carted.contains(event.session_id.as_str()),
                    "a purchase follows a cart add"
                );
                assert!(
                    event.price_cents.is_some_and(|p| p > 0),
                    "purchases carry a price"
                );
                purchased.insert(event.session_id.to_string());
            }
            EventType::Click => {}
        }
    }
    let (clicks, carts, buys) = (
        per_type[&EventType::Click],
        per_type[&EventType::AddToCart],
        per_type[&EventType::Purchase],
    );
    assert!(
        clicks > carts && carts > buys && buys > 0,
        "funnel shape: {clicks} > {carts} > {buys}"
    );
    assert!(purchased.len() < carted.len(), "not every cart is bought");
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
