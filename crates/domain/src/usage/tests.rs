//! The rollup against the reference, and the range rules.

use std::collections::BTreeMap;

use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::interval::{check_range, intervals, parse_time};
use super::minutes::hour_of;
use super::rollup::{HourlyRollup, contributions};
use super::*;

mod bound;

pub(super) const BASE: OffsetDateTime = datetime!(2026-11-24 00:00 UTC);

fn user(i: u8) -> Uuid {
    Uuid::from_u128(0x1000 + u128::from(i))
}

const APPS: [(AccessMethod, &str); 3] = [
    (AccessMethod::Subdomain, "code-server"),
    (AccessMethod::Terminal, ""),
    (AccessMethod::Path, "code-server"),
];

/// A stored row: whole microseconds, within two days of `BASE`.
pub(super) fn row() -> impl Strategy<Value = StatsReport> {
    (
        0u8..4,
        0usize..3,
        0i64..2 * 86_400_000_000,
        0i64..5 * 3_600_000_000,
        0u64..100,
    )
        .prop_map(|(u, app, start_us, len_us, requests)| {
            let start = BASE + Duration::microseconds(start_us);
            StatsReport {
                user_id: user(u),
                workspace_id: Uuid::from_u128(0x2000 + u128::from(u)),
                agent_id: Uuid::from_u128(0x3000 + u128::from(u)),
                access_method: APPS[app].0,
                slug_or_port: APPS[app].1.to_owned(),
                session_id: Uuid::new_v4(),
                session_started_at: start,
                session_ended_at: Some(start + Duration::microseconds(len_us)),
                requests,
                // Some rows are rolled up: they stand for several sessions.
                sessions: 1 + requests % 4,
            }
        })
}

/// Whole-minute interval bounds around the rows' window.
pub(super) fn intervals_strategy() -> impl Strategy<Value = Intervals> {
    (-600i64..3 * 1440, proptest::collection::vec(1i64..1500, 1..5)).prop_map(|(first, steps)| {
        let mut at = BASE + Duration::minutes(first);
        let mut bounds = vec![at];
        for s in steps {
            at += Duration::minutes(s);
            bounds.push(at);
        }
        Intervals::new(bounds).unwrap()
    })
}

pub(super) fn roll_up_once(rows: &[StatsReport]) -> HourlyRollup {
    let mut rollup = HourlyRollup::default();
    let mut by_hour: BTreeMap<i64, Vec<&StatsReport>> = BTreeMap::new();
    for r in rows {
        by_hour.entry(hour_of(r.session_started_at)).or_default().push(r);
        rollup.mark(hour_of(r.session_started_at));
    }
    for h in rollup.take_dirty() {
        rollup.apply(h, &contributions(by_hour[&h].iter().copied()));
    }
    rollup
}

fn assert_same_figures(rollup: &HourlyRollup, rows: &[StatsReport], iv: &Intervals) {
    let got = rollup::app_usage(rollup.rows_for(iv), iv);
    assert_eq!(got, reference::app_usage(rows, iv), "app usage over {iv:?}");
    assert_eq!(
        rollup::active_users(rollup.rows_for(iv), iv),
        reference::active_users(rows, iv),
        "active users"
    );
    for limit in [0, 2, 100] {
        assert_eq!(
            rollup::user_activity(rollup.rows_for(iv), iv, limit),
            reference::user_activity(rows, iv, limit),
            "user activity, limit {limit}"
        );
    }
}

/// A write of one version of a session: what was known at some point.
#[derive(Debug, Clone)]
enum Op {
    /// Write version `k` (0 = first report) of session `i`.
    Write(usize, u8),
    Tick,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rollup_figures_are_the_reference_figures(
        rows in proptest::collection::vec(row(), 0..25),
        iv in intervals_strategy(),
    ) {
        let rollup = roll_up_once(&rows);
        assert_same_figures(&rollup, &rows, &iv);
    }

    /// Sessions written in many versions (ends moving forward, requests
    /// growing), out of order and replayed, with ticks anywhere: after a
    /// final tick the rollup is the reference of the rows as stored.
    #[test]
    fn ticks_anywhere_give_the_reference_of_the_stored_rows(
        sessions in proptest::collection::vec(row(), 1..10),
        ops in proptest::collection::vec(
            prop_oneof![4 => (0usize..10, 0u8..4).prop_map(|(i, k)| Op::Write(i, k)), 1 => Just(Op::Tick)],
            1..40,
        ),
        iv in intervals_strategy(),
    ) {
        let version = |s: &StatsReport, k: u8| {
            let mut v = s.clone();
            let end = s.session_ended_at.unwrap();
            let part = (end - s.session_started_at) * (f64::from(k) / 3.0);
            v.session_ended_at = Some(s.session_started_at + Duration::microseconds(part.whole_microseconds() as i64));
            v.requests = s.requests * u64::from(k) / 3;
            v
        };
        let mut stored: BTreeMap<Uuid, StatsReport> = BTreeMap::new();
        let mut rollup = HourlyRollup::default();
        let tick = |rollup: &mut HourlyRollup, stored: &BTreeMap<Uuid, StatsReport>| {
            for h in rollup.take_dirty() {
                let rows = stored.values().filter(|r| hour_of(r.session_started_at) == h);
                rollup.apply(h, &contributions(rows));
            }
        };
        for op in ops {
            match op {
                Op::Write(i, k) => {
                    let v = version(&sessions[i % sessions.len()], k);
                    rollup.mark(hour_of(v.session_started_at));
                    stored
                        .entry(v.session_id)
                        .and_modify(|s| s.merge_forward(&v))
                        .or_insert(v);
                }
                Op::Tick => tick(&mut rollup, &stored),
            }
        }
        tick(&mut rollup, &stored);
        // Its counters are the count over its rows (what a store charges).
        let held: Vec<_> = rollup.rows(i64::MIN, i64::MAX).collect();
        assert_eq!(rollup.len(), held.len());
        assert_eq!(rollup.slug_bytes(), held.iter().map(|r| r.slug_or_port.len()).sum::<usize>());
        let rows: Vec<StatsReport> = stored.into_values().collect();
        assert_same_figures(&rollup, &rows, &iv);
    }
}

#[test]
fn two_tabs_of_one_app_count_their_minutes_once() {
    let start = datetime!(2026-11-25 10:00 UTC);
    let tab = |id| StatsReport {
        user_id: user(1),
        workspace_id: user(2),
        agent_id: user(3),
        access_method: AccessMethod::Subdomain,
        slug_or_port: "code-server".into(),
        session_id: Uuid::from_u128(id),
        session_started_at: start,
        session_ended_at: Some(start + Duration::HOUR),
        requests: 5,
        sessions: 1,
    };
    let rows = vec![tab(1), tab(2)];
    let iv = Intervals::new(vec![
        datetime!(2026-11-25 0:00 UTC),
        datetime!(2026-11-26 0:00 UTC),
    ])
    .unwrap();
    let usage = rollup::app_usage(roll_up_once(&rows).rows_for(&iv), &iv);
    let want = UsageFigures {
        usage_seconds: 3600,
        sessions: 2,
        requests: 10,
        unique_users: 1,
    };
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].total, want);
    assert_eq!(usage[0].intervals, vec![want]);
}

#[test]
fn a_session_over_midnight_splits_its_minutes_and_counts_where_its_hour_starts() {
    let rows = vec![StatsReport {
        user_id: user(1),
        workspace_id: user(2),
        agent_id: user(3),
        access_method: AccessMethod::Terminal,
        slug_or_port: String::new(),
        session_id: Uuid::from_u128(9),
        session_started_at: datetime!(2026-11-25 23:50 UTC),
        session_ended_at: Some(datetime!(2026-11-26 00:20 UTC)),
        requests: 3,
        sessions: 1,
    }];
    let days = Intervals::new(vec![
        datetime!(2026-11-25 0:00 UTC),
        datetime!(2026-11-26 0:00 UTC),
        datetime!(2026-11-27 0:00 UTC),
    ])
    .unwrap();
    let usage = &rollup::app_usage(roll_up_once(&rows).rows_for(&days), &days)[0];
    let fig = |usage_seconds, sessions, requests| UsageFigures {
        usage_seconds,
        sessions,
        requests,
        unique_users: 1,
    };
    assert_eq!(usage.intervals, vec![fig(600, 1, 3), fig(1200, 0, 0)]);
    assert_eq!(usage.total, fig(1800, 1, 3));
}

#[test]
fn intervals_are_contiguous_whole_minutes() {
    let t = datetime!(2026-11-25 0:00 UTC);
    assert!(Intervals::new(vec![t]).is_err());
    assert!(Intervals::new(vec![t, t]).is_err());
    assert!(Intervals::new(vec![t, t + Duration::seconds(30)]).is_err());
    let iv = Intervals::new(vec![t, t + Duration::HOUR, t + Duration::DAY]).unwrap();
    assert_eq!(iv.len(), 2);
    assert_eq!(iv.index_of(t), Some(0));
    assert_eq!(iv.index_of(t + Duration::HOUR), Some(1));
    assert_eq!(iv.index_of(t + Duration::DAY), None);
    assert_eq!(iv.index_of(t - Duration::nanoseconds(1)), None);
}

// Range checks, as Coder's insights endpoints do them.

const NOW: OffsetDateTime = datetime!(2026-11-25 14:20:05 UTC);

fn t(s: &str) -> OffsetDateTime {
    parse_time("start_time", s).unwrap()
}

fn refused(start: &str, end: &str) -> (&'static str, String) {
    let e = check_range(t(start), t(end), NOW).unwrap_err();
    (e.field, e.reason)
}

#[test]
fn ranges_start_at_midnight_and_end_at_midnight_or_a_whole_hour_today() {
    let r = check_range(
        t("2026-11-20T00:00:00+02:00"),
        t("2026-11-25T00:00:00+02:00"),
        NOW,
    )
    .unwrap();
    assert_eq!(r.from, datetime!(2026-11-19 22:00 UTC));
    // Today (in the end's offset) the end may be any whole hour up to the
    // end of the current hour.
    check_range(t("2026-11-20T00:00:00Z"), t("2026-11-25T15:00:00Z"), NOW).unwrap();
    check_range(
        t("2026-11-20T00:00:00+05:30"),
        t("2026-11-25T20:00:00+05:30"),
        NOW,
    )
    .unwrap();

    let (field, reason) = refused("2026-11-20T01:00:00Z", "2026-11-21T00:00:00Z");
    assert_eq!(field, "start_time");
    assert!(reason.contains("00:00:00"), "{reason}");
    let (field, reason) = refused("2026-11-20T00:00:00Z", "2026-11-24T15:00:00Z");
    assert_eq!(field, "end_time");
    assert!(reason.contains("00:00:00"), "{reason}");
    let (field, reason) = refused("2026-11-20T00:00:00Z", "2026-11-25T14:30:00Z");
    assert_eq!(field, "end_time");
    assert!(reason.contains("14:00:00"), "{reason}");
    let (field, reason) = refused("2026-11-20T00:00:00Z", "2026-11-25T16:00:00Z");
    assert_eq!(
        (field, reason.as_str()),
        ("end_time", "must not be in the future")
    );
    let (field, _) = refused("2026-11-21T00:00:00Z", "2026-11-20T00:00:00Z");
    assert_eq!(field, "end_time");
    let (field, reason) = refused("2026-11-21T00:00:00Z", "2026-11-21T00:00:00Z");
    assert_eq!(field, "end_time");
    assert!(reason.contains("empty"), "{reason}");
    let (field, reason) = refused("0001-01-01T00:00:00Z", "2026-11-21T00:00:00Z");
    assert_eq!((field, reason.as_str()), ("start_time", "must not be zero"));
    let (field, reason) = refused("2026-11-20T00:00:00.5Z", "2026-11-21T00:00:00Z");
    assert_eq!(field, "start_time");
    assert!(reason.contains("whole second"), "{reason}");

    let e = parse_time("end_time", "yesterday").unwrap_err();
    assert_eq!(e.field, "end_time");
    assert!(e.reason.contains("RFC 3339"), "{}", e.reason);
}

#[test]
fn week_intervals_need_a_last_week_of_six_days() {
    let start = t("2026-11-01T00:00:00Z");
    let range = |days: i64| TimeRange {
        from: start,
        to: start + Duration::days(days),
    };
    assert_eq!(intervals(range(14), IntervalKind::Week).unwrap().len(), 2);
    assert_eq!(intervals(range(13), IntervalKind::Week).unwrap().len(), 2);
    assert_eq!(intervals(range(6), IntervalKind::Week).unwrap().len(), 1);
    let e = intervals(range(12), IntervalKind::Week).unwrap_err();
    assert_eq!(e.field, "interval");
    assert_eq!(IntervalKind::parse("").unwrap(), IntervalKind::Day);
    assert_eq!(IntervalKind::parse("week").unwrap(), IntervalKind::Week);
    assert_eq!(IntervalKind::parse("month").unwrap_err().field, "interval");
}

proptest! {
    /// Day and week intervals start at the range's start, follow each other
    /// at midnight in its offset, are a full day or week long except the
    /// last, which ends at the range's end.
    #[test]
    fn intervals_begin_at_midnight_in_the_start_offset(
        offset_min in -12 * 60i32..=14 * 60,
        days_back in 1i64..200,
        len_hours in 1i64..(24 * 100),
        week in any::<bool>(),
    ) {
        let offset = UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
        let now = NOW;
        let today = now.to_offset(offset).date();
        let start = (today - Duration::days(days_back)).midnight().assume_offset(offset);
        let mut end = start + Duration::hours(len_hours);
        let latest = hour_start_of(now) + Duration::HOUR;
        if end > latest {
            end = latest;
        }
        // Only ends the checks accept: midnight, or a whole hour today.
        let end_local = end.to_offset(offset);
        let end = if end_local.date() == today {
            end_local.replace_minute(0).unwrap().replace_second(0).unwrap().replace_nanosecond(0).unwrap()
        } else {
            end_local.date().midnight().assume_offset(offset)
        };
        prop_assume!(end > start);
        let range = check_range(start, end, now).unwrap();
        let kind = if week { IntervalKind::Week } else { IntervalKind::Day };
        match intervals(range, kind) {
            Err(e) => {
                prop_assert!(week);
                prop_assert_eq!(e.field, "interval");
                let rest = (end - start).whole_seconds() % (7 * 86_400);
                prop_assert!(rest != 0 && rest < 6 * 86_400);
            }
            Ok(iv) => {
                let b = iv.bounds();
                prop_assert_eq!(b[0], start);
                prop_assert_eq!(*b.last().unwrap(), end);
                for (i, w) in b.windows(2).enumerate() {
                    let local = w[0].to_offset(offset);
                    prop_assert_eq!((local.hour(), local.minute(), local.second()), (0, 0, 0));
                    if i + 2 < b.len() {
                        prop_assert_eq!(w[1] - w[0], kind.length());
                    } else {
                        prop_assert!(w[1] - w[0] <= kind.length());
                    }
                }
            }
        }
    }
}

fn hour_start_of(t: OffsetDateTime) -> OffsetDateTime {
    super::minutes::hour_start(hour_of(t))
}

#[test]
fn a_range_off_whole_minutes_is_widened_to_the_minutes_it_touches() {
    let covering = |from: OffsetDateTime, to: OffsetDateTime| {
        let iv = Intervals::covering(TimeRange::new(from, to).unwrap()).unwrap();
        (iv.range().from, iv.range().to)
    };
    let m = |n: i64| BASE + Duration::minutes(n);
    let ns = Duration::nanoseconds;
    assert_eq!(covering(m(1), m(3)), (m(1), m(3)), "whole minutes stay");
    assert_eq!(covering(m(1) + ns(1), m(3) - ns(1)), (m(1), m(3)));
    assert_eq!(covering(m(1) - ns(1), m(3) + ns(1)), (m(0), m(4)));
    assert_eq!(
        covering(m(1) + ns(5), m(1) + ns(6)),
        (m(1), m(2)),
        "inside one minute"
    );
    let last = datetime!(9999-12-31 23:58:30 UTC);
    assert_eq!(
        covering(last, datetime!(9999-12-31 23:59:59.999999 UTC)),
        (datetime!(9999-12-31 23:58 UTC), datetime!(9999-12-31 23:59 UTC)),
        "cut at the last representable minute"
    );
}

proptest! {
    /// The minutes of the widened range are the minutes a session with the
    /// same bounds covers: from its start's minute up to its end.
    #[test]
    fn a_widened_range_holds_the_minutes_a_session_of_its_bounds_covers(
        from_ns in 0i64..10 * 60_000_000_000,
        len_ns in 1i64..10 * 60_000_000_000,
    ) {
        let from = BASE + Duration::nanoseconds(from_ns);
        let to = from + Duration::nanoseconds(len_ns);
        let iv = Intervals::covering(TimeRange::new(from, to).unwrap()).unwrap();
        let start_minute = BASE + Duration::minutes(from_ns.div_euclid(60_000_000_000));
        for n in -2..25 {
            let minute = BASE + Duration::minutes(n);
            let covered = start_minute <= minute && minute < to;
            prop_assert_eq!(iv.index_of(minute).is_some(), covered, "minute {}", minute);
        }
    }
}
