//! Training examples for the churn model: session prefixes, computed with the dataflow's own
//! code.
//!
//! `clickflow train --events FILE` and the demo's start-up training read the file as the
//! pipeline would: each split in order through the partition clock of [`crate::runtime::lateness`]
//! (late events are left out, as the pipeline dead-letters them), sessions cut by the gap
//! rule of [`crate::kpi::sessions`], their counts accumulated by the session stage's own
//! [`Span`](crate::kpi::sessions) and turned into features by
//! [`Features::of`](clickflow_model::Features::of), as the scoring stage does.
//!
//! **Examples.** For each session, the features as known after its first 1, 2, 3, 5, 8, 13,
//! ... events (Fibonacci checkpoints bound a long session's share), and after the last event
//! before its first purchase; each of those again at every recency checkpoint that passes
//! before the session's next event. Nothing from the first purchase on is ever in an
//! example. The label is whether the session went on to buy.
//!
//! **Which sessions.** Only sessions closed by the gap are labelled: a session the end of the
//! data cut off (its final time is past where the data ends, less the allowed lateness)
//! might still have bought.
//! The user's history is the one the scoring stage computes ([`crate::kpi::history`]): their
//! sessions final before this one started.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use clickflow_model::{recency_checkpoints, Example, Features, UserHistory};
use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSourceError, FileSplits};
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_sources::{EventTime, EventType, SourceBatch};
use compact_str::CompactString;
use xxhash_rust::xxh3::Xxh3Default;

use crate::config::DataflowConfig;
use crate::input::Accepted;
use crate::kpi::sessions::{SessionRule, Span};
use crate::rows::SessionRow;
use crate::runtime::lateness::PartitionClock;

/// An accepted event with where it was read, for a stable order of equal times.
struct Read {
    event: Accepted,
    split: usize,
    offset: i64,
}

/// One session's events, in order, and its final row.
struct Session {
    events: Vec<Accepted>,
    row: SessionRow,
    final_at: EventTime,
}

/// Event time a synthetic history covers: long enough that sessions end by the default gap
/// (30 minutes) and later ones can be evaluated on.
pub const HISTORY_MS: i64 = 3 * 3_600_000;

/// The synthetic history's traffic: the default shop at a slower rate (its visits behave
/// the same), so that three hours are a few hundred thousand events.
pub const HISTORY_EVENTS_PER_SECOND: f64 = 40.0;

/// Prefix examples of a synthetic history of the default shop (seed `seed`), three hours
/// of event time ending at `end_ms`, written to a file in `dir` and read back as a file
/// input is: what the demo and the model benchmark train on.
pub fn history_examples(
    seed: u64,
    end_ms: EventTime,
    dataflow: DataflowConfig,
    dir: &Path,
) -> Result<Vec<Example>, FileSourceError> {
    let shop = Shop::new(ShopConfig {
        seed,
        start_ms: end_ms - HISTORY_MS,
        events_per_second: HISTORY_EVENTS_PER_SECOND,
        daily_rhythm: 0.0,
        ..ShopConfig::default()
    });
    let events = (HISTORY_MS as f64 / 1000.0 * HISTORY_EVENTS_PER_SECOND) as usize;
    let path = dir.join("history.jsonl");
    let io = |source| FileSourceError::Io {
        path: path.clone(),
        source,
    };
    let mut out = BufWriter::new(File::create(&path).map_err(io)?);
    let mut payload = Vec::with_capacity(256);
    for record in shop.bounded(events) {
        payload.clear();
        record.write_payload(&mut payload);
        payload.push(b'\n');
        out.write_all(&payload).map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    examples_from_file(&FileSplits::plan(&path, 8)?, dataflow)
}

/// The prefix examples of every session of an events file closed by the gap, in the order
/// of session start (ties by id).
pub fn examples_from_file(
    splits: &FileSplits,
    dataflow: DataflowConfig,
) -> Result<Vec<Example>, FileSourceError> {
    let (events, watermark) = read_accepted(splits, &dataflow)?;
    let rule = SessionRule {
        gap_ms: dataflow.session_gap_ms,
        window: dataflow.window,
    };
    let sessions = sessions_of(events, &rule);
    let histories = UserHistories::of(&sessions);
    let mut examples = Vec::new();
    for session in sessions.iter().filter(|s| s.final_at <= watermark) {
        prefix_examples(session, &rule, &histories, &mut examples);
    }
    Ok(examples)
}

/// Every split through its partition clock: the accepted events, and how far the data
/// reaches: the highest watermark of any split (splits of a file cover consecutive
/// stretches of it; the last one's watermark is where the data ends, less the lateness).
fn read_accepted(
    splits: &FileSplits,
    config: &DataflowConfig,
) -> Result<(Vec<Read>, EventTime), FileSourceError> {
    let mut accepted = Vec::new();
    let mut watermark = EventTime::MIN;
    for split in 0..splits.len() {
        let mut source = FileSource::open(splits, &[(split, None)], DecodeLimits::default())?;
        let mut clock = PartitionClock::default();
        let mut batch = SourceBatch::default();
        while !source.is_finished() {
            source.poll(&mut batch, 4096)?;
            for sourced in batch.events.drain(..) {
                if clock.observe(sourced.event.ts, config).is_none() {
                    accepted.push(Read {
                        event: Accepted::new(split as u32, sourced.event),
                        split,
                        offset: sourced.offset,
                    });
                }
            }
            batch.clear();
        }
        if let Some(own) = clock.watermark(config) {
            watermark = watermark.max(own);
        }
    }
    Ok((accepted, watermark))
}

/// Events grouped by id, ordered by time (then type in funnel order, then where they were
/// read), and cut wherever two are more than the gap apart.
fn sessions_of(mut events: Vec<Read>, rule: &SessionRule) -> Vec<Session> {
    let type_order = |t: EventType| EventType::ALL.iter().position(|x| *x == t);
    events.sort_by(|a, b| {
        (
            &a.event.session_id,
            a.event.ts,
            type_order(a.event.event_type),
            a.split,
            a.offset,
        )
            .cmp(&(
                &b.event.session_id,
                b.event.ts,
                type_order(b.event.event_type),
                b.split,
                b.offset,
            ))
    });
    let mut sessions = Vec::new();
    let mut current: Vec<Accepted> = Vec::new();
    for read in events {
        let starts_new = current.last().is_some_and(|last| {
            last.session_id != read.event.session_id || read.event.ts - last.ts > rule.gap_ms
        });
        if starts_new {
            sessions.push(close(std::mem::take(&mut current), rule));
        }
        current.push(read.event);
    }
    if !current.is_empty() {
        sessions.push(close(current, rule));
    }
    sessions.sort_by(|a, b| {
        (a.row.session_start, &a.row.session_id).cmp(&(b.row.session_start, &b.row.session_id))
    });
    sessions
}

fn close(events: Vec<Accepted>, rule: &SessionRule) -> Session {
    let mut span = Span::of(events[0].clone());
    for event in &events[1..] {
        span.add(event.clone());
    }
    let row = span.row(&events[0].session_id, true);
    Session {
        final_at: rule.final_at(row.last_event),
        events,
        row,
    }
}

/// Each user's sessions by final time, with running totals: `history(S)` by a binary search.
struct UserHistories {
    by_user: HashMap<CompactString, Vec<(EventTime, UserHistory)>>,
}

impl UserHistories {
    fn of(sessions: &[Session]) -> UserHistories {
        let mut by_user: HashMap<CompactString, Vec<(EventTime, i64)>> = HashMap::new();
        for session in sessions {
            by_user
                .entry(session.row.user_id.clone())
                .or_default()
                .push((session.final_at, session.row.num_purchases));
        }
        let by_user = by_user
            .into_iter()
            .map(|(user, mut finals)| {
                finals.sort_unstable();
                let mut total = UserHistory::default();
                let running = finals
                    .into_iter()
                    .map(|(final_at, purchases)| {
                        total.sessions += 1;
                        total.purchases += purchases;
                        (final_at, total)
                    })
                    .collect();
                (user, running)
            })
            .collect();
        UserHistories { by_user }
    }

    /// The user's sessions final at or before `start`.
    fn at(&self, user: &CompactString, start: EventTime) -> UserHistory {
        let Some(running) = self.by_user.get(user) else {
            return UserHistory::default();
        };
        let known = running.partition_point(|(final_at, _)| *final_at <= start);
        known
            .checked_sub(1)
            .map_or(UserHistory::default(), |i| running[i].1)
    }
}

/// The number standing for a session among examples ([`Example::session`]): XXH3-64 of its
/// id (length-prefixed) and start. Training, the monitor and the prediction log agree on it.
pub fn session_key(session_id: &str, session_start: EventTime) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&(session_id.len() as u64).to_le_bytes());
    hasher.update(session_id.as_bytes());
    hasher.update(&session_start.to_le_bytes());
    hasher.digest()
}

/// Whether `k` events is a prefix checkpoint: 1, 2, 3, 5, 8, 13, ...
fn is_checkpoint(k: usize) -> bool {
    let (mut a, mut b) = (1, 2);
    while a < k {
        (a, b) = (b, a + b);
    }
    a == k
}

fn prefix_examples(
    session: &Session,
    rule: &SessionRule,
    histories: &UserHistories,
    out: &mut Vec<Example>,
) {
    let events = &session.events;
    let first_purchase = events
        .iter()
        .position(|e| e.event_type == EventType::Purchase);
    let known = first_purchase.unwrap_or(events.len());
    let churned = first_purchase.is_none();
    let history = histories.at(&session.row.user_id, session.row.session_start);
    let id = session_key(&session.row.session_id, session.row.session_start);
    let mut span: Option<Span> = None;
    for (k, event) in events[..known].iter().enumerate().map(|(i, e)| (i + 1, e)) {
        match span.as_mut() {
            Some(span) => span.add(event.clone()),
            None => span = Some(Span::of(event.clone())),
        }
        if !(is_checkpoint(k) || k == known) {
            continue;
        }
        let facts = span
            .as_ref()
            .expect("set above")
            .row(&session.row.session_id, false)
            .facts();
        let next = events.get(k).map(|e| e.ts);
        for recency in recency_checkpoints(rule.gap_ms) {
            let as_of = facts.last_event + recency;
            if next.is_some_and(|next| as_of >= next) {
                break;
            }
            out.push(Example {
                features: Features::of(&facts, as_of, history),
                churned,
                session_start: session.row.session_start,
                known_at: session.final_at,
                prefix_events: k as u32,
                session: id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_checkpoints_are_fibonacci() {
        let checkpoints: Vec<usize> = (1..40).filter(|k| is_checkpoint(*k)).collect();
        assert_eq!(checkpoints, [1, 2, 3, 5, 8, 13, 21, 34]);
    }
}
