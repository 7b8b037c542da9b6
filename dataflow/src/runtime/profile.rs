//! Where the workers' time goes, operator by operator (`--profile-operators`).
//!
//! perf says which functions are hot, but the differential operators of every stage share
//! their code (a `reduce` is a `reduce`), so it cannot say which stage they serve. timely
//! logs when each operator is scheduled and when it returns; summing those spans by the
//! operators' names (every stage names its operators) charges the time to the stage.
//! The logging costs a few percent, so it is only on when asked for.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// The busy time of every operator, by name, summed over the workers of this process.
#[derive(Clone, Debug, Default)]
pub struct OperatorProfile {
    busy: Arc<Mutex<HashMap<String, Duration>>>,
}

/// One worker's spans, charged to the shared totals at every flush of the log.
#[derive(Default)]
struct WorkerSpans {
    names: HashMap<usize, String>,
    started: HashMap<usize, Duration>,
    busy: HashMap<usize, Duration>,
}

impl OperatorProfile {
    /// Starts recording `worker`'s operators; call before the dataflow is built, so that
    /// their names are seen.
    pub fn attach(&self, worker: &mut Worker) {
        let Some(mut registry) = worker.log_register() else {
            return;
        };
        let shared = self.busy.clone();
        let mut spans = WorkerSpans::default();
        registry.insert::<TimelyEventBuilder, _>("timely", move |_, events| match events {
            Some(events) => {
                for (at, event) in events.iter() {
                    spans.record(*at, event);
                }
            }
            None => spans.charge(&shared),
        });
    }

    /// Every operator's busy time, the busiest first.
    pub fn busiest(&self) -> Vec<(String, Duration)> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let mut ranked: Vec<(String, Duration)> = busy
            .iter()
            .map(|(name, time)| (name.clone(), *time))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
    }
}

impl WorkerSpans {
    fn record(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            // A top-level dataflow's span holds all of its operators' spans.
            TimelyEvent::Operates(operates) if operates.addr.len() > 1 => {
                self.names.insert(operates.id, operates.name.clone());
            }
            TimelyEvent::Schedule(schedule) if self.names.contains_key(&schedule.id) => {
                match schedule.start_stop {
                    StartStop::Start => {
                        self.started.insert(schedule.id, at);
                    }
                    StartStop::Stop => {
                        if let Some(start) = self.started.remove(&schedule.id) {
                            *self.busy.entry(schedule.id).or_default() += at.saturating_sub(start);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn charge(&mut self, shared: &Mutex<HashMap<String, Duration>>) {
        let mut totals = shared.lock().unwrap_or_else(|e| e.into_inner());
        for (id, time) in self.busy.drain() {
            *totals.entry(self.names[&id].clone()).or_default() += time;
        }
    }
}

/// The busiest operators as a table: name, seconds, share of all operators' time.
impl fmt::Display for OperatorProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranked = self.busiest();
        let total: Duration = ranked.iter().map(|(_, time)| *time).sum();
        writeln!(
            f,
            "operator busy time, all workers: {:.2} s",
            total.as_secs_f64()
        )?;
        for (name, time) in ranked.iter().take(30) {
            let share = 100.0 * time.as_secs_f64() / total.as_secs_f64().max(1e-9);
            writeln!(f, "{:>8.2} s {share:>5.1}%  {name}", time.as_secs_f64())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::{Inspect, ToStream};

    use super::*;

    #[test]
    fn operators_are_charged_by_name_and_dataflows_are_not() {
        let profile = OperatorProfile::default();
        let attached = profile.clone();
        timely::execute_directly(move |worker| {
            attached.attach(worker);
            worker.dataflow::<u64, _, _>(|scope| {
                (0..10_000u64)
                    .to_stream(scope)
                    .map(|x| x.wrapping_mul(x))
                    .inspect(|_| {});
            });
        });
        let names: Vec<String> = profile.busiest().into_iter().map(|(n, _)| n).collect();
        for operator in ["ToStreamBuilder", "FlatMap", "Inspect"] {
            assert!(
                names.iter().any(|n| n == operator),
                "{operator} in {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n == "Dataflow"), "{names:?}");
        assert!(profile.to_string().starts_with("operator busy time"));
    }
}
