//! One simulated visit: how a shopper moves through the funnel.

use compact_str::CompactString;

/// What the shopper does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    View,
    AddToCart,
    Purchase,
}

/// A visit in progress.
pub(super) struct Visit {
    pub(super) user_id: CompactString,
    pub(super) session_id: CompactString,
    /// The shopper's buying propensity in [0, 1).
    pub(super) propensity: f64,
    pub(super) views: u32,
    pub(super) cart_adds: u32,
    pub(super) cart_product: Option<u32>,
}

impl Visit {
    pub(super) fn new(user_id: CompactString, session_id: CompactString, propensity: f64) -> Visit {
        Visit {
            user_id,
            session_id,
            propensity,
            views: 0,
            cart_adds: 0,
            cart_product: None,
        }
    }

    /// Chooses the next step from a uniform `roll` in [0, 1). Every visit starts with a view;
    /// a full cart makes a purchase likelier, and so does having looked around.
    pub(super) fn step(&mut self, roll: f64) -> Step {
        let p = self.propensity;
        let step = if self.views == 0 {
            Step::View
        } else if self.cart_adds > 0
            && roll < 0.15 + 0.55 * p + 0.02 * f64::from(self.views.min(10))
        {
            Step::Purchase
        } else if roll < 0.75 - 0.35 * p {
            Step::View
        } else {
            Step::AddToCart
        };
        match step {
            Step::View => self.views += 1,
            Step::AddToCart => self.cart_adds += 1,
            Step::Purchase => {}
        }
        step
    }

    /// Whether the shopper leaves after `step`, from a uniform `roll`: unlikely buyers leave
    /// sooner, and most buyers leave after paying.
    pub(super) fn leaves(&self, step: Step, roll: f64) -> bool {
        match step {
            Step::Purchase => roll < 0.7,
            _ => roll < 0.06 + 0.30 * (1.0 - self.propensity),
        }
    }
}
