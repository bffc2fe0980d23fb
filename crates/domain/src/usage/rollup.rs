//! The hourly usage rollup: what rows contribute to it, how a contribution
//! merges into a stored rollup row, and the figures read back from rollup
//! rows. The in-memory store runs this code; PostgreSQL runs the same rules
//! in SQL (`crates/adapters-postgres/src/usage/`).
//!
//! A rollup row is (user, app, hour) with the hour's minute mask and the
//! sessions and requests of the sessions that *started* in that hour. A tick
//! recomputes, for every start hour some write touched since the last tick,
//! what all rows starting in that hour contribute:
//! - minutes are OR'ed into the stored masks of every hour they cover. A
//!   row's covered minutes only grow (its end only moves forward), so the OR
//!   of everything ever seen is exactly the minutes of the rows as stored,
//!   and a replayed contribution changes nothing;
//! - sessions and requests of the start hour itself are replaced: the rows
//!   starting in that hour are all there (an hour whose rows were purged is
//!   never recomputed), so their sums are the exact figures.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::{HashMap, HashSet};
use uuid::Uuid;

use super::minutes::{HourUsage, covered_hours, hour_start, mask_within, minute_of};
use super::{
    ActiveUsers, AppUsageSeries, Intervals, UsageFigures, UserActivity, row_sessions, sort_app_series,
    top_users,
};
use crate::appstats::{AccessMethod, StatsReport};

/// A (user, app, hour) key of the rollup, borrowing the slug.
pub type RollupKey<'a> = (Uuid, AccessMethod, &'a str, i64);

/// What `rows` contribute to the rollup, per (user, app, hour covered). The
/// first hour a row covers is its start hour, which gets its sessions and
/// requests; later hours get only minutes. Pass all rows of one start hour
/// to get that hour's complete contribution.
pub fn contributions<'a>(
    rows: impl IntoIterator<Item = &'a StatsReport>,
) -> BTreeMap<RollupKey<'a>, HourUsage> {
    let mut out: BTreeMap<RollupKey<'a>, HourUsage> = BTreeMap::new();
    for row in rows {
        let end = row.session_ended_at.unwrap_or(row.session_started_at);
        for (i, (hour, mask)) in covered_hours(row.session_started_at, end).enumerate() {
            let key = (row.user_id, row.access_method, row.slug_or_port.as_str(), hour);
            let usage = out.entry(key).or_default();
            usage.minutes |= mask;
            if i == 0 {
                usage.sessions = usage.sessions.saturating_add(row_sessions(row));
                usage.requests = usage.requests.saturating_add(row.requests);
            }
        }
    }
    out
}

/// Merges a recomputed contribution into a stored rollup row: minutes OR'ed
/// in; when the row's hour is the start hour being recomputed, sessions and
/// requests replaced by the contribution's. Returns whether anything changed.
pub fn merge(stored: &mut HourUsage, contribution: &HourUsage, is_start_hour: bool) -> bool {
    let before = *stored;
    stored.minutes |= contribution.minutes;
    if is_start_hour {
        stored.sessions = contribution.sessions;
        stored.requests = contribution.requests;
    }
    *stored != before
}

/// One stored rollup row, as the read side sees it.
#[derive(Debug, Clone, Copy)]
pub struct RollupRef<'a> {
    /// The user.
    pub user_id: Uuid,
    /// How the app was reached.
    pub access_method: AccessMethod,
    /// The app's slug, or its port.
    pub slug_or_port: &'a str,
    /// The UTC hour, as hours since the Unix epoch.
    pub hour: i64,
    /// The hour's minutes, sessions and requests.
    pub usage: HourUsage,
}

/// How one rollup row falls into the intervals: minutes in each interval it
/// overlaps, and the interval its sessions and requests count in (the one
/// containing the start of its hour).
struct Split {
    /// (interval index, minutes of the row inside it), only nonzero masks.
    minutes: Vec<(usize, u64)>,
    start_interval: Option<usize>,
}

fn split(row: &RollupRef<'_>, intervals: &Intervals) -> Split {
    let bounds = intervals.bounds();
    let start = hour_start(row.hour);
    let end = start + time::Duration::HOUR;
    let first = bounds.partition_point(|b| *b <= start).saturating_sub(1);
    let mut minutes = Vec::new();
    if row.usage.minutes != 0 {
        for i in first..intervals.len() {
            if bounds[i] >= end {
                break;
            }
            let within = mask_within(row.hour, minute_of(bounds[i]), minute_of(bounds[i + 1]));
            let m = row.usage.minutes & within;
            if m != 0 {
                minutes.push((i, m));
            }
        }
    }
    Split {
        minutes,
        start_interval: intervals.index_of(start),
    }
}

#[derive(Default)]
struct Acc {
    figures: UsageFigures,
    users: HashSet<Uuid>,
}

impl Acc {
    fn finish(mut self) -> UsageFigures {
        self.figures.unique_users = self.users.len() as u64;
        self.figures
    }
}

/// Per app: figures over the range and per interval, from rollup rows (any
/// rows; those outside the range count nothing).
pub fn app_usage<'a>(
    rows: impl IntoIterator<Item = RollupRef<'a>>,
    intervals: &Intervals,
) -> Vec<AppUsageSeries> {
    let n = intervals.len();
    let mut apps: HashMap<(AccessMethod, &'a str), (Acc, Vec<Acc>)> = HashMap::new();
    for row in rows {
        let s = split(&row, intervals);
        let counts = s.start_interval.filter(|_| row.usage.sessions > 0);
        if s.minutes.is_empty() && counts.is_none() {
            continue;
        }
        let (total, per) = apps
            .entry((row.access_method, row.slug_or_port))
            .or_insert_with(|| (Acc::default(), (0..n).map(|_| Acc::default()).collect()));
        for &(i, m) in &s.minutes {
            let secs = 60 * u64::from(m.count_ones());
            per[i].figures.usage_seconds += secs;
            per[i].users.insert(row.user_id);
            total.figures.usage_seconds += secs;
        }
        if let Some(i) = counts {
            for acc in [&mut per[i], &mut *total] {
                acc.figures.sessions = acc.figures.sessions.saturating_add(row.usage.sessions);
                acc.figures.requests = acc.figures.requests.saturating_add(row.usage.requests);
            }
            per[i].users.insert(row.user_id);
        }
        total.users.insert(row.user_id);
    }
    let mut series: Vec<AppUsageSeries> = apps
        .into_iter()
        .map(|((access_method, slug), (total, per))| AppUsageSeries {
            access_method,
            slug_or_port: slug.to_owned(),
            total: total.finish(),
            intervals: per.into_iter().map(Acc::finish).collect(),
        })
        .collect();
    sort_app_series(&mut series);
    series
}

/// Distinct users with any usage, over the range and per interval.
pub fn active_users<'a>(rows: impl IntoIterator<Item = RollupRef<'a>>, intervals: &Intervals) -> ActiveUsers {
    let mut per: Vec<HashSet<Uuid>> = (0..intervals.len()).map(|_| HashSet::new()).collect();
    let mut total = HashSet::new();
    for row in rows {
        let s = split(&row, intervals);
        let counts = s.start_interval.filter(|_| row.usage.sessions > 0);
        for i in s.minutes.iter().map(|&(i, _)| i).chain(counts) {
            per[i].insert(row.user_id);
            total.insert(row.user_id);
        }
    }
    ActiveUsers {
        total: total.len() as u64,
        intervals: per.iter().map(|s| s.len() as u64).collect(),
    }
}

/// Usage per user over the range (minutes of all apps merged), most usage
/// first, at most `limit`.
pub fn user_activity<'a>(
    rows: impl IntoIterator<Item = RollupRef<'a>>,
    intervals: &Intervals,
    limit: usize,
) -> Vec<UserActivity> {
    let range = intervals.range();
    let (from, to) = (minute_of(range.from), minute_of(range.to));
    let mut hours: HashMap<(Uuid, i64), u64> = HashMap::new();
    let mut users: HashMap<Uuid, UserActivity> = HashMap::new();
    for row in rows {
        let minutes = row.usage.minutes & mask_within(row.hour, from, to);
        let counts = intervals.index_of(hour_start(row.hour)).is_some() && row.usage.sessions > 0;
        if minutes == 0 && !counts {
            continue;
        }
        *hours.entry((row.user_id, row.hour)).or_default() |= minutes;
        let user = users.entry(row.user_id).or_insert(UserActivity {
            user_id: row.user_id,
            usage_seconds: 0,
            sessions: 0,
            requests: 0,
        });
        if counts {
            user.sessions = user.sessions.saturating_add(row.usage.sessions);
            user.requests = user.requests.saturating_add(row.usage.requests);
        }
    }
    for ((user, _), minutes) in hours {
        if let Some(u) = users.get_mut(&user) {
            u.usage_seconds += 60 * u64::from(minutes.count_ones());
        }
    }
    top_users(users.into_values().collect(), limit)
}

/// The hourly rollup with its dirty start hours: the state the in-memory
/// store keeps beside its raw rows (PostgreSQL keeps the same in tables).
#[derive(Debug, Default)]
pub struct HourlyRollup {
    hours: BTreeMap<i64, HashMap<(Uuid, AccessMethod, String), HourUsage>>,
    /// Start hours written to since the last tick.
    dirty: BTreeSet<i64>,
    /// Start hours before this one are final: their raw rows were purged.
    frozen_before: Option<i64>,
    /// Rows held, and the bytes of their slugs: what a store charges for
    /// them without walking every hour.
    rows: usize,
    slug_bytes: usize,
}

impl HourlyRollup {
    /// Records that a row starting in `start_hour` was written.
    pub fn mark(&mut self, start_hour: i64) {
        self.dirty.insert(start_hour);
    }

    /// The start hours to roll up again, oldest first; dirty hours that are
    /// final are dropped.
    pub fn take_dirty(&mut self) -> Vec<i64> {
        let frozen = self.frozen_before.unwrap_or(i64::MIN);
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|&h| h >= frozen)
            .collect()
    }

    /// Whether any start hour before `hour` waits for a tick.
    pub fn has_dirty_before(&self, hour: i64) -> bool {
        self.dirty.range(..hour).next().is_some()
    }

    /// Merges the complete contribution of start hour `start_hour` (see
    /// [`contributions`]); returns how many rollup rows changed.
    pub fn apply(&mut self, start_hour: i64, contributions: &BTreeMap<RollupKey<'_>, HourUsage>) -> u64 {
        let mut changed = 0;
        for (&(user, method, slug, hour), c) in contributions {
            let rows = self.hours.entry(hour).or_default();
            let changed_here = match rows.get_mut(&(user, method, slug.to_owned())) {
                Some(stored) => merge(stored, c, hour == start_hour),
                None => {
                    let mut fresh = HourUsage::default();
                    merge(&mut fresh, c, hour == start_hour);
                    rows.insert((user, method, slug.to_owned()), fresh);
                    self.rows += 1;
                    self.slug_bytes += slug.len();
                    true
                }
            };
            changed += u64::from(changed_here);
        }
        changed
    }

    /// Rollup rows of the hours that overlap `[from_hour, to_hour)`.
    pub fn rows(&self, from_hour: i64, to_hour: i64) -> impl Iterator<Item = RollupRef<'_>> {
        self.hours
            .range(from_hour..to_hour.max(from_hour))
            .flat_map(|(&hour, rows)| {
                rows.iter()
                    .map(move |((user_id, access_method, slug), usage)| RollupRef {
                        user_id: *user_id,
                        access_method: *access_method,
                        slug_or_port: slug,
                        hour,
                        usage: *usage,
                    })
            })
    }

    /// Rows for a read over `intervals`.
    pub fn rows_for(&self, intervals: &Intervals) -> impl Iterator<Item = RollupRef<'_>> {
        let range = intervals.range();
        let past = super::minutes::minute_ceil(range.to);
        self.rows(
            super::minutes::hour_of(range.from),
            past.div_euclid(60) + i64::from(past.rem_euclid(60) != 0),
        )
    }

    /// From now on start hours before `hour` are final.
    pub fn freeze_before(&mut self, hour: i64) {
        self.frozen_before = Some(self.frozen_before.map_or(hour, |f| f.max(hour)));
    }

    /// The hour before which rollup rows are final (their raw rows purged), if any.
    pub fn frozen_before(&self) -> Option<i64> {
        self.frozen_before
    }

    /// Deletes rollup rows of hours before `horizon`, at most `max_hours`
    /// hours from the oldest; returns how many rows went.
    pub fn purge_before(&mut self, horizon: i64, max_hours: i64) -> u64 {
        let Some(&oldest) = self.hours.keys().next() else {
            return 0;
        };
        let upto = horizon.min(oldest.saturating_add(max_hours.max(1)));
        let keep = self.hours.split_off(&upto);
        let gone = std::mem::replace(&mut self.hours, keep);
        let mut deleted = 0;
        for rows in gone.values() {
            deleted += rows.len();
            self.slug_bytes -= rows.keys().map(|(_, _, slug)| slug.len()).sum::<usize>();
        }
        self.rows -= deleted;
        deleted as u64
    }

    /// The first and last hour that hold rollup rows, if any.
    pub fn hour_span(&self) -> Option<(i64, i64)> {
        Some((*self.hours.keys().next()?, *self.hours.keys().next_back()?))
    }

    /// Every rollup row.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// The bytes of the slugs of every rollup row (each row owns its slug).
    pub fn slug_bytes(&self) -> usize {
        self.slug_bytes
    }

    /// No rollup rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
