//! The shop's products: popularity, categories, and products bought together.
//!
//! Popularity is Zipf-like (exponent 1.1) over product numbers. Products belong to
//! categories of about 50 (at most 40 categories), spread by a hash so that every category
//! has popular and rare products. A visit browses mostly within one category and now and
//! then a second one: 75% of its fresh views come from its main category, 15% from its
//! second, 10% from the whole shop, each by popularity. Every product has a companion in
//! another category (a charger to a phone): a visit with something in its cart is shown the
//! companion of its latest cart item for a third of its fresh views, and a second item put
//! into the cart is the first one's companion most of the time. That is the structure a
//! session-based recommender can learn, and what `clickflow evaluate-recs` measures it on.

use rand::Rng;

/// Products per category, roughly.
const PER_CATEGORY: u32 = 50;
/// Most categories a shop has.
const MAX_CATEGORIES: u32 = 40;
/// Shares of a visit's fresh views from its main and second category (the rest: anywhere).
const MAIN_SHARE: f64 = 0.75;
const SECOND_SHARE: f64 = 0.15;
/// Share of fresh views that show the latest cart item's companion.
pub(super) const CROSS_SELL_VIEW: f64 = 0.33;
/// Share of second cart items that are the first one's companion.
pub(super) const CROSS_SELL_CART: f64 = 0.7;

/// Products, their categories and companions.
pub(super) struct Catalog {
    /// Cumulative popularity over all products.
    everywhere: Vec<f64>,
    /// Per category: its products, most popular first, with their cumulative popularity.
    categories: Vec<(Vec<u32>, Vec<f64>)>,
    category_of: Vec<u32>,
}

impl Catalog {
    /// A catalog of `products` products.
    pub(super) fn new(products: u32) -> Catalog {
        let products = products.max(1);
        let count = (products / PER_CATEGORY).clamp(1, MAX_CATEGORIES);
        let category_of: Vec<u32> = (0..products)
            .map(|p| (mix(p) % u64::from(count)) as u32)
            .collect();
        let weight = |p: u32| 1.0 / f64::from(p + 1).powf(1.1);
        let mut categories: Vec<(Vec<u32>, Vec<f64>)> =
            vec![(Vec::new(), Vec::new()); count as usize];
        for p in 0..products {
            categories[category_of[p as usize] as usize].0.push(p);
        }
        for (members, cdf) in &mut categories {
            *cdf = cumulative(members.iter().map(|&p| weight(p)));
        }
        Catalog {
            everywhere: cumulative((0..products).map(weight)),
            categories,
            category_of,
        }
    }

    /// A product of the whole shop, by popularity.
    pub(super) fn anywhere(&self, rng: &mut impl Rng) -> u32 {
        draw(&self.everywhere, rng.gen()) as u32
    }

    /// The category of `product`.
    pub(super) fn category_of(&self, product: u32) -> u32 {
        self.category_of[product as usize]
    }

    /// A product for a fresh view of a visit browsing `categories` (main, second).
    pub(super) fn browse(&self, rng: &mut impl Rng, (main, second): (u32, u32)) -> u32 {
        let roll: f64 = rng.gen();
        let category = if roll < MAIN_SHARE {
            main
        } else if roll < MAIN_SHARE + SECOND_SHARE {
            second
        } else {
            return self.anywhere(rng);
        };
        let (members, cdf) = &self.categories[category as usize];
        members[draw(cdf, rng.gen())]
    }

    /// The product bought together with `product`: one of the five most popular of another
    /// category (the same one, in a shop of one category), fixed per product.
    pub(super) fn companion(&self, product: u32) -> u32 {
        let count = self.categories.len() as u64;
        let own = u64::from(self.category_of(product));
        let hashed = mix(product.wrapping_add(0x5bd1_e995));
        let other = if count > 1 {
            (own + 1 + hashed % (count - 1)) % count
        } else {
            own
        };
        let (members, _) = &self.categories[other as usize];
        members[((hashed >> 32) % members.len().min(5) as u64) as usize]
    }
}

/// Fixed scrambling of a product number.
fn mix(product: u32) -> u64 {
    u64::from(product)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let weights: Vec<f64> = weights.collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// The index a uniform draw `u` falls on in `cdf`.
fn draw(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn categories_hold_every_product_and_companions_lie_elsewhere() {
        let catalog = Catalog::new(1_000);
        assert_eq!(catalog.categories.len(), 20);
        let held: usize = catalog.categories.iter().map(|(m, _)| m.len()).sum();
        assert_eq!(held, 1_000);
        for p in 0..1_000 {
            let companion = catalog.companion(p);
            assert_ne!(catalog.category_of(p), catalog.category_of(companion));
        }
        // A visit's fresh views stay mostly in its categories.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let inside = (0..10_000)
            .filter(|_| [3, 7].contains(&catalog.category_of(catalog.browse(&mut rng, (3, 7)))))
            .count();
        assert!((9_000..9_300).contains(&inside), "{inside}");
    }
}
