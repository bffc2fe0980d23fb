//! The rollup end to end with each optimization turned off, interleaved:
//! every round runs every variant once, in a rotated order, so that a shared
//! machine's changing load falls on all of them alike. Prints, per variant,
//! the median on-CPU time per session and the median of its per-round ratio
//! to the engine with everything on.
//!
//! `cargo run --release -p tally-domain --example rollup_ablation [rounds, default 15]`

use std::time::{Duration, Instant};

use tally_domain::StatsReport;
use tally_domain::appstats::rollup::reference::ReferenceRollup;
use tally_domain::appstats::rollup::{Ablation, DEFAULT_ROLLUP_WINDOW, Rollup};

#[path = "../benches/fleet.rs"]
#[allow(dead_code)]
mod fleet;

const SESSIONS: u64 = 1_000_000;

/// This thread's time on a CPU, from the scheduler.
fn on_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
}

fn inbox(reports: Vec<StatsReport>) -> Vec<StatsReport> {
    let inbox = parking_lot::Mutex::new(Vec::new());
    for r in reports {
        inbox.lock().push(r);
    }
    inbox.into_inner()
}

/// Collect, apply and roll up `reports`; on-CPU and wall time.
fn run(variant: Option<Ablation>, reports: Vec<StatsReport>) -> (Duration, Duration) {
    let mut engine = variant.map(|a| Rollup::with_ablation(DEFAULT_ROLLUP_WINDOW, a));
    let mut reference = ReferenceRollup::new(DEFAULT_ROLLUP_WINDOW);
    let (cpu, wall) = (on_cpu(), Instant::now());
    let mut batch = inbox(reports);
    let rows = match &mut engine {
        Some(engine) => {
            engine.collect_batch(&batch, usize::MAX);
            batch.clear();
            engine.rollup(fleet::rollup_now())
        }
        None => {
            for r in batch.drain(..) {
                reference.collect_within(r, usize::MAX);
            }
            reference.rollup(fleet::rollup_now())
        }
    };
    assert_eq!(rows.len(), 100_000);
    drop(rows);
    (on_cpu() - cpu, wall.elapsed())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(15, |a| a.parse().expect("rounds"));
    let mut fleet = fleet::Fleet::new();
    let reports: Vec<_> = (0..SESSIONS).map(|k| fleet.ten_windows(k, true)).collect();
    let on = Ablation::default();
    let variants: Vec<(&str, Option<Ablation>)> = vec![
        ("engine", Some(on)),
        (
            "without slug interning",
            Some(Ablation {
                intern_slugs: false,
                ..on
            }),
        ),
        (
            "without buffer pool",
            Some(Ablation {
                buffer_pool: false,
                ..on
            }),
        ),
        (
            "without bucket sort",
            Some(Ablation {
                bucket_sort: false,
                ..on
            }),
        ),
        (
            "without touch-ahead",
            Some(Ablation {
                touch_ahead: false,
                ..on
            }),
        ),
        (
            "without small-group scan",
            Some(Ablation {
                small_group_scan: false,
                ..on
            }),
        ),
        (
            "without foldhash",
            Some(Ablation {
                foldhash: false,
                ..on
            }),
        ),
        (
            "without any of these",
            Some(Ablation {
                intern_slugs: false,
                buffer_pool: false,
                bucket_sort: false,
                touch_ahead: false,
                small_group_scan: false,
                foldhash: false,
            }),
        ),
        ("reference", None),
    ];
    let n = variants.len();
    let mut cpu = vec![Vec::new(); n];
    let mut wall = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let (c, w) = run(variants[i].1, reports.clone());
            cpu[i].push(c.as_nanos() as f64 / SESSIONS as f64);
            wall[i].push(w.as_nanos() as f64 / SESSIONS as f64);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "{:26} {:>12} {:>12} {:>16}",
        "variant", "cpu ns/sess", "wall ns/sess", "cpu vs engine"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        let ratios: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(v, e)| v / e).collect();
        println!(
            "{name:26} {:12.1} {:12.1} {:15.3}x",
            median(cpu[i].clone()),
            median(wall[i].clone()),
            median(ratios)
        );
    }
}
