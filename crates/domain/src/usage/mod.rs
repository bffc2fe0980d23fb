//! App usage insights: the rules of docs/insights.md as code.
//!
//! - [`minutes`]: which minutes and hours a session covers, as 60-bit masks;
//! - [`export`]: the raw export, paged by start hour;
//! - [`interval`]: checking a requested range and cutting it into day or
//!   week intervals (pure arithmetic, no clock);
//! - [`rollup`]: what the rows of one start hour contribute to the hourly
//!   usage rollup, and the figures read back from rollup rows;
//! - [`packed`]: day rows packed per UTC day (and app) for long reads, and
//!   the figures combined from them;
//! - [`reference`](mod@reference): the same figures computed straight from stored rows by
//!   plain code, the oracle the stores are tested against.

pub mod export;
pub mod interval;
pub mod minutes;
pub mod packed;
pub mod reference;
pub mod rollup;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::appstats::{AccessMethod, StatsReport};
use crate::ports::TimeRange;

pub use self::interval::{IntervalKind, RangeError};
pub use self::minutes::{HourUsage, MINUTES_PER_HOUR};

/// How many sessions a stored row stands for: its own count (a rolled-up
/// row counts every short session folded into it).
pub fn row_sessions(row: &StatsReport) -> u64 {
    row.sessions
}

/// Contiguous intervals `[b0, b1), [b1, b2), ...` over a range, every bound
/// a whole minute (so minute masks split exactly at them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervals {
    bounds: Vec<OffsetDateTime>,
}

impl Intervals {
    /// Refuses fewer than two bounds, bounds not strictly increasing, and
    /// bounds that are not whole minutes.
    pub fn new(bounds: Vec<OffsetDateTime>) -> Result<Self, String> {
        if bounds.len() < 2 {
            return Err(format!(
                "intervals need at least two bounds, got {}",
                bounds.len()
            ));
        }
        if let Some(b) = bounds
            .iter()
            .find(|b| b.unix_timestamp_nanos() % 60_000_000_000 != 0)
        {
            return Err(format!("interval bound {b} is not a whole minute"));
        }
        if let Some(w) = bounds.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "interval bounds must increase: {} is not before {}",
                w[0], w[1]
            ));
        }
        Ok(Self { bounds })
    }

    /// One interval covering `range` (both ends whole minutes).
    pub fn single(range: TimeRange) -> Result<Self, String> {
        Self::new(vec![range.from, range.to])
    }

    /// One interval over the minutes `range` touches, as a session with the
    /// same bounds covers them: from the minute that holds `range.from`
    /// through the minute that holds the last instant before `range.to`. A
    /// range off whole minutes is so widened to them. Only a range inside
    /// the last representable minute (9999-12-31T23:59Z) is refused.
    pub fn covering(range: TimeRange) -> Result<Self, String> {
        const LAST_MINUTE: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59 UTC);
        let at = |minute: i64| OffsetDateTime::from_unix_timestamp(minute * 60).unwrap_or(LAST_MINUTE);
        Self::new(vec![
            at(minutes::minute_of(range.from)),
            at(minutes::minute_ceil(range.to)),
        ])
    }

    /// The interval bounds, in order: interval i is `[bounds[i], bounds[i + 1])`.
    pub fn bounds(&self) -> &[OffsetDateTime] {
        &self.bounds
    }

    /// Number of intervals.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Never true: there is always at least one interval.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole range.
    pub fn range(&self) -> TimeRange {
        TimeRange {
            from: self.bounds[0],
            to: self.bounds[self.bounds.len() - 1],
        }
    }

    /// Each interval as a range, in order.
    pub fn iter(&self) -> impl Iterator<Item = TimeRange> + '_ {
        self.bounds.windows(2).map(|w| TimeRange { from: w[0], to: w[1] })
    }

    /// The interval that contains `t`, if any.
    pub fn index_of(&self, t: OffsetDateTime) -> Option<usize> {
        if t < self.bounds[0] || t >= self.bounds[self.bounds.len() - 1] {
            return None;
        }
        Some(self.bounds.partition_point(|b| *b <= t) - 1)
    }
}

/// Figures of one app (or of everything) over one interval or a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageFigures {
    /// 60 × distinct (user, minute) pairs covered.
    pub usage_seconds: u64,
    /// Real sessions (a rolled-up row counts all it stands for), counted in
    /// the interval that holds their session's start hour.
    pub sessions: u64,
    /// Requests, counted like sessions.
    pub requests: u64,
    /// Distinct users with any usage.
    pub unique_users: u64,
}

/// One app's figures over the whole range and per interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppUsageSeries {
    /// How the app was reached.
    pub access_method: AccessMethod,
    /// The app's slug, or its port.
    pub slug_or_port: String,
    /// The figures over the whole range.
    pub total: UsageFigures,
    /// One entry per interval, in order; intervals without usage are zero.
    pub intervals: Vec<UsageFigures>,
}

/// Distinct users with any usage, over the range and per interval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ActiveUsers {
    /// Distinct users over the whole range.
    pub total: u64,
    /// Distinct users per interval, in order, zeros included.
    pub intervals: Vec<u64>,
}

/// One user's activity over a range, over all apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserActivity {
    /// The user.
    pub user_id: Uuid,
    /// 60 × distinct minutes covered by any of the user's sessions.
    pub usage_seconds: u64,
    /// The user's real sessions, over all apps.
    pub sessions: u64,
    /// The user's requests, over all apps.
    pub requests: u64,
}

/// Retention of each kind of data, and how much one purge round may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Raw app stat rows, by the hour their session started.
    pub app_stats: Duration,
    /// Hourly usage rollup rows.
    pub usage: Duration,
    /// Published snapshots, by the end of their period.
    pub snapshots: Duration,
    /// At most this much data (by time) of each table per round; whole hours.
    pub max_batch: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            app_stats: Duration::days(90),
            usage: Duration::days(365),
            snapshots: Duration::days(365),
            max_batch: Duration::hours(4),
        }
    }
}

/// What one purge round deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Another replica held the rollup; nothing was done.
    pub skipped: bool,
    /// Raw app stat rows deleted.
    pub app_stats_rows: u64,
    /// Rollup rows deleted.
    pub usage_rows: u64,
    /// Published snapshots deleted.
    pub snapshots: u64,
}

/// What one rollup tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Another replica held the rollup; nothing was done.
    pub skipped: bool,
    /// Start hours whose rows were rolled up again.
    pub start_hours: u64,
    /// Rollup rows written (inserted or changed).
    pub rows_changed: u64,
}

/// Orders app series the way every store returns them: most unique users,
/// then most usage, then method name, then slug bytes.
pub fn sort_app_series(series: &mut [AppUsageSeries]) {
    series.sort_by(|a, b| {
        (
            Reverse(a.total.unique_users),
            Reverse(a.total.usage_seconds),
            a.access_method.as_str(),
            a.slug_or_port.as_bytes(),
        )
            .cmp(&(
                Reverse(b.total.unique_users),
                Reverse(b.total.usage_seconds),
                b.access_method.as_str(),
                b.slug_or_port.as_bytes(),
            ))
    });
}

/// Orders user activity most usage first, then by user id; keeps `limit`.
pub fn top_users(mut users: Vec<UserActivity>, limit: usize) -> Vec<UserActivity> {
    users.sort_by_key(|u| (Reverse(u.usage_seconds), u.user_id));
    users.truncate(limit);
    users
}
