//! The packed reads over hourly rollup rows: what a store without day rows
//! (the memory store, the tests) runs to answer through the same code.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use uuid::Uuid;

use super::{
    ActiveUsers, AppDay, AppDayRef, AppKey, AppUsageSeries, CutRow, DetailRef, FleetDay, FleetDayPart,
    Intervals, ReadPlan, TotalsRef, UsersRef, active_users, app_usage, top_named, user_activity,
};
use crate::usage::UserActivity;
use crate::usage::minutes::HourUsage;
use crate::usage::rollup::RollupRef;

/// An app day as stored: its figures and its users.
type Encoded = (Vec<u8>, Vec<u8>);

/// The day rows a store keeps for `rows` (any hourly rollup rows), users
/// numbered by `ordinal`: per (UTC day, app) and per UTC day.
pub fn pack<'a>(
    rows: impl IntoIterator<Item = RollupRef<'a>>,
    mut ordinal: impl FnMut(Uuid) -> u32,
) -> (BTreeMap<(i64, AppKey), AppDay>, BTreeMap<i64, FleetDay>) {
    type DayRows = Vec<(u32, usize, HourUsage)>;
    let mut by_app: BTreeMap<(i64, AppKey), DayRows> = BTreeMap::new();
    let mut by_day: BTreeMap<i64, DayRows> = BTreeMap::new();
    for r in rows {
        let cell = (ordinal(r.user_id), r.hour.rem_euclid(24) as usize, r.usage);
        let day = r.hour.div_euclid(24);
        by_app
            .entry((day, (r.access_method, r.slug_or_port.to_owned())))
            .or_default()
            .push(cell);
        by_day.entry(day).or_default().push(cell);
    }
    (
        by_app.into_iter().map(|(k, v)| (k, AppDay::build(v))).collect(),
        by_day.into_iter().map(|(k, v)| (k, FleetDay::build(v))).collect(),
    )
}

/// Dense ordinals for users in the order first seen.
#[derive(Debug, Default)]
pub struct Ordinals {
    ordinals: HashMap<Uuid, u32>,
    users: Vec<Uuid>,
}

impl Ordinals {
    /// The user's ordinal, numbering a new user next.
    pub fn of(&mut self, user: Uuid) -> u32 {
        let next = self.users.len() as u32;
        *self.ordinals.entry(user).or_insert_with(|| {
            self.users.push(user);
            next
        })
    }

    /// The user numbered `ordinal`, if any.
    pub fn user(&self, ordinal: u32) -> Option<Uuid> {
        self.users.get(ordinal as usize).copied()
    }
}

/// Reads over hourly rollup rows through the packed day rows, the way a
/// store with day rows answers: pack the plan's days, take its cut hours
/// from the hourly rows. `rows(from_hour, to_hour)` yields the rollup rows
/// of those hours; `span` the first and last hour that hold any.
pub fn app_usage_from_hours<'a, I>(
    intervals: &Intervals,
    span: Option<(i64, i64)>,
    rows: impl Fn(i64, i64) -> I,
) -> Vec<AppUsageSeries>
where
    I: Iterator<Item = RollupRef<'a>>,
{
    let plan = ReadPlan::within(intervals, span);
    let mut ordinals = Ordinals::default();
    let (apps, _) = pack(day_rows(&plan, &rows), |u| ordinals.of(u));
    let encoded: Vec<(i64, AppKey, Encoded)> = apps
        .into_iter()
        .map(|((d, app), day)| (d, app, day.encode()))
        .collect();
    let cut = cut_rows(&plan, &rows, &mut ordinals);
    app_usage(
        &plan,
        intervals,
        encoded
            .iter()
            .map(|(d, app, (f, u))| (*d, app.clone(), AppDayRef::new(f, u).expect("encoded here"))),
        cut,
    )
}

/// Active users over hourly rollup rows through the packed day rows; see
/// [`app_usage_from_hours`].
pub fn active_users_from_hours<'a, I>(
    intervals: &Intervals,
    span: Option<(i64, i64)>,
    rows: impl Fn(i64, i64) -> I,
) -> ActiveUsers
where
    I: Iterator<Item = RollupRef<'a>>,
{
    let plan = ReadPlan::within(intervals, span);
    let mut ordinals = Ordinals::default();
    let (_, fleet) = pack(day_rows(&plan, &rows), |u| ordinals.of(u));
    let encoded: Vec<(i64, Vec<u8>)> = fleet.into_iter().map(|(d, day)| (d, day.encode().0)).collect();
    let cut = cut_rows(&plan, &rows, &mut ordinals);
    active_users(
        &plan,
        intervals,
        encoded
            .iter()
            .map(|(d, u)| (*d, UsersRef::new(u).expect("encoded here"))),
        cut,
    )
}

/// User activity over hourly rollup rows through the packed fleet days:
/// the totals of the days `intervals` covers whole, the detail of the days
/// it cuts; see [`app_usage_from_hours`].
pub fn user_activity_from_hours<'a, I>(
    intervals: &Intervals,
    span: Option<(i64, i64)>,
    rows: impl Fn(i64, i64) -> I,
    limit: usize,
) -> Vec<UserActivity>
where
    I: Iterator<Item = RollupRef<'a>>,
{
    let plan = ReadPlan::within(intervals, span);
    let mut ordinals = Ordinals::default();
    let (_, fleet) = pack(day_rows(&plan, &rows), |u| ordinals.of(u));
    let encoded: Vec<_> = fleet.into_iter().map(|(d, day)| (d, day.encode())).collect();
    let cut = cut_rows(&plan, &rows, &mut ordinals);
    let days = encoded.iter().map(|(d, (users, totals, detail))| {
        let users = UsersRef::new(users).expect("encoded here");
        let part = if plan.covers_whole(*d) {
            FleetDayPart::Totals(TotalsRef::new(users, totals).expect("encoded here"))
        } else {
            FleetDayPart::Detail(DetailRef::new(users, detail))
        };
        (*d, part)
    });
    let totals = user_activity(&plan, intervals, days, cut).expect("encoded here");
    top_named(totals.contenders(limit), limit, |o| ordinals.user(o)).expect("numbered here")
}

fn day_rows<'a, I>(plan: &ReadPlan, rows: &impl Fn(i64, i64) -> I) -> Vec<RollupRef<'a>>
where
    I: Iterator<Item = RollupRef<'a>>,
{
    plan.day_numbers()
        .flat_map(|d| rows(24 * d, 24 * d + 24))
        .collect()
}

fn cut_rows<'a, I>(plan: &ReadPlan, rows: &impl Fn(i64, i64) -> I, ordinals: &mut Ordinals) -> Vec<CutRow>
where
    I: Iterator<Item = RollupRef<'a>>,
{
    plan.cut_hours
        .iter()
        .flat_map(|&h| rows(h, h + 1))
        .map(|r| CutRow {
            ordinal: ordinals.of(r.user_id),
            app: (r.access_method, r.slug_or_port.to_owned()),
            hour: r.hour,
            usage: r.usage,
        })
        .collect()
}
