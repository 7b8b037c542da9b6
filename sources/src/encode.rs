//! Encoding an [`Event`] as the JSON of the event contract.

use serde::Serialize;
use time::OffsetDateTime;

use crate::event::{Event, EventId, EventTime};

#[derive(Serialize)]
struct WireEvent<'a> {
    event_id: WireId<'a>,
    user_id: &'a str,
    session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<&'a str>,
    event_type: &'static str,
    ts: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireId<'a> {
    Text(&'a str),
    Number(i64),
}

/// Appends the JSON of `event` (no trailing newline) to `out`.
pub fn encode_into(event: &Event, out: &mut Vec<u8>) {
    let mut ts = [0u8; 24];
    let ts = format_rfc3339_millis(event.ts, &mut ts);
    let wire = WireEvent {
        event_id: match &event.event_id {
            EventId::Text(text) => WireId::Text(text),
            EventId::Number(n) => WireId::Number(*n),
        },
        user_id: &event.user_id,
        session_id: &event.session_id,
        product_id: event.product_id.as_deref(),
        event_type: event.event_type.as_str(),
        ts,
        price: event.price_cents.map(|cents| cents as f64 / 100.0),
    };
    // Writing plain strings and numbers into a Vec cannot fail.
    serde_json::to_writer(out, &wire).expect("serialising an event into memory cannot fail");
}

/// The JSON of `event` as a new buffer.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    encode_into(event, &mut out);
    out
}

/// Formats `millis` as `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf`, for times within years
/// 0000-9999 (the decoder only admits 2000-2099).
pub fn format_rfc3339_millis(millis: EventTime, buf: &mut [u8; 24]) -> &str {
    let nanos = i128::from(millis) * 1_000_000;
    let time =
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fields = [
        (time.year().clamp(0, 9999) as u32, 4),
        (time.month() as u32, 2),
        (u32::from(time.day()), 2),
        (u32::from(time.hour()), 2),
        (u32::from(time.minute()), 2),
        (u32::from(time.second()), 2),
        (u32::from(time.millisecond()), 3),
    ];
    let separators = [b'-', b'-', b'T', b':', b':', b'.', b'Z'];
    let mut at = 0;
    for ((value, width), separator) in fields.into_iter().zip(separators) {
        let mut rest = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        at += width;
        buf[at] = separator;
        at += 1;
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buf[..at]).expect("ASCII is UTF-8")
}
