//! The oracle: the final tables recomputed by a plain sequential program.
//!
//! Independent of the dataflow's code on purpose (it shares only the row types): it walks
//! each partition in order, applies the late rule with its own arithmetic, and aggregates
//! with ordinary maps. Tests and the end-to-end benchmark compare the dataflow's final tables
//! with it; any difference is a bug in one of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use clickflow_sources::{Event, EventType};
use compact_str::CompactString;

use crate::config::DataflowConfig;
use crate::rows::{FunnelRow, SessionRow, TrendRow};
use crate::tables::Tables;
use crate::window::Window;

/// The oracle's answer: the final rows, and which `(partition, offset)`s were late.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OracleTables {
    /// Final rows; its `dead_letters` and `offsets` are left empty.
    pub tables: Tables,
    /// `(global partition index, offset)` of every event rejected as late.
    pub late: BTreeSet<(u32, i64)>,
}

/// Recomputes every table from the decoded events of each partition, given in partition
/// order as `(offset, event)`, as they stand once the input has ended (every window and
/// session final).
pub fn recompute(partitions: &[Vec<(i64, Event)>], config: &DataflowConfig) -> OracleTables {
    let size = config.window.millis();
    let mut counts: BTreeMap<(i64, EventType), (i64, i64)> = BTreeMap::new();
    let mut users: BTreeMap<(i64, EventType), BTreeSet<CompactString>> = BTreeMap::new();
    let mut sessions: HashMap<CompactString, SessionRow> = HashMap::new();
    let mut late = BTreeSet::new();
    for (index, events) in partitions.iter().enumerate() {
        let mut highest: Option<i64> = None;
        for (offset, event) in events {
            let start = event.ts.div_euclid(size) * size;
            if let Some(highest) = highest {
                if start + size <= highest - config.allowed_lateness_ms {
                    late.insert((index as u32, *offset));
                    continue;
                }
            }
            highest = Some(highest.map_or(event.ts, |h: i64| h.max(event.ts)));
            let tally = counts.entry((start, event.event_type)).or_default();
            tally.0 += 1;
            tally.1 += event.price_cents.unwrap_or(0);
            users
                .entry((start, event.event_type))
                .or_default()
                .insert(event.user_id.clone());
            add_to_session(&mut sessions, event);
        }
    }
    let window = |start: i64| Window {
        start,
        end: start + size,
    };
    let mut tables = Tables::default();
    for ((start, event_type), (count, revenue_cents)) in counts {
        let row = TrendRow {
            window: window(start),
            event_type,
            count,
            revenue_cents,
        };
        tables.trends.insert((row.window, event_type), row);
    }
    for ((start, event_type), users) in users {
        let row = FunnelRow {
            window: window(start),
            event_type,
            unique_users: users.len() as i64,
        };
        tables.funnel.insert((row.window, event_type), row);
    }
    tables.sessions = sessions.into_iter().collect();
    OracleTables { tables, late }
}

fn add_to_session(sessions: &mut HashMap<CompactString, SessionRow>, event: &Event) {
    let row = sessions
        .entry(event.session_id.clone())
        .or_insert_with(|| SessionRow {
            session_id: event.session_id.clone(),
            user_id: event.user_id.clone(),
            num_views: 0,
            num_cart_adds: 0,
            num_purchases: 0,
            session_start: event.ts,
            last_event: event.ts,
            closed: true,
        });
    match event.event_type {
        EventType::Click => row.num_views += 1,
        EventType::AddToCart => row.num_cart_adds += 1,
        EventType::Purchase => row.num_purchases += 1,
    }
    row.user_id = row.user_id.clone().min(event.user_id.clone());
    row.session_start = row.session_start.min(event.ts);
    row.last_event = row.last_event.max(event.ts);
}
