//! Packed day rows: what a long read fetches instead of one row per user,
//! app and hour, and the pure code that combines them into the figures.
//!
//! Per UTC day and app, an [`AppDay`]: the figures that add up across users
//! (covered minutes summed per quarter hour; sessions and requests per hour
//! of their start), and each active user's *activity*, a 96-bit mask of the
//! day's quarter hours (bit `4h + q` for minutes `15q .. 15q + 15` of hour
//! `h`) in which the user had a covered minute, plus the first quarter of
//! every hour in which a session of the user started (its sessions count in
//! the interval that holds the hour's start). Per UTC day over all apps, a
//! [`FleetDay`]: each user's activity over all apps, the day's totals
//! (distinct minutes over all apps, sessions, requests), and the same per
//! quarter hour and start hour for the days a user-activity range cuts.
//!
//! Users are numbered by the store (a dense `user -> ordinal` dictionary), so
//! distinct users are bitsets. Whenever every interval bound inside an hour
//! lies on a quarter hour (every whole-hour offset, and +05:30, +05:45 ...),
//! the day rows alone give exact figures; an hour that a bound cuts off the
//! quarter grid is read from the hourly rows with their minute masks
//! ([`ReadPlan::cut_hours`]), so the figures stay exact for any bounds.

use std::collections::BTreeMap;

use hashbrown::HashMap;

use super::minutes::{HourUsage, hour_of, hour_start, mask_within, minute_of};
use super::{ActiveUsers, AppUsageSeries, Intervals, UsageFigures, sort_app_series};
use crate::appstats::AccessMethod;

/// Quarter hours in a UTC day: the bits of an activity mask.
pub const QUARTERS_PER_DAY: usize = 96;
/// Hours in a UTC day.
pub const HOURS_PER_DAY: usize = 24;
/// Bytes of one (ordinal, activity) entry: `u32` and 12 bytes of mask, little-endian.
const USER_BYTES: usize = 16;
/// Bytes of an app day's additive figures: 96 minute sums, 24 session and 24 request sums, `u64`.
const FIGURE_BYTES: usize = 8 * (QUARTERS_PER_DAY + 2 * HOURS_PER_DAY);

/// An app: how it was reached and its slug or port.
pub type AppKey = (AccessMethod, String);

/// The quarters of an hour with a covered minute, as bits 0..4.
fn quarters(minutes: u64) -> u128 {
    (0..4)
        .filter(|q| (minutes >> (15 * q)) & 0x7fff != 0)
        .fold(0, |m, q| m | 1 << q)
}

/// One (user, app) hour's activity bits within its day.
fn activity(hour_of_day: usize, usage: &HourUsage) -> u128 {
    let mut q = quarters(usage.minutes);
    if usage.sessions > 0 {
        q |= 1;
    }
    q << (4 * hour_of_day)
}

/// The minutes of an hour's mask in each of its quarters.
fn quarter_counts(minutes: u64) -> [u64; 4] {
    std::array::from_fn(|q| u64::from(((minutes >> (15 * q)) & 0x7fff).count_ones()))
}

/// One UTC day of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDay {
    /// Covered minutes per quarter hour, summed over users.
    pub minutes: [u64; QUARTERS_PER_DAY],
    /// Sessions per start hour (rows with sessions only).
    pub sessions: [u64; HOURS_PER_DAY],
    /// Requests per start hour, counted with their sessions.
    pub requests: [u64; HOURS_PER_DAY],
    /// (ordinal, activity) of every active user, by ordinal.
    pub users: Vec<(u32, u128)>,
}

impl Default for AppDay {
    fn default() -> Self {
        Self {
            minutes: [0; QUARTERS_PER_DAY],
            sessions: [0; HOURS_PER_DAY],
            requests: [0; HOURS_PER_DAY],
            users: Vec::new(),
        }
    }
}

impl AppDay {
    /// From the day's hourly rows of one app: (ordinal, hour of the day, usage).
    pub fn build(rows: impl IntoIterator<Item = (u32, usize, HourUsage)>) -> Self {
        let mut day = Self::default();
        let mut users: BTreeMap<u32, u128> = BTreeMap::new();
        for (user, h, usage) in rows {
            for (q, n) in quarter_counts(usage.minutes).into_iter().enumerate() {
                day.minutes[4 * h + q] += n;
            }
            if usage.sessions > 0 {
                day.sessions[h] = day.sessions[h].saturating_add(usage.sessions);
                day.requests[h] = day.requests[h].saturating_add(usage.requests);
            }
            let a = activity(h, &usage);
            if a != 0 {
                *users.entry(user).or_default() |= a;
            }
        }
        day.users = users.into_iter().collect();
        day
    }

    /// Whether the day holds no usage at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The additive figures and the users, as stored.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut figures = Vec::with_capacity(FIGURE_BYTES);
        for v in self.minutes.iter().chain(&self.sessions).chain(&self.requests) {
            figures.extend_from_slice(&v.to_le_bytes());
        }
        (figures, encode_users(self.users.iter().copied()))
    }
}

fn encode_users(users: impl Iterator<Item = (u32, u128)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (ordinal, mask) in users {
        out.extend_from_slice(&ordinal.to_le_bytes());
        out.extend_from_slice(&mask.to_le_bytes()[..12]);
    }
    out
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[8 * i..8 * i + 8]);
    u64::from_le_bytes(w)
}

/// A stored app day, read in place.
#[derive(Debug, Clone, Copy)]
pub struct AppDayRef<'a> {
    figures: &'a [u8],
    users: UsersRef<'a>,
}

impl<'a> AppDayRef<'a> {
    /// Checks the sizes of what [`AppDay::encode`] wrote.
    pub fn new(figures: &'a [u8], users: &'a [u8]) -> Result<Self, String> {
        if figures.len() != FIGURE_BYTES {
            return Err(format!(
                "an app day's figures are {FIGURE_BYTES} bytes, got {}",
                figures.len()
            ));
        }
        Ok(Self {
            figures,
            users: UsersRef::new(users)?,
        })
    }

    fn minutes(&self, quarter: usize) -> u64 {
        u64_at(self.figures, quarter)
    }

    fn sessions(&self, hour: usize) -> u64 {
        u64_at(self.figures, QUARTERS_PER_DAY + hour)
    }

    fn requests(&self, hour: usize) -> u64 {
        u64_at(self.figures, QUARTERS_PER_DAY + HOURS_PER_DAY + hour)
    }
}

/// Stored (ordinal, activity) entries, read in place.
#[derive(Debug, Clone, Copy)]
pub struct UsersRef<'a>(&'a [u8]);

impl<'a> UsersRef<'a> {
    /// Checks the size of what was stored.
    pub fn new(bytes: &'a [u8]) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(USER_BYTES) {
            return Err(format!(
                "packed users are {USER_BYTES}-byte entries, got {} bytes",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len() / USER_BYTES
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each (ordinal, activity), by ordinal.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u128)> + 'a {
        self.0.chunks_exact(USER_BYTES).map(|c| {
            let mut o = [0; 4];
            o.copy_from_slice(&c[..4]);
            let mut m = [0; 16];
            m[..12].copy_from_slice(&c[4..]);
            (u32::from_le_bytes(o), u128::from_le_bytes(m))
        })
    }
}

/// How a read over intervals is covered: per UTC day the interval of each of
/// its quarter hours, and the hours read from the hourly rows instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPlan {
    /// (UTC day as days since the epoch, interval of each quarter: `None`
    /// outside the range or in a cut hour), by day; days with no quarter in
    /// the range are left out.
    pub days: Vec<(i64, [Option<u32>; QUARTERS_PER_DAY])>,
    /// Hours (since the epoch) in which an interval bound falls off the
    /// quarter grid: read from the hourly rows and their minute masks.
    pub cut_hours: Vec<i64>,
}

impl ReadPlan {
    /// The plan of a read over `intervals` (bounds are whole minutes).
    pub fn of(intervals: &Intervals) -> Self {
        Self::within(intervals, None)
    }

    /// The plan of a read over `intervals` that covers only the hours
    /// `span` (first, last), the hours that hold any rollup row: a range of
    /// centuries plans only the days that have data.
    pub fn within(intervals: &Intervals, span: Option<(i64, i64)>) -> Self {
        let bounds = intervals.bounds();
        let range = intervals.range();
        let mut days: BTreeMap<i64, [Option<u32>; QUARTERS_PER_DAY]> = BTreeMap::new();
        let mut cut_hours = Vec::new();
        let (mut first, mut last) = (hour_of(range.from), hour_of(range.to - time::Duration::MINUTE));
        if let Some((a, b)) = span {
            (first, last) = (first.max(a), last.min(b));
        }
        for hour in first..=last {
            let start = hour_start(hour);
            let end = start + time::Duration::HOUR;
            let inside =
                &bounds[bounds.partition_point(|b| *b <= start)..bounds.partition_point(|b| *b < end)];
            if inside.iter().any(|b| minute_of(*b).rem_euclid(15) != 0) {
                cut_hours.push(hour);
                continue;
            }
            let quarters = days
                .entry(hour.div_euclid(24))
                .or_insert([None; QUARTERS_PER_DAY]);
            for q in 0..4 {
                let at = start + time::Duration::minutes(15 * q as i64);
                quarters[4 * hour.rem_euclid(24) as usize + q] = intervals.index_of(at).map(|i| i as u32);
            }
        }
        Self {
            days: days
                .into_iter()
                .filter(|(_, q)| q.iter().any(Option::is_some))
                .collect(),
            cut_hours,
        }
    }

    /// The UTC days to fetch, as days since the epoch.
    pub fn day_numbers(&self) -> impl Iterator<Item = i64> + '_ {
        self.days.iter().map(|(d, _)| *d)
    }

    /// Whether every quarter of `day` is planned, all in one interval.
    pub fn covers_whole(&self, day: i64) -> bool {
        self.day(day)
            .is_some_and(|q| q[0].is_some() && q.iter().all(|i| *i == q[0]))
    }

    /// The hours (since the epoch) of `day` with any planned quarter.
    pub fn hours_of(&self, day: i64) -> Vec<i64> {
        let Some(q) = self.day(day) else { return Vec::new() };
        (0..HOURS_PER_DAY)
            .filter(|h| q[4 * h..4 * h + 4].iter().any(Option::is_some))
            .map(|h| 24 * day + h as i64)
            .collect()
    }

    fn day(&self, day: i64) -> Option<&[Option<u32>; QUARTERS_PER_DAY]> {
        self.days
            .binary_search_by_key(&day, |(d, _)| *d)
            .ok()
            .map(|i| &self.days[i].1)
    }
}

/// The (interval, quarter mask) pairs of one planned day.
fn interval_masks(quarters: &[Option<u32>; QUARTERS_PER_DAY]) -> Vec<(usize, u128)> {
    let mut out: Vec<(usize, u128)> = Vec::new();
    for (q, i) in quarters.iter().enumerate() {
        let Some(i) = i.map(|i| i as usize) else { continue };
        match out.iter_mut().find(|(j, _)| *j == i) {
            Some((_, m)) => *m |= 1 << q,
            None => out.push((i, 1 << q)),
        }
    }
    out
}

/// A set of user ordinals.
#[derive(Debug, Clone, Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn insert(&mut self, n: u32) {
        let w = (n / 64) as usize;
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (n % 64);
    }

    fn union(&mut self, other: &Bitset) {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Additive figures and distinct users of one interval.
#[derive(Debug, Clone, Default)]
struct Cell {
    minutes: u64,
    sessions: u64,
    requests: u64,
    users: Bitset,
}

impl Cell {
    fn figures(&self) -> UsageFigures {
        UsageFigures {
            usage_seconds: 60 * self.minutes,
            sessions: self.sessions,
            requests: self.requests,
            unique_users: self.users.len(),
        }
    }
}

/// What one cut hour's row of one user adds to the cells.
fn add_hour(cells: &mut [Cell], intervals: &Intervals, user: u32, hour: i64, usage: &HourUsage) {
    let bounds = intervals.bounds();
    let start = hour_start(hour);
    let end = start + time::Duration::HOUR;
    if usage.minutes != 0 {
        let first = bounds.partition_point(|b| *b <= start).saturating_sub(1);
        for i in first..intervals.len() {
            if bounds[i] >= end {
                break;
            }
            let m = usage.minutes & mask_within(hour, minute_of(bounds[i]), minute_of(bounds[i + 1]));
            if m != 0 {
                cells[i].minutes += u64::from(m.count_ones());
                cells[i].users.insert(user);
            }
        }
    }
    if let Some(i) = intervals.index_of(start).filter(|_| usage.sessions > 0) {
        let c = &mut cells[i];
        c.sessions = c.sessions.saturating_add(usage.sessions);
        c.requests = c.requests.saturating_add(usage.requests);
        c.users.insert(user);
    }
}

fn add_users(cells: &mut [Cell], masks: &[(usize, u128)], users: impl Iterator<Item = (u32, u128)>) {
    for (user, active) in users {
        for &(i, m) in masks {
            if active & m != 0 {
                cells[i].users.insert(user);
            }
        }
    }
}

/// An hourly row of a cut hour, with its user's ordinal.
#[derive(Debug, Clone)]
pub struct CutRow {
    /// The user's ordinal.
    pub ordinal: u32,
    /// The app.
    pub app: AppKey,
    /// The hour since the epoch.
    pub hour: i64,
    /// Its minutes, sessions and requests.
    pub usage: HourUsage,
}

/// Per app: figures over the range and per interval, from the app days of
/// the plan's days (any others are ignored) and the hourly rows of its cut
/// hours.
pub fn app_usage<'a>(
    plan: &ReadPlan,
    intervals: &Intervals,
    days: impl IntoIterator<Item = (i64, AppKey, AppDayRef<'a>)>,
    cut: impl IntoIterator<Item = CutRow>,
) -> Vec<AppUsageSeries> {
    let n = intervals.len();
    let mut apps: HashMap<AppKey, Vec<Cell>> = HashMap::new();
    for (day, app, row) in days {
        let Some(quarters) = plan.day(day) else { continue };
        let cells = apps.entry(app).or_insert_with(|| vec![Cell::default(); n]);
        for (q, i) in quarters.iter().enumerate() {
            if let Some(i) = *i {
                cells[i as usize].minutes += row.minutes(q);
            }
        }
        for h in 0..HOURS_PER_DAY {
            if let Some(i) = quarters[4 * h] {
                let c = &mut cells[i as usize];
                c.sessions = c.sessions.saturating_add(row.sessions(h));
                c.requests = c.requests.saturating_add(row.requests(h));
            }
        }
        add_users(cells, &interval_masks(quarters), row.users.iter());
    }
    for row in cut {
        let cells = apps.entry(row.app).or_insert_with(|| vec![Cell::default(); n]);
        add_hour(cells, intervals, row.ordinal, row.hour, &row.usage);
    }
    let mut series: Vec<AppUsageSeries> = apps
        .into_iter()
        .filter_map(|((access_method, slug_or_port), cells)| {
            let mut total = Cell::default();
            for c in &cells {
                total.minutes += c.minutes;
                total.sessions = total.sessions.saturating_add(c.sessions);
                total.requests = total.requests.saturating_add(c.requests);
                total.users.union(&c.users);
            }
            (total.users.len() > 0).then(|| AppUsageSeries {
                access_method,
                slug_or_port,
                total: total.figures(),
                intervals: cells.iter().map(Cell::figures).collect(),
            })
        })
        .collect();
    sort_app_series(&mut series);
    series
}

/// Distinct users over the range and per interval, from the activity of the
/// plan's fleet days and the hourly rows (any app) of its cut hours.
pub fn active_users<'a>(
    plan: &ReadPlan,
    intervals: &Intervals,
    days: impl IntoIterator<Item = (i64, UsersRef<'a>)>,
    cut: impl IntoIterator<Item = CutRow>,
) -> ActiveUsers {
    let mut cells = vec![Cell::default(); intervals.len()];
    for (day, users) in days {
        if let Some(quarters) = plan.day(day) {
            add_users(&mut cells, &interval_masks(quarters), users.iter());
        }
    }
    for row in cut {
        add_hour(&mut cells, intervals, row.ordinal, row.hour, &row.usage);
    }
    let mut total = Bitset::default();
    for c in &cells {
        total.union(&c.users);
    }
    ActiveUsers {
        total: total.len(),
        intervals: cells.iter().map(|c| c.users.len()).collect(),
    }
}

mod fleet;
mod from_hours;
mod per_user;
#[cfg(test)]
mod tests;

pub use fleet::{DayDetail, DetailRef, FleetDay, TotalsRef, UserDay};
pub use from_hours::{
    Ordinals, active_users_from_hours, app_usage_from_hours, pack, user_activity_from_hours,
};
pub use per_user::{ActivityTotals, FleetDayPart, UserTotals, top_named, user_activity};
