//! The window against a plain model: the same rule in whole nanoseconds.

use proptest::prelude::*;

use super::*;

/// The rule as integer comparisons: a start older than `now - retention`,
/// then a start later than `now + skew`, then an end later than
/// `now + skew`.
fn model(now: i128, skew: i128, retention: i128, start: i128, end: Option<i128>) -> Option<&'static str> {
    if start < now - retention || start > now + skew {
        Some("session_started_at")
    } else if end.is_some_and(|end| end > now + skew) {
        Some("session_ended_at")
    } else {
        None
    }
}

const DAY_NS: i128 = 86_400_000_000_000;

fn at(ns: i128, offset_s: i32) -> OffsetDateTime {
    let offset = time::UtcOffset::from_whole_seconds(offset_s).unwrap();
    OffsetDateTime::from_unix_timestamp_nanos(ns)
        .unwrap()
        .to_offset(offset)
}

proptest! {
    /// Any clock reading, allowance and retention, any start and end around
    /// the window's edges (nanoseconds apart at times), in any offset.
    #[test]
    fn the_window_is_the_model(
        now in 0i128..=200 * 365 * DAY_NS,
        skew in 1i128..=30 * DAY_NS,
        retention in 1i128..=3650 * DAY_NS,
        pick in 0u8..4,
        jitter in -2_000_000_000i128..=2_000_000_000,
        spread in -400 * DAY_NS..=400 * DAY_NS,
        len in proptest::option::of(0i128..=40 * DAY_NS),
        offset_s in -86_399i32..=86_399,
    ) {
        // Starts near either edge, or anywhere around now.
        let start = match pick {
            0 => now - retention + jitter,
            1 => now + skew + jitter,
            2 => now + spread,
            _ => now - retention + spread,
        };
        let end = len.map(|len| start + len);
        let limits = SessionTimeLimits {
            clock_skew: Duration::nanoseconds_i128(skew),
            retention: Duration::nanoseconds_i128(retention),
        };
        // Start and end in different offsets: instants are compared.
        let report = report(at(start, offset_s), end.map(|e| at(e, -offset_s)));
        let got = limits.at(at(now, 0)).check(&report).err().map(|e| e.field);
        prop_assert_eq!(got, model(now, skew, retention, start, end));
    }

    /// What the window takes, `validate` takes too, so an accepted report
    /// is one the stores and the rollup hold.
    #[test]
    fn a_report_the_window_takes_is_valid(
        now in 100 * DAY_NS..=200 * 365 * DAY_NS,
        age in -DAY_NS..=90 * DAY_NS,
        len in proptest::option::of(0i128..=DAY_NS),
    ) {
        let start = now - age;
        let report = report(at(start, 0), len.map(|len| at(start + len, 0)));
        if SessionTimeLimits::default().at(at(now, 0)).check(&report).is_ok() {
            prop_assert_eq!(report.validate(), Ok(()));
        }
    }
}
