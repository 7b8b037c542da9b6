//! Why a payload was rejected, and the dead letter that carries it to PostgreSQL.

use serde::{Deserialize, Serialize};

use crate::batch::PartitionId;

/// The kind of a rejection: a small closed set, usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RejectKind {
    /// The payload is not a JSON object (or not UTF-8).
    NotJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong type or an empty value.
    BadField,
    /// `event_type` is none of `click`, `add_to_cart`, `purchase`.
    UnknownEventType,
    /// `ts` is neither RFC 3339 nor integer milliseconds.
    BadTimestamp,
    /// `ts` is readable but outside any plausible range.
    AbsurdTimestamp,
    /// The payload is larger than the configured limit.
    Oversized,
    /// The event's window had already closed when it arrived.
    Late,
}

impl RejectKind {
    /// Every kind, for metrics and tests.
    pub const ALL: [RejectKind; 8] = [
        RejectKind::NotJson,
        RejectKind::MissingField,
        RejectKind::BadField,
        RejectKind::UnknownEventType,
        RejectKind::BadTimestamp,
        RejectKind::AbsurdTimestamp,
        RejectKind::Oversized,
        RejectKind::Late,
    ];

    /// A stable snake_case name, used in `dead_letters.reason` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::NotJson => "not_json",
            RejectKind::MissingField => "missing_field",
            RejectKind::BadField => "bad_field",
            RejectKind::UnknownEventType => "unknown_event_type",
            RejectKind::BadTimestamp => "bad_timestamp",
            RejectKind::AbsurdTimestamp => "absurd_timestamp",
            RejectKind::Oversized => "oversized",
            RejectKind::Late => "late",
        }
    }
}

/// Why one payload was rejected: its kind and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejection {
    /// The kind, for metrics and queries.
    pub kind: RejectKind,
    /// What exactly was wrong, for the person reading `dead_letters`.
    pub detail: String,
}

impl Rejection {
    /// A rejection of `kind` explained by `detail`.
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            detail: detail.into(),
        }
    }

    /// The text stored in `dead_letters.reason`: `kind: detail`.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// A payload that did not become a counted event, with where it came from and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The topic (or input file) and partition (or split) it was read from.
    pub partition: PartitionId,
    /// Its offset in that partition (the byte offset of its line, for a file).
    pub offset: i64,
    /// Why it was rejected.
    pub rejection: Rejection,
    /// The payload as received; invalid UTF-8 is replaced (U+FFFD), and oversized payloads
    /// are cut. (The sink writes NUL as `\u0000`: see [`storable_text`].)
    pub payload: String,
}

/// How much of an oversized or binary payload a dead letter keeps.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 4096;

impl DeadLetter {
    /// A dead letter for `payload`, read at `partition`/`offset` and rejected for `rejection`.
    pub fn new(partition: PartitionId, offset: i64, rejection: Rejection, payload: &[u8]) -> Self {
        let kept = &payload[..payload.len().min(DEAD_LETTER_PAYLOAD_LIMIT)];
        DeadLetter {
            partition,
            offset,
            rejection,
            payload: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}

/// `text` as PostgreSQL stores it: every NUL written as the six characters `\u0000`, so
/// that no dead letter (payload or reason) can be refused by the database it is meant to be
/// kept in. Applied by the sink, where text meets PostgreSQL.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\\u0000").into()
    } else {
        text.into()
    }
}
