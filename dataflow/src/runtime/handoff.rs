//! Offering closed epochs to a consumer that may refuse them, without ever blocking a worker.
//!
//! Both ends of the output use it: the gathering operator on worker 0 and, with a sink that
//! writes from every worker, each worker's own rows operator. A refused epoch keeps its
//! capability, so the probe (and with it the sources' back-pressure) sees it as unfinished
//! until it is taken; the operator is woken again shortly to offer it once more.
//!
//! Besides epochs, an offering can announce how far its input is closed ("every epoch up to
//! `e` is complete here, and what it changed has been offered"), as an empty [`EpochOutput`]
//! for `e`. A consumer that must know that a writer has seen everything up to an epoch (the
//! coordinator of a parallel sink) needs it, because an epoch that changed nothing on one
//! worker otherwise leaves no trace there. Announcements hold no capability: a refused one
//! is merged into the next.

use std::collections::VecDeque;
use std::time::Duration;

use timely::dataflow::operators::Capability;
use timely::progress::frontier::AntichainRef;
use timely::scheduling::Activator;

use crate::runtime::output::{Deliver, EpochOutput, Handoff};
use crate::Epoch;

/// How long an operator waits before offering a refused epoch again.
const RETRY_HANDOFF: Duration = Duration::from_millis(1);

/// Closed epochs waiting to be taken, in epoch order.
pub struct Offering {
    deliver: Deliver,
    activator: Activator,
    waiting: VecDeque<(Option<Capability<Epoch>>, EpochOutput)>,
    /// The newest epoch offered or queued (announcements are only made past it).
    newest: Option<Epoch>,
    announce: bool,
}

impl Offering {
    /// Offers to `deliver`, waking the operator through `activator` to retry; with
    /// `announce`, also announces how far the input is closed (see the module docs).
    pub fn new(deliver: Deliver, activator: Activator, announce: bool) -> Offering {
        Offering {
            deliver,
            activator,
            waiting: VecDeque::new(),
            newest: None,
            announce,
        }
    }

    /// Queues a closed epoch, holding `capability` until it is taken.
    pub fn push(&mut self, capability: Capability<Epoch>, output: EpochOutput) {
        self.newest = Some(output.epoch);
        self.waiting.push_back((Some(capability), output));
    }

    /// Announces that every epoch before `frontier` is closed, if that is news; an empty
    /// frontier (the input is over and everything delivered) is announced as `Epoch::MAX`.
    pub fn announce_closed_before(&mut self, frontier: AntichainRef<'_, Epoch>) {
        let closed = match frontier.first() {
            None => Epoch::MAX,
            Some(&first) => match first.checked_sub(1) {
                Some(closed) => closed,
                None => return,
            },
        };
        if !self.announce || self.newest.is_some_and(|n| n >= closed) {
            return;
        }
        self.newest = Some(closed);
        let notice = EpochOutput {
            epoch: closed,
            ..EpochOutput::default()
        };
        match self.waiting.back_mut() {
            Some((None, previous)) => *previous = notice,
            _ => self.waiting.push_back((None, notice)),
        }
    }

    /// Offers what waits, in order, until the consumer refuses one (then retries soon).
    pub fn offer(&mut self) {
        while let Some((capability, output)) = self.waiting.pop_front() {
            match (self.deliver)(output) {
                Handoff::Taken => drop(capability),
                Handoff::Full(output) => {
                    self.waiting.push_front((capability, *output));
                    self.activator.activate_after(RETRY_HANDOFF);
                    break;
                }
            }
        }
    }
}
