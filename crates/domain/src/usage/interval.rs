//! Checking a requested insights range and cutting it into intervals, the
//! way Coder's insights endpoints do (see docs/insights.md, "Ranges and
//! intervals"), and bounding a read's range by the usage retention (see
//! docs/insights.md, "How long a range may be"). Pure: the current time is
//! an argument.

use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use super::Intervals;
use super::minutes::{hour_of, hour_start};
use crate::ports::TimeRange;

/// A range parameter was refused; `field` names the query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RangeError {
    /// The query parameter at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn refuse<T>(field: &'static str, reason: impl Into<String>) -> Result<T, RangeError> {
    Err(RangeError {
        field,
        reason: reason.into(),
    })
}

/// How a range is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntervalKind {
    /// One day, from midnight in the range's offset.
    Day,
    /// Seven days, from midnight in the range's offset.
    Week,
}

impl IntervalKind {
    /// How long one interval of this kind is.
    pub fn length(self) -> Duration {
        match self {
            Self::Day => Duration::DAY,
            Self::Week => Duration::WEEK,
        }
    }

    /// `day`, `week`, or empty for `day` (Coder's default).
    pub fn parse(s: &str) -> Result<Self, RangeError> {
        match s {
            "" | "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            other => refuse("interval", format!("must be one of [day week], got {other:?}")),
        }
    }
}

/// Go's zero time, which Coder refuses.
const GO_ZERO_TIME: OffsetDateTime = datetime!(0001-01-01 0:00 UTC);

/// Parses an RFC 3339 query parameter, keeping its offset.
pub fn parse_time(field: &'static str, value: &str) -> Result<OffsetDateTime, RangeError> {
    OffsetDateTime::parse(value, &Rfc3339).or_else(|e| {
        refuse(
            field,
            format!("must be a valid RFC 3339 time such as 2026-11-02T00:00:00+02:00 ({e}), got {value:?}"),
        )
    })
}

/// Checks `start` and `end` as Coder does, against `now`:
/// - neither is Go's zero time;
/// - neither is after the end of the current UTC hour;
/// - `start` is at 00:00:00 in its offset, and so is `end` unless `end` is on
///   today's date (today in `end`'s offset), where it may be any whole hour;
/// - `end` is after `start` (Coder accepts an empty range; tally refuses it);
/// - both are whole seconds (tally's addition: every figure is then exact).
pub fn check_range(
    start: OffsetDateTime,
    end: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<TimeRange, RangeError> {
    let latest = hour_start(hour_of(now)) + Duration::HOUR;
    for (field, t) in [("start_time", start), ("end_time", end)] {
        if t == GO_ZERO_TIME {
            return refuse(field, "must not be zero");
        }
        if t > latest {
            return refuse(field, "must not be in the future");
        }
        if t.nanosecond() != 0 {
            return refuse(field, format!("must be a whole second, got {t}"));
        }
        let today = now.to_offset(t.offset()).date();
        let zero_hour = field == "start_time" || t.date() != today;
        let (h, m, s) = (t.hour(), t.minute(), t.second());
        if zero_hour && (h, m, s) != (0, 0, 0) {
            return refuse(field, format!("must have the clock set to 00:00:00, got {t}"));
        }
        if (m, s) != (0, 0) {
            return refuse(field, format!("must have the clock set to {h:02}:00:00, got {t}"));
        }
    }
    if end < start {
        return refuse("end_time", "must be after start_time");
    }
    if end == start {
        return refuse("end_time", "must be after start_time (the range is empty)");
    }
    Ok(TimeRange { from: start, to: end })
}

/// Coder's rule for week intervals: the last interval has at least 6 days,
/// unless the range is whole weeks.
fn last_week_has_six_days(start: OffsetDateTime, end: OffsetDateTime) -> bool {
    let rest = (end - start).whole_nanoseconds() % Duration::WEEK.whole_nanoseconds();
    rest == 0 || rest >= Duration::days(6).whole_nanoseconds() || start + Duration::days(6) == end
}

/// Cuts a checked range into intervals of `kind` starting at `range.from`
/// (midnight in its offset); the last one ends at `range.to` and may be
/// shorter. Offsets are fixed, so a day is always 24 hours.
pub fn intervals(range: TimeRange, kind: IntervalKind) -> Result<Intervals, RangeError> {
    if kind == IntervalKind::Week && !last_week_has_six_days(range.from, range.to) {
        return refuse("interval", "the last week interval must have at least 6 days");
    }
    let mut bounds = vec![range.from];
    let mut next = range.from + kind.length();
    while next < range.to {
        bounds.push(next);
        next += kind.length();
    }
    bounds.push(range.to);
    Intervals::new(bounds).map_err(|reason| RangeError {
        field: "start_time",
        reason,
    })
}

/// The longest range a rollup read takes: the usage retention plus one day,
/// so that "the last N days" up to the current hour (N midnights back, and
/// an end up to the next midnight) works for every N up to the retention.
/// The work of a read grows with its range, and nothing older than the
/// retention is kept to be read.
pub fn max_range(retention: Duration) -> Duration {
    retention.saturating_add(Duration::DAY)
}

/// Refuses a range longer than [`max_range`] of `retention`, naming
/// `start_time` (the end is the one the "today" rules pin down).
pub fn check_length(range: TimeRange, retention: Duration) -> Result<TimeRange, RangeError> {
    let longest = max_range(retention);
    if range.to - range.from > longest {
        return refuse(
            "start_time",
            format!(
                "must be at most {} before end_time (the usage retention, --retention-usage, of {} \
                 plus one day: nothing older is kept), got {}",
                describe(longest),
                describe(retention),
                describe(range.to - range.from),
            ),
        );
    }
    Ok(range)
}

/// The first hour the usage rollup keeps at `now`: a purge deletes the
/// rollup's hours that start before it.
pub fn usage_horizon(now: OffsetDateTime, retention: Duration) -> OffsetDateTime {
    match now.checked_sub(retention) {
        Some(t) => hour_start(hour_of(t)),
        None => PrimitiveDateTime::MIN.assume_utc(),
    }
}

/// The part of `range` whose figures the rollup holds at `now`: from the
/// usage horizon to the end of the current hour (as no other read looks
/// past it). `None` when nothing of `range` is in it.
pub fn retained(range: TimeRange, now: OffsetDateTime, retention: Duration) -> Option<TimeRange> {
    let from = range.from.max(usage_horizon(now, retention));
    let to = range.to.min(hour_start(hour_of(now)) + Duration::HOUR);
    (from < to).then_some(TimeRange { from, to })
}

/// A length as days, hours or seconds, the largest unit that is exact.
fn describe(d: Duration) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if d.whole_seconds() % 86_400 == 0 {
        plural(d.whole_days(), "day")
    } else if d.whole_seconds() % 3600 == 0 {
        plural(d.whole_hours(), "hour")
    } else {
        plural(d.whole_seconds(), "second")
    }
}
