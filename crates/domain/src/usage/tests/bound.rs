//! The range bound of the rollup reads: at most the usage retention plus a
//! day long, and the old route's range clipped to what the rollup keeps.

use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, Time, UtcOffset};

use super::super::IntervalKind;
use super::super::interval::{check_length, check_range, intervals, max_range, retained, usage_horizon};
use super::super::minutes::{hour_of, hour_start};
use crate::ports::TimeRange;

const NOW: OffsetDateTime = datetime!(2026-11-25 14:20:05 UTC);
const YEAR: Duration = Duration::days(365);

fn range(from: OffsetDateTime, to: OffsetDateTime) -> TimeRange {
    TimeRange::new(from, to).unwrap()
}

/// "The last `days` days" in `offset` at `now`: from midnight `days` days
/// before today, to the latest whole hour of the offset the checks take
/// (the end of the current UTC hour, or the local hour before it in an
/// offset such as +05:45).
fn last_days(now: OffsetDateTime, offset: UtcOffset, days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let local = now.to_offset(offset);
    let start = (local.date() - Duration::days(days))
        .midnight()
        .assume_offset(offset);
    let latest = (hour_start(hour_of(now)) + Duration::HOUR).to_offset(offset);
    let end = latest.replace_time(Time::from_hms(latest.hour(), 0, 0).unwrap());
    (start, end)
}

#[test]
fn a_range_may_be_the_retention_plus_a_day_long() {
    let end = datetime!(2026-11-25 00:00 UTC);
    assert_eq!(max_range(YEAR), Duration::days(366));
    check_length(range(end - Duration::days(366), end), YEAR).unwrap();
    let e = check_length(range(end - Duration::days(367), end), YEAR).unwrap_err();
    assert_eq!(e.field, "start_time");
    assert!(e.reason.contains("366 days"), "{}", e.reason);
    assert!(e.reason.contains("retention"), "{}", e.reason);
    assert!(e.reason.contains("got 367 days"), "{}", e.reason);

    // From year 1 (the day after Go's zero time) to now: refused whole.
    let e = check_length(range(datetime!(0001-01-02 00:00 UTC), end), YEAR).unwrap_err();
    assert_eq!(e.field, "start_time");

    // A short retention is said in the unit it was given in.
    let e = check_length(range(end - Duration::days(3), end), Duration::hours(36)).unwrap_err();
    assert!(
        e.reason.contains("60 hours") && e.reason.contains("36 hours"),
        "{}",
        e.reason
    );
    // A retention too large to add a day to bounds nothing.
    check_length(range(datetime!(0001-01-02 00:00 UTC), end), Duration::MAX).unwrap();
}

#[test]
fn the_last_365_days_work_at_the_default_retention_in_any_offset() {
    for offset in ["+14:00", "-12:00", "+05:45", "+05:30", "Z"] {
        let offset = if offset == "Z" {
            UtcOffset::UTC
        } else {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let h: i32 = offset[1..3].parse().unwrap();
            let m: i32 = offset[4..6].parse().unwrap();
            UtcOffset::from_whole_seconds(sign * (h * 3600 + m * 60)).unwrap()
        };
        let (start, end) = last_days(NOW, offset, 365);
        let checked = check_range(start, end, NOW).unwrap();
        check_length(checked, YEAR).unwrap();
        assert_eq!(intervals(checked, IntervalKind::Day).unwrap().len(), 366);
    }
}

#[test]
fn the_old_route_reads_only_what_the_rollup_keeps() {
    let horizon = datetime!(2025-11-25 14:00 UTC);
    assert_eq!(usage_horizon(NOW, YEAR), horizon);
    let hour_end = datetime!(2026-11-25 15:00 UTC);
    // Year 1 to year 9999: the retained window.
    let wide = range(datetime!(0001-01-01 00:00 UTC), datetime!(9999-12-31 23:59 UTC));
    assert_eq!(retained(wide, NOW, YEAR), Some(range(horizon, hour_end)));
    // Inside it: unchanged.
    let inside = range(datetime!(2026-11-25 10:00 UTC), datetime!(2026-11-25 11:00 UTC));
    assert_eq!(retained(inside, NOW, YEAR), Some(inside));
    // Wholly before the horizon, or wholly after the current hour: nothing.
    let old = range(datetime!(2020-01-01 00:00 UTC), datetime!(2021-01-01 00:00 UTC));
    assert_eq!(retained(old, NOW, YEAR), None);
    let ahead = range(hour_end, hour_end + Duration::DAY);
    assert_eq!(retained(ahead, NOW, YEAR), None);
    // A retention past the earliest time clips nothing at the start.
    assert_eq!(retained(wide, NOW, Duration::MAX).unwrap().from, wide.from);
}

fn offset() -> impl Strategy<Value = UtcOffset> {
    (-12 * 60i32..=14 * 60).prop_map(|m| UtcOffset::from_whole_seconds(m * 60).unwrap())
}

fn now() -> impl Strategy<Value = OffsetDateTime> {
    (0i64..20 * 365 * 86_400).prop_map(|s| datetime!(2020-01-01 00:00 UTC) + Duration::seconds(s))
}

proptest! {
    /// A checked range passes exactly when it is at most the retention
    /// plus a day long; a refusal names `start_time`.
    #[test]
    fn the_length_rule_is_the_retention_plus_a_day(
        retention_hours in 1i64..(10 * 365 * 24),
        from_s in 0i64..(30 * 365 * 86_400),
        len_s in 1i64..(12 * 365 * 86_400),
    ) {
        let retention = Duration::hours(retention_hours);
        let from = datetime!(2000-01-01 00:00 UTC) + Duration::seconds(from_s);
        let r = range(from, from + Duration::seconds(len_s));
        let fits = Duration::seconds(len_s) <= retention + Duration::DAY;
        match check_length(r, retention) {
            Ok(same) => { prop_assert!(fits); prop_assert_eq!(same, r); }
            Err(e) => { prop_assert!(!fits); prop_assert_eq!(e.field, "start_time"); }
        }
    }

    /// "The last N days" up to the current hour, in any offset, at any
    /// time, passes every check for every N up to the retention (in whole
    /// days), and its day intervals are at most the retention's days + 1.
    #[test]
    fn the_last_n_days_are_accepted_for_n_up_to_the_retention(
        retention_days in 1i64..(3 * 365),
        back in 0.0f64..=1.0,
        offset in offset(),
        now in now(),
    ) {
        let retention = Duration::days(retention_days);
        let days = 1 + ((retention_days - 1) as f64 * back) as i64;
        let (start, end) = last_days(now, offset, days);
        let checked = check_range(start, end, now).unwrap();
        prop_assert_eq!(check_length(checked, retention), Ok(checked));
        let cut = intervals(checked, IntervalKind::Day).unwrap();
        prop_assert!(cut.len() as i64 <= retention_days + 1);
    }

    /// The clipped range holds exactly the instants of the range that lie
    /// between the usage horizon (a whole hour, less than an hour before
    /// now minus the retention) and the current hour's end.
    #[test]
    fn the_clipped_range_is_the_retained_part(
        retention_hours in 1i64..(3 * 365 * 24),
        now in now(),
        from_min in -(4 * 365 * 1440i64)..(365 * 1440),
        len_min in 1i64..(6 * 365 * 1440),
        probe_min in -(5 * 365 * 1440i64)..(2 * 365 * 1440),
    ) {
        let retention = Duration::hours(retention_hours);
        let horizon = usage_horizon(now, retention);
        prop_assert_eq!(horizon, hour_start(hour_of(horizon)));
        prop_assert!(horizon <= now - retention && now - retention - horizon < Duration::HOUR);
        let hour_end = hour_start(hour_of(now)) + Duration::HOUR;
        let from = now + Duration::minutes(from_min);
        let r = range(from, from + Duration::minutes(len_min));
        let clipped = retained(r, now, retention);
        let kept = |t: OffsetDateTime| r.from <= t && t < r.to && horizon <= t && t < hour_end;
        let ns = Duration::NANOSECOND;
        let probes = [
            r.from, r.to - ns, r.to, r.from - ns, horizon - ns, horizon, hour_end - ns, hour_end,
            now + Duration::minutes(probe_min),
        ];
        for t in probes {
            let got = clipped.is_some_and(|c| c.from <= t && t < c.to);
            prop_assert_eq!(got, kept(t), "at {}: {:?}", t, clipped);
        }
        if let Some(c) = clipped {
            prop_assert!(c.from < c.to);
            prop_assert!(c.to - c.from <= retention + Duration::hours(2));
        } else {
            prop_assert!(r.to <= horizon || r.from >= hour_end);
        }
    }
}
