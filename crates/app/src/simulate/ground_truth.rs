//! The insights' ground truth: the simulator knows every session it sent, so
//! it knows what every insights figure must be (docs/insights.md), and
//! checks the store's rollup reads against it after the last rollup tick.
//!
//! What a session covers is what the proxy reported, as the collector
//! stores it: a session's minutes run from its start truncated to the minute
//! up to its end, or up to the end of traffic for a session still open then
//! (its provisional end); a closed session no longer than the rollup window
//! is stored in its group's rolled-up row, which covers the window it
//! started in (a 50 s session from 10:00:30 counts 10:00 only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::minutes::{HourUsage, covered_hours, hour_of, hour_start};
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, UsageFigures, UserActivity, sort_app_series, top_users,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::fleet::{Fleet, PlannedSession};
use super::timeline::Timeline;

/// Differences listed per figure before "and N more".
const SHOWN: usize = 3;

type App = (AccessMethod, String);

/// Per (user, app, UTC hour): the minutes covered, and the sessions and
/// requests of the sessions that started in that hour.
#[derive(Debug, Default)]
pub struct Truth {
    hours: BTreeMap<(Uuid, App, i64), HourUsage>,
}

impl Truth {
    /// From the sessions sent: `last_sent[i]` is the last cumulative request
    /// count sent for `sessions[i]` (0: never sent).
    pub fn from_sessions(
        fleet: &Fleet,
        sessions: &[PlannedSession],
        last_sent: &[u64],
        traffic_end: OffsetDateTime,
        rollup_window: Duration,
    ) -> Self {
        let mut truth = Self::default();
        for (s, &requests) in sessions.iter().zip(last_sent) {
            if requests == 0 {
                continue;
            }
            let closed = s.end() <= traffic_end;
            let (from, to) = if closed && s.duration <= rollup_window {
                let window = rollup_window.whole_nanoseconds();
                let ns = s.start.unix_timestamp_nanos();
                let group = OffsetDateTime::from_unix_timestamp_nanos(ns - ns.rem_euclid(window))
                    .expect("a session start is a valid time");
                (group, group + rollup_window)
            } else {
                (s.start, s.end().min(traffic_end))
            };
            let app = &fleet.apps[usize::from(s.app)];
            let key = (
                fleet.users[s.user as usize],
                (app.access_method, app.slug_or_port.clone()),
            );
            for (hour, minutes) in covered_hours(from, to) {
                truth
                    .hours
                    .entry((key.0, key.1.clone(), hour))
                    .or_default()
                    .minutes |= minutes;
            }
            // Sessions and requests count in the session's own start hour.
            let cell = truth.hours.entry((key.0, key.1, hour_of(s.start))).or_default();
            cell.sessions += 1;
            cell.requests += requests;
        }
        truth
    }

    /// The same cells from stored rows (sessions counted one per row): only
    /// the minutes are compared, per (user, app).
    fn from_rows(rows: &[&StatsReport]) -> Self {
        let mut truth = Self::default();
        for row in rows {
            let end = row.session_ended_at.unwrap_or(row.session_started_at);
            for (hour, minutes) in covered_hours(row.session_started_at, end) {
                let key = (row.user_id, (row.access_method, row.slug_or_port.clone()), hour);
                truth.hours.entry(key).or_default().minutes |= minutes;
            }
        }
        truth
    }

    /// Usage seconds per (user, app), over everything.
    fn usage_per_pair(&self) -> BTreeMap<(Uuid, App), u64> {
        let mut out: BTreeMap<(Uuid, App), u64> = BTreeMap::new();
        for ((user, app, _), cell) in &self.hours {
            *out.entry((*user, app.clone())).or_default() += 60 * u64::from(cell.minutes.count_ones());
        }
        out
    }

    /// What `UsageStore::app_usage_by_interval` must answer. Every bound of
    /// `intervals` is a whole hour, so each hour falls in one interval.
    pub fn app_usage(&self, intervals: &Intervals) -> Vec<AppUsageSeries> {
        #[derive(Default)]
        struct Cell {
            figures: UsageFigures,
            users: BTreeSet<Uuid>,
        }
        let mut apps: BTreeMap<App, Vec<Cell>> = BTreeMap::new();
        for ((user, app, hour), usage) in &self.hours {
            let Some(i) = intervals.index_of(hour_start(*hour)) else {
                continue;
            };
            let cells = apps
                .entry(app.clone())
                .or_insert_with(|| (0..intervals.len()).map(|_| Cell::default()).collect());
            let cell = &mut cells[i];
            cell.figures.usage_seconds += 60 * u64::from(usage.minutes.count_ones());
            cell.figures.sessions += usage.sessions;
            cell.figures.requests += usage.requests;
            if usage.minutes != 0 || usage.sessions > 0 {
                cell.users.insert(*user);
            }
        }
        let mut series: Vec<AppUsageSeries> = apps
            .into_iter()
            .map(|((access_method, slug_or_port), mut cells)| {
                let mut total = UsageFigures::default();
                let mut users = BTreeSet::new();
                for cell in &mut cells {
                    cell.figures.unique_users = cell.users.len() as u64;
                    total.usage_seconds += cell.figures.usage_seconds;
                    total.sessions += cell.figures.sessions;
                    total.requests += cell.figures.requests;
                    users.append(&mut cell.users);
                }
                total.unique_users = users.len() as u64;
                AppUsageSeries {
                    access_method,
                    slug_or_port,
                    total,
                    intervals: cells.into_iter().map(|c| c.figures).collect(),
                }
            })
            .filter(|s| s.total.unique_users > 0)
            .collect();
        sort_app_series(&mut series);
        series
    }

    /// What `UsageStore::active_users` must answer.
    pub fn active_users(&self, intervals: &Intervals) -> ActiveUsers {
        let mut per: Vec<BTreeSet<Uuid>> = vec![BTreeSet::new(); intervals.len()];
        for ((user, _, hour), usage) in &self.hours {
            if usage.minutes == 0 && usage.sessions == 0 {
                continue;
            }
            if let Some(i) = intervals.index_of(hour_start(*hour)) {
                per[i].insert(*user);
            }
        }
        let total: BTreeSet<&Uuid> = per.iter().flatten().collect();
        ActiveUsers {
            total: total.len() as u64,
            intervals: per.iter().map(|s| s.len() as u64).collect(),
        }
    }

    /// What `UsageStore::user_activity` must answer for every user.
    pub fn user_activity(&self, range: TimeRange) -> Vec<UserActivity> {
        let mut minutes: HashMap<(Uuid, i64), u64> = HashMap::new();
        let mut counts: BTreeMap<Uuid, (u64, u64)> = BTreeMap::new();
        for ((user, _, hour), usage) in &self.hours {
            let start = hour_start(*hour);
            if start < range.from || start >= range.to {
                continue;
            }
            *minutes.entry((*user, *hour)).or_default() |= usage.minutes;
            let c = counts.entry(*user).or_default();
            c.0 += usage.sessions;
            c.1 += usage.requests;
        }
        let mut seconds: HashMap<Uuid, u64> = HashMap::new();
        for ((user, _), mask) in minutes {
            *seconds.entry(user).or_default() += 60 * u64::from(mask.count_ones());
        }
        let users = counts
            .into_iter()
            .filter(|(user, (sessions, _))| *sessions > 0 || seconds.get(user).is_some_and(|s| *s > 0))
            .map(|(user_id, (sessions, requests))| UserActivity {
                user_id,
                usage_seconds: seconds.get(&user_id).copied().unwrap_or(0),
                sessions,
                requests,
            })
            .collect::<Vec<_>>();
        let n = users.len();
        top_users(users, n)
    }
}

/// The verdict of the insights check, printed beside the conservation check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsightsCheck {
    pub ok: bool,
    pub line: String,
    pub problems: Vec<String>,
}

/// The range the check reads: whole UTC hours around the traffic (a row's
/// sessions count in its start hour, which may begin before the traffic),
/// cut at every UTC midnight for the daily figures.
pub fn check_intervals(timeline: &Timeline) -> Result<Intervals, String> {
    let from = hour_start(hour_of(timeline.start));
    let to = hour_start(hour_of(timeline.end - Duration::NANOSECOND) + 1);
    let mut bounds = vec![from];
    let mut day = from.replace_time(time::Time::MIDNIGHT) + Duration::DAY;
    while day < to {
        bounds.push(day);
        day += Duration::DAY;
    }
    bounds.push(to);
    Intervals::new(bounds)
}

fn app_label(access_method: AccessMethod, slug: &str) -> String {
    if slug.is_empty() {
        access_method.to_string()
    } else {
        format!("{access_method} {slug}")
    }
}

/// Collects differences per figure, a few of each shown.
#[derive(Default)]
struct Differences {
    problems: Vec<String>,
}

impl Differences {
    fn figure(&mut self, what: &str, diffs: Vec<String>) {
        if diffs.is_empty() {
            return;
        }
        let mut line = format!("{what}: {} differ: ", diffs.len());
        line.push_str(&diffs[..diffs.len().min(SHOWN)].join("; "));
        if diffs.len() > SHOWN {
            let _ = write!(line, "; and {} more", diffs.len() - SHOWN);
        }
        self.problems.push(line);
    }
}

fn compare_maps<K: Ord + Clone, V: PartialEq + Copy + Default + std::fmt::Debug>(
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
    name: impl Fn(&K) -> String,
) -> Vec<String> {
    let keys: BTreeSet<&K> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (w, g) = (
                want.get(k).copied().unwrap_or_default(),
                got.get(k).copied().unwrap_or_default(),
            );
            (w != g).then(|| format!("{} sent {w:?}, store {g:?}", name(k)))
        })
        .collect()
}

/// Reads the rollup through `store` (after the run's last tick) and compares
/// every figure with `truth`; `rows` are the run's stored raw rows.
pub async fn check<S: UsageStore + ?Sized>(
    store: &S,
    truth: &Truth,
    rows: &[&StatsReport],
    intervals: &Intervals,
) -> anyhow::Result<InsightsCheck> {
    let mut d = Differences::default();

    // Usage seconds per (user, app): the raw rows hold what was sent.
    let pairs = truth.usage_per_pair();
    let stored = Truth::from_rows(rows).usage_per_pair();
    d.figure(
        "usage seconds per (user, app) in the stored rows",
        compare_maps(&pairs, &stored, |(user, (m, s))| {
            format!("user {user} {}", app_label(*m, s))
        }),
    );

    // Per app from the rollup: usage seconds, sessions, requests, unique
    // users, over the range and per day.
    let want_apps = truth.app_usage(intervals);
    let got_apps = store.app_usage_by_interval(intervals).await?;
    let by_app = |series: &[AppUsageSeries]| -> BTreeMap<(String, usize), [u64; 4]> {
        let mut out = BTreeMap::new();
        for s in series {
            let label = app_label(s.access_method, &s.slug_or_port);
            let f = |f: &UsageFigures| [f.usage_seconds, f.sessions, f.requests, f.unique_users];
            out.insert((label.clone(), usize::MAX), f(&s.total));
            for (i, figures) in s.intervals.iter().enumerate() {
                out.insert((label.clone(), i), f(figures));
            }
        }
        out
    };
    let day = |i: usize| -> String {
        if i == usize::MAX {
            "all days".into()
        } else {
            let from = intervals.bounds()[i];
            format!(
                "day from {}",
                from.format(&Rfc3339).unwrap_or_else(|_| from.to_string())
            )
        }
    };
    d.figure(
        "app usage [usage seconds, sessions, requests, unique users]",
        compare_maps(&by_app(&want_apps), &by_app(&got_apps), |(app, i)| {
            format!("{app}, {}", day(*i))
        }),
    );
    let order = |series: &[AppUsageSeries]| -> Vec<String> {
        series
            .iter()
            .map(|s| app_label(s.access_method, &s.slug_or_port))
            .collect()
    };
    if order(&want_apps) != order(&got_apps) && d.problems.is_empty() {
        d.problems.push(format!(
            "app usage order: sent {:?}, store {:?}",
            order(&want_apps),
            order(&got_apps)
        ));
    }

    // Daily active users.
    let want_active = truth.active_users(intervals);
    let got_active = store.active_users(intervals).await?;
    let active = |a: &ActiveUsers| -> BTreeMap<usize, u64> {
        let mut out: BTreeMap<usize, u64> = a.intervals.iter().copied().enumerate().collect();
        out.insert(usize::MAX, a.total);
        out
    };
    d.figure(
        "active users",
        compare_maps(&active(&want_active), &active(&got_active), |i| day(*i)),
    );

    // Per user over all apps.
    let range = intervals.range();
    let want_users = truth.user_activity(range);
    let got_users = store.user_activity(range, want_users.len().max(1) + 1).await?;
    let users = |list: &[UserActivity]| -> BTreeMap<Uuid, [u64; 3]> {
        list.iter()
            .map(|u| (u.user_id, [u.usage_seconds, u.sessions, u.requests]))
            .collect()
    };
    d.figure(
        "user activity [usage seconds, sessions, requests]",
        compare_maps(&users(&want_users), &users(&got_users), |u| format!("user {u}")),
    );

    let ok = d.problems.is_empty();
    let total = |f: fn(&UsageFigures) -> u64| want_apps.iter().map(|s| f(&s.total)).sum::<u64>();
    let line = format!(
        "insights: {} usage seconds of {} (user, app) pairs sent={} rolled up={}; sessions sent={} rolled up={}; \
         {} apps, {} users, daily active users of {} days",
        if ok { "OK" } else { "FAILED" },
        pairs.len(),
        total(|f| f.usage_seconds),
        got_apps.iter().map(|s| s.total.usage_seconds).sum::<u64>(),
        total(|f| f.sessions),
        got_apps.iter().map(|s| s.total.sessions).sum::<u64>(),
        want_apps.len(),
        want_users.len(),
        intervals.len(),
    );
    Ok(InsightsCheck {
        ok,
        line,
        problems: d.problems,
    })
}

#[cfg(test)]
mod tests;
