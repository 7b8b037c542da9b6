//! Values in the binary forms COPY takes that tokio-postgres does not send by itself:
//! amounts in cents as `numeric`, a score's features as one `double precision[]`.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use clickflow_model::FEATURE_COUNT;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};

/// An amount in cents, sent as a `numeric` of scale 2 (what `numeric(18,2)` columns hold).
///
/// COPY takes every value in the column's own binary form, and tokio-postgres has none for
/// `numeric` without a decimal crate; the form is small: base-10000 digits, most significant
/// first, the weight of the first, a sign and the display scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cents(pub(super) i64);

impl Cents {
    /// The base-10000 digits of the amount in currency units, most significant first, and
    /// the weight (the power of 10,000) of the first: without leading or trailing zero
    /// digits, as PostgreSQL itself sends them.
    fn digits(self) -> (Vec<i16>, i16) {
        let magnitude = self.0.unsigned_abs();
        let (mut units, cents) = (magnitude / 100, magnitude % 100);
        let mut digits = Vec::new();
        while units > 0 {
            digits.push((units % 10_000) as i16);
            units /= 10_000;
        }
        digits.reverse();
        let weight = digits.len() as i16 - 1;
        digits.push((cents * 100) as i16);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        match digits.is_empty() {
            true => (digits, 0),
            false => (digits, weight),
        }
    }
}

impl ToSql for Cents {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        const POSITIVE: u16 = 0x0000;
        const NEGATIVE: u16 = 0x4000;
        let (digits, weight) = self.digits();
        out.put_i16(digits.len() as i16);
        out.put_i16(weight);
        out.put_u16(if self.0 < 0 { NEGATIVE } else { POSITIVE });
        out.put_u16(2);
        for digit in digits {
            out.put_i16(digit);
        }
        Ok(IsNull::No)
    }

    accepts!(NUMERIC);
    to_sql_checked!();
}

/// A score's features, sent as one `double precision[]` (tokio-postgres sends arrays of a
/// fixed size only with a feature that brings another crate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct FeatureArray(pub(super) [f64; FEATURE_COUNT]);

impl ToSql for FeatureArray {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        <&[f64] as ToSql>::to_sql(&&self.0[..], ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&[f64] as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::schema::connect;
    use crate::postgres::testing::{block_on, scratch_database};

    #[test]
    fn digits_are_base_ten_thousand_without_zeros_at_either_end() {
        assert_eq!(Cents(12_345).digits(), (vec![123, 4500], 0));
        assert_eq!(Cents(5).digits(), (vec![500], -1));
        assert_eq!(Cents(100_000_000).digits(), (vec![100], 1));
        assert_eq!(Cents(0).digits(), (vec![], 0));
        assert_eq!(Cents(-1_000_001).digits(), (vec![1, 0, 100], 1));
    }

    /// The server reads every amount back as the text of cents over a hundred, and the
    /// features as they were.
    #[test]
    fn the_server_reads_the_values_it_is_sent() {
        let (_db, url) = scratch_database("numeric_cents");
        block_on(async {
            let client = connect(&url).await.unwrap();
            let amounts = [
                0,
                1,
                5,
                99,
                100,
                12_345,
                -12_345,
                1_000_000,
                -1_000_001,
                999_999_999_999,
                i64::MAX,
                i64::MIN + 1,
            ];
            for cents in amounts {
                let text: String = client
                    .query_one("SELECT $1::numeric::text", &[&Cents(cents)])
                    .await
                    .unwrap()
                    .get(0);
                let expected = format!(
                    "{}{}.{:02}",
                    if cents < 0 { "-" } else { "" },
                    cents.unsigned_abs() / 100,
                    cents.unsigned_abs() % 100
                );
                assert_eq!(text, expected, "{cents} cents");
            }
            let features = FeatureArray([1.5, 0.0, -2.25, 1e-9, 3.0, 4.0, 5.0, 6.0]);
            let back: Vec<f64> = client
                .query_one("SELECT $1::double precision[]", &[&features])
                .await
                .unwrap()
                .get(0);
            assert_eq!(back, features.0);
        });
    }
}
