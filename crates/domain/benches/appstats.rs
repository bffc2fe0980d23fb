//! App-session benchmarks: collect and rollup at fleet scale. Inputs are
//! generated before timing; see BENCHMARKS.md for the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::rollup::reference::ReferenceRollup;
use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
use tally_domain::clock::ManualClock;
use tally_domain::error::StoreError;
use tally_domain::ports::Reporter;
use time::Duration;

use tally_domain::testing::fleet::{Fleet, T0, rollup_now};

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

/// What a session costs end to end: collect (the collector's inbox push
/// under its lock), then the apply step, then one rollup at start + 12 min
/// 1 s, where every group rolls up and goes. Two fleet shapes of 1,000,000
/// closed 10 s sessions: `ten_windows`, 100,000 groups of 10 (users x apps x
/// 10 one-minute windows; 100,000 rows), and `one_window`, 10,000 groups of
/// 100 (10,000 rows). An optimization earns its place by a gain on either.
///
/// Timed in on-CPU time of the benchmark thread (`/proc/thread-self/schedstat`):
/// the path is single-threaded, and on a shared machine wall time mostly
/// measures the other tenants. Wall time and time spent waiting for a core
/// are printed beside it.
fn end_to_end(c: &mut Criterion) {
    let mut fleet = Fleet::new();
    let ten_windows: Vec<_> = (0..SESSIONS).map(|k| fleet.ten_windows(k, true)).collect();
    let one_window = fleet.one_window(SESSIONS, Some(Duration::seconds(10)));
    let mut group = c.benchmark_group("rollup_end_to_end");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_secs(1));
    group.throughput(Throughput::Elements(SESSIONS));

    let mut summary = Vec::new();
    for (shape, reports, rows) in [
        ("ten_windows", &ten_windows, 100_000),
        ("one_window", &one_window, 10_000),
    ] {
        let mut run = |name: &str, path: &dyn Fn(Vec<StatsReport>) -> Sample| {
            let name = format!("{shape}/{name}");
            summary.push((name.clone(), measure(&mut group, &name, reports, path)));
        };
        // The floor under any engine: the inbox push, then dropping the reports.
        run("limit_collect_and_drop", &|reports| {
            timed(0, || {
                drop(collect_into_inbox(reports));
                Vec::new()
            })
        });
        run("engine", &|reports| {
            let mut rollup = Rollup::new(DEFAULT_ROLLUP_WINDOW);
            timed(rows, || {
                let mut batch = collect_into_inbox(reports);
                rollup.collect_batch(&batch, usize::MAX);
                batch.clear();
                rollup.rollup(rollup_now())
            })
        });
        run("engine_through_the_collector", &|reports| {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (collector, clock) = collector_with_clock();
            clock.set(rollup_now());
            timed(0, || {
                for r in reports {
                    collector.collect(r);
                }
                runtime.block_on(collector.flush()).unwrap();
                // The flush gave its rows to a reporter that drops them.
                Vec::new()
            })
        });
        run("reference", &|reports| {
            let mut rollup = ReferenceRollup::new(DEFAULT_ROLLUP_WINDOW);
            timed(rows, || {
                let mut batch = collect_into_inbox(reports);
                for r in batch.drain(..) {
                    rollup.collect_within(r, usize::MAX);
                }
                rollup.rollup(rollup_now())
            })
        });
    }
    group.finish();
    eprintln!("rollup_end_to_end medians per session: on-CPU, wall, waiting for a core");
    for (name, mut samples) in summary {
        let per = |d: std::time::Duration| d.as_nanos() as f64 / SESSIONS as f64;
        let median = |samples: &mut Vec<Sample>, f: fn(&Sample) -> std::time::Duration| {
            samples.sort_by_key(f);
            per(f(&samples[samples.len() / 2]))
        };
        let cpu = median(&mut samples, |s| s.cpu);
        let wall = median(&mut samples, |s| s.wall);
        let waited = median(&mut samples, |s| s.waited);
        eprintln!("  {name:40} {cpu:7.1} ns {wall:7.1} ns {waited:7.1} ns");
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu: std::time::Duration,
    wall: std::time::Duration,
    waited: std::time::Duration,
}

/// Runs `run` on a fresh copy of the reports per iteration (copied untimed)
/// and gives criterion the on-CPU times; returns every sample.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    reports: &[StatsReport],
    run: &dyn Fn(Vec<StatsReport>) -> Sample,
) -> Vec<Sample> {
    let mut all = Vec::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let sample = run(reports.to_vec());
                    all.push(sample);
                    sample.cpu
                })
                .sum()
        })
    });
    all
}

/// The collector's `collect`: each report pushed to a fresh inbox under a lock.
fn collect_into_inbox(reports: Vec<StatsReport>) -> Vec<StatsReport> {
    let inbox = parking_lot::Mutex::new(Vec::new());
    for r in reports {
        inbox.lock().push(r);
    }
    inbox.into_inner()
}

/// Times `path`, including dropping the rows it returns (the reporter's
/// part of a flush is a no-op here), which must be `rows`.
fn timed(expected: usize, path: impl FnOnce() -> Vec<StatsReport>) -> Sample {
    let (cpu, waited) = schedstat();
    let started = Instant::now();
    let rows = black_box(path());
    let n = rows.len();
    drop(rows);
    let wall = started.elapsed();
    let (cpu_after, waited_after) = schedstat();
    assert_eq!(n, expected, "rows");
    Sample {
        cpu: cpu_after - cpu,
        wall,
        waited: waited_after - waited,
    }
}

/// This thread's time on a CPU and waiting for one, from the scheduler.
fn schedstat() -> (std::time::Duration, std::time::Duration) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("a number"));
    let mut next = || std::time::Duration::from_nanos(fields.next().expect("two fields"));
    (next(), next())
}

criterion_group!(benches, collect, end_to_end);
criterion_main!(benches);
