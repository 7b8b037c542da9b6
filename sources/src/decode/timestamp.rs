//! RFC 3339 timestamps to Unix milliseconds.
//!
//! Nearly every event carries a timestamp shaped `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or with a
//! `±HH:MM` offset). Those are read here directly, in a few dozen instructions; anything else
//! (leap seconds, lowercase separators, odd precision...) goes to the `time` crate's full
//! parser, which defines the accepted language. A property test checks that both agree.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::event::EventTime;

/// Parses an RFC 3339 timestamp into Unix milliseconds (sub-millisecond digits truncated).
pub(crate) fn parse_rfc3339_millis(text: &str) -> Option<EventTime> {
    fast(text.as_bytes()).or_else(|| {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        EventTime::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    })
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// The common shape only; `None` sends the text to the full parser.
fn fast(b: &[u8]) -> Option<EventTime> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let length = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if length == 0 || length > 9 {
            return None;
        }
        let kept = &fraction[..length.min(3)];
        millis = digits(kept)? * 10i64.pow(3 - kept.len() as u32);
        rest = &fraction[length..];
    }
    let offset_minutes = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 60 + minutes;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (the classic era-based computation).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slow(text: &str) -> Option<EventTime> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        EventTime::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_full_parser(
            year in 0i64..10_000, month in 0i64..14, day in 0i64..33, hour in 0i64..25, minute in 0i64..61,
            second in 0i64..61, fraction in proptest::option::of("[0-9]{1,10}"),
            offset in prop_oneof![Just("Z".to_string()), (0i64..25, 0i64..61, any::<bool>()).prop_map(|(h, m, neg)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }))],
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{offset}");
            if let Some(fast) = fast(text.as_bytes()) {
                prop_assert_eq!(Some(fast), slow(&text), "{}", text);
            }
            prop_assert_eq!(parse_rfc3339_millis(&text), slow(&text), "{}", text);
        }
    }

    #[test]
    fn common_shapes_take_the_fast_path() {
        assert_eq!(fast(b"2025-07-08T05:35:12.345Z"), Some(1_751_952_912_345));
        assert_eq!(
            fast(b"2025-07-08T07:35:12.345+02:00"),
            Some(1_751_952_912_345)
        );
        assert_eq!(fast(b"2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(fast(b"2023-02-29T00:00:00Z"), None);
    }
}
