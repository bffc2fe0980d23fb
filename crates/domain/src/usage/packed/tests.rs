//! The packed day rows against the reference, for bounds on and off the
//! quarter grid.

use proptest::prelude::*;
use time::Duration;

use super::*;
use crate::appstats::StatsReport;
use crate::usage::reference;
use crate::usage::rollup::HourlyRollup;
use crate::usage::tests::{BASE, intervals_strategy, roll_up_once, row};

/// Day intervals in a random offset of whole quarter hours (-12:00 to
/// +14:00), so bounds cut UTC days and, off whole hours, UTC hours.
fn offset_days() -> impl Strategy<Value = Intervals> {
    (-48i64..=56, 1usize..4, 0i64..4).prop_map(|(quarters, n, hours_more)| {
        let from = BASE + Duration::minutes(15 * quarters);
        let mut bounds: Vec<_> = (0..=n).map(|i| from + Duration::days(i as i64)).collect();
        // A ragged end: today's range may end on any whole hour.
        *bounds.last_mut().unwrap() += Duration::hours(hours_more);
        Intervals::new(bounds).unwrap()
    })
}

fn assert_packed_is_the_reference(rollup: &HourlyRollup, rows: &[StatsReport], iv: &Intervals) {
    let hours = |from: i64, to: i64| rollup.rows(from, to);
    assert_eq!(
        app_usage_from_hours(iv, rollup.hour_span(), hours),
        reference::app_usage(rows, iv),
        "app usage over {iv:?}"
    );
    assert_eq!(
        active_users_from_hours(iv, rollup.hour_span(), hours),
        reference::active_users(rows, iv),
        "active users over {iv:?}"
    );
    for limit in [0, 1, 2, 100] {
        assert_eq!(
            user_activity_from_hours(iv, rollup.hour_span(), hours, limit),
            reference::user_activity(rows, iv, limit),
            "user activity over {iv:?}, limit {limit}"
        );
    }
}

/// One range (user activity's shape) from any minute, or any quarter hour,
/// to any later one: its bounds cut UTC days, on and off the quarter grid.
fn activity_range() -> impl Strategy<Value = Intervals> {
    (-600i64..3 * 1440, 1i64..3 * 1440, any::<bool>()).prop_map(|(first, len, on_grid)| {
        let grid = if on_grid { 15 } else { 1 };
        let from = BASE + Duration::minutes(first.div_euclid(grid) * grid);
        Intervals::single(crate::ports::TimeRange {
            from,
            to: from + Duration::minutes(len.div_euclid(grid).max(1) * grid),
        })
        .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn packed_days_give_the_reference_figures_for_any_bounds(
        rows in proptest::collection::vec(row(), 0..25),
        iv in intervals_strategy(),
    ) {
        assert_packed_is_the_reference(&roll_up_once(&rows), &rows, &iv);
    }

    #[test]
    fn packed_days_give_the_reference_figures_in_quarter_hour_offsets(
        rows in proptest::collection::vec(row(), 0..25),
        iv in offset_days(),
    ) {
        let plan = ReadPlan::of(&iv);
        prop_assert!(plan.cut_hours.is_empty(), "{plan:?}");
        assert_packed_is_the_reference(&roll_up_once(&rows), &rows, &iv);
    }

    #[test]
    fn packed_user_activity_is_the_reference_for_ranges_on_and_off_the_quarter_grid(
        rows in proptest::collection::vec(row(), 0..25),
        iv in activity_range(),
    ) {
        assert_packed_is_the_reference(&roll_up_once(&rows), &rows, &iv);
    }

    #[test]
    fn fleet_days_read_back_as_written(rows in proptest::collection::vec(row(), 0..25)) {
        let rollup = roll_up_once(&rows);
        let mut ordinals = Ordinals::default();
        let (apps, fleet) = pack(rollup.rows(i64::MIN, i64::MAX), |u| ordinals.of(u));
        for day in fleet.values() {
            let (users, totals, detail) = day.encode();
            prop_assert_eq!(&FleetDay::decode(&users, &totals, &detail).unwrap(), day);
            for u in &day.users {
                prop_assert_eq!(u.detail.within(u128::MAX), (u.minutes, u.sessions, u.requests));
            }
        }
        for day in apps.values() {
            let (figures, users) = day.encode();
            let back = AppDayRef::new(&figures, &users).unwrap();
            prop_assert_eq!(back.users.iter().collect::<Vec<_>>(), day.users.clone());
            prop_assert!((0..QUARTERS_PER_DAY).all(|q| back.minutes(q) == day.minutes[q]));
            prop_assert!((0..HOURS_PER_DAY).all(|h| back.sessions(h) == day.sessions[h] && back.requests(h) == day.requests[h]));
        }
    }
}

#[test]
fn a_bound_off_the_quarter_grid_cuts_its_hour_only() {
    let t = |m: i64| BASE + Duration::minutes(m);
    // 10:00 .. 12:40 .. 13:30: hour 12 is cut (12:40), 13:30 is on the grid.
    let plan = ReadPlan::of(&Intervals::new(vec![t(600), t(760), t(810)]).unwrap());
    assert_eq!(plan.cut_hours, vec![hour_of(t(720))]);
    let (_, quarters) = &plan.days[0];
    assert_eq!(quarters[39], None, "09:45 is before the range");
    assert_eq!(&quarters[40..48], &[Some(0); 8], "10:00 to 12:00");
    assert_eq!(
        &quarters[48..52],
        &[None; 4],
        "hour 12 comes from the hourly rows"
    );
    assert_eq!(&quarters[52..54], &[Some(1); 2], "13:00 to 13:30");
    assert_eq!(quarters[54], None);
}

#[test]
fn malformed_packed_rows_are_refused() {
    assert!(UsersRef::new(&[0; 17]).is_err());
    assert!(AppDayRef::new(&[0; 10], &[]).is_err());
    assert!(FleetDay::decode(&[0; 16], &[0; 19], &[]).is_err());
}

#[test]
fn a_fleet_day_whose_detail_does_not_fit_its_users_is_refused() {
    let hour = HourUsage {
        minutes: 0b111 << 14,
        sessions: 3,
        requests: 300,
    };
    let (users, totals, detail) = FleetDay::build([(0, 5, hour), (1, 6, hour)]).encode();
    assert_eq!(
        FleetDay::decode(&users, &totals, &detail).unwrap().users[1]
            .detail
            .minutes[24..26],
        [1, 2],
        "minute 14 in quarter 0, 15 and 16 in quarter 1 of hour 6"
    );
    assert!(FleetDay::decode(&users, &totals, &detail[..detail.len() - 1]).is_err());
    let mut longer = detail.clone();
    longer.push(0);
    assert!(FleetDay::decode(&users, &totals, &longer).is_err());
}

#[test]
fn a_cut_day_is_never_read_from_its_totals() {
    let t = |m: i64| BASE + Duration::minutes(m);
    let iv = Intervals::new(vec![t(330), t(1770)]).unwrap();
    let plan = ReadPlan::of(&iv);
    let hour = HourUsage {
        minutes: 1,
        sessions: 1,
        requests: 1,
    };
    let (users, totals, detail) = FleetDay::build([(0, 7, hour)]).encode();
    let users = UsersRef::new(&users).unwrap();
    let day = BASE.unix_timestamp().div_euclid(86_400);
    assert!(!plan.covers_whole(day));
    let totals = FleetDayPart::Totals(TotalsRef::new(users, &totals).unwrap());
    assert!(user_activity(&plan, &iv, [(day, totals)], Vec::<CutRow>::new()).is_err());
    let detail = FleetDayPart::Detail(DetailRef::new(users, &detail));
    let got = user_activity(&plan, &iv, [(day, detail)], Vec::<CutRow>::new()).unwrap();
    assert_eq!(
        got.contenders(10),
        vec![(
            0,
            UserTotals {
                minutes: 1,
                sessions: 1,
                requests: 1
            }
        )]
    );
}
