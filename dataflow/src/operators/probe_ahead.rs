//! Looking up a chunk of records' keys before updating their entries.
//!
//! The largest maps of a run (the session stage's sessions, the recommender's held items)
//! are probed once per event at a key that is almost never in the cache: a lookup waits on
//! a miss in the map's table (and, in the session stage's index map, another in its
//! entries). Done one event at a time, each
//! update waits for its own misses. Looking up a chunk's keys first, in a loop of
//! independent lookups, lets the processor have several of those misses outstanding at
//! once; the updates then find their entries cached.
//!
//! Measured on the side-by-side file (`run --input --profile-operators`, 2 workers,
//! alternating runs, 6 December 2026, nineteenth sitting), busy time per stage:
//!
//! | stage | probed one by one | probed ahead |
//! |---|---|---|
//! | the session stage (`--no-recommendations`, 7 pairs) | 0.89–1.04 s | 0.83–0.97 s (6% less on average) |
//! | the recommender's items of the horizon ([`crate::operators::hold_until`], 4 pairs) | 0.61–0.65 s | 0.44–0.46 s |
//! | the funnel's distinct users ([`crate::operators::aggregate_by_key`], 4 pairs) | 0.50–0.54 s | 0.45–0.47 s |
//!
//! With every table the session stage's gain was lost in the noise (0.94–1.06 s either
//! way): the recommender shares the cache there.
//!
//! Measured again once the file source read its splits in stints (twentieth sitting, the
//! same day; chunks of 32 against chunks of 1, which probe each record just before its
//! update, 3 alternating pairs on a slower machine): with every table, the session stage
//! 0.70–0.72 s against 0.82–0.88 s, the recommender's items 0.45–0.47 s against
//! 0.68–0.71 s, the funnel's distinct users 0.32–0.33 s against 0.35 s, the run
//! 2.46–2.51 s against 2.69–2.77 s; without the recommender, no difference (the session
//! stage 0.67–0.74 s against 0.67–0.73 s, the funnel's distinct users 0.31–0.34 s against
//! 0.31–0.35 s): there its sessions now stay cached.
//!
//! On a machine with half that L2 (twenty-second sitting, 7 December 2026: AMD EPYC under
//! KVM, 1 MiB a core) they did not: `perf` without the recommender found the session
//! stage's update waiting on the entry's other lines, which the probe had not loaded. A
//! probe may therefore also [`prefetch`] the whole entry it found; the session stage does
//! (its entries are 240 bytes; the other stages' fit in a line or two beside their keys).

/// Asks the processor to bring every cache line of `value` into its caches, without waiting
/// for them: a probe that found an entry lets the update that follows find all of it
/// cached, not only the line its key lies in. Only a hint: it reads nothing, and on other
/// processors than x86-64 it does nothing.
#[allow(unsafe_code)] // The workspace's third exception (see `src/memory.rs`): no safe form.
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let start = value as *const T as *const u8 as usize;
        let end = start + std::mem::size_of_val(value);
        if start == end {
            return;
        }
        let mut line = start & !(LINE - 1);
        while line < end {
            // SAFETY: a prefetch is a hint that never faults and changes no memory; every
            // line it names holds part of `value`, which is borrowed and so allocated.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// How many records' keys are looked up before their entries are updated.
pub const PROBE_AHEAD: usize = 32;

/// Calls `apply(state, record, found)` for every record of `records`, in order, where
/// `found` is what `probe(state, record)` answered for it (where its entry was, or whether
/// there was one) before the updates of up to [`PROBE_AHEAD`] records starting with it.
/// Those updates may have moved or added entries since: `apply` must not take the answer
/// for more than they leave true.
pub fn probe_ahead<S, R, F>(
    state: &mut S,
    records: Vec<R>,
    probe: impl Fn(&S, &R) -> F,
    mut apply: impl FnMut(&mut S, R, F),
) {
    let mut found = Vec::with_capacity(PROBE_AHEAD);
    let mut records = records.into_iter();
    while !records.as_slice().is_empty() {
        let ahead = records.as_slice().iter().take(PROBE_AHEAD);
        found.extend(ahead.map(|record| probe(state, record)));
        for at in found.drain(..) {
            let record = records.next().expect("every probed record is there");
            apply(state, record, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_applied_once_in_order_with_what_was_probed_before_its_chunk() {
        // The state counts the records applied; a probe answers how many there were.
        let records: Vec<usize> = (0..PROBE_AHEAD * 2 + 5).collect();
        let mut applied: Vec<(usize, Option<usize>)> = Vec::new();
        probe_ahead(
            &mut applied,
            records.clone(),
            |applied, _| Some(applied.len()),
            |applied, record, at| applied.push((record, at)),
        );
        let order: Vec<usize> = applied.iter().map(|&(record, _)| record).collect();
        assert_eq!(order, records);
        // Each chunk was probed before any of its records was applied.
        for (i, &(_, at)) in applied.iter().enumerate() {
            assert_eq!(at, Some(i - i % PROBE_AHEAD), "record {i}");
        }
    }
}
