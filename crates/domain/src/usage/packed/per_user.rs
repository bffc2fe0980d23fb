//! User activity over a range from the fleet days: a day the range covers
//! whole from each user's day totals, a day its bounds cut from each user's
//! detail (the quarter hours and start hours inside the range), and an hour
//! a bound cuts off the quarter grid from the hourly rows, their minute
//! masks OR'ed over apps per user (a minute counts once).

use std::cmp::Reverse;

use hashbrown::HashMap;
use uuid::Uuid;

use super::{CutRow, DetailRef, QUARTERS_PER_DAY, ReadPlan, TotalsRef};
use crate::usage::minutes::{hour_start, mask_within, minute_of};
use crate::usage::{Intervals, UserActivity, top_users};

/// What a user-activity read takes of one stored fleet day.
#[derive(Debug, Clone, Copy)]
pub enum FleetDayPart<'a> {
    /// Each user's day totals: only for a day the range covers whole.
    Totals(TotalsRef<'a>),
    /// Each user's detail: for a day the range cuts (or any day).
    Detail(DetailRef<'a>),
}

/// One user's figures over a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserTotals {
    /// Distinct minutes over all apps.
    pub minutes: u64,
    /// Sessions whose hour starts in the range.
    pub sessions: u64,
    /// Their requests.
    pub requests: u64,
}

/// Users' figures over a range, by ordinal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityTotals(Vec<UserTotals>);

impl ActivityTotals {
    fn add(&mut self, ordinal: u32, (minutes, sessions, requests): (u64, u64, u64)) {
        let i = ordinal as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, UserTotals::default());
        }
        let t = &mut self.0[i];
        t.minutes += minutes;
        t.sessions = t.sessions.saturating_add(sessions);
        t.requests = t.requests.saturating_add(requests);
    }

    /// The users with usage that may be among the top `max`: the `max` with
    /// the most minutes and every user tied with the last of them (ties go
    /// by user id, which only the store's dictionary knows).
    pub fn contenders(self, max: usize) -> Vec<(u32, UserTotals)> {
        let mut ranked: Vec<(u32, UserTotals)> = self
            .0
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.minutes > 0 || t.sessions > 0)
            .map(|(i, t)| (i as u32, t))
            .collect();
        if max == 0 || ranked.is_empty() {
            return Vec::new();
        }
        ranked.sort_by_key(|&(_, t)| Reverse(t.minutes));
        let last = ranked[max.min(ranked.len()) - 1].1.minutes;
        ranked.retain(|&(_, t)| t.minutes >= last);
        ranked
    }
}

/// The top `max` of `contenders`, each named by `user` (the user of an
/// ordinal): most usage first, then by user id.
pub fn top_named(
    contenders: Vec<(u32, UserTotals)>,
    max: usize,
    mut user: impl FnMut(u32) -> Option<Uuid>,
) -> Result<Vec<UserActivity>, String> {
    let users = contenders
        .into_iter()
        .map(|(o, t)| {
            Ok(UserActivity {
                user_id: user(o).ok_or_else(|| format!("user ordinal {o} is not in the dictionary"))?,
                usage_seconds: 60 * t.minutes,
                sessions: t.sessions,
                requests: t.requests,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(top_users(users, max))
}

/// The quarters of a planned day inside the read.
fn inside(quarters: &[Option<u32>; QUARTERS_PER_DAY]) -> u128 {
    (0..QUARTERS_PER_DAY)
        .filter(|&q| quarters[q].is_some())
        .fold(0, |m, q| m | 1 << q)
}

/// Per user over the whole range of `intervals`: the plan's fleet days (any
/// others are ignored) and the hourly rows of its cut hours. Refuses the
/// totals of a day the range cuts, and detail that does not fit its users.
pub fn user_activity<'a>(
    plan: &ReadPlan,
    intervals: &Intervals,
    days: impl IntoIterator<Item = (i64, FleetDayPart<'a>)>,
    cut: impl IntoIterator<Item = CutRow>,
) -> Result<ActivityTotals, String> {
    let mut totals = ActivityTotals::default();
    for (day, part) in days {
        let Some(quarters) = plan.day(day) else { continue };
        match part {
            FleetDayPart::Totals(_) if !plan.covers_whole(day) => {
                return Err(format!(
                    "day {day} is cut by the range: its totals cannot be used"
                ));
            }
            FleetDayPart::Totals(t) => {
                for (ordinal, minutes, sessions, requests) in t.iter() {
                    totals.add(ordinal, (minutes, sessions, requests));
                }
            }
            FleetDayPart::Detail(d) => {
                let within = inside(quarters);
                for entry in d.iter() {
                    let (ordinal, active, detail) = entry?;
                    if active & within != 0 {
                        totals.add(ordinal, detail.within(within));
                    }
                }
            }
        }
    }
    let range = intervals.range();
    let (from, to) = (minute_of(range.from), minute_of(range.to));
    let mut hours: HashMap<(u32, i64), u64> = HashMap::new();
    for row in cut {
        *hours.entry((row.ordinal, row.hour)).or_default() |=
            row.usage.minutes & mask_within(row.hour, from, to);
        if row.usage.sessions > 0 && intervals.index_of(hour_start(row.hour)).is_some() {
            totals.add(row.ordinal, (0, row.usage.sessions, row.usage.requests));
        }
    }
    for ((ordinal, _), minutes) in hours {
        totals.add(ordinal, (u64::from(minutes.count_ones()), 0, 0));
    }
    Ok(totals)
}
