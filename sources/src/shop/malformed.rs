//! Malformed payloads, one of each rejection kind in turn.

use compact_str::CompactString;

use super::ShopRecord;
use crate::encode::encode;
use crate::event::Event;

/// How many different corruptions there are.
const KINDS: usize = 7;

/// Turns `event` into the `turn`-th kind of malformed payload (cycling through them all).
pub(super) fn corrupt(event: Event, turn: usize) -> ShopRecord {
    let key: CompactString = event.session_id.clone();
    let valid = String::from_utf8(encode(&event)).expect("encoded JSON is UTF-8");
    let payload = match turn % KINDS {
        0 => valid[..valid.len() / 2].to_string(),
        1 => valid.replacen(&format!("\"user_id\":\"{}\",", event.user_id), "", 1),
        2 => valid.replacen(event.event_type.as_str(), "hover", 1),
        3 => replace_ts(&valid, "\"yesterday\""),
        4 => replace_ts(&valid, "0"),
        5 => valid.replacen(
            &format!("\"user_id\":\"{}\"", event.user_id),
            "\"user_id\":42",
            1,
        ),
        _ => {
            let padding = "x".repeat(70 * 1024);
            valid.replacen('{', &format!("{{\"padding\":\"{padding}\","), 1)
        }
    };
    ShopRecord::Malformed {
        key,
        payload: payload.into_bytes(),
    }
}

fn replace_ts(json: &str, value: &str) -> String {
    match json.find("\"ts\":\"") {
        Some(start) => {
            let rest = &json[start + 6..];
            let end = rest
                .find('"')
                .map(|e| start + 6 + e + 1)
                .unwrap_or(json.len());
            format!("{}\"ts\":{}{}", &json[..start], value, &json[end..])
        }
        None => json.to_string(),
    }
}
