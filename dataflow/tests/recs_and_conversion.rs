//! The recommender's co-occurrence top-K and the ordered funnel equal a plain recount (the
//! oracle) on 1, 2 and 4 workers with shuffled arrival; the horizon slides (items leave),
//! long sessions are sampled, a window's conversion rows are updated by sessions that
//! convert after its first rows were written, and the stages' state empties once their
//! windows are sealed. After every epoch the recommendations count the items of the windows
//! its watermark closed, and no others. The sessions' items carry the key the live views
//! look a session up by, with products the session viewed or carted.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::config::RecsConfig;
use clickflow_dataflow::oracle::recompute_streaming;
use clickflow_dataflow::rows::{ConversionRow, ProductName, SessionItem};
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::window::{Window, WindowSize};
use clickflow_dataflow::{DataflowConfig, EpochConfig, EpochOutput, Tables};
use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSplits};
use clickflow_sources::shop::{Shop, ShopConfig, ShopRecord};
use clickflow_sources::{Event, EventType, SourceBatch};
use common::*;
use compact_str::CompactString;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Three hours of a small shop (a few events per second), shuffled within blocks.
fn shop_records(seed: u64, count: usize, block: usize) -> Vec<ShopRecord> {
    let shop = Shop::new(ShopConfig {
        seed,
        users: 400,
        products: 120,
        events_per_second: 1.0,
        late_fraction: 0.03,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.005,
        ..ShopConfig::default()
    });
    let mut records = shop.take_records(count);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for chunk in records.chunks_mut(block.max(1)) {
        chunk.shuffle(&mut rng);
    }
    records
}

/// A horizon of 40 minutes over hours of input (items come and go), and a sample of 4
/// items per session (longer sessions are cut).
fn dataflow() -> DataflowConfig {
    DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: 10 * 60_000,
        funnel_window_ms: 15 * 60_000,
        recommendations: Some(RecsConfig {
            horizon_ms: 40 * 60_000,
            max_items_per_session: 4,
            neighbours: 5,
            popular: 10,
        }),
    }
}

#[test]
fn recommendations_and_the_ordered_funnel_equal_a_plain_recount() {
    let dir = tempfile::tempdir().unwrap();
    let config = dataflow();
    for (case, (seed, block, splits)) in [(21u64, 1usize, 1usize), (22, 40, 3), (23, 400, 4)]
        .into_iter()
        .enumerate()
    {
        let records = shop_records(seed, 12_000, block);
        let plan = planned(&dir, format!("case{case}.jsonl"), &records, splits);
        let oracle = oracle_for(&plan, &config);
        let recs = &oracle.tables.recommendations;
        let conversion = &oracle.tables.conversion;
        // The data exercises what the stages do: many products with neighbours, every
        // step reached, and (below) items that left the horizon and sessions cut to 4.
        let products: HashSet<_> = recs.keys().map(|(p, _)| p).collect();
        assert!(
            products.len() > 50,
            "case {case}: {} products",
            products.len()
        );
        assert!(
            conversion
                .values()
                .any(|r| r.step == EventType::Purchase && r.sessions > 0),
            "case {case}: some session buys"
        );
        let everywhere = oracle_without_horizon(&plan, &config);
        assert_ne!(
            everywhere.tables.recommendations, *recs,
            "case {case}: the horizon must leave items out"
        );
        for workers in [1, 2, 4] {
            let tables = run_file(&plan, workers, config, stress_epochs());
            let context = format!("seed {seed}, block {block}, {splits} splits, {workers} workers");
            assert_matches_oracle(&tables, &oracle, &context);
        }
    }
}

#[test]
fn after_every_epoch_the_recommendations_count_the_windows_its_watermark_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dataflow();
    let records = shop_records(71, 4_000, 40);
    let plan = planned(&dir, "as_of.jsonl", &records, 2);
    let events = events_by_split(&plan);
    let outputs = outputs_with(&plan, 2, config, epochs_of_50_lines(), false);
    let mut tables = Tables::default();
    let mut changed = 0;
    for output in &outputs {
        tables.apply(output).unwrap();
        changed += usize::from(!output.recommendations.is_empty());
        // The events each split had delivered by the end of the epoch.
        let read: Vec<Vec<(i64, Event)>> = events
            .iter()
            .enumerate()
            .map(|(index, split)| {
                let next = tables.offsets.get(&plan.partition(index)).copied();
                let next = next.unwrap_or(0);
                split
                    .iter()
                    .filter(|(offset, _)| *offset < next)
                    .cloned()
                    .collect()
            })
            .collect();
        let oracle = recompute_streaming(&read, &config, output.watermark);
        assert_eq!(
            tables.recommendations, oracle.tables.recommendations,
            "epoch {} (watermark {})",
            output.epoch, output.watermark
        );
    }
    // Lists changed as windows closed during the run, not only at its end.
    assert!(
        changed > 5,
        "the recommendations changed in {changed} epochs"
    );
}

/// `records` written to the file `name` in `dir`, planned in `splits` splits.
fn planned(
    dir: &tempfile::TempDir,
    name: impl AsRef<std::path::Path>,
    records: &[ShopRecord],
    splits: usize,
) -> FileSplits {
    let path = dir.path().join(name);
    write_lines(&path, records);
    FileSplits::plan(&path, splits).unwrap()
}

/// Every event of each split of `plan`, by offset.
fn events_by_split(plan: &FileSplits) -> Vec<Vec<(i64, Event)>> {
    (0..plan.len())
        .map(|index| {
            let mut source =
                FileSource::open(plan, &[(index, None)], DecodeLimits::default()).unwrap();
            let (mut events, mut batch) = (Vec::new(), SourceBatch::default());
            while !source.is_finished() {
                source.poll(&mut batch, 4096).unwrap();
                events.extend(batch.events.drain(..).map(|e| (e.offset, e.event)));
                batch.clear();
            }
            events
        })
        .collect()
}

/// The oracle with a horizon longer than the input, and no sampling bound.
fn oracle_without_horizon(
    plan: &FileSplits,
    config: &DataflowConfig,
) -> clickflow_dataflow::oracle::OracleTables {
    let mut wide = *config;
    wide.recommendations = Some(RecsConfig {
        horizon_ms: 365 * 24 * 3_600_000,
        max_items_per_session: usize::MAX,
        ..config.recommendations.unwrap()
    });
    oracle_for(plan, &wide)
}

/// Epochs of 50 lines a worker, never cut by time: the same epochs on every run, however
/// busy the machine, for tests that count what the epochs carry.
fn epochs_of_50_lines() -> EpochConfig {
    EpochConfig {
        epoch: Duration::from_secs(600),
        catch_up_epoch: Duration::from_secs(600),
        max_epoch_messages: 50,
        poll_batch: 7,
        ..EpochConfig::default()
    }
}

/// Every output of a run that feeds the live views, in epoch order.
fn outputs_of(plan: &FileSplits, workers: usize, config: DataflowConfig) -> Vec<EpochOutput> {
    outputs_with(plan, workers, config, stress_epochs(), true)
}

/// Every output of a run, in epoch order; with `live_views`, the live views' feeds too.
fn outputs_with(
    plan: &FileSplits,
    workers: usize,
    config: DataflowConfig,
    epochs: EpochConfig,
    live_views: bool,
) -> Vec<EpochOutput> {
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let kept = outputs.clone();
    run(
        timely::Config::process(workers),
        InputSpec::File(plan.clone()),
        RunConfig {
            dataflow: config,
            epochs,
            live_views,
            ..RunConfig::default()
        },
        Some(taking(move |output| kept.lock().unwrap().push(output))),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )
    .unwrap();
    let outputs = outputs.lock().unwrap().clone();
    outputs
}

#[test]
fn late_conversions_update_their_window_and_sealed_windows_stay_final() {
    let dir = tempfile::tempdir().unwrap();
    let config = dataflow();
    let records = shop_records(31, 8_000, 1);
    let plan = planned(&dir, "late.jsonl", &records, 2);
    // How many windows see a late conversion is the same on every run with epochs cut by
    // lines (1 ms epochs read more lines each on a quiet machine than on a busy one, and a
    // run saw as few as 5).
    let outputs = outputs_with(&plan, 2, config, epochs_of_50_lines(), true);
    // A window's purchase row that first said fewer sessions than it finally says: a
    // session bought after its window's first row was written.
    let mut first: BTreeMap<Window, i64> = BTreeMap::new();
    let mut updated = 0;
    let mut tables = Tables::default();
    for output in &outputs {
        tables.apply(output).unwrap();
        for (row, diff) in &output.conversion {
            let ConversionRow { window, step, .. } = row;
            if *diff > 0 && *step == EventType::Purchase {
                let seen = first.entry(*window).or_insert(row.sessions);
                updated += usize::from(row.sessions > *seen);
            }
        }
    }
    assert!(updated > 10, "only {updated} windows converted later");
    assert_matches_oracle(&tables, &oracle_for(&plan, &config), "late conversions");
    // Sealed windows' rows are never retracted: every window keeps its three rows.
    let windows: HashSet<Window> = tables.conversion.keys().map(|(w, _)| *w).collect();
    assert_eq!(tables.conversion.len(), 3 * windows.len());
}

#[test]
fn recommendations_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dataflow();
    config.recommendations = None;
    let records = shop_records(41, 2_000, 1);
    let plan = planned(&dir, "off.jsonl", &records, 1);
    let outputs = outputs_of(&plan, 1, config);
    assert!(outputs.iter().all(|o| o.recommendations.is_empty()
        && o.session_items.is_empty()
        && o.popular.is_empty()));
    assert!(outputs.iter().any(|o| !o.conversion.is_empty()));
}

#[test]
fn session_items_carry_the_keys_the_live_views_look_up_and_every_product_has_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let records = shop_records(51, 4_000, 1);
    let plan = planned(&dir, "items.jsonl", &records, 2);
    // What each session viewed or carted, under the key the live views compute from its id.
    let mut products: HashMap<u64, HashSet<CompactString>> = HashMap::new();
    for record in &records {
        let ShopRecord::Event(event) = record else {
            continue;
        };
        if let (Some(product), true) = (&event.product_id, event.event_type != EventType::Purchase)
        {
            let key = SessionItem::key_of(&event.session_id);
            products.entry(key).or_default().insert(product.clone());
        }
    }
    let mut held: BTreeMap<SessionItem, isize> = BTreeMap::new();
    let mut names: BTreeMap<ProductName, isize> = BTreeMap::new();
    for output in outputs_of(&plan, 2, dataflow()) {
        for (item, diff) in output.session_items {
            *held.entry(item).or_default() += diff;
        }
        for (name, diff) in output.product_names {
            *names.entry(name).or_default() += diff;
        }
    }
    held.retain(|_, count| *count != 0);
    names.retain(|_, count| *count != 0);
    assert!(held.len() > 100, "only {} items held", held.len());
    let name_of: HashMap<u64, &CompactString> = names
        .iter()
        .map(|(name, count)| {
            assert_eq!(*count, 1, "{name:?} held by several workers");
            assert_eq!(name.product_key, SessionItem::key_of(&name.product_id));
            (name.product_key, &name.product_id)
        })
        .collect();
    for (item, count) in &held {
        assert_eq!(*count, 1, "{item:?}");
        let viewed = products
            .get(&item.session_key)
            .unwrap_or_else(|| panic!("no session id has the key of {item:?}"));
        let name = name_of
            .get(&item.product_key)
            .unwrap_or_else(|| panic!("no name for {item:?}"));
        assert!(viewed.contains(*name), "{item:?} {name}");
    }
    // Names are of viewed or carted products only.
    let sighted: HashSet<&CompactString> = products.values().flatten().collect();
    assert!(name_of.values().all(|name| sighted.contains(name)));
}

#[test]
fn without_live_views_the_epochs_carry_no_feeds_and_the_same_recommendations() {
    let dir = tempfile::tempdir().unwrap();
    let records = shop_records(61, 4_000, 1);
    let plan = planned(&dir, "unread.jsonl", &records, 2);
    let tables_of = |outputs: &[EpochOutput]| {
        let mut tables = Tables::default();
        outputs.iter().for_each(|o| tables.apply(o).unwrap());
        tables
    };
    // Epochs cut by lines: the top 10 products change from one epoch to the next, so the
    // feeds carry more than 10 rows of them. (With 1 ms epochs a busy machine read the
    // whole file in so few epochs that the feed carried only the final 10: the run in CI
    // of 847451c failed so.)
    let fed = outputs_with(&plan, 2, dataflow(), epochs_of_50_lines(), true);
    let unfed = outputs_with(&plan, 2, dataflow(), epochs_of_50_lines(), false);
    let fed_rows = |pick: fn(&EpochOutput) -> usize| fed.iter().map(pick).sum::<usize>();
    assert!(fed_rows(|o| o.session_items.len()) > 100);
    assert!(fed_rows(|o| o.product_names.len()) > 10);
    assert!(fed_rows(|o| o.popular.len()) > 10);
    assert!(unfed
        .iter()
        .all(|o| o.session_items.is_empty() && o.product_names.is_empty() && o.popular.is_empty()));
    let (fed, unfed) = (tables_of(&fed), tables_of(&unfed));
    assert!(fed.recommendations.len() > 100);
    assert_eq!(fed.recommendations, unfed.recommendations);
    assert_eq!(fed.sessions, unfed.sessions);
}
