//! One simulated visit: how a shopper moves through the shop.
//!
//! A visit is decided at its start to be a *buying* visit or a *browsing* one, from the
//! shopper's propensity; what it does next follows from that intent and from how it has gone
//! so far, never from what lies ahead. The intent is hidden: the events only show its traces,
//! which is what makes churn learnable without being given away.
//!
//! Before the drift (the shop's `drift_at`):
//! - a *browsing* visit views products broadly (few repeat views, short dwell), adds to the
//!   cart now and then (1.4% of views) and never buys;
//! - a *buying* visit is focused (half its views return to a product it already saw) and
//!   slower (longer dwell); after a few views it puts one or two products in the cart, looks
//!   at a couple more pages and buys every item in the cart, unless it abandons the cart
//!   (about 45% of buying visits do, besides those that leave before carting).
//!
//! After the drift, buyers' patterns change (a "buy now" button and a wishlist that is a
//! cart): browsing visits cart often (8% of views) and dwell like buyers used to; buying
//! visits compare broadly, move fast, and buy straight after carting. A model trained before
//! the drift ranks these visits badly; one trained after it recovers.

use compact_str::CompactString;
use smallvec::SmallVec;

/// What the shopper does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Views a product.
    View,
    /// Puts a product into the cart.
    AddToCart,
    /// Buys one product of the cart.
    Purchase,
}

/// The visit's hidden intent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Intent {
    Browse,
    Buy,
    /// No intent: each event's type drawn from a fixed mix (the benchmark shape).
    Mix(EventMix),
}

/// A fixed mix of event types, for benchmark files of a given shape rather than a
/// realistic shop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventMix {
    /// Shares of `click`, `add_to_cart` and `purchase` (they need not sum to 1).
    pub shares: [f64; 3],
    /// Mean events of a visit.
    pub events_per_visit: f64,
    /// Mean seconds between two events of a visit.
    pub dwell_s: f64,
}

/// How visits behave: before or after the drift.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Behaviour {
    /// Share of a browsing visit's views followed by a cart add.
    browse_cart: f64,
    /// Share of views that return to a product already seen: browsing, buying.
    revisit: (f64, f64),
    /// Mean seconds between two events: browsing, buying.
    dwell_s: (f64, f64),
    /// Views (and checkout pages) between a buying visit's last cart add and its purchase.
    checkout_views: bool,
}

impl Behaviour {
    /// The shop's usual behaviour.
    pub(super) const NORMAL: Behaviour = Behaviour {
        browse_cart: 0.014,
        revisit: (0.15, 0.5),
        dwell_s: (28.0, 55.0),
        checkout_views: true,
    };

    /// After the drift.
    pub(super) const DRIFTED: Behaviour = Behaviour {
        browse_cart: 0.08,
        revisit: (0.5, 0.1),
        dwell_s: (55.0, 22.0),
        checkout_views: false,
    };
}

/// Per event, the chance a browsing visit ends.
const BROWSE_LEAVE: f64 = 0.13;
/// Per view, the chance a buying visit has made up its mind and carts.
const BUY_DECIDE: f64 = 0.16;
/// Per view before carting, the chance a buying visit leaves anyway.
const BUY_LEAVE_EARLY: f64 = 0.04;
/// Chance that a buying visit that carted abandons its cart.
const ABANDON: f64 = 0.42;
/// Chance that a buying visit carts a second product.
const SECOND_ITEM: f64 = 0.35;

/// A visit in progress.
pub(super) struct Visit {
    pub(super) user_id: CompactString,
    pub(super) session_id: CompactString,
    pub(super) intent: Intent,
    pub(super) behaviour: Behaviour,
    /// The categories it browses: mostly the first, sometimes the second.
    pub(super) categories: (u32, u32),
    /// Products viewed, without repeats (a visit sees a few dozen at most).
    pub(super) seen: SmallVec<[u32; 8]>,
    /// Products in the cart, not bought yet.
    pub(super) cart: SmallVec<[u32; 2]>,
    /// Views still to come before a buying visit pays (checkout pages).
    checkout: u8,
    /// Whether the buying visit will abandon its cart (decided when it carts).
    abandons: bool,
    /// The visit has ended: it leaves after the step just taken.
    pub(super) done: bool,
}

/// What one step does: its kind and, for a purchase, which carted product it buys.
pub(super) struct Action {
    pub(super) step: Step,
    /// For `Purchase`: the product; for others the caller picks one.
    pub(super) product: Option<u32>,
    /// For `View`: whether it returns to a product already seen.
    pub(super) revisit: bool,
}

impl Visit {
    pub(super) fn new(
        user_id: CompactString,
        session_id: CompactString,
        intent: Intent,
        behaviour: Behaviour,
        categories: (u32, u32),
    ) -> Visit {
        Visit {
            user_id,
            session_id,
            intent,
            behaviour,
            categories,
            seen: SmallVec::new(),
            cart: SmallVec::new(),
            checkout: 0,
            abandons: false,
            done: false,
        }
    }

    /// Mean seconds until the visit's next event.
    pub(super) fn dwell_s(&self) -> f64 {
        match self.intent {
            Intent::Mix(mix) => mix.dwell_s,
            Intent::Browse => self.behaviour.dwell_s.0,
            Intent::Buy if self.checkout > 0 || !self.cart.is_empty() => {
                // Paying goes faster than choosing.
                self.behaviour.dwell_s.1 * 0.4
            }
            Intent::Buy => self.behaviour.dwell_s.1,
        }
    }

    /// The next step, from uniform draws `rolls` in [0, 1); sets `done` when the visit ends
    /// after it. Every visit starts with a view.
    pub(super) fn next(&mut self, rolls: [f64; 4]) -> Action {
        let view = |revisit: f64, visit: &Visit| Action {
            step: Step::View,
            product: None,
            revisit: !visit.seen.is_empty() && rolls[1] < revisit,
        };
        match self.intent {
            Intent::Browse => {
                let action = if !self.seen.is_empty() && rolls[0] < self.behaviour.browse_cart {
                    Action {
                        step: Step::AddToCart,
                        product: None,
                        revisit: true,
                    }
                } else {
                    view(self.behaviour.revisit.0, self)
                };
                self.done = rolls[2] < BROWSE_LEAVE;
                action
            }
            Intent::Buy => self.next_buying(rolls),
            Intent::Mix(mix) => {
                let total: f64 = mix.shares.iter().sum::<f64>().max(f64::MIN_POSITIVE);
                let roll = rolls[0] * total;
                let step = if roll < mix.shares[0] {
                    Step::View
                } else if roll < mix.shares[0] + mix.shares[1] {
                    Step::AddToCart
                } else {
                    Step::Purchase
                };
                self.done = rolls[2] < 1.0 / mix.events_per_visit.max(1.0);
                Action {
                    step,
                    product: None,
                    revisit: false,
                }
            }
        }
    }

    fn next_buying(&mut self, rolls: [f64; 4]) -> Action {
        let view = Action {
            step: Step::View,
            product: None,
            revisit: !self.seen.is_empty() && rolls[1] < self.behaviour.revisit.1,
        };
        if self.seen.is_empty() {
            return view;
        }
        if self.cart.is_empty() {
            if rolls[0] < BUY_DECIDE {
                self.abandons = rolls[2] < ABANDON;
                if self.behaviour.checkout_views {
                    self.checkout = 1 + u8::from(rolls[3] < 0.5);
                }
                return Action {
                    step: Step::AddToCart,
                    product: None,
                    revisit: true,
                };
            }
            self.done = rolls[2] < BUY_LEAVE_EARLY;
            return view;
        }
        if self.cart.len() == 1 && self.checkout > 0 && rolls[0] < SECOND_ITEM / 2.0 {
            return Action {
                step: Step::AddToCart,
                product: None,
                revisit: false,
            };
        }
        if self.checkout > 0 {
            self.checkout -= 1;
            // An abandoning visit leaves during checkout.
            self.done = self.abandons && self.checkout == 0;
            return view;
        }
        if self.abandons {
            self.done = true;
            return view;
        }
        let product = self.cart.pop();
        self.done = self.cart.is_empty();
        Action {
            step: Step::Purchase,
            product,
            revisit: false,
        }
    }
}
