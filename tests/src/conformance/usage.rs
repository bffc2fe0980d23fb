//! The usage rollup: after a tick, every read equals the reference figures
//! computed from the stored rows (`tally_domain::usage::reference`), however
//! the rows got there; retention deletes in bounded rounds and never makes a
//! figure shrink.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tally_domain::appstats::AccessMethod::{Path, Subdomain, Terminal};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::StoreError;
use tally_domain::ports::{Store, TimeRange};
use tally_domain::usage::export::export_app_stats;
use tally_domain::usage::{Intervals, RetentionPolicy, reference};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::fixtures::*;

fn days(from: OffsetDateTime, n: usize) -> Intervals {
    Intervals::new((0..=n).map(|i| from + Duration::days(i as i64)).collect()).unwrap()
}

/// Rows whose session started in `range`, as the store exports them.
async fn exported(store: &dyn Store, range: TimeRange) -> Vec<StatsReport> {
    export_app_stats(store, range).try_collect().await.unwrap()
}

/// Every read of the rollup equals the reference over `rows`.
async fn assert_reads_match(store: &dyn Store, rows: &[StatsReport], iv: &Intervals, what: &str) {
    assert_eq!(
        store.app_usage_by_interval(iv).await.unwrap(),
        reference::app_usage(rows, iv),
        "{what}: app usage"
    );
    assert_eq!(
        store.active_users(iv).await.unwrap(),
        reference::active_users(rows, iv),
        "{what}: active users"
    );
    for limit in [1, NO_LIMIT] {
        assert_eq!(
            store.user_activity(iv.range(), limit).await.unwrap(),
            reference::user_activity(rows, iv, limit),
            "{what}: user activity, limit {limit}"
        );
    }
}

/// Reads show nothing before a tick and the reference figures after it;
/// two tabs of one app count their minutes once; minutes split at midnight,
/// sessions and requests count where the session's hour starts.
pub async fn the_rollup_answers_after_a_tick(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let [u1, u2] = [Who::new(), Who::new()];
    let rows = vec![
        // Two tabs of code-server for the same hour: 60 minutes, not 120.
        row(u1, Subdomain, "code-server", day + mins(600), day + mins(660), 10),
        row(u1, Subdomain, "code-server", day + mins(600), day + mins(660), 5),
        // Over midnight: 10 minutes on day 1, 20 on day 2.
        row(u2, Terminal, "", day + mins(1430), day + mins(1460), 3),
        // Ends where it starts on a whole minute: a session, no minutes.
        row(u2, Path, "jupyter", day + mins(700), day + mins(700), 1),
    ];
    store.write_app_stats(&write_of(rows.clone(), 2)).await.unwrap();
    let iv = days(day, 2);
    assert_eq!(
        store.app_usage_by_interval(&iv).await.unwrap(),
        vec![],
        "before the tick"
    );
    assert_eq!(store.active_users(&iv).await.unwrap().total, 0, "before the tick");

    let tick = store.tick_usage_rollup().await.unwrap();
    assert!(
        !tick.skipped && tick.start_hours == 3 && tick.rows_changed > 0,
        "{tick:?}"
    );
    let stored = exported(store, iv.range()).await;
    assert_eq!(
        by_key(stored.clone()),
        by_key(rows.iter().map(stored_row).collect())
    );
    assert_reads_match(store, &stored, &iv, "after a tick").await;

    let usage = store.app_usage_by_interval(&iv).await.unwrap();
    let code = usage.iter().find(|a| a.slug_or_port == "code-server").unwrap();
    assert_eq!(
        (
            code.total.usage_seconds,
            code.total.sessions,
            code.total.requests,
            code.total.unique_users
        ),
        (3600, 2, 15, 1)
    );
    let term = usage.iter().find(|a| a.access_method == Terminal).unwrap();
    let per_day: Vec<_> = term
        .intervals
        .iter()
        .map(|f| (f.usage_seconds, f.sessions))
        .collect();
    assert_eq!(per_day, vec![(600, 1), (1200, 0)]);
    let jupyter = usage.iter().find(|a| a.slug_or_port == "jupyter").unwrap();
    assert_eq!((jupyter.total.usage_seconds, jupyter.total.sessions), (0, 1));
    assert_eq!(store.active_users(&iv).await.unwrap().intervals, vec![2, 1]);

    // A tick with nothing new changes nothing.
    let again = store.tick_usage_rollup().await.unwrap();
    assert_eq!((again.start_hours, again.rows_changed), (0, 0), "{again:?}");
}

/// A day well away from the other cases' timelines.
fn datetime_day() -> OffsetDateTime {
    time::macros::datetime!(2026-06-01 0:00 UTC)
}

fn stored_row(r: &StatsReport) -> StatsReport {
    StatsReport {
        session_started_at: micros(r.session_started_at),
        session_ended_at: r.session_ended_at.map(micros),
        ..r.clone()
    }
}

/// Each row stands for its count of sessions: a session alone is one, a
/// rolled-up row counts every short session folded into it, and the rollup
/// sums the counts (not rows, not minutes). A later version of a rolled-up
/// row with more sessions folded in raises the count; a replay or an older
/// version does not.
pub async fn sessions_count_every_row_once(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let who = Who::new();
    let mut rows: Vec<_> = (0..3)
        .map(|i| row(who, Path, "app", day + mins(60 + i), day + mins(61 + i), 2))
        .collect();
    // The third row is a rolled-up record of 7 short sessions.
    rows[2].sessions = 7;
    store.write_app_stats(&write_of(rows.clone(), 10)).await.unwrap();
    store.tick_usage_rollup().await.unwrap();
    let iv = days(day, 1);
    let sessions = || async {
        let usage = store.app_usage_by_interval(&iv).await.unwrap();
        let user = store.user_activity(iv.range(), 10).await.unwrap();
        assert_eq!(usage[0].total.sessions, user[0].sessions, "app and user agree");
        (usage[0].total.sessions, usage[0].total.requests)
    };
    assert_eq!(sessions().await, (1 + 1 + 7, 6));
    let stored = exported(store, iv.range()).await;
    assert_eq!(
        stored.iter().map(|r| r.sessions).sum::<u64>(),
        9,
        "stored as sent"
    );

    // A replay of every row is the same rows: still nine sessions.
    store
        .write_app_stats(&write_of(stored.clone(), 10))
        .await
        .unwrap();
    store.tick_usage_rollup().await.unwrap();
    assert_eq!(sessions().await, (9, 6));

    // Three more sessions fold into the record; an older version (fewer)
    // arriving afterwards changes nothing.
    let mut more = rows[2].clone();
    more.sessions = 10;
    store.write_app_stats(&write_of(vec![more], 10)).await.unwrap();
    let mut older = rows[2].clone();
    older.sessions = 4;
    store.write_app_stats(&write_of(vec![older], 10)).await.unwrap();
    store.tick_usage_rollup().await.unwrap();
    assert_eq!(sessions().await, (1 + 1 + 10, 6));
    assert_reads_match(store, &exported(store, iv.range()).await, &iv, "rolled-up rows").await;
}

/// The export streams the stored rows whose session started in the range,
/// oldest first, whatever their length; a user activity range that is not
/// whole minutes is refused.
pub async fn export_streams_rows_started_in_the_range(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let who = Who::new();
    let rows = vec![
        row(who, Path, "a", day - secs(1), day + mins(5), 1),
        row(who, Path, "a", day, day + mins(3000), 2),
        row(who, Path, "a", day + mins(125), day + mins(126), 3),
        row(who, Path, "a", day + mins(120), day + mins(121), 4),
        row(who, Path, "a", day + Duration::DAY, day + Duration::DAY, 5),
    ];
    store.write_app_stats(&write_of(rows.clone(), 2)).await.unwrap();
    let range = TimeRange::new(day, day + Duration::DAY).unwrap();
    let got = exported(store, range).await;
    let want: Vec<_> = [1, 3, 2].iter().map(|&i| stored_row(&rows[i])).collect();
    assert_eq!(got, want);
    let odd = TimeRange::new(day, day + secs(90)).unwrap();
    assert!(matches!(
        store.user_activity(odd, 10).await,
        Err(StoreError::Invalid { .. })
    ));
}

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        app_stats: Duration::days(90),
        usage: Duration::days(365),
        snapshots: Duration::days(365),
        max_batch: Duration::hours(4),
    }
}

/// Raw rows go in rounds of at most four start hours, only once rolled up
/// (a round ticks first), and the rollup keeps every figure; the rollup
/// itself goes after its own retention.
pub async fn retention_purges_in_bounded_rounds_after_rolling_up(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let who = Who::new();
    // One session starting in each of the first 10 hours of the day.
    let rows: Vec<_> = (0..10)
        .map(|h| row(who, Path, "a", day + mins(60 * h + 5), day + mins(60 * h + 15), 1))
        .collect();
    store.write_app_stats(&write_of(rows.clone(), 3)).await.unwrap();
    let iv = days(day, 1);
    let before: Vec<_> = rows.iter().map(stored_row).collect();

    // 90 days and 6 hours later: hours 0..6 are past the raw retention. No
    // tick ran: the purge rolls up first.
    let now = day + Duration::days(90) + mins(6 * 60 + 30);
    let first = store.purge_expired(now, &policy()).await.unwrap();
    assert_eq!((first.app_stats_rows, first.usage_rows), (4, 0), "{first:?}");
    assert_reads_match(store, &before, &iv, "after one round").await;
    let second = store.purge_expired(now, &policy()).await.unwrap();
    assert_eq!(second.app_stats_rows, 2, "{second:?}");
    let third = store.purge_expired(now, &policy()).await.unwrap();
    assert_eq!(third.app_stats_rows, 0, "{third:?}");
    assert_eq!(exported(store, iv.range()).await.len(), 4, "hours 6..10 stay");
    assert_reads_match(store, &before, &iv, "after the raw rows went").await;

    // A year later the rollup goes too, four hours per round.
    let later = day + Duration::days(366);
    let mut rounds = Vec::new();
    loop {
        let round = store.purge_expired(later, &policy()).await.unwrap();
        if round.usage_rows == 0 && round.app_stats_rows == 0 {
            break;
        }
        rounds.push(round.usage_rows);
        assert!(rounds.len() < 10, "{rounds:?}");
    }
    assert_eq!(rounds.iter().sum::<u64>(), 10, "{rounds:?}");
    assert!(rounds.iter().all(|&n| n <= 4), "{rounds:?}");
    assert_eq!(store.app_usage_by_interval(&iv).await.unwrap(), vec![]);
}

/// Once an hour's raw rows are purged its figures are final: a late write
/// for a purged session (a later end, more requests) or a new session
/// starting in a purged hour is stored, changes no figure, and goes with
/// the next round.
pub async fn a_late_write_for_a_purged_hour_changes_no_figure(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let who = Who::new();
    let old = row(who, Terminal, "", day + mins(10), day + mins(20), 5);
    store
        .write_app_stats(&write_of(vec![old.clone()], 1))
        .await
        .unwrap();
    store.tick_usage_rollup().await.unwrap();
    let iv = days(day, 1);
    let want = store.app_usage_by_interval(&iv).await.unwrap();
    assert_eq!(want[0].total.usage_seconds, 600);

    let now = day + Duration::days(91);
    assert_eq!(
        store.purge_expired(now, &policy()).await.unwrap().app_stats_rows,
        1
    );
    let late = vec![
        later(&old, day + mins(50), 9),
        row(who, Terminal, "", day + mins(30), day + mins(40), 1),
    ];
    store.write_app_stats(&write_of(late, 2)).await.unwrap();
    store.tick_usage_rollup().await.unwrap();
    assert_eq!(store.app_usage_by_interval(&iv).await.unwrap(), want, "frozen");
    assert_eq!(
        exported(store, iv.range()).await.len(),
        2,
        "stored until the next round"
    );
    assert_eq!(
        store.purge_expired(now, &policy()).await.unwrap().app_stats_rows,
        2
    );
    store.tick_usage_rollup().await.unwrap();
    assert_eq!(
        store.app_usage_by_interval(&iv).await.unwrap(),
        want,
        "still frozen"
    );
}

/// A round's batch starts at the oldest raw row held: rows only long before
/// the horizon, with months of empty history between them, are all gone
/// after a round per batch of rows, not a round per four empty hours; each
/// round still deletes at most four start hours, and only rows rolled up.
pub async fn retention_skips_empty_history(store: Arc<dyn Store>) {
    let store = &*store;
    let day = datetime_day();
    let who = Who::new();
    let at = |d: i64, minute: i64| day + Duration::days(d) + mins(minute);
    // Start hours 0, 1 and 5 of the day, then one 100 days later.
    let rows = vec![
        row(who, Path, "a", at(0, 5), at(0, 15), 1),
        row(who, Path, "a", at(0, 65), at(0, 75), 2),
        row(who, Path, "a", at(0, 5 * 60 + 5), at(0, 5 * 60 + 15), 3),
        row(who, Terminal, "", at(100, 5), at(100, 25), 4),
    ];
    store.write_app_stats(&write_of(rows.clone(), 8)).await.unwrap();
    let before: Vec<_> = rows.iter().map(stored_row).collect();
    let iv = days(day, 101);

    // 300 days on, all of it is past the raw retention (90 days) and none
    // of the rollup past its own (365). No tick ran: rounds roll up first.
    let now = day + Duration::days(300);
    let mut deleted = Vec::new();
    for _ in 0..4 {
        let round = store.purge_expired(now, &policy()).await.unwrap();
        assert_eq!(round.usage_rows, 0, "{round:?}");
        deleted.push(round.app_stats_rows);
    }
    // Hours 0..4, then 5..9 (from the oldest row, not from hour 4), then
    // the row 100 days later; then nothing is left.
    assert_eq!(deleted, [2, 1, 1, 0]);
    assert_eq!(all_rows(store).await, vec![]);
    assert_reads_match(store, &before, &iv, "after the raw rows went").await;

    // Emptied, the store gets a row a day short of the retention; two days
    // later the first round deletes it.
    let young = row(
        who,
        Path,
        "b",
        now - Duration::days(89),
        now - Duration::days(89) + mins(5),
        1,
    );
    store.write_app_stats(&write_of(vec![young], 1)).await.unwrap();
    let round = store.purge_expired(now, &policy()).await.unwrap();
    assert_eq!(round.app_stats_rows, 0, "kept within the retention: {round:?}");
    let round = store
        .purge_expired(now + Duration::days(2), &policy())
        .await
        .unwrap();
    assert_eq!(round.app_stats_rows, 1, "{round:?}");
}

/// Published snapshots older than their retention go, oldest first, at most
/// four hours of periods per round; unpublished ones stay.
pub async fn retention_deletes_published_snapshots_only(store: Arc<dyn Store>) {
    let store = &*store;
    // Periods 0..12 (half an hour each from T0): publish all but period 3.
    let mut ids = Vec::new();
    for k in 0..12 {
        ids.push(must_close(store, k).await.id);
    }
    let claimer = Uuid::new_v4();
    let claimed = store
        .claim_unpublished_snapshots(claimer, T0, Duration::minutes(5), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 12);
    for (k, id) in ids.iter().enumerate() {
        if k != 3 {
            store
                .mark_snapshot_published(*id, claimer, T0 + mins(400))
                .await
                .unwrap();
        }
    }
    let now = T0 + Duration::days(366);
    let first = store.purge_expired(now, &policy()).await.unwrap();
    // Periods ending in the first four hours after the oldest end (T0 + 30
    // min): ends at 30..240 minutes, i.e. periods 0..7, less the unpublished.
    assert_eq!(first.snapshots, 7, "{first:?}");
    let second = store.purge_expired(now, &policy()).await.unwrap();
    assert_eq!(second.snapshots, 4, "{second:?}");
    let left = store.list_snapshots(100).await.unwrap();
    assert_eq!(left.iter().map(|s| s.id).collect::<Vec<_>>(), vec![ids[3]]);
}

// Property: random writes, replays, handoffs and ticks.

const APPS: [(AccessMethod, &str); 3] = [(Subdomain, "code-server"), (Terminal, ""), (Path, "code-server")];

#[derive(Debug, Clone)]
struct Session {
    user: usize,
    app: usize,
    start_us: i64,
    len_us: i64,
    requests: u64,
}

#[derive(Debug, Clone)]
enum Op {
    /// Versions (session, fraction of its final length and requests in
    /// quarters) in one write; a session appears at most once.
    Write(Vec<(usize, u8)>),
    /// Write again what an earlier write sent (a replay).
    Replay(usize),
    Tick,
}

fn session() -> impl Strategy<Value = Session> {
    (
        0usize..3,
        0usize..3,
        0i64..2 * 86_400_000_000,
        0i64..5 * 3_600_000_000,
        0u64..50,
    )
        .prop_map(|(user, app, start_us, len_us, requests)| Session {
            user,
            app,
            start_us,
            len_us,
            requests,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::collection::vec((0usize..8, 0u8..=4), 1..5).prop_map(Op::Write),
        1 => (0usize..8).prop_map(Op::Replay),
        2 => Just(Op::Tick),
    ]
}

/// One scenario on its own users and its own week of the timeline.
async fn scenario(
    store: &dyn Store,
    base: OffsetDateTime,
    sessions: Vec<Session>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let users: Vec<Who> = (0..3).map(|_| Who::new()).collect();
    let ids: Vec<Uuid> = sessions.iter().map(|_| Uuid::new_v4()).collect();
    let version = |i: usize, q: u8| {
        let s = &sessions[i % sessions.len()];
        let start = base + Duration::microseconds(s.start_us);
        let (app, who) = (APPS[s.app], users[s.user]);
        StatsReport {
            user_id: who.user,
            workspace_id: who.workspace,
            agent_id: who.agent,
            access_method: app.0,
            slug_or_port: app.1.to_owned(),
            session_id: ids[i % sessions.len()],
            session_started_at: start,
            session_ended_at: Some(start + Duration::microseconds(s.len_us * i64::from(q) / 4)),
            requests: s.requests * u64::from(q) / 4,
            // A rolled-up row's count grows as sessions fold into it.
            sessions: 1 + s.requests % 3 * u64::from(q),
        }
    };
    let mut model: BTreeMap<Uuid, StatsReport> = BTreeMap::new();
    let mut writes: Vec<Vec<StatsReport>> = Vec::new();
    for op in ops {
        let rows = match op {
            Op::Tick => {
                store.tick_usage_rollup().await.unwrap();
                continue;
            }
            Op::Write(versions) => {
                let mut rows: Vec<StatsReport> = Vec::new();
                for (i, q) in versions {
                    let v = version(i, q);
                    if !rows.iter().any(|r| r.session_id == v.session_id) {
                        rows.push(v);
                    }
                }
                writes.push(rows.clone());
                rows
            }
            Op::Replay(k) if !writes.is_empty() => writes[k % writes.len()].clone(),
            Op::Replay(_) => continue,
        };
        for r in &rows {
            let r = stored_row(r);
            model
                .entry(r.session_id)
                .and_modify(|m| m.merge_forward(&r))
                .or_insert(r);
        }
        store.write_app_stats(&write_of(rows, 2)).await.unwrap();
    }
    store.tick_usage_rollup().await.unwrap();
    let window = TimeRange::new(base - Duration::DAY, base + Duration::days(4)).unwrap();
    let stored = exported(store, window).await;
    let want: Vec<StatsReport> = model.into_values().collect();
    prop_assert_eq!(by_key(stored.clone()), by_key(want));
    for iv in [
        days(base - Duration::DAY, 4),
        Intervals::new(vec![base + mins(330), base + mins(1770), base + mins(3210)]).unwrap(),
        Intervals::new(vec![base + mins(61), base + mins(119), base + mins(2000)]).unwrap(),
        // Days at -05:00: whole hours, each day split between two intervals.
        Intervals::new(vec![base + mins(300), base + mins(1740), base + mins(3180)]).unwrap(),
        // Days at +05:45, ending on a whole hour: bounds on quarter hours
        // inside a UTC hour.
        Intervals::new(vec![
            base - mins(345),
            base + mins(1095),
            base + mins(2535),
            base + mins(2595),
        ])
        .unwrap(),
    ] {
        assert_reads_match(store, &stored, &iv, "after random writes").await;
    }
    Ok(())
}

/// After any mix of writes (sessions growing over several versions, sent in
/// any order), replays and ticks, one more tick makes every read equal the
/// reference computed from the stored rows.
pub async fn the_rollup_is_the_reference_after_random_writes_replays_and_ticks(store: Arc<dyn Store>) {
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(session(), 1..8),
        proptest::collection::vec(op(), 1..14),
    );
    let runtime = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicI64::new(0);
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(sessions, ops)| {
            // A week of its own per case: no case sees another's rows.
            let k = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let base = datetime_day() + Duration::weeks(k);
            runtime.block_on(scenario(&*store, base, sessions, ops))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
