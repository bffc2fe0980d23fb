//! The insights figures computed straight from stored rows, by plain code:
//! every covered minute listed one by one, no masks, no rollup. This is the
//! oracle the rollup (both stores) is tested against; it follows
//! docs/insights.md word for word and is meant to be read, not to be fast.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::minutes::{hour_of, hour_start};
use super::{
    ActiveUsers, AppUsageSeries, Intervals, UsageFigures, UserActivity, row_sessions, sort_app_series,
    top_users,
};
use crate::appstats::{AccessMethod, StatsReport};

type App = (AccessMethod, String);

/// Whole minutes since the epoch.
fn minute(t: time::OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos().div_euclid(60_000_000_000)
}

/// The minutes a row covers: every whole minute `m` with
/// `truncate_to_minute(start) <= m < end`.
fn covered(row: &StatsReport) -> Vec<i128> {
    let end = row
        .session_ended_at
        .unwrap_or(row.session_started_at)
        .unix_timestamp_nanos();
    let mut m = minute(row.session_started_at);
    let mut out = Vec::new();
    while m * 60_000_000_000 < end {
        out.push(m);
        m += 1;
    }
    out
}

/// The interval a minute falls in.
fn interval_of_minute(intervals: &Intervals, m: i128) -> Option<usize> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(m * 60_000_000_000).ok()?;
    intervals.index_of(t)
}

/// The interval a row's sessions and requests count in: the one containing
/// the start of the UTC hour it started in.
fn interval_of_sessions(intervals: &Intervals, row: &StatsReport) -> Option<usize> {
    intervals.index_of(hour_start(hour_of(row.session_started_at)))
}

#[derive(Default)]
struct Cell {
    /// (user, minute) pairs.
    minutes: BTreeSet<(Uuid, i128)>,
    users: BTreeSet<Uuid>,
    sessions: u64,
    requests: u64,
}

impl Cell {
    fn figures(&self) -> UsageFigures {
        UsageFigures {
            usage_seconds: 60 * self.minutes.len() as u64,
            sessions: self.sessions,
            requests: self.requests,
            unique_users: self.users.len() as u64,
        }
    }
}

/// Per app and interval, then per app over the whole range.
fn cells(rows: &[StatsReport], intervals: &Intervals) -> BTreeMap<App, (Cell, Vec<Cell>)> {
    let mut apps: BTreeMap<App, (Cell, Vec<Cell>)> = BTreeMap::new();
    for row in rows {
        let (_, per) = apps
            .entry((row.access_method, row.slug_or_port.clone()))
            .or_insert_with(|| {
                (
                    Cell::default(),
                    (0..intervals.len()).map(|_| Cell::default()).collect(),
                )
            });
        for m in covered(row) {
            if let Some(i) = interval_of_minute(intervals, m) {
                per[i].minutes.insert((row.user_id, m));
                per[i].users.insert(row.user_id);
            }
        }
        if let Some(i) = interval_of_sessions(intervals, row) {
            per[i].sessions += row_sessions(row);
            per[i].requests += row.requests;
            per[i].users.insert(row.user_id);
        }
    }
    // Apps without any usage in the range are not listed.
    apps.retain(|_, (_, per)| per.iter().any(|c| !c.users.is_empty()));
    for (total, per) in apps.values_mut() {
        for cell in per.iter() {
            total.minutes.extend(cell.minutes.iter().copied());
            total.users.extend(cell.users.iter().copied());
            total.sessions += cell.sessions;
            total.requests += cell.requests;
        }
    }
    apps
}

/// Per app: figures over the range and per interval.
pub fn app_usage(rows: &[StatsReport], intervals: &Intervals) -> Vec<AppUsageSeries> {
    let mut series: Vec<AppUsageSeries> = cells(rows, intervals)
        .into_iter()
        .map(|((access_method, slug_or_port), (total, per))| AppUsageSeries {
            access_method,
            slug_or_port,
            total: total.figures(),
            intervals: per.iter().map(Cell::figures).collect(),
        })
        .collect();
    sort_app_series(&mut series);
    series
}

/// Distinct users with any usage, over the range and per interval.
pub fn active_users(rows: &[StatsReport], intervals: &Intervals) -> ActiveUsers {
    let mut per: Vec<BTreeSet<Uuid>> = vec![BTreeSet::new(); intervals.len()];
    for (_, (_, cells)) in cells(rows, intervals) {
        for (i, cell) in cells.iter().enumerate() {
            per[i].extend(cell.users.iter().copied());
        }
    }
    let total: BTreeSet<Uuid> = per.iter().flatten().copied().collect();
    ActiveUsers {
        total: total.len() as u64,
        intervals: per.iter().map(|s| s.len() as u64).collect(),
    }
}

/// Per user over the whole range, over all apps (a minute counts once
/// however many apps touch it); most usage first, at most `limit`.
pub fn user_activity(rows: &[StatsReport], intervals: &Intervals, limit: usize) -> Vec<UserActivity> {
    let mut minutes: BTreeMap<Uuid, BTreeSet<i128>> = BTreeMap::new();
    let mut counts: BTreeMap<Uuid, (u64, u64)> = BTreeMap::new();
    for row in rows {
        for m in covered(row) {
            if interval_of_minute(intervals, m).is_some() {
                minutes.entry(row.user_id).or_default().insert(m);
            }
        }
        if interval_of_sessions(intervals, row).is_some() {
            let c = counts.entry(row.user_id).or_default();
            c.0 += row_sessions(row);
            c.1 += row.requests;
        }
    }
    let users: BTreeSet<Uuid> = minutes.keys().chain(counts.keys()).copied().collect();
    let activity = users
        .into_iter()
        .map(|user_id| {
            let (sessions, requests) = counts.get(&user_id).copied().unwrap_or_default();
            UserActivity {
                user_id,
                usage_seconds: 60 * minutes.get(&user_id).map_or(0, |m| m.len() as u64),
                sessions,
                requests,
            }
        })
        .collect();
    top_users(activity, limit)
}
