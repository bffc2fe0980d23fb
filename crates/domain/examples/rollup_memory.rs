//! Peak resident memory of the `rollup_1m` run: 1,000,000 closed 10 s
//! sessions in 100,000 groups, streamed into the rollup in batches (never
//! all held as reports at once), then one rollup at start + 12 min 1 s.
//!
//! `cargo run --release -p tally-domain --example rollup_memory [batch size, default 65536]`

use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};

use tally_domain::testing::fleet::{Fleet, rollup_now};

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.trim_start_matches(field).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let mut fleet = Fleet::new();
    let mut rollup = Rollup::new(DEFAULT_ROLLUP_WINDOW);
    // Reports arrive in batches, as a collector applies its inbox.
    let batch_size: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("batch size must be a number"))
        .unwrap_or(1 << 16);
    let mut batch = Vec::with_capacity(batch_size);
    for k in 0..1_000_000 {
        batch.push(fleet.ten_windows(k, true));
        if batch.len() == batch.capacity() {
            rollup.collect_batch(&batch, usize::MAX);
            batch.clear();
        }
    }
    rollup.collect_batch(&batch, usize::MAX);
    drop(batch);
    println!(
        "collected: {} sessions in {} groups; VmRSS {}",
        rollup.tracked_sessions(),
        rollup.groups(),
        status("VmRSS:")
    );
    let rows = rollup.rollup(rollup_now());
    println!(
        "rolled up: {} rows; {} groups left; VmRSS {}; peak VmHWM {}",
        rows.len(),
        rollup.groups(),
        status("VmRSS:"),
        status("VmHWM:")
    );
}
