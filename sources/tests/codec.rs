//! The JSON codec: round trips, every rejection kind, and no panic on any bytes.

use clickflow_sources::decode::{decode, DecodeLimits};
use clickflow_sources::encode::encode;
use clickflow_sources::{Event, EventId, EventType, RejectKind};
use compact_str::CompactString;
use proptest::prelude::*;

const LIMITS: DecodeLimits = DecodeLimits {
    max_payload_bytes: 64 * 1024,
    max_future_ms: 3_600_000,
};

fn kind_of(payload: &str) -> RejectKind {
    decode(payload.as_bytes(), None, &LIMITS)
        .expect_err(payload)
        .kind
}

fn arb_id() -> impl Strategy<Value = CompactString> {
    "[a-zA-Z0-9_\\-\"\\\\é ]{1,40}"
        .prop_filter("not blank", |s| !s.trim().is_empty())
        .prop_map(CompactString::from)
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        prop_oneof![
            arb_id().prop_map(EventId::Text),
            any::<i64>().prop_map(EventId::Number)
        ],
        arb_id(),
        arb_id(),
        proptest::option::of(arb_id()),
        prop_oneof![
            Just(EventType::Click),
            Just(EventType::AddToCart),
            Just(EventType::Purchase)
        ],
        946_684_800_000i64..4_102_444_799_999,
        proptest::option::of(0i64..=clickflow_sources::decode::MAX_PRICE_CENTS),
    )
        .prop_map(
            |(event_id, user_id, session_id, product_id, event_type, ts, price_cents)| Event {
                event_id,
                user_id,
                session_id,
                product_id,
                event_type,
                ts,
                price_cents,
            },
        )
}

proptest! {
    #[test]
    fn encode_then_decode_gives_the_event_back(event in arb_event()) {
        let payload = encode(&event);
        prop_assert_eq!(decode(&payload, None, &LIMITS), Ok(event));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, Some(1_751_932_800_000), &LIMITS);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(
        fields in proptest::collection::vec(("[a-z_]{1,12}", "(null|true|-?[0-9]{1,20}(\\.[0-9]+)?|\"[^\"\\\\]{0,20}\"|\\[\\]|\\{\\})"), 0..10)
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let _ = decode(format!("{{{}}}", body.join(",")).as_bytes(), None, &LIMITS);
    }
}

#[test]
fn the_contract_example_decodes() {
    let payload = r#"{"event_id": "e-000123", "user_id": "u42", "session_id": "s9001", "product_id": "p17",
        "event_type": "add_to_cart", "ts": "2025-07-08T05:35:12.345Z", "price": 19.99}"#;
    let event = decode(payload.as_bytes(), None, &LIMITS).unwrap();
    assert_eq!(event.event_id, EventId::Text("e-000123".into()));
    assert_eq!(event.event_type, EventType::AddToCart);
    assert_eq!(event.ts, 1_751_952_912_345);
    assert_eq!(event.price_cents, Some(1999));
}

#[test]
fn integer_ids_epoch_millis_offsets_and_message_timestamps_are_accepted() {
    let event = decode(
        br#"{"event_id":7,"user_id":"u","session_id":"s","event_type":"click","ts":1751952912345}"#,
        None,
        &LIMITS,
    )
    .unwrap();
    assert_eq!(
        (event.event_id, event.ts),
        (EventId::Number(7), 1_751_952_912_345)
    );
    let event = decode(br#"{"event_id":"x","user_id":"u","session_id":"s","event_type":"click","ts":"2025-07-08T07:35:12.345+02:00"}"#, None, &LIMITS).unwrap();
    assert_eq!(event.ts, 1_751_952_912_345);
    let without_ts = br#"{"event_id":"x","user_id":"u","session_id":"s","event_type":"purchase"}"#;
    assert_eq!(
        decode(without_ts, Some(1_751_952_912_000), &LIMITS)
            .unwrap()
            .ts,
        1_751_952_912_000
    );
}

#[test]
fn every_rejection_kind_is_reported() {
    let base = r#""event_id":"e","user_id":"u","session_id":"s","event_type":"click""#;
    assert_eq!(kind_of("not json at all"), RejectKind::NotJson);
    assert_eq!(kind_of(r#"{"event_id": "e1", oops"#), RejectKind::NotJson);
    assert_eq!(kind_of("[1,2,3]"), RejectKind::BadField);
    assert_eq!(
        kind_of(r#"{"event_id":"e","session_id":"s","event_type":"click","ts":1751952912345}"#),
        RejectKind::MissingField
    );
    assert_eq!(
        kind_of(r#"{"user_id":"u","session_id":"s","event_type":"click","ts":1751952912345}"#),
        RejectKind::MissingField
    );
    assert_eq!(
        kind_of(&format!("{{{base}}}")),
        RejectKind::MissingField,
        "no ts and no message timestamp"
    );
    assert_eq!(
        kind_of(
            r#"{"event_id":"e","user_id":42,"session_id":"s","event_type":"click","ts":1751952912345}"#
        ),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(
            r#"{"event_id":"e","user_id":" ","session_id":"s","event_type":"click","ts":1751952912345}"#
        ),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(
            r#"{"event_id":1.5,"user_id":"u","session_id":"s","event_type":"click","ts":1751952912345}"#
        ),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"ts\":1751952912345,\"price\":-3}}")),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(&format!(
            "{{{base},\"ts\":1751952912345,\"price\":\"free\"}}"
        )),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(
            r#"{"event_id":"e","user_id":"u","session_id":"s","event_type":"hover","ts":1751952912345}"#
        ),
        RejectKind::UnknownEventType
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"ts\":\"yesterday\"}}")),
        RejectKind::BadTimestamp
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"ts\":1.75e12}}")),
        RejectKind::BadTimestamp
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"ts\":0}}")),
        RejectKind::AbsurdTimestamp
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"ts\":\"2150-01-01T00:00:00Z\"}}")),
        RejectKind::AbsurdTimestamp
    );
    let future = format!("{{{base},\"ts\":1751952912345}}");
    let rejection = decode(
        future.as_bytes(),
        Some(1_751_952_912_345 - 2 * 3_600_000),
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(
        rejection.kind,
        RejectKind::AbsurdTimestamp,
        "two hours after the message timestamp"
    );
    let oversized = format!(
        "{{{base},\"ts\":1751952912345,\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    assert_eq!(kind_of(&oversized), RejectKind::Oversized);
}

#[test]
fn rejections_name_the_problem() {
    let rejection = decode(
        br#"{"event_id":"e","session_id":"s","event_type":"click","ts":1}"#,
        None,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(rejection.reason(), "missing_field: `user_id`");
}

/// Regression: `"u\u0000x"` (valid JSON) reached PostgreSQL and stopped the sink for good.
#[test]
fn ids_postgresql_cannot_store_are_rejected_at_decode_time() {
    let event = |field: &str, value: &str| {
        let mut fields = serde_json::json!({
            "event_id": "e1", "user_id": "u1", "session_id": "s1", "product_id": "p1",
            "event_type": "click", "ts": 1_751_952_912_345i64,
        });
        fields[field] = serde_json::Value::String(value.to_string());
        fields.to_string()
    };
    let too_long = "x".repeat(clickflow_sources::decode::MAX_ID_BYTES + 1);
    for field in ["event_id", "user_id", "session_id", "product_id"] {
        for (value, says) in [
            ("u\u{0}x", "U+0000"),
            ("a\u{7}b", "U+0007"),
            ("line\nbreak", "U+000A"),
            ("c1\u{85}", "U+0085"),
            (too_long.as_str(), "limit 256"),
        ] {
            let payload = event(field, value);
            let rejection = decode(payload.as_bytes(), None, &LIMITS).expect_err(&payload);
            assert_eq!(rejection.kind, RejectKind::BadField, "{payload}");
            assert!(
                rejection.detail.contains(field) && rejection.detail.contains(says),
                "{field}: {}",
                rejection.detail
            );
        }
    }
    let longest = "x".repeat(clickflow_sources::decode::MAX_ID_BYTES);
    assert!(decode(event("user_id", &longest).as_bytes(), None, &LIMITS).is_ok());
    assert!(decode(event("user_id", "ünï-cødé ✓").as_bytes(), None, &LIMITS).is_ok());
}

#[test]
fn prices_that_could_overflow_revenue_are_rejected() {
    let base = r#""event_id":"e","user_id":"u","session_id":"s","event_type":"purchase","ts":1751952912345"#;
    let ok = format!("{{{base},\"price\":10000000}}");
    assert_eq!(
        decode(ok.as_bytes(), None, &LIMITS).unwrap().price_cents,
        Some(1_000_000_000)
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"price\":10000000.01}}")),
        RejectKind::BadField
    );
    assert_eq!(
        kind_of(&format!("{{{base},\"price\":1e300}}")),
        RejectKind::BadField
    );
}

#[test]
fn dead_letters_become_text_postgresql_accepts() {
    use clickflow_sources::dead_letter::storable_text;
    use clickflow_sources::{DeadLetter, PartitionId, Rejection};
    let letter = DeadLetter::new(
        PartitionId::new("t", 0),
        7,
        Rejection::new(RejectKind::NotJson, "bad \u{0} byte"),
        b"a\x00b\xff",
    );
    assert_eq!(letter.payload, "a\u{0}b\u{FFFD}");
    assert_eq!(storable_text(&letter.payload), "a\\u0000b\u{FFFD}");
    assert_eq!(
        storable_text(&letter.rejection.reason()),
        "not_json: bad \\u0000 byte"
    );
    assert_eq!(storable_text("plain"), "plain");
}

/// The parser keeps its buffers between payloads (one per thread): a field named twice, a
/// value after the object, or a rejected payload leaves nothing behind for the next one.
#[test]
fn each_payload_is_judged_alone() {
    let good = br#"{"event_id":7,"user_id":"u","session_id":"s","event_type":"purchase","ts":"2025-07-08T00:00:00.5Z","price":12.345,"product_id":null,"extra":{"nested":[1,2]}}"#;
    let twice = r#"{"event_id":"e","user_id":"u","user_id":"v","session_id":"s","event_type":"click","ts":1751952912345}"#;
    let trailing = r#"{"event_id":"e","user_id":"u","session_id":"s","event_type":"click","ts":1751952912345} 42"#;
    for _ in 0..3 {
        let event = decode(good, None, &LIMITS).unwrap();
        assert_eq!(event.event_id, EventId::Number(7));
        assert_eq!(event.ts, 1_751_932_800_500);
        assert_eq!(event.price_cents, Some(1235));
        assert_eq!(event.product_id, None, "null is as good as absent");
        let rejection = decode(twice.as_bytes(), None, &LIMITS).unwrap_err();
        assert_eq!(rejection.reason(), "bad_field: duplicate field `user_id`");
        assert_eq!(kind_of(trailing), RejectKind::NotJson);
        assert_eq!(
            kind_of(r#"{"event_id":123456789012345678901234567890,"user_id":"u"}"#),
            RejectKind::NotJson,
            "an integer beyond 64 bits"
        );
        assert_eq!(
            kind_of(
                r#"{"event_id":true,"user_id":"u","session_id":"s","event_type":"click","ts":1}"#
            ),
            RejectKind::BadField
        );
    }
}
