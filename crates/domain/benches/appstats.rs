//! App-session benchmarks: collect and rollup at fleet scale. Inputs are
//! generated before timing; see BENCHMARKS.md for the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
use tally_domain::clock::ManualClock;
use tally_domain::error::StoreError;
use tally_domain::ports::Reporter;
use time::Duration;

mod fleet;
use fleet::{Fleet, T0, rollup_now};

const SESSIONS: u64 = 1_000_000;

#[derive(Debug)]
struct NoReporter;

#[async_trait]
impl Reporter for NoReporter {
    async fn report(&self, _reports: &[StatsReport]) -> Result<(), StoreError> {
        Ok(())
    }
}

fn collector_with_clock() -> (Arc<StatsCollector>, ManualClock) {
    let config = CollectorConfig {
        max_buffered: usize::MAX,
        ..CollectorConfig::default()
    };
    let clock = ManualClock::new(T0);
    let collector = StatsCollector::new(config, Arc::new(NoReporter), Arc::new(clock.clone()));
    (collector, clock)
}

fn collector() -> Arc<StatsCollector> {
    collector_with_clock().0
}

/// Times `collect` of `inputs()` on a long-lived collector, flushing (not
/// timed) after each round with the clock an hour later, so every round
/// starts empty but with the inbox buffers of a collector that has run.
fn steady_collect(b: &mut criterion::Bencher<'_>, inputs: &dyn Fn() -> Vec<StatsReport>) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (collector, clock) = collector_with_clock();
    let round = || {
        let reports = inputs();
        let started = Instant::now();
        for r in reports {
            collector.collect(r);
        }
        let took = started.elapsed();
        clock.advance(Duration::hours(1));
        runtime.block_on(collector.flush()).unwrap();
        took
    };
    // Two rounds warm both inbox buffers (they are swapped at each flush).
    round();
    round();
    b.iter_custom(|iters| (0..iters).map(|_| round()).sum());
}

fn collect(c: &mut Criterion) {
    let mut fleet = Fleet::new();
    let closed = fleet.one_window(SESSIONS, Some(Duration::seconds(10)));
    let open = fleet.one_window(SESSIONS / 2, None);
    let closing: Vec<_> = open
        .iter()
        .map(|r| StatsReport {
            session_ended_at: Some(r.session_started_at + Duration::seconds(10)),
            ..r.clone()
        })
        .collect();

    let mut group = c.benchmark_group("appstats");
    // One iteration per sample: each takes a whole 1M-report run.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_secs(1));
    group.throughput(Throughput::Elements(SESSIONS));

    group.bench_function("collect_closed", |b| steady_collect(b, &|| closed.clone()));
    group.bench_function("collect_open_then_close", |b| {
        steady_collect(b, &|| open.iter().chain(&closing).cloned().collect())
    });
    group.bench_function("collect_closed_cold", |b| {
        b.iter_batched(
            || (collector(), closed.clone()),
            |(collector, reports)| {
                for r in reports {
                    collector.collect(r);
                }
                collector
            },
            BatchSize::PerIteration,
        )
    });

    // The work collect defers to the next flush: applying the inbox.
    group.bench_function("apply_closed_batch", |b| {
        b.iter_batched(
            || Rollup::new(DEFAULT_ROLLUP_WINDOW),
            |mut rollup| {
                rollup.collect_batch(&closed, usize::MAX);
                rollup
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("apply_closed_one_by_one", |b| {
        b.iter_batched(
            || Rollup::new(DEFAULT_ROLLUP_WINDOW),
            |mut rollup| {
                for r in &closed {
                    rollup.collect_within(r, usize::MAX);
                }
                rollup
            },
            BatchSize::PerIteration,
        )
    });
    // Everything a report costs: collect, then one flush (apply, rollup,
    // a reporter that does nothing).
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    group.bench_function("collect_closed_then_flush", |b| {
        b.iter_batched(
            || (collector(), closed.clone()),
            |(collector, reports)| {
                for r in reports {
                    collector.collect(r);
                }
                runtime.block_on(collector.flush()).unwrap();
                collector
            },
            BatchSize::PerIteration,
        )
    });

    for (name, closed) in [("rollup_1m", true), ("rollup_open_1m", false)] {
        let reports: Vec<_> = (0..SESSIONS).map(|k| fleet.ten_windows(k, closed)).collect();
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut rollup = Rollup::new(DEFAULT_ROLLUP_WINDOW);
                    rollup.collect_batch(&reports, usize::MAX);
                    rollup
                },
                |mut rollup| {
                    let rows = rollup.rollup(black_box(rollup_now()));
                    (rollup, rows)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, collect);
criterion_main!(benches);
