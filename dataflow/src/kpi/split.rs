//! The split: each event the gate judged turned, in one pass, into a dead letter or what each
//! stage reads of it.
//!
//! ```text
//!                  ┌─► dead letters     (rejected by the gate)              ─► dead_letters
//!  judged events ──┼─► tallies          ((window, type), count and revenue) ─► trends
//!  (exchanged by   ├─► user sightings   ((window, type, user))              ─► funnel
//!   session)       ├─► product views    (session and product, keyed)        ─► recommender
//!                  └─► the event itself (moved, not copied)                  ─► sessions
//! ```
//!
//! The stages used to read the gate's stream of whole events each: timely copies a stream's
//! batches for every reader but the last, so each event was cloned three times, and each
//! stage then mapped its copy to the little it reads, in a pass of its own. Measured on the
//! side-by-side file (5 December 2026, 2 workers, `run --profile-operators`, three runs of
//! each build, alternating): the gate's split into accepted events and dead letters
//! (`OkErr`), the maps (`FlatMap`) and the trends' pre-aggregation took 0.67–0.68 s of the
//! workers' busy time, against 0.51 s for this split and what remained of the others; busy
//! time in all went from 3.33–3.61 s to 3.20–3.23 s, the run's wall time from 2.48–2.62 s
//! to 2.40–2.44 s. The gate's `OkErr` (0.07 s then) later moved into this split as well.
//!
//! **The split runs where the session lives.** Its input is exchanged by session, so the
//! session stage ([`BySession`]) and the recommender's holding of items, which keep their
//! state by session, take their input where it is made: one exchange of each event where
//! there were two (the events to the session stage, the items to the holding). On the same
//! file (5 December 2026, alternating runs): 2.30–2.49 s and 3.63–3.96 s of CPU before,
//! 2.21–2.41 s and 3.46–3.82 s after (four runs each); in an earlier round of five runs
//! each, 2.35–2.54 s against 2.28–2.46 s.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use clickflow_sources::DeadLetter;

use crate::input::Accepted;
use crate::kpi::funnel::{user_sighting, UserSighting};
use crate::kpi::gate::Judged;
use crate::kpi::trends::{tally, TrendUpdate};
use crate::operators::{BySession, RouteKey};
use crate::recs::items::{product_sighting, Sighting};
use crate::window::WindowSize;
use crate::Epoch;

/// The worker an event is split on: the one that owns its session ([`RouteKey::route`] of
/// its id), where the session stage and the recommender's holding of items keep the
/// session's state. A dead letter goes by its offset: anywhere, spread.
fn owner(judged: &Judged) -> u64 {
    match judged {
        Ok(event) => event.session_id.route(),
        Err(dead_letter) => dead_letter.offset as u64,
    }
}

/// Each stage's input, split from the judged events on the worker that owns their session
/// (see [`owner`]).
pub struct StageInputs<'scope> {
    /// The events the gate rejected.
    pub dead_letters: StreamVec<'scope, Epoch, DeadLetter>,
    /// One tally per event, for `event_trends`.
    pub tallies: StreamVec<'scope, Epoch, TrendUpdate>,
    /// One sighting of its user per event, for `funnel_summary`.
    pub user_sightings: StreamVec<'scope, Epoch, UserSighting>,
    /// The products viewed or carted, for the recommender (`None` without it): the
    /// recommender holds them on their session's worker without an exchange.
    pub product_sightings: Option<BySession<'scope, Sighting>>,
    /// The events themselves, for `session_features`.
    pub events: BySession<'scope, Accepted>,
}

/// Splits `judged` into dead letters and the inputs of the stages, in one pass over each
/// batch; the recommender's input is made only when `recommend` is set.
pub fn split_by_stage<'scope>(
    judged: StreamVec<'scope, Epoch, Judged>,
    window: WindowSize,
    recommend: bool,
) -> StageInputs<'scope> {
    let mut builder = OperatorBuilder::new("Split: per stage".to_owned(), judged.scope());
    let mut input = builder.new_input(judged, Exchange::new(owner));
    let (dead_out, dead_letters) = builder.new_output();
    let (tallies_out, tallies) = builder.new_output();
    let (users_out, user_sightings) = builder.new_output();
    let (products_out, product_sightings) = builder.new_output();
    let (events_out, events) = builder.new_output();
    let mut dead_out = OutputBuilder::from(dead_out);
    let mut tallies_out = OutputBuilder::from(tallies_out);
    let mut users_out = OutputBuilder::from(users_out);
    let mut products_out = OutputBuilder::from(products_out);
    let mut events_out = OutputBuilder::from(events_out);
    builder.build(move |_capabilities| {
        move |_frontiers| {
            let mut dead_out = dead_out.activate();
            let mut tallies_out = tallies_out.activate();
            let mut users_out = users_out.activate();
            let mut products_out = products_out.activate();
            let mut events_out = events_out.activate();
            input.for_each_stamp(|stamp, batches| {
                let mut dead = dead_out.session(&stamp);
                let mut tallies = tallies_out.session(&stamp);
                let mut users = users_out.session(&stamp);
                let mut products = products_out.session(&stamp);
                let mut events = events_out.session(&stamp);
                for judged in batches.flat_map(|batch| batch.drain(..)) {
                    let event = match judged {
                        Ok(event) => event,
                        Err(dead_letter) => {
                            dead.give(dead_letter);
                            continue;
                        }
                    };
                    tallies.give(tally(window, &event));
                    users.give(user_sighting(window, &event));
                    if recommend {
                        if let Some(seen) = product_sighting(&event) {
                            products.give(seen);
                        }
                    }
                    events.give(event);
                }
            });
        }
    });
    StageInputs {
        dead_letters,
        tallies,
        user_sightings,
        product_sightings: recommend.then(|| BySession::routed(product_sightings)),
        events: BySession::routed(events),
    }
}
