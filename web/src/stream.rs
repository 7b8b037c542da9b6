//! `GET /api/v1/stream`: the dashboard's changes pushed as Server-Sent Events.
//!
//! Every epoch (or part of one, from each writer of the parallel sink) the views take in
//! becomes one event `epoch`: its `data` is JSON holding the epoch, the watermark, and the
//! current rows of every window, alert and open-session count it changed; its `id` is the
//! stream's sequence number. A browser that reconnects sends the last id it saw
//! (`Last-Event-ID`) and gets what it missed from the newest [`KEEP_EVENTS`] events; when it
//! missed more, or the id is not this server's (a restart), it gets a `reset` event: load
//! everything again.
//!
//! A connection is closed after a while (`--stream-reconnect-after`, 5 minutes by default),
//! and the browser reconnects at once and resumes: proxies and load balancers that cut
//! long-lived connections then never cut one in the middle of an event, and a client's
//! resources are given back regularly.
//!
//! Publishing never waits: each client reads from a bounded channel ([`CLIENT_BUFFER`]
//! events), and a client that falls that far behind is disconnected (it reconnects and
//! resumes). The pipeline is never slowed by a browser.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::runtime::watermark::{END_OF_INPUT, NO_WATERMARK};
use clickflow_dataflow::EpochOutput;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

use crate::alerts::AlertView;
use crate::context::WebContext;
use crate::views::{FunnelWindow, LiveViews, TrendWindow, KEEP_WINDOWS};

/// Events kept for clients that reconnect.
pub const KEEP_EVENTS: usize = 512;
/// Events a client may fall behind before it is disconnected.
pub const CLIENT_BUFFER: usize = 256;

/// One pushed event.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// Its sequence number in the stream, from 1.
    pub id: u64,
    /// Its JSON.
    pub data: Arc<str>,
}

/// What an `epoch` event says.
#[derive(Serialize)]
struct EpochChanges {
    epoch: u64,
    watermark: Option<i64>,
    watermark_at: Option<String>,
    events: u64,
    trends: Vec<TrendWindow>,
    funnel: Vec<FunnelWindow>,
    alerts: Vec<AlertView>,
    open_sessions: usize,
}

/// The events published so far (the newest [`KEEP_EVENTS`]) and the live channel.
pub struct ChangeStream {
    kept: Mutex<VecDeque<Pushed>>,
    live: broadcast::Sender<Pushed>,
    /// Turns true when the web server stops: every client's stream ends, so the server's
    /// graceful stop does not wait for streams that never end.
    closing: watch::Sender<bool>,
    /// How long one connection lasts, in ms.
    connection_ms: std::sync::atomic::AtomicU64,
}

/// How long a stream connection lasts by default.
pub const DEFAULT_CONNECTION: Duration = Duration::from_secs(300);

impl Default for ChangeStream {
    fn default() -> ChangeStream {
        ChangeStream {
            kept: Mutex::new(VecDeque::with_capacity(KEEP_EVENTS)),
            live: broadcast::channel(CLIENT_BUFFER).0,
            closing: watch::channel(false).0,
            connection_ms: std::sync::atomic::AtomicU64::new(DEFAULT_CONNECTION.as_millis() as u64),
        }
    }
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream")
            .field("clients", &self.live.receiver_count())
            .finish()
    }
}

/// Where a client starts.
pub enum Start {
    /// From now on.
    Live,
    /// After the events it missed.
    Resume(Vec<Pushed>),
    /// It missed more than is kept, or its id is unknown: it must load everything again.
    Reset,
}

impl ChangeStream {
    /// Publishes what `output` changed in `views` (which have already taken it in).
    pub fn publish(&self, views: &LiveViews, output: &EpochOutput) {
        if output.trends.is_empty()
            && output.funnel.is_empty()
            && output.alerts.is_empty()
            && output.sessions.is_empty()
            && output.arrived == 0
        {
            return;
        }
        let touched = |starts: BTreeSet<i64>| move |start: &i64| starts.contains(start);
        let trend_starts: BTreeSet<i64> =
            output.trends.iter().map(|(r, _)| r.window.start).collect();
        let funnel_starts: BTreeSet<i64> =
            output.funnel.iter().map(|(r, _)| r.window.start).collect();
        let in_trends = touched(trend_starts);
        let in_funnel = touched(funnel_starts);
        let alert_ids: BTreeSet<&str> = output
            .alerts
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(r, _)| r.alert_id.as_str())
            .collect();
        let watermark = Some(output.watermark).filter(|w| *w != NO_WATERMARK && *w != END_OF_INPUT);
        let changes = EpochChanges {
            epoch: output.epoch,
            watermark,
            watermark_at: watermark.map(crate::rfc3339),
            events: output.arrived,
            trends: views
                .trends(KEEP_WINDOWS)
                .into_iter()
                .filter(|w| in_trends(&w.window_start))
                .collect(),
            funnel: views
                .funnel(KEEP_WINDOWS)
                .into_iter()
                .filter(|w| in_funnel(&w.window_start))
                .collect(),
            alerts: views
                .alerts()
                .into_iter()
                .filter(|a| alert_ids.contains(a.alert_id.as_str()))
                .collect(),
            open_sessions: views.open_sessions(),
        };
        let Ok(data) = serde_json::to_string(&changes) else {
            return;
        };
        let mut kept = self.lock();
        let id = kept.back().map_or(1, |last| last.id + 1);
        let pushed = Pushed {
            id,
            data: data.into(),
        };
        if kept.len() == KEEP_EVENTS {
            kept.pop_front();
        }
        kept.push_back(pushed.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(pushed);
    }

    /// A new client, resuming after `last_id` when given: where it starts, and its channel.
    /// Both are taken under one lock, so nothing is missed or sent twice between them.
    pub fn subscribe(&self, last_id: Option<u64>) -> (Start, broadcast::Receiver<Pushed>) {
        let kept = self.lock();
        let receiver = self.live.subscribe();
        let newest = kept.back().map_or(0, |p| p.id);
        let oldest = kept.front().map_or(1, |p| p.id);
        let start = match last_id {
            None => Start::Live,
            Some(last) if last == newest => Start::Live,
            Some(last) if last > newest || last + 1 < oldest => Start::Reset,
            Some(last) => Start::Resume(kept.iter().filter(|p| p.id > last).cloned().collect()),
        };
        (start, receiver)
    }

    /// Connections opened from now on last `duration` (at least 100 ms).
    pub fn set_connection_duration(&self, duration: Duration) {
        let ms = duration.as_millis().clamp(100, u128::from(u64::MAX)) as u64;
        self.connection_ms.store(ms, Ordering::Relaxed);
    }

    /// Ends every client's stream, now and from now on (the web server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.live.receiver_count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pushed>> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn event(pushed: &Pushed) -> Event {
    Event::default()
        .id(pushed.id.to_string())
        .event("epoch")
        .data(pushed.data.to_string())
}

/// The events of one client: where it starts, then live until it falls behind, `closing`
/// turns true or `lasting` has passed.
fn client_events(
    start: Start,
    receiver: broadcast::Receiver<Pushed>,
    mut closing: watch::Receiver<bool>,
    lasting: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    // Reconnect one second after the server ends a connection.
    let retry = Event::default().retry(Duration::from_secs(1));
    let first: Vec<Event> = match start {
        Start::Live => vec![retry],
        Start::Resume(missed) => std::iter::once(retry)
            .chain(missed.iter().map(event))
            .collect(),
        Start::Reset => vec![retry, Event::default().event("reset").data("{}")],
    };
    let live = stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(pushed) => Some((event(&pushed), receiver)),
            // Too slow (its buffer overflowed) or the stream is gone: disconnect; the
            // browser reconnects with its last id and resumes.
            Err(_) => None,
        }
    });
    let closed = async move {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => {}
            () = tokio::time::sleep(lasting) => {}
        }
    };
    stream::iter(first).chain(live).take_until(closed).map(Ok)
}

/// `GET /api/v1/stream`.
pub fn route(
    context: WebContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "stream")
        .and(warp::get())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(move |last: Option<String>| {
            let stream = context.views.stream();
            let (start, receiver) = match last.map(|id| id.trim().parse::<u64>()) {
                None => stream.subscribe(None),
                Some(Ok(id)) => stream.subscribe(Some(id)),
                // Not an id this server gave: start over.
                Some(Err(_)) => (Start::Reset, stream.subscribe(None).1),
            };
            let lasting = Duration::from_millis(stream.connection_ms.load(Ordering::Relaxed));
            let events = client_events(start, receiver, stream.closing.subscribe(), lasting);
            warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
        })
}
