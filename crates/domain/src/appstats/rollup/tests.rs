use time::macros::datetime;
use uuid::Uuid;

use super::*;
use crate::appstats::AccessMethod;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);
const USER: Uuid = Uuid::from_u128(0x11);
const WORKSPACE: Uuid = Uuid::from_u128(0x22);
const AGENT: Uuid = Uuid::from_u128(0x33);

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

fn sid(n: u128) -> Uuid {
    Uuid::from_u128(0x5e55_0000 + n)
}

fn open(n: u128, start: OffsetDateTime, requests: u64) -> StatsReport {
    StatsReport {
        user_id: USER,
        workspace_id: WORKSPACE,
        agent_id: AGENT,
        access_method: AccessMethod::Path,
        slug_or_port: "code-server".into(),
        session_id: sid(n),
        session_started_at: start,
        session_ended_at: None,
        requests,
        sessions: 1,
    }
}

fn closed(n: u128, start: OffsetDateTime, end: OffsetDateTime, requests: u64) -> StatsReport {
    StatsReport {
        session_ended_at: Some(end),
        ..open(n, start, requests)
    }
}

fn rollup() -> Rollup {
    Rollup::new(DEFAULT_ROLLUP_WINDOW)
}

/// The rolled-up record of a window: `sessions` folded in, `requests` in all.
fn rolled_record(first: u128, start: OffsetDateTime, requests: u64, sessions: u64) -> StatsReport {
    StatsReport {
        sessions,
        ..closed(first, start, start + DEFAULT_ROLLUP_WINDOW, requests)
    }
}

#[test]
fn short_closed_sessions_roll_up_into_one_record_of_the_window() {
    let mut r = rollup();
    r.collect(closed(1, T0 + secs(5), T0 + secs(15), 2));
    r.collect(closed(2, T0 + secs(20), T0 + secs(50), 3));
    let rows = r.rollup(T0 + secs(70));
    assert_eq!(rows, vec![rolled_record(1, T0, 5, 2)]);
}

#[test]
fn rolled_record_is_reported_only_when_it_changed_and_carries_the_running_total() {
    let mut r = rollup();
    r.collect(closed(1, T0 + secs(5), T0 + secs(15), 2));
    assert_eq!(r.rollup(T0 + secs(20)), vec![rolled_record(1, T0, 2, 1)]);
    assert_eq!(r.rollup(T0 + secs(30)), vec![], "nothing changed");
    r.collect(closed(2, T0 + secs(40), T0 + secs(45), 4));
    assert_eq!(r.rollup(T0 + secs(50)), vec![rolled_record(1, T0, 6, 2)]);
}

#[test]
fn a_session_exactly_one_window_long_still_rolls_up() {
    let mut r = rollup();
    r.collect(closed(1, T0, T0 + secs(60), 1));
    assert_eq!(r.rollup(T0 + secs(61)), vec![rolled_record(1, T0, 1, 1)]);
}

#[test]
fn long_closed_sessions_are_reported_alone_and_not_again() {
    let mut r = rollup();
    let long = closed(1, T0 + secs(5), T0 + secs(200), 9);
    r.collect(long.clone());
    assert_eq!(r.rollup(T0 + secs(210)), vec![long]);
    assert_eq!(r.rollup(T0 + secs(220)), vec![]);
}

#[test]
fn young_open_sessions_wait_and_old_ones_are_reported_with_now_and_kept() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(10), 1));
    assert_eq!(
        r.rollup(T0 + secs(70)),
        vec![],
        "exactly one window old still waits"
    );
    let now = T0 + secs(71);
    let mut provisional = open(1, T0 + secs(10), 1);
    provisional.session_ended_at = Some(now);
    assert_eq!(r.rollup(now), vec![provisional]);
    assert_eq!(r.tracked_sessions(), 1);

    r.collect(open(1, T0 + secs(10), 5));
    let later = T0 + secs(100);
    let mut again = open(1, T0 + secs(10), 5);
    again.session_ended_at = Some(later);
    assert_eq!(r.rollup(later), vec![again], "re-reported with the new now");
}

#[test]
fn a_session_reported_alone_is_never_rolled_up_even_if_it_closes_short() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(10), 1));
    let now = T0 + secs(80);
    assert_eq!(r.rollup(now).len(), 1);
    // The proxy's close says it ended 20 s after it began.
    let close = closed(1, T0 + secs(10), T0 + secs(30), 2);
    r.collect(close.clone());
    // Its row keeps the provisional end already reported (see below).
    assert_eq!(r.rollup(T0 + secs(90)), vec![closed(1, T0 + secs(10), now, 2)]);
    // And a replay of the close, while the group is held, changes nothing.
    r.collect(close);
    assert_eq!(r.rollup(T0 + secs(100)), vec![]);
}

#[test]
fn an_open_session_that_closes_short_rolls_up_once() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(10), 1));
    assert_eq!(r.rollup(T0 + secs(20)), vec![]);
    r.collect(closed(1, T0 + secs(10), T0 + secs(40), 3));
    assert_eq!(r.rollup(T0 + secs(50)), vec![rolled_record(1, T0, 3, 1)]);
}

#[test]
fn replays_of_rolled_sessions_are_harmless_while_the_group_is_held() {
    let mut r = rollup();
    let a = closed(1, T0 + secs(5), T0 + secs(15), 2);
    r.collect(a.clone());
    r.collect(a.clone());
    assert_eq!(r.rollup(T0 + secs(20)), vec![rolled_record(1, T0, 2, 1)]);
    assert_eq!(r.collect_within(&a, usize::MAX), Collected::Unchanged);
    assert_eq!(
        r.collect_within(&open(1, T0 + secs(5), 1), usize::MAX),
        Collected::Unchanged,
        "a reordered older open report does not reopen it"
    );
    assert_eq!(r.rollup(T0 + secs(30)), vec![]);
}

#[test]
fn end_and_requests_move_forward_each_on_its_own() {
    let mut r = rollup();
    r.collect(open(1, T0, 1));
    let now = T0 + secs(200);
    r.rollup(now);
    // An end later than held with fewer requests: only the end moves.
    let later_fewer = closed(1, T0, T0 + secs(150), 0);
    assert_eq!(r.collect_within(&later_fewer, usize::MAX), Collected::Updated);
    // An earlier end with more requests: only the requests move.
    let earlier_more = closed(1, T0, T0 + secs(120), 6);
    assert_eq!(r.collect_within(&earlier_more, usize::MAX), Collected::Updated);
    assert_eq!(r.collect_within(&earlier_more, usize::MAX), Collected::Unchanged);
    assert_eq!(r.rollup(T0 + secs(230)), vec![closed(1, T0, now, 6)]);

    // The same for a rolled-up session: its added requests are not lost.
    let start = T0 + secs(600);
    r.collect(closed(2, start + secs(5), start + secs(15), 2));
    assert_eq!(r.rollup(start + secs(20)), vec![rolled_record(2, start, 2, 1)]);
    let earlier_more = closed(2, start + secs(5), start + secs(12), 5);
    assert_eq!(r.collect_within(&earlier_more, usize::MAX), Collected::Updated);
    assert_eq!(r.rollup(start + secs(30)), vec![rolled_record(2, start, 5, 1)]);
}

#[test]
fn more_requests_for_a_rolled_session_are_added_once() {
    let mut r = rollup();
    r.collect(closed(1, T0 + secs(5), T0 + secs(15), 2));
    r.collect(closed(2, T0 + secs(6), T0 + secs(16), 1));
    assert_eq!(r.rollup(T0 + secs(20)), vec![rolled_record(1, T0, 3, 2)]);
    r.collect(closed(2, T0 + secs(6), T0 + secs(17), 4));
    r.collect(closed(2, T0 + secs(6), T0 + secs(17), 4));
    assert_eq!(r.rollup(T0 + secs(30)), vec![rolled_record(1, T0, 6, 2)]);
}

#[test]
fn sessions_group_by_truncated_start_and_every_key_field() {
    let mut r = rollup();
    let base = closed(1, T0 + secs(5), T0 + secs(6), 1);
    let variants = [
        StatsReport {
            session_id: sid(2),
            session_started_at: T0 + secs(65),
            session_ended_at: Some(T0 + secs(66)),
            ..base.clone()
        },
        StatsReport {
            session_id: sid(3),
            user_id: Uuid::from_u128(7),
            ..base.clone()
        },
        StatsReport {
            session_id: sid(4),
            workspace_id: Uuid::from_u128(7),
            ..base.clone()
        },
        StatsReport {
            session_id: sid(5),
            agent_id: Uuid::from_u128(7),
            ..base.clone()
        },
        StatsReport {
            session_id: sid(6),
            access_method: AccessMethod::Terminal,
            ..base.clone()
        },
        StatsReport {
            session_id: sid(7),
            slug_or_port: "8080".into(),
            ..base.clone()
        },
    ];
    r.collect(base);
    for v in variants {
        r.collect(v);
    }
    assert_eq!(r.groups(), 7);
    let rows = r.rollup(T0 + secs(100));
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|row| row.requests == 1));
    let second_window = rows.iter().find(|row| row.session_id == sid(2)).unwrap();
    assert_eq!(second_window.session_started_at, T0 + secs(60));
    assert_eq!(second_window.session_ended_at, Some(T0 + secs(120)));
}

#[test]
fn big_groups_find_their_sessions_by_index() {
    let mut r = rollup();
    for n in 0..100 {
        r.collect(open(n, T0 + secs(1), 1));
    }
    for n in 0..100 {
        r.collect(closed(n, T0 + secs(1), T0 + secs(2), 2));
        r.collect(open(n, T0 + secs(1), 1));
    }
    assert_eq!(r.tracked_sessions(), 100);
    assert_eq!(r.rollup(T0 + secs(10)), vec![rolled_record(0, T0, 200, 100)]);
}

#[test]
fn a_group_is_dropped_one_window_after_its_rolled_record_ends() {
    let mut r = rollup();
    r.collect(closed(1, T0 + secs(5), T0 + secs(15), 2));
    r.rollup(T0 + secs(20));
    // Rolled record ends at T0 + 60 s; the group waits until T0 + 120 s.
    r.rollup(T0 + secs(120));
    assert_eq!((r.groups(), r.tracked_sessions()), (1, 1));
    r.rollup(T0 + secs(121));
    assert_eq!((r.groups(), r.tracked_sessions()), (0, 0));
    assert_eq!(r.reserved_units(), 0);
}

#[test]
fn a_group_with_an_open_session_is_kept_however_old() {
    let mut r = rollup();
    r.collect(open(1, T0, 1));
    r.collect(closed(2, T0, T0 + secs(1), 1));
    r.rollup(T0 + Duration::hours(5));
    assert_eq!(r.groups(), 1);
    r.collect(closed(1, T0, T0 + Duration::hours(5), 3));
    let rows = r.rollup(T0 + Duration::hours(6));
    assert_eq!(rows, vec![closed(1, T0, T0 + Duration::hours(5), 3)]);
    assert_eq!(r.groups(), 0, "dropped in the same flush once nothing is live");
}

#[test]
fn rollup_final_reports_open_sessions_of_any_age_with_now() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(10), 1));
    r.collect(open(2, T0 - Duration::hours(1), 4));
    let now = T0 + secs(11);
    let mut rows = r.rollup_final(now);
    rows.sort_by_key(|row| row.session_id);
    let with_end = |mut row: StatsReport| {
        row.session_ended_at = Some(now);
        row
    };
    assert_eq!(
        rows,
        vec![
            with_end(open(1, T0 + secs(10), 1)),
            with_end(open(2, T0 - Duration::hours(1), 4))
        ]
    );
}

#[test]
fn a_provisional_end_is_never_before_the_start() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(30), 1));
    let rows = r.rollup_final(T0);
    assert_eq!(rows[0].session_ended_at, Some(T0 + secs(30)));
}

#[test]
fn provisional_rows_are_marked_by_index() {
    let mut r = rollup();
    r.collect(open(1, T0, 1));
    r.collect(closed(2, T0, T0 + secs(300), 1));
    let out = r.rollup_rows(T0 + secs(301), false);
    assert_eq!(out.rows.len(), 2);
    assert_eq!(out.provisional.len(), 1);
    assert_eq!(out.rows[out.provisional[0]].session_id, sid(1));
}

#[test]
fn budget_refuses_new_sessions_but_never_updates_of_live_ones() {
    let mut r = rollup();
    assert_eq!(
        r.collect_within(&open(1, T0, 1), 2),
        Collected::Dropped,
        "new group needs 3"
    );
    assert_eq!(r.collect_within(&open(1, T0, 1), 3), Collected::New);
    assert_eq!(r.reserved_units(), 3);
    assert_eq!(r.collect_within(&open(2, T0, 1), 4), Collected::Dropped);
    assert_eq!(
        r.collect_within(&closed(1, T0, T0 + secs(1), 2), 0),
        Collected::Updated
    );
    assert_eq!(r.collect_within(&open(2, T0, 1), 5), Collected::New);
    assert_eq!(r.reserved_units(), 5);
}

/// Each thing held counts at its own weight: a group once, a session, and
/// a row for each live session and changed record.
#[test]
fn the_budget_weighs_groups_sessions_and_rows_each_at_its_own_weight() {
    let w = Weights {
        session: 10,
        group: 100,
        row: 1000,
    };
    let mut r = Rollup::with_weights(DEFAULT_ROLLUP_WINDOW, w);
    assert_eq!(r.collect_within(&open(1, T0, 1), 1109), Collected::Dropped);
    assert_eq!(
        r.collect_within(&open(1, T0, 1), 1110),
        Collected::New,
        "a new group"
    );
    let short = closed(2, T0 + secs(1), T0 + secs(2), 1);
    assert_eq!(r.collect_within(&short, 2119), Collected::Dropped);
    assert_eq!(r.collect_within(&short, 2120), Collected::New, "a new session");
    let held = Held {
        sessions: 2,
        live: 2,
        groups: 1,
        changed_groups: 0,
    };
    assert_eq!((r.held(), r.reserved_units()), (held, 2120));

    // The short session rolls up; its row goes out, the open one waits.
    assert_eq!(r.rollup(T0 + secs(10)), vec![rolled_record(2, T0, 1, 1)]);
    assert_eq!(r.reserved_units(), 100 + 2 * 10 + 1000);
    // More requests for it: its record's row is held again, once.
    assert_eq!(
        r.collect_within(&closed(2, T0 + secs(1), T0 + secs(2), 3), 2119),
        Collected::Dropped
    );
    assert_eq!(
        r.collect_within(&closed(2, T0 + secs(1), T0 + secs(2), 3), 2120),
        Collected::Updated
    );
    assert_eq!(
        r.collect_within(&closed(2, T0 + secs(1), T0 + secs(2), 4), 2120),
        Collected::Updated
    );
    assert_eq!(r.held().changed_groups, 1);
    assert_eq!(r.reserved_units(), 2120);
}

#[test]
fn times_with_offsets_group_by_their_instant() {
    let mut r = rollup();
    let start = datetime!(2026-11-25 11:00:05 +01:00);
    r.collect(closed(1, start, start + secs(1), 1));
    r.collect(closed(2, T0 + secs(7), T0 + secs(8), 1));
    assert_eq!(r.rollup(T0 + secs(30)), vec![rolled_record(1, T0, 2, 2)]);
}

/// A second open report updates the one tracked session: a copy kept
/// apart would never close, and be re-reported as open forever
/// (docs/rules.md#app-session-reports).
#[test]
fn a_session_reported_open_twice_closes_and_is_freed() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(5), 1));
    r.collect(open(1, T0 + secs(5), 2));
    assert_eq!(r.tracked_sessions(), 1, "one record per session id");
    r.collect(closed(1, T0 + secs(5), T0 + secs(30), 3));
    assert_eq!(r.rollup(T0 + secs(40)), vec![rolled_record(1, T0, 3, 1)]);
    for minute in 1..5 {
        let rows = r.rollup(T0 + Duration::minutes(minute) + secs(40));
        assert!(rows.is_empty(), "never re-reported as open: {rows:?}");
    }
    assert_eq!((r.groups(), r.tracked_sessions()), (0, 0), "freed");
}

/// On close, open sessions younger than the window are reported, with the
/// close time as provisional end, not lost (docs/rules.md#rollup).
#[test]
fn final_rollup_reports_young_open_sessions() {
    let mut r = rollup();
    r.collect(open(1, T0 + secs(50), 6));
    let now = T0 + secs(55);
    assert_eq!(r.rollup(now), vec![], "a regular flush lets it wait");
    let rows = r.rollup_final(now);
    let mut expected = open(1, T0 + secs(50), 6);
    expected.session_ended_at = Some(now);
    assert_eq!(rows, vec![expected]);
}

#[test]
fn a_closed_row_never_ends_before_a_provisional_end_already_reported() {
    // The store keeps the later end anyway; the row sent is the row stored.
    let mut r = rollup();
    r.collect(open(1, T0, 1));
    let now = T0 + secs(200);
    assert_eq!(r.rollup(now)[0].session_ended_at, Some(now));
    r.collect(closed(1, T0, T0 + secs(150), 5));
    assert_eq!(r.rollup(T0 + secs(230)), vec![closed(1, T0, now, 5)]);
    // A close that ends later than the provisional end keeps its own end.
    r.collect(open(2, T0, 1));
    r.rollup(now);
    r.collect(closed(2, T0, T0 + secs(220), 5));
    assert_eq!(r.rollup(T0 + secs(230)), vec![closed(2, T0, T0 + secs(220), 5)]);
}

#[test]
fn slugs_are_interned_once_and_forgotten_with_their_last_group() {
    let mut r = rollup();
    for n in 0..30u128 {
        let mut report = closed(n, T0 + secs(1), T0 + secs(2), 1);
        report.slug_or_port = format!("app-{}", n % 3);
        r.collect(report);
    }
    assert_eq!((r.groups(), r.slugs.len()), (3, 3));
    r.check_invariants();
    r.rollup(T0 + Duration::minutes(5));
    assert_eq!((r.groups(), r.slugs.len()), (0, 0));
    // A dropped report's slug is not kept either.
    assert_eq!(r.collect_within(&open(99, T0, 1), 0), Collected::Dropped);
    assert_eq!(r.slugs.len(), 0);
    r.collect(open(100, T0, 1));
    assert_eq!(r.rollup_final(T0 + secs(1))[0].slug_or_port, "code-server");
}

#[test]
fn reports_starting_outside_the_nanosecond_range_are_dropped() {
    let mut r = rollup();
    let far = datetime!(2300-01-01 00:00 UTC);
    assert_eq!(r.collect_within(&open(1, far, 1), usize::MAX), Collected::Dropped);
    assert_eq!((r.groups(), r.tracked_sessions()), (0, 0));
}

#[test]
fn groups_start_where_telemetry_truncate_says_also_before_1970() {
    let mut r = Rollup::new(Duration::seconds(45));
    let starts = [
        datetime!(1969-12-31 23:59:30 UTC),
        datetime!(1970-01-01 00:00:00 UTC),
        datetime!(2026-11-25 10:00:44.999999999 UTC),
        datetime!(2026-11-25 10:00:45 UTC),
    ];
    for (n, start) in starts.iter().enumerate() {
        r.collect(closed(n as u128, *start, *start + secs(1), 1));
    }
    let rows = r.rollup(datetime!(2027-01-01 00:00 UTC));
    for (n, start) in starts.iter().enumerate() {
        let row = rows.iter().find(|row| row.session_id == sid(n as u128)).unwrap();
        let expected = crate::telemetry::truncate(*start, Duration::seconds(45));
        assert_eq!(row.session_started_at, expected, "{start}");
        assert_eq!(row.session_ended_at, Some(expected + Duration::seconds(45)));
    }
}

mod reference;
