//! Minutes and hours a session covers, as 60-bit masks per UTC hour.
//!
//! Hours are counted as whole hours since the Unix epoch (`i64`); bit `m` of
//! an hour's mask is the minute `[hour + m min, hour + (m + 1) min)`.

use time::OffsetDateTime;

/// Minutes in an hour: the bits of an hour's minute mask.
pub const MINUTES_PER_HOUR: u32 = 60;
/// Every minute of an hour.
pub const FULL_HOUR: u64 = (1 << MINUTES_PER_HOUR) - 1;

const NANOS_PER_MINUTE: i128 = 60_000_000_000;

/// Usage of one (user, app) in one hour: the minutes covered, and the
/// sessions and requests of the sessions that started in that hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HourUsage {
    /// Bit m set when minute m of the hour is covered.
    pub minutes: u64,
    /// Sessions that started in the hour.
    pub sessions: u64,
    /// Requests of the sessions that started in the hour.
    pub requests: u64,
}

/// The hour (since the epoch) that contains `t`.
pub fn hour_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(3600)
}

/// The start of hour `hour`, in UTC.
pub fn hour_start(hour: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(hour * 3600).expect("hours of valid times are valid")
}

/// The minute (since the epoch) that contains `t`.
pub fn minute_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(60)
}

/// The first minute (since the epoch) that starts at or after `t`.
pub fn minute_ceil(t: OffsetDateTime) -> i64 {
    let ns = t.unix_timestamp_nanos();
    (ns.div_euclid(NANOS_PER_MINUTE) + i128::from(ns.rem_euclid(NANOS_PER_MINUTE) != 0)) as i64
}

/// Bits `a..b` of a mask (`0 <= a, b <= 60`); empty when `b <= a`.
pub fn bits(a: u32, b: u32) -> u64 {
    if b <= a {
        return 0;
    }
    let upto = |n: u32| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    upto(b) & !upto(a)
}

/// The minutes of `hour` whose start lies in `[from, to)` (any times; only
/// whole-minute bounds split a minute exactly).
pub fn mask_within(hour: i64, from_minute: i64, to_minute: i64) -> u64 {
    let base = hour * i64::from(MINUTES_PER_HOUR);
    let clamp = |m: i64| (m - base).clamp(0, i64::from(MINUTES_PER_HOUR)) as u32;
    bits(clamp(from_minute), clamp(to_minute))
}

/// The minutes a session `[start, end]` covers: `[minute_of(start),
/// minute_ceil(end))`, the minutes from its start truncated to the minute
/// up to its end (none when that is empty).
pub fn covered_minutes(start: OffsetDateTime, end: OffsetDateTime) -> (i64, i64) {
    let first = minute_of(start);
    (first, minute_ceil(end).max(first))
}

/// The hours a session covers with the minutes it covers in each, its own
/// (start) hour first; a session covering no minute yields its start hour
/// with an empty mask, so its sessions and requests still have a place.
pub fn covered_hours(start: OffsetDateTime, end: OffsetDateTime) -> impl Iterator<Item = (i64, u64)> {
    let (first, past) = covered_minutes(start, end);
    let per_hour = i64::from(MINUTES_PER_HOUR);
    let first_hour = first.div_euclid(per_hour);
    let last_hour = if past > first {
        (past - 1).div_euclid(per_hour)
    } else {
        first_hour
    };
    (first_hour..=last_hour).map(move |h| (h, mask_within(h, first, past)))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn hours(start: OffsetDateTime, end: OffsetDateTime) -> Vec<(i64, u64)> {
        covered_hours(start, end).collect()
    }

    #[test]
    fn a_session_covers_its_start_minute_up_to_its_end() {
        let h = hour_of(datetime!(2026-11-25 10:00 UTC));
        // 10:00:30 to 10:02:00 covers 10:00 and 10:01.
        assert_eq!(
            hours(
                datetime!(2026-11-25 10:00:30 UTC),
                datetime!(2026-11-25 10:02 UTC)
            ),
            vec![(h, 0b11)]
        );
        // A second inside one minute covers that minute.
        assert_eq!(
            hours(
                datetime!(2026-11-25 10:05:30 UTC),
                datetime!(2026-11-25 10:05:31 UTC)
            ),
            vec![(h, 1 << 5)]
        );
        // Zero length on a whole minute covers nothing, but keeps its hour.
        assert_eq!(
            hours(datetime!(2026-11-25 10:07 UTC), datetime!(2026-11-25 10:07 UTC)),
            vec![(h, 0)]
        );
        // One nanosecond past a minute covers it.
        assert_eq!(
            hours(
                datetime!(2026-11-25 10:59 UTC),
                datetime!(2026-11-25 11:00:00.000000001 UTC)
            ),
            vec![(h, 1 << 59), (h + 1, 1)]
        );
    }

    #[test]
    fn a_long_session_covers_whole_hours_between_its_ends() {
        let h = hour_of(datetime!(2026-11-25 10:00 UTC));
        assert_eq!(
            hours(
                datetime!(2026-11-25 10:58:10 UTC),
                datetime!(2026-11-25 13:00 UTC)
            ),
            vec![(h, bits(58, 60)), (h + 1, FULL_HOUR), (h + 2, FULL_HOUR)]
        );
    }

    #[test]
    fn masks_split_at_whole_minutes() {
        let h = 100;
        let base = h * 60;
        assert_eq!(mask_within(h, base - 5, base + 3), 0b111);
        assert_eq!(mask_within(h, base + 30, base + 90), bits(30, 60));
        assert_eq!(mask_within(h, base + 61, base + 90), 0);
        assert_eq!(bits(0, 60), FULL_HOUR);
        assert_eq!(bits(7, 7), 0);
    }

    #[test]
    fn minute_ceil_rounds_up_only_partial_minutes() {
        assert_eq!(minute_ceil(datetime!(1970-01-01 0:01 UTC)), 1);
        assert_eq!(minute_ceil(datetime!(1970-01-01 0:01:00.000001 UTC)), 2);
        assert_eq!(minute_of(datetime!(1970-01-01 0:01:59.9 UTC)), 1);
    }
}
