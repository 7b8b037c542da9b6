//! The knobs of the KPI dataflow.

use std::time::Duration;

use crate::window::WindowSize;

/// How the dataflow cuts time and decides what is late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataflowConfig {
    /// Length of the tumbling event-time windows (default one minute).
    pub window: WindowSize,
    /// How far behind its partition's newest event an event may be and still count
    /// (default 30 s).
    pub allowed_lateness_ms: i64,
    /// Inactivity (event time) after which a session is closed (default 30 min).
    pub session_gap_ms: i64,
    /// The ordered funnel's conversion window: the steps a session takes within this long
    /// of its first event count (default 30 min, PostHog's and Amplitude's usual choice for
    /// a visit; see [`crate::conversion`]).
    pub funnel_window_ms: i64,
    /// The session-based recommender (`None`: off; see [`crate::recs`]).
    pub recommendations: Option<RecsConfig>,
}

/// How the recommender counts and ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecsConfig {
    /// How far back (event time, behind the watermark) sessions count: an item a session
    /// viewed or carted leaves the counts this long after the session's latest event with
    /// it (default 24 h).
    pub horizon_ms: i64,
    /// Most items a session contributes to the pair counts (default 15, so at most 105
    /// pairs): a longer session contributes a deterministic sample of its items, as
    /// Schelter et al. (SSDBM 2019) down-sample heavy users to bound the work per event.
    ///
    /// Why 15: next-item quality saturates there. `clickflow evaluate-recs` (6 December
    /// 2026), HR@10 / MRR@10 with 10, 15 and 20 items:
    ///
    /// | file | 10 | 15 | 20 |
    /// |---|---|---|---|
    /// | 1M events of the default shop, seed 7 (`produce --traffic 50 --users 50000`) | 0.4638 / 0.2414 | 0.4653 / 0.2431 | 0.4650 / 0.2431 |
    /// | the same, seed 11 | 0.4668 / 0.2416 | 0.4679 / 0.2429 | 0.4687 / 0.2430 |
    /// | the side-by-side file (2M events, long sessions) | 0.4308 / 0.1892 | 0.4294 / 0.1959 | 0.4262 / 0.1972 |
    ///
    /// (30 items gave what 20 did on both shop files; 5 lost about 0.01 of HR@10.) A
    /// session's 20 items make 190 pairs, its 15 make 105: on the side-by-side file the
    /// run took 2.48–2.53 s with 15 against 2.63–2.69 s with 20, and 3.96–4.08 s of CPU
    /// against 4.26–4.37 s (two runs each, alternating).
    pub max_items_per_session: usize,
    /// Neighbours kept per product (default 20; the API serves up to that many).
    pub neighbours: usize,
    /// Popular items kept for sessions with nothing to go on (default 50).
    pub popular: usize,
}

impl Default for RecsConfig {
    fn default() -> Self {
        RecsConfig {
            horizon_ms: 24 * 3_600_000,
            max_items_per_session: 15,
            neighbours: 20,
            popular: 50,
        }
    }
}

impl Default for DataflowConfig {
    fn default() -> Self {
        DataflowConfig {
            window: WindowSize::from_millis(60_000),
            allowed_lateness_ms: 30_000,
            session_gap_ms: 30 * 60_000,
            funnel_window_ms: 30 * 60_000,
            recommendations: Some(RecsConfig::default()),
        }
    }
}

/// How the workers cut processing time and pace themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochConfig {
    /// Length of one processing-time epoch; each closed epoch becomes one transaction.
    /// 50 ms by default: at ~80k events/s on 2 cores, 50 ms epochs gave freshness p50/p99
    /// of 130/367 ms against 226/608 ms with 100 ms, and a sink that falls behind merges
    /// waiting epochs anyway.
    pub epoch: Duration,
    /// The longest an epoch lasts while its worker is catching up (its last poll came back
    /// full, or its source says it reads a backlog: a file, a Kafka partition far behind).
    /// Freshness means nothing there, and longer epochs do less work: each epoch is one
    /// timestamp, so a session, a funnel id or a recommender sample touched in it is
    /// reduced once per epoch, and its row written once per epoch. 6 s by default: long
    /// enough that the million events [`EpochConfig::max_epoch_messages`] lets in, not the
    /// clock, ends a backlog epoch on two workers of this 2-core machine while the gate, the
    /// session stage and the recommender's holding work on them as they arrive (with
    /// scoring, too). An epoch cut by the clock instead re-ranks and rewrites every open
    /// session and score once more. Measured on 4 December 2026 (2 workers, a million events
    /// an epoch, one sitting): the side-by-side file (`versus_duckdb`) took 6.2–7.2 s with
    /// 2 s epochs (cut in two), 5.2–5.8 s with 3 s, 5.4–6.0 s with 6 s; `clickflow bench`
    /// 21.7 s with 2 s, 16.4–32.8 s with 3 s (2 to 5 epochs: its scoring stage makes reading
    /// slower), 15.4–17.2 s with 6 s (2 epochs every time), 15.4 s with 10 s. (Before those
    /// stages took epochs batch by batch, reading was only buffering, and 2 s took 5.6 s on
    /// the file, 3 s 6.0 s, 5 s 6.4 s; until that day every start also waited out one
    /// such epoch before reading anything, which hid what longer epochs do.) Never shorter
    /// than `epoch`. (A backlog within about a quarter of `max_epoch_messages` of its end
    /// at that length is read on to its end, for at most twice the length, for the reason
    /// given under `max_epoch_messages`.)
    pub catch_up_epoch: Duration,
    /// A caught-up Kafka partition that receives nothing for this long stops holding back
    /// the pipeline's watermark (as Flink's idleness does).
    pub idle_timeout: Duration,
    /// How many epochs the sources may run ahead of the sink before they pause
    /// (back-pressure instead of unbounded buffering).
    pub max_epochs_in_flight: u64,
    /// Most messages a worker takes from its source between two looks at the clock.
    pub poll_batch: usize,
    /// An epoch also closes once a worker has read this many messages in it, so that a fast
    /// source (a file, a backlog) cannot put unbounded input into one epoch. (A file or a
    /// topic backlog whose rest is about a quarter of this or less is read on to its end
    /// instead, up to twice this: a tail epoch of a few lines would close every open
    /// session, or move the watermark past many, and have the sink write each one twice.)
    /// A million by default: the stages that work one whole epoch at a time buffer it (the gate, the
    /// session stage and the recommender's holding take it batch by batch), which measured
    /// cheaper than doing their work more often. Before those three took batches, on 4
    /// December 2026 (2 workers, 2 s backlog epochs, one sitting): the 2M-event side-by-side file took 10.6–11.5 s (9–10 epochs, peak RSS
    /// 1.58–1.72 GB) with 100,000, 8.0 s with 400,000 (3 epochs, 5 s), 5.6–6.2 s with a
    /// million (1 epoch, 1.85–1.94 GB); `clickflow bench` 34.5 s (3.57M rows written, 3.2
    /// GB) against 11.8 s (632k rows, 2.4 GB).
    pub max_epoch_messages: usize,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig {
            epoch: Duration::from_millis(50),
            catch_up_epoch: Duration::from_millis(6000),
            idle_timeout: Duration::from_secs(5),
            max_epochs_in_flight: 4,
            poll_batch: 4096,
            max_epoch_messages: 1_000_000,
        }
    }
}
