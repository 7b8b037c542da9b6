//! Decoding one payload into an [`Event`], or a typed [`Rejection`].
//!
//! This runs once per message, on the hot path. simd-json parses a copy of the payload in
//! place into a tape (both reused by the thread, so a payload allocates only the ids it
//! keeps); the fields are read off the tape, each wrong value gets its own precise reason,
//! and no input makes it panic (a property test feeds it arbitrary bytes).
//!
//! **Parsers measured** on 500,000 lines of the side-by-side file (this 2-core machine):
//! serde_json 1.0 deserializing a borrowing struct 315–340 ns a line and sonic-rs 0.5 the
//! same struct 393–410 ns (4 December 2026); serde_json 278–290 ns and simd-json 0.19's
//! reused tape, walking the same fields, 182–188 ns (5 December, with and without `-C
//! target-cpu=native`). End to end, side by side (2M events, 2 workers, alternating runs):
//! 3.02–3.19 s with serde_json, 2.76–2.80 s with simd-json. Two behaviours follow the
//! parser: a field named twice is rejected (`bad_field`, as serde_json's derive did), and
//! an integer beyond 64 bits is not JSON simd-json reads (`not_json`, where serde_json
//! said `bad_field`).

use std::cell::RefCell;

use compact_str::CompactString;
use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::{Buffers, ValueType};

mod timestamp;

use crate::dead_letter::{RejectKind, Rejection};
use crate::event::{Event, EventId, EventTime, EventType};

/// 2000-01-01T00:00:00Z: no shop event is older than this.
pub const EARLIEST_PLAUSIBLE_MS: EventTime = 946_684_800_000;
/// 2100-01-01T00:00:00Z: no shop event is newer than this.
pub const LATEST_PLAUSIBLE_MS: EventTime = 4_102_444_800_000;
/// The longest id (event, user, session, product) accepted, in bytes of UTF-8. Real ids are
/// a few dozen bytes; the bound keeps every key of the dataflow's state and every indexed
/// column small.
pub const MAX_ID_BYTES: usize = 256;
/// The highest price accepted, in cents (ten million): far above any shop price, and low
/// enough that a window's revenue stays inside `event_trends.revenue` (`numeric(18,2)`)
/// until a billion purchases in one window.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;

/// Bounds a payload must respect to be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Payloads longer than this are rejected as `oversized` without being parsed.
    pub max_payload_bytes: usize,
    /// An event time more than this far after the message's Kafka timestamp is `absurd`:
    /// one such event would otherwise drag its partition's watermark into the future and
    /// make every honest event after it late.
    pub max_future_ms: i64,
}

impl Default for DecodeLimits {
    /// 64 KiB payloads (a real event is about 200 bytes), one hour of clock skew.
    fn default() -> Self {
        DecodeLimits {
            max_payload_bytes: 64 * 1024,
            max_future_ms: 3_600_000,
        }
    }
}

/// What one thread keeps between payloads: simd-json parses in place, into a tape, and
/// both the copy of the payload and the tape are reused, so a payload costs no allocation.
struct Parser {
    input: Vec<u8>,
    buffers: Buffers,
    tape: Tape<'static>,
}

thread_local! {
    static PARSER: RefCell<Parser> = RefCell::new(Parser {
        input: Vec::new(),
        buffers: Buffers::default(),
        tape: Tape::null(),
    });
}

/// Decodes `payload`. `message_ts` is the Kafka message timestamp in Unix milliseconds, if
/// any: it stands in for a missing `ts` and bounds how far in the future `ts` may be.
pub fn decode(
    payload: &[u8],
    message_ts: Option<EventTime>,
    limits: &DecodeLimits,
) -> Result<Event, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectKind::Oversized,
            format!(
                "{} bytes, limit {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    PARSER.with_borrow_mut(|parser| {
        let Parser {
            input,
            buffers,
            tape,
        } = parser;
        input.clear();
        input.extend_from_slice(payload);
        let mut filled = std::mem::replace(tape, Tape::null()).reset();
        let decoded = match simd_json::fill_tape(input, buffers, &mut filled) {
            Ok(()) => WireEvent::read(filled.as_value())
                .and_then(|wire| wire.into_event(message_ts, limits)),
            Err(error) => Err(Rejection::new(RejectKind::NotJson, error.to_string())),
        };
        *tape = filled.reset();
        decoded
    })
}

/// A JSON value as a field of an event can use it.
#[derive(Clone, Copy)]
enum Field<'a> {
    Null,
    Text(&'a str),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    /// A boolean, an array or an object: never right for any field.
    Other(ValueType),
}

impl<'a> Field<'a> {
    fn of(value: Value<'_, 'a>) -> Field<'a> {
        let kind = value.value_type();
        let field = match kind {
            ValueType::Null => Some(Field::Null),
            ValueType::String => value.into_string().map(Field::Text),
            ValueType::I64 => value.as_i64().map(Field::Signed),
            ValueType::U64 => value.as_u64().map(Field::Unsigned),
            ValueType::F64 => value.as_f64().map(Field::Float),
            _ => None,
        };
        field.unwrap_or(Field::Other(kind))
    }

    /// The field, or `None` when it is JSON `null` (as good as absent).
    fn present(self) -> Option<Field<'a>> {
        (!matches!(self, Field::Null)).then_some(self)
    }

    /// How a rejection shows the value: text quoted and cut at 64 characters.
    fn shown(self) -> String {
        match self {
            Field::Null => "null".into(),
            Field::Text(text) => format!("{:?}", truncate(text)),
            Field::Signed(n) => n.to_string(),
            Field::Unsigned(n) => n.to_string(),
            Field::Float(x) => x.to_string(),
            Field::Other(kind) => format!("a JSON {kind}"),
        }
    }
}

/// The fields of the JSON object as it arrives, borrowing from the parsed payload. Other
/// fields are ignored.
#[derive(Default)]
struct WireEvent<'a> {
    event_id: Option<Field<'a>>,
    user_id: Option<Field<'a>>,
    session_id: Option<Field<'a>>,
    product_id: Option<Field<'a>>,
    event_type: Option<Field<'a>>,
    ts: Option<Field<'a>>,
    price: Option<Field<'a>>,
}

impl<'a> WireEvent<'a> {
    /// The fields of `value`, which must be an object naming each of them at most once.
    fn read(value: Value<'_, 'a>) -> Result<WireEvent<'a>, Rejection> {
        let kind = value.value_type();
        let object = value.as_object().ok_or_else(|| {
            Rejection::new(
                RejectKind::BadField,
                format!("an event is a JSON object, not a JSON {kind}"),
            )
        })?;
        let mut wire = WireEvent::default();
        for (name, value) in object.iter() {
            let slot = match name {
                "event_id" => &mut wire.event_id,
                "user_id" => &mut wire.user_id,
                "session_id" => &mut wire.session_id,
                "product_id" => &mut wire.product_id,
                "event_type" => &mut wire.event_type,
                "ts" => &mut wire.ts,
                "price" => &mut wire.price,
                _ => continue,
            };
            if slot.replace(Field::of(value)).is_some() {
                return Err(Rejection::new(
                    RejectKind::BadField,
                    format!("duplicate field `{name}`"),
                ));
            }
        }
        Ok(wire)
    }

    fn into_event(
        self,
        message_ts: Option<EventTime>,
        limits: &DecodeLimits,
    ) -> Result<Event, Rejection> {
        let event_type =
            text(self.event_type, "event_type")?.ok_or_else(|| missing("event_type"))?;
        let event_type = EventType::from_wire(event_type).ok_or_else(|| {
            Rejection::new(
                RejectKind::UnknownEventType,
                format!("{:?}", truncate(event_type)),
            )
        })?;
        let event_id = event_id(
            self.event_id
                .and_then(Field::present)
                .ok_or_else(|| missing("event_id"))?,
        )?;
        let user_id = required_id(self.user_id, "user_id")?;
        let session_id = required_id(self.session_id, "session_id")?;
        let product_id = match text(self.product_id, "product_id")? {
            Some(product_id) => Some(id(product_id, "product_id")?),
            None => None,
        };
        let ts = match self.ts.and_then(Field::present) {
            Some(field) => timestamp(field)?,
            None => message_ts.ok_or_else(|| {
                Rejection::new(
                    RejectKind::MissingField,
                    "`ts` absent and the message has no timestamp",
                )
            })?,
        };
        check_plausible(ts, message_ts, limits)?;
        let price_cents = match self.price.and_then(Field::present) {
            Some(field) => Some(price_cents(field)?),
            None => None,
        };
        Ok(Event {
            event_id,
            user_id,
            session_id,
            product_id,
            event_type,
            ts,
            price_cents,
        })
    }
}

/// The text of a string field, `None` if absent or `null`.
fn text<'a>(field: Option<Field<'a>>, name: &str) -> Result<Option<&'a str>, Rejection> {
    match field.and_then(Field::present) {
        None => Ok(None),
        Some(Field::Text(text)) => Ok(Some(text)),
        Some(other) => Err(Rejection::new(
            RejectKind::BadField,
            format!("`{name}` must be a string, got {}", other.shown()),
        )),
    }
}

fn required_id(field: Option<Field<'_>>, name: &str) -> Result<CompactString, Rejection> {
    id(text(field, name)?.ok_or_else(|| missing(name))?, name)
}

fn missing(field: &str) -> Rejection {
    Rejection::new(RejectKind::MissingField, format!("`{field}`"))
}

/// An id as PostgreSQL and the dataflow can hold it: not blank, at most [`MAX_ID_BYTES`],
/// without NUL or any other control character (PostgreSQL's `text` refuses NUL, and control
/// characters in an id are corruption, not data).
fn id(value: &str, field: &str) -> Result<CompactString, Rejection> {
    let bad = |why: String| Rejection::new(RejectKind::BadField, format!("`{field}` {why}"));
    // Ids are almost always ASCII: check bytes first, characters only when needed.
    let ascii_clean = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    // Printable ASCII holds one white-space character, the space: such an id is blank when
    // it is all spaces, which its first byte nearly always settles (`str::trim` cost 3.5%
    // of the decoder's instructions here).
    let blank = if ascii_clean {
        value.bytes().all(|b| b == b' ')
    } else {
        value.trim().is_empty()
    };
    if blank {
        return Err(bad("is empty".into()));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(bad(format!(
            "is {} bytes long, limit {MAX_ID_BYTES}",
            value.len()
        )));
    }
    if let Some((at, c)) = (!ascii_clean)
        .then(|| value.char_indices().find(|(_, c)| c.is_control()))
        .flatten()
    {
        return Err(bad(format!(
            "holds the control character U+{:04X} at byte {at}",
            c as u32
        )));
    }
    Ok(CompactString::from(value))
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn event_id(field: Field<'_>) -> Result<EventId, Rejection> {
    match field {
        Field::Text(text) => Ok(EventId::Text(id(text, "event_id")?)),
        Field::Signed(n) => Ok(EventId::Number(n)),
        Field::Unsigned(n) => i64::try_from(n).map(EventId::Number).map_err(|_| {
            Rejection::new(
                RejectKind::BadField,
                format!("`event_id` {n} is above the largest 64-bit integer"),
            )
        }),
        other => Err(Rejection::new(
            RejectKind::BadField,
            format!(
                "`event_id` must be a string or an integer, got {}",
                other.shown()
            ),
        )),
    }
}

fn timestamp(field: Field<'_>) -> Result<EventTime, Rejection> {
    let bad = || {
        Rejection::new(
            RejectKind::BadTimestamp,
            format!("`ts` = {}", field.shown()),
        )
    };
    match field {
        Field::Text(text) => timestamp::parse_rfc3339_millis(text).ok_or_else(bad),
        Field::Signed(ms) => Ok(ms),
        Field::Unsigned(ms) => EventTime::try_from(ms).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn check_plausible(
    ts: EventTime,
    message_ts: Option<EventTime>,
    limits: &DecodeLimits,
) -> Result<(), Rejection> {
    if !(EARLIEST_PLAUSIBLE_MS..LATEST_PLAUSIBLE_MS).contains(&ts) {
        return Err(Rejection::new(
            RejectKind::AbsurdTimestamp,
            format!("{ts} ms is outside the years 2000-2099"),
        ));
    }
    if let Some(message_ts) = message_ts {
        if ts > message_ts.saturating_add(limits.max_future_ms) {
            return Err(Rejection::new(
                RejectKind::AbsurdTimestamp,
                format!("{} ms after the message timestamp", ts - message_ts),
            ));
        }
    }
    Ok(())
}

fn price_cents(field: Field<'_>) -> Result<i64, Rejection> {
    let bad = |why: &str| {
        Rejection::new(
            RejectKind::BadField,
            format!("`price` = {}: {why}", field.shown()),
        )
    };
    let price = match field {
        Field::Signed(n) => n as f64,
        Field::Unsigned(n) => n as f64,
        Field::Float(x) => x,
        _ => return Err(bad("not a number")),
    };
    let max = MAX_PRICE_CENTS as f64 / 100.0;
    if !price.is_finite() || !(0.0..=max).contains(&price) {
        return Err(bad(&format!("must be between 0 and {max}")));
    }
    Ok((price * 100.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(value: &str) -> Option<String> {
        id(value, "user_id").err().map(|rejection| rejection.detail)
    }

    #[test]
    fn an_id_is_blank_when_only_white_space_whatever_its_characters() {
        for blank in ["", " ", "    ", "\t", " \r\n ", "\u{3000}", " \u{2003} "] {
            assert_eq!(
                reason(blank).as_deref(),
                Some("`user_id` is empty"),
                "{blank:?}"
            );
        }
        for kept in ["u1", " u1", "u 1", "u1 ", "é", " \u{3000}x"] {
            assert_eq!(reason(kept), None, "{kept:?}");
        }
        assert_eq!(
            reason("u\u{7f}").as_deref(),
            Some("`user_id` holds the control character U+007F at byte 1")
        );
    }
}
