//! The session-based recommender: products that the sessions of a sliding event-time horizon
//! viewed or carted together, on differential dataflow.
//!
//! ```text
//!  accepted clicks and cart adds ─► hold (session, product) for the horizon,  (items.rs)
//!              │                    counted once its window has closed ──────┐
//!              └─────────────────► hold each product's id for the horizon    │ (names.rs)
//!                                                                              ▼
//!                              sample ≤ N products per session (reduce, by session)
//!                                │                                    │
//!               arranged by session ────join with itself─────► pairs a < b ─► count_total
//!                                │                                    │       (pairs.rs)
//!       products ─► count_total ⋈ names: popularity ─arranged──┐     ▼ both ways
//!                                │                             ├─► join_core: rank key
//!                                │                             │     ▼
//!                                │                             │   top K per product (reduce)
//!                                ▼                             └─► join_core: score, ids
//!                   popular (reduce, top N)                    = product_recommendations
//!                                                                     (similar.rs)
//! ```
//!
//! Neighbourhood methods of this kind (item co-occurrence in sessions, session-kNN) match or
//! beat neural session recommenders on public benchmarks (Ludewig & Jannach 2018; Shehzad &
//! Jannach 2023); counting co-occurrence incrementally is what a differential join does, and
//! the per-session sample bounds the work an event can cause (Schelter et al., SSDBM 2019).
//!
//! **The horizon.** An item leaves the counts when the horizon clock passes the session's
//! latest event with it plus `--recs-horizon`. The clock is the pipeline watermark, except
//! that a partition whose input ended holds it at its own last watermark instead of
//! releasing it to infinity: at the end of a file the recommendations stand as of its
//! newest events rather than emptying, and they are a function of the input alone.
//!
//! **Counted once their window has closed.** An item enters the counts in the epoch whose
//! watermark closes the window of its first sighting, not with the sighting: the pairs,
//! the popularity and every product's list change once per window (with all of the
//! window's new items at once), and the epochs between change nothing downstream of the
//! holding. At a steady rate that was most of what the recommender cost, and what made
//! the pipeline fall behind. Measured on 8 December 2026 (150 s of `demo --rate 20000
//! --partitions 16 --profile-operators`, 14.2–14.4k events/s, one run of each build): the
//! recommender's operators busy 3.2 s against 63.3 s, all operators 49.9 s against
//! 129.7 s, freshness p50 109 ms and p99 378 ms against 220 ms and 2.7 s, 3.1 rows written
//! per event against 4.4 (that run also had the live views' items unsampled, below). A
//! backlog's one epoch lets all of its items in at its end either way: `clickflow bench`
//! ran at the same speed and peaked at 375–376 MB against 360 MB (the items waiting for
//! their windows). A shopper sees a product's list change once a minute at most either way.
//!
//! The closing window is what keeps the counts exactly-once across restarts: what the
//! holding counts after an epoch is a function of the input read and the watermark alone,
//! so a replay that ends at the committed offsets and watermark rebuilds exactly what the
//! tables hold. (Holding the changes back by processing time, every N epochs, bought the
//! same speed in a prototype but not that: a restart could not know what was held back.)
//! The cost: a list lags the events by up to a window plus the allowed lateness. The live
//! views' session items are not delayed: a session's own items come from the same holding
//! as they are seen ([`crate::operators::Entry::OnceClosed`]), so "what this session
//! should see next" answers from its latest click. At the end of a finite input every
//! window closes, so the lists stand as of all of it.
//!
//! **After a restart** an item that waited for its window waits for the same one again: its
//! earliest sighting lies in a window still open at the commit, and every partition
//! replays at least from the start of the open windows, so the replay sees it. The held
//! items are rebuilt by replay: the stage reports how far back
//! its items reach into each partition, so a restart replays up to a horizon of input (a
//! day at the default) before it writes again. Set a shorter horizon where that is too long.

pub mod items;
pub mod names;
pub mod pairs;
pub mod serve;
pub mod similar;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;

use crate::config::RecsConfig;
use crate::operators::{at_own_epochs, BySession};
use crate::rows::{PopularRow, ProductName, RecommendationRow, SessionItem};
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::WindowSize;
use crate::Epoch;

/// The recommender's outputs.
pub struct Recommendations<'scope> {
    /// `product_recommendations`.
    pub neighbours: VecCollection<'scope, Epoch, RecommendationRow>,
    /// What the web server's live views answer from, when they are fed.
    pub live: Option<LiveFeeds<'scope>>,
    /// How far back the held items reach into each partition.
    pub retention: StreamVec<'scope, Epoch, Retention>,
}

/// What only the live views read: nothing is written to PostgreSQL from it.
pub struct LiveFeeds<'scope> {
    /// Every item of every session of the horizon, as it is seen (not once its window
    /// closes, as the counts take them), unsampled: the live views keep each session's
    /// latest items, as `clickflow evaluate-recs` judges them. (Sampled here as the counts
    /// are, with a reduce per session, it was 17% of the workers' busy time at a steady
    /// 14.2k events/s: 10.8 s of 63.3 s in 150 s of `demo --rate 20000`, 8 December 2026.)
    pub items: VecCollection<'scope, Epoch, SessionItem>,
    /// The ids of the products the items hold.
    pub names: VecCollection<'scope, Epoch, ProductName>,
    /// The most popular products.
    pub popular: VecCollection<'scope, Epoch, PopularRow>,
}

/// Builds the recommender over the products accepted events viewed or carted
/// ([`items::product_sighting`]), each on the worker that owns its session; with
/// `live_views`, also the feeds of the live views ([`LiveFeeds`]).
///
/// Without a reader for them (`run --no-http`, `bench`) the feeds are not built: every held
/// item would otherwise be carried to the writers only to be dropped there, and the top
/// products ranked for no one. On the side-by-side file (2 workers, 4 December 2026) that
/// was 741,560 item changes per run, gathered, consolidated and handed over each epoch.
pub fn recommendations<'scope>(
    sightings: BySession<'scope, items::Sighting>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    config: RecsConfig,
    window: WindowSize,
    live_views: bool,
) -> Recommendations<'scope> {
    let held = items::held_items(
        sightings.clone(),
        reports.clone(),
        seed,
        config.horizon_ms,
        window,
        live_views,
    );
    let names = names::held_names(sightings.into_stream(), reports, seed, config.horizon_ms);
    let sampled = items::sample_per_session(held.collection, config.max_items_per_session);
    let pairs = pairs::co_occurrence(sampled.clone());
    let popularity = names::named(pairs::popularity(sampled), names.clone());
    let neighbours = similar::nearest(pairs, popularity.clone(), config.neighbours);
    let live = live_views.then(|| {
        let popular = similar::most_popular(popularity, config.popular);
        let items = held.seen.map(|(session_key, product_key)| SessionItem {
            session_key,
            product_key,
        });
        let names = names.map(|(product_key, product_id)| ProductName {
            product_key,
            product_id,
        });
        LiveFeeds {
            items: at_own_epochs(items, "Recs: items at own epochs"),
            names: at_own_epochs(names, "Recs: names at own epochs"),
            popular: at_own_epochs(popular, "Recs: popular at own epochs"),
        }
    });
    Recommendations {
        neighbours: at_own_epochs(neighbours, "Recs: neighbours at own epochs"),
        live,
        retention: held.retention,
    }
}
