use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use mockall::Sequence;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use super::*;
use crate::appstats::AccessMethod;
use crate::clock::ManualClock;
use crate::ports::MockReporter;
use crate::testing::fixtures::report;

mod props;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

fn unavailable() -> StoreError {
    StoreError::unavailable("database down")
}

fn config() -> CollectorConfig {
    CollectorConfig {
        report_interval: std::time::Duration::from_secs(30),
        retry_min_delay: std::time::Duration::from_secs(1),
        ..CollectorConfig::default()
    }
}

fn collector(
    config: CollectorConfig,
    reporter: impl Reporter + 'static,
    clock: &ManualClock,
) -> Arc<StatsCollector> {
    StatsCollector::new(config, Arc::new(reporter), Arc::new(clock.clone()))
}

/// [`config`] with the collector's memory cap at `max_buffered` units.
fn capped(max_buffered: usize) -> CollectorConfig {
    CollectorConfig {
        max_buffered,
        ..config()
    }
}

/// One call a [`recording_reporter`] took.
#[derive(Debug, Clone)]
struct Call {
    at: tokio::time::Instant,
    rows: Vec<StatsReport>,
    /// Whether it succeeded (else it failed as against a database that is down).
    ok: bool,
}

/// Every call a [`recording_reporter`] took, in order.
type Calls = Arc<Mutex<Vec<Call>>>;

/// A mock reporter that records every call and fails those `fails` picks by
/// their number (from 0) as against a database that is down; the others
/// succeed. `|_| false` never fails, `|call| call < 2` fails twice first.
fn recording_reporter(fails: impl Fn(usize) -> bool + Send + 'static) -> (MockReporter, Calls) {
    let calls: Calls = Arc::default();
    let mut reporter = MockReporter::new();
    let seen = calls.clone();
    reporter.expect_report().returning(move |rows| {
        let mut seen = seen.lock();
        let ok = !fails(seen.len());
        seen.push(Call {
            at: tokio::time::Instant::now(),
            rows: rows.to_vec(),
            ok,
        });
        if ok { Ok(()) } else { Err(unavailable()) }
    });
    (reporter, calls)
}

/// The rows of each call, in order.
fn rows_of(calls: &[Call]) -> Vec<Vec<StatsReport>> {
    calls.iter().map(|c| c.rows.clone()).collect()
}

/// Expects one report call, next in `seq`, of exactly `rows`.
fn expect_report_in(
    reporter: &mut MockReporter,
    seq: &mut Sequence,
    rows: Vec<StatsReport>,
    outcome: Result<(), StoreError>,
) {
    reporter
        .expect_report()
        .times(1)
        .in_sequence(seq)
        .withf(move |got| got == rows.as_slice())
        .return_once(move |_| outcome);
}

#[tokio::test]
async fn flush_reports_the_rollup_and_counts() {
    let clock = ManualClock::new(T0 + secs(30));
    let (reporter, calls) = recording_reporter(|_| false);
    let c = collector(config(), reporter, &clock);
    c.collect(report(1, T0, Some(T0 + secs(10)), 2));
    c.collect(report(2, T0, Some(T0 + secs(20)), 3));
    c.flush().await.unwrap();
    let calls = calls.lock();
    assert_eq!(calls.len(), 1);
    let rolled = StatsReport {
        sessions: 2,
        ..report(1, T0, Some(T0 + secs(60)), 5)
    };
    assert_eq!(calls[0].rows, vec![rolled]);
    let stats = c.stats();
    assert_eq!(
        (stats.collected, stats.rows_reported, stats.tracked_sessions),
        (2, 1, 2)
    );
    assert_eq!(
        (stats.backlog_rows, stats.dropped, stats.failed_flushes),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_flush_with_nothing_to_report_does_not_call_the_reporter() {
    let clock = ManualClock::new(T0);
    let mut reporter = MockReporter::new();
    reporter.expect_report().never();
    let c = collector(config(), reporter, &clock);
    c.flush().await.unwrap();
    c.collect(report(1, T0, None, 1));
    c.flush().await.unwrap();
}

/// What the replica's status shows: when the last flush succeeded (by the
/// collector's clock) and why the last one failed, until one succeeds.
#[tokio::test]
async fn the_last_flush_time_and_error_follow_each_flush() {
    let clock = ManualClock::new(T0 + secs(30));
    let (reporter, calls) = recording_reporter(|call| call == 1);
    let c = collector(config(), reporter, &clock);
    assert_eq!(
        (c.stats().last_flush_at, c.stats().last_flush_error),
        (None, None)
    );

    c.collect(report(1, T0, Some(T0 + secs(10)), 2));
    c.flush().await.unwrap();
    assert_eq!(c.stats().last_flush_at, Some(T0 + secs(30)));

    clock.set(T0 + secs(200));
    c.collect(report(2, T0 + secs(100), Some(T0 + secs(110)), 1));
    assert!(c.flush().await.is_err());
    let stats = c.stats();
    assert_eq!(
        stats.last_flush_at,
        Some(T0 + secs(30)),
        "a failure keeps the last success"
    );
    let error = stats.last_flush_error.expect("the failure is kept");
    assert!(error.contains("database down"), "{error}");

    clock.set(T0 + secs(230));
    c.flush().await.unwrap();
    assert_eq!(
        (c.stats().last_flush_at, c.stats().last_flush_error),
        (Some(T0 + secs(230)), None)
    );
    let outcomes: Vec<bool> = calls.lock().iter().map(|c| c.ok).collect();
    assert_eq!(outcomes, [true, false, true]);
}

/// A backlog larger than one store call takes goes in parts; a failure
/// keeps only the rows not yet written, so a long outage's backlog drains.
#[tokio::test]
async fn a_large_backlog_is_written_in_parts_and_a_failed_part_keeps_only_the_rest() {
    let n = MAX_ROWS_PER_REPORT * 2 + 5;
    // The flush's first call fails (all n rows become the backlog); the
    // retry writes one part and fails on the second; the next flush writes
    // the last two parts.
    let (reporter, calls) = recording_reporter(|call| call == 0 || call == 2);
    let clock = ManualClock::new(T0 + secs(130));
    let c = collector(capped(n * 4), reporter, &clock);
    for i in 0..n {
        // Closed sessions longer than the rollup window: one row each.
        c.collect(report(i as u128 + 1, T0, Some(T0 + secs(120)), 1));
    }
    assert!(c.flush().await.is_err());
    assert_eq!(c.stats().backlog_rows, n);
    assert!(c.flush().await.is_err(), "the second part fails");
    let stats = c.stats();
    assert_eq!(
        stats.backlog_rows,
        n - MAX_ROWS_PER_REPORT,
        "the written part left the backlog"
    );
    assert_eq!(stats.rows_reported, MAX_ROWS_PER_REPORT as u64);
    c.flush().await.unwrap();
    let stats = c.stats();
    assert_eq!((stats.backlog_rows, stats.rows_reported), (0, n as u64));

    let calls = calls.lock();
    let sizes: Vec<usize> = calls.iter().map(|c| c.rows.len()).collect();
    assert_eq!(
        sizes,
        [
            MAX_ROWS_PER_REPORT,
            MAX_ROWS_PER_REPORT,
            MAX_ROWS_PER_REPORT,
            MAX_ROWS_PER_REPORT,
            5
        ]
    );
    // Each row was in exactly one successful call.
    let mut written: Vec<Uuid> = calls
        .iter()
        .filter(|c| c.ok)
        .flat_map(|c| c.rows.iter().map(|r| r.session_id))
        .collect();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), n);
}

/// The same within one flush of the rollup: the rows written before the
/// failed part are not kept, the rest become the backlog.
#[tokio::test]
async fn a_rollup_whose_second_part_fails_keeps_only_the_rest_as_backlog() {
    let n = MAX_ROWS_PER_REPORT + 7;
    let (reporter, calls) = recording_reporter(|call| call == 1);
    let clock = ManualClock::new(T0 + secs(130));
    let c = collector(capped(n * 4), reporter, &clock);
    for i in 0..n {
        c.collect(report(i as u128 + 1, T0, Some(T0 + secs(120)), 1));
    }
    assert!(c.flush().await.is_err());
    let stats = c.stats();
    assert_eq!(
        (stats.backlog_rows, stats.rows_reported),
        (7, MAX_ROWS_PER_REPORT as u64)
    );
    c.flush().await.unwrap();
    let stats = c.stats();
    assert_eq!((stats.backlog_rows, stats.rows_reported), (0, n as u64));
    let calls = calls.lock();
    assert_eq!(
        calls.iter().map(|c| c.rows.len()).collect::<Vec<_>>(),
        [MAX_ROWS_PER_REPORT, 7, 7]
    );
    assert_eq!(
        calls[1].rows, calls[2].rows,
        "the failed part is retried as it was"
    );
}

#[tokio::test]
async fn a_failed_report_becomes_the_backlog_and_is_retried_first_whole() {
    let clock = ManualClock::new(T0 + secs(30));
    let mut seq = Sequence::new();
    let mut reporter = MockReporter::new();
    let first = vec![report(1, T0, Some(T0 + secs(60)), 2)];
    let long = report(2, T0 + secs(40), Some(T0 + secs(200)), 7);
    for outcome in [Err(unavailable()), Err(unavailable()), Ok(())] {
        expect_report_in(&mut reporter, &mut seq, first.clone(), outcome);
    }
    expect_report_in(&mut reporter, &mut seq, vec![long.clone()], Ok(()));
    let c = collector(config(), reporter, &clock);

    c.collect(report(1, T0, Some(T0 + secs(10)), 2));
    assert!(c.flush().await.is_err());
    assert_eq!(c.stats().backlog_rows, 1);
    c.collect(long);
    clock.set(T0 + secs(210));
    assert!(
        c.flush().await.is_err(),
        "the backlog fails again: nothing new is tried"
    );
    assert_eq!(c.stats().backlog_rows, 1);
    c.flush().await.unwrap();
    let stats = c.stats();
    assert_eq!(
        (stats.backlog_rows, stats.failed_flushes, stats.rows_reported),
        (0, 2, 2)
    );
}

#[tokio::test]
async fn provisional_rows_of_a_failed_flush_are_reported_again_later_not_backlogged() {
    let clock = ManualClock::new(T0 + secs(90));
    let (reporter, calls) = recording_reporter(|call| call < 1);
    let c = collector(config(), reporter, &clock);
    c.collect(report(1, T0, None, 1));
    assert!(c.flush().await.is_err());
    assert_eq!(c.stats().backlog_rows, 0);
    clock.set(T0 + secs(120));
    c.flush().await.unwrap();
    let calls = calls.lock();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].rows, vec![report(1, T0, Some(T0 + secs(120)), 1)]);
}

#[tokio::test]
async fn close_reports_open_sessions_with_the_close_time_and_stops_the_loop() {
    let clock = ManualClock::new(T0 + secs(10));
    let (reporter, calls) = recording_reporter(|_| false);
    let c = collector(config(), reporter, &clock);
    let task = c.spawn();
    c.collect(report(1, T0 + secs(5), None, 3));
    clock.set(T0 + secs(20));
    c.close().await.unwrap();
    task.await.unwrap();
    assert_eq!(
        rows_of(&calls.lock()),
        vec![vec![report(1, T0 + secs(5), Some(T0 + secs(20)), 3)]]
    );
}

/// While the backlog keeps failing, memory stays under the cap and what
/// did not fit is counted (docs/rules.md#memory-cap).
#[tokio::test]
async fn memory_is_capped_while_reporting_fails_and_drops_are_counted() {
    let clock = ManualClock::new(T0);
    let (reporter, _) = recording_reporter(|_| true);
    let cap = 50;
    let c = collector(capped(cap), reporter, &clock);
    for minute in 0..20 {
        let start = T0 + Duration::minutes(minute);
        for n in 0..10 {
            c.collect(report(
                u128::from(minute as u64 * 100 + n),
                start,
                Some(start + secs(90)),
                1,
            ));
        }
        clock.set(start + secs(100));
        let _ = c.flush().await;
        let stats = c.stats();
        assert!(
            stats.tracked_sessions + stats.backlog_rows <= cap,
            "minute {minute}: {stats:?}"
        );
    }
    let stats = c.stats();
    assert!(stats.dropped > 150, "{stats:?}");
    assert_eq!(stats.collected + stats.dropped, 200);
}

#[tokio::test]
async fn updates_of_tracked_sessions_are_taken_at_the_cap() {
    let clock = ManualClock::new(T0);
    let (reporter, calls) = recording_reporter(|_| false);
    let c = collector(capped(3), reporter, &clock);
    c.collect(report(1, T0, None, 1));
    c.collect(report(2, T0, None, 1));
    c.collect(report(1, T0, Some(T0 + secs(5)), 4));
    assert_eq!((c.stats().collected, c.stats().dropped), (2, 1));
    clock.set(T0 + secs(10));
    c.flush().await.unwrap();
    assert_eq!(calls.lock()[0].rows, vec![report(1, T0, Some(T0 + secs(60)), 4)]);
}

#[tokio::test(start_paused = true)]
async fn the_loop_flushes_every_interval() {
    let clock = ManualClock::new(T0);
    let (reporter, calls) = recording_reporter(|_| false);
    let c = collector(config(), reporter, &clock);
    let begin = tokio::time::Instant::now();
    let task = c.spawn();
    // One long session between two ticks, so every flush has one row.
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    for i in 0..3u128 {
        c.collect(report(i, T0 - secs(300), Some(T0), 1));
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    c.close().await.unwrap();
    task.await.unwrap();
    let offsets: Vec<_> = calls.lock().iter().map(|c| (c.at - begin).as_secs()).collect();
    assert_eq!(offsets, vec![30, 60, 90]);
}

#[tokio::test(start_paused = true)]
async fn after_failures_the_loop_backs_off_exponentially_then_recovers_and_loses_nothing() {
    let clock = ManualClock::new(T0 + secs(10));
    let (reporter, calls) = recording_reporter(|call| call < 4);
    let c = collector(
        CollectorConfig {
            report_interval: std::time::Duration::from_secs(60),
            retry_min_delay: std::time::Duration::from_secs(2),
            ..config()
        },
        reporter,
        &clock,
    );
    c.collect(report(1, T0, Some(T0 + secs(5)), 4));
    let begin = tokio::time::Instant::now();
    let task = c.spawn();
    tokio::time::sleep(std::time::Duration::from_secs(300)).await;
    c.close().await.unwrap();
    task.await.unwrap();

    let calls = calls.lock();
    assert_eq!(calls.len(), 5, "four failures, then success");
    let mut previous = begin;
    let mut gaps = Vec::new();
    for call in calls.iter() {
        assert_eq!(
            call.rows,
            vec![report(1, T0, Some(T0 + secs(60)), 4)],
            "the same backlog"
        );
        gaps.push((call.at - previous).as_secs_f64());
        previous = call.at;
    }
    assert_eq!(gaps[0], 60.0, "first flush after one interval");
    // Retries: 2 s, 4 s, 8 s, 16 s, each plus jitter of less than itself.
    for (i, gap) in gaps[1..].iter().enumerate() {
        let base = 2.0 * 2f64.powi(i as i32);
        assert!((base..2.0 * base).contains(gap), "retry {i}: {gap} s");
    }
    assert_eq!(c.stats().failed_flushes, 4);
    assert_eq!(c.stats().backlog_rows, 0);
}

/// A reporter that notices overlapping calls.
#[derive(Debug, Default)]
struct SlowReporter {
    in_flight: AtomicUsize,
    overlapped: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl Reporter for SlowReporter {
    async fn report(&self, _reports: &[StatsReport]) -> Result<(), StoreError> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_flushes_are_serialized() {
    let clock = ManualClock::new(T0 + Duration::hours(1));
    let reporter = Arc::new(SlowReporter::default());
    let c = StatsCollector::new(config(), reporter.clone(), Arc::new(clock.clone()));
    for n in 0..8 {
        c.collect(report(n, T0, None, 1));
    }
    let flushes: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.flush().await })
        })
        .collect();
    for f in flushes {
        f.await.unwrap().unwrap();
    }
    assert_eq!(reporter.calls.load(Ordering::SeqCst), 4);
    assert_eq!(reporter.overlapped.load(Ordering::SeqCst), 0);
}

/// A reporter that waits until released.
#[derive(Debug)]
struct GatedReporter {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Reporter for GatedReporter {
    async fn report(&self, _reports: &[StatsReport]) -> Result<(), StoreError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn collect_does_not_wait_for_a_flush_in_progress() {
    let clock = ManualClock::new(T0 + secs(300));
    let reporter = Arc::new(GatedReporter {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let c = StatsCollector::new(config(), reporter.clone(), Arc::new(clock.clone()));
    c.collect(report(1, T0, Some(T0 + secs(200)), 1));
    let flushing = tokio::spawn({
        let c = c.clone();
        async move { c.flush().await }
    });
    reporter.entered.notified().await;
    // The reporter is stuck; collect and stats still answer at once.
    c.collect(report(2, T0, Some(T0 + secs(200)), 1));
    assert_eq!(c.stats().collected, 2);
    assert_eq!(c.stats().backlog_rows, 1, "the row being reported counts");
    reporter.release.notify_one();
    flushing.await.unwrap().unwrap();
    assert_eq!(c.stats().backlog_rows, 0);
}

#[test]
fn collect_from_many_threads_counts_every_report() {
    let clock = ManualClock::new(T0);
    let c = collector(config(), MockReporter::new(), &clock);
    std::thread::scope(|s| {
        for t in 0..4u128 {
            let c = &c;
            s.spawn(move || {
                for n in 0..1000 {
                    c.collect(report(t * 10_000 + n, T0, None, 1));
                }
            });
        }
    });
    assert_eq!(c.stats().collected, 4000);
    assert_eq!(c.stats().tracked_sessions, 4000);
}

#[test]
fn debug_output_names_the_collector_without_the_reporter() {
    let clock = ManualClock::new(T0);
    let c = collector(config(), MockReporter::new(), &clock);
    let text = format!("{c:?}");
    assert!(text.starts_with("StatsCollector"), "{text}");
    assert!(text.contains("max_buffered"), "{text}");
}

#[test]
fn a_batch_is_taken_whole_or_refused_whole() {
    let clock = ManualClock::new(T0);
    // A reporter with no expectations: any report would panic.
    let c = collector(capped(30), MockReporter::new(), &clock);
    let open = |n: u128| report(n, T0, None, 1);

    assert_eq!(c.max_reports_per_call(), 10);
    assert!(
        !c.try_collect_all((0..11).map(open).collect()),
        "33 units at worst"
    );
    assert_eq!(c.stats().collected, 0, "nothing of a refused batch is taken");
    assert!(c.try_collect_all((0..10).map(open).collect()));
    assert_eq!(c.stats().collected, 10);
    assert_eq!(c.stats().held_units, 30, "queued at three units each");
    assert!(!c.try_collect_all((10..14).map(open).collect()));
    let stats = c.stats();
    assert_eq!((stats.collected, stats.dropped), (10, 0));

    // Applied, the ten sessions of one group hold 21 units, not 30: three
    // more reports fit at their worst case.
    assert!(c.try_collect_all((0..3).map(|n| report(n, T0, None, 2)).collect()));
    let stats = c.stats();
    assert_eq!((stats.collected, stats.dropped, stats.rows_reported), (13, 0, 0));
    assert_eq!(stats.held_units, 21 + 3 * 3, "applied, plus three queued");
}

/// Weighed in bytes, say: each session, group and row counts at its own
/// weight, a queued report at a new session in a new group's
/// (docs/rules.md#memory-cap).
#[tokio::test]
async fn the_cap_weighs_sessions_groups_and_rows_each_at_its_own_weight() {
    let weights = Weights {
        session: 10,
        group: 100,
        row: 1000,
    };
    let clock = ManualClock::new(T0);
    let (reporter, calls) = recording_reporter(|call| call == 0);
    let config = CollectorConfig {
        weights,
        ..capped(10 * 1110)
    };
    let c = collector(config, reporter, &clock);
    assert_eq!(c.max_reports_per_call(), 10);
    // Ten closed short sessions of one group, queued: each at its worst case.
    let short = |n: u128, requests| report(n, T0, Some(T0 + secs(5)), requests);
    assert!(c.try_collect_all((0..10).map(|n| short(n, 1)).collect()));
    assert_eq!(c.stats().held_units, 10 * 1110);
    assert!(
        !c.try_collect_all(vec![short(10, 1)]),
        "no room for one more at its worst"
    );
    // Refused, but the queue was applied first: one group and ten live
    // sessions, each with the row it may leave.
    assert_eq!(c.stats().held_units, 100 + 10 * (10 + 1000));

    // The flush fails: the ten sessions are done, their group's record is
    // one row of the backlog.
    clock.set(T0 + secs(10));
    assert!(c.flush().await.is_err());
    let stats = c.stats();
    assert_eq!((stats.tracked_sessions, stats.backlog_rows), (10, 1));
    assert_eq!(stats.held_units, 100 + 10 * 10 + 1000);
    // More requests for a rolled-up session: the record's row again.
    c.collect(short(0, 2));
    c.flush().await.unwrap();
    assert_eq!(c.stats().held_units, 100 + 10 * 10, "both rows written");
    let calls = calls.lock();
    let requests: Vec<u64> = calls.iter().map(|call| call.rows[0].requests).collect();
    assert_eq!(requests, [10, 10, 11], "failed, retried, then the update");
}
