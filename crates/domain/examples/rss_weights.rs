//! Bytes of RSS each thing the collector's memory accounting counts takes,
//! beside what [`Weights::RSS_BYTES`] counts for it: the measurement the
//! weights are set from (BENCHMARKS.md, "The cap full").
//!
//! `cargo run --release -p tally-domain --example rss_weights`
//!
//! Each shape runs in a process of its own (glibc keeps what a process has
//! freed, which would flatter the shapes measured after the first):
//! - own groups: every session in a group of its own, the costliest shape,
//!   at two counts per size of the group table, just after it doubled
//!   (least full) and just before it doubles (fullest);
//! - shared groups: sessions over 3,000 groups (1,000 users, 3 access
//!   methods, 10 apps, one minute), as `cargo xtask capacity` sends them.
//!
//! Every session is closed and short. RSS is read with the sessions held
//! (all live: each counted with the row it may leave), then after a rollup
//! with its rows kept, as a failed flush keeps them as the backlog.

use std::process::Command;

use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup, Weights};
use tally_domain::appstats::{AccessMethod, StatsReport};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);
/// Reports applied at a time, as the collector applies its inbox.
const BATCH: usize = 4096;

/// The group table doubles once it holds 7/8 of its buckets (hashbrown).
const fn just_after_doubling(buckets: usize) -> usize {
    buckets * 7 / 8 + 1
}
const fn just_before_doubling(buckets: usize) -> usize {
    buckets * 7 / 4
}

const RUNS: [(&str, usize); 6] = [
    ("own", just_after_doubling(1 << 18)),
    ("own", just_before_doubling(1 << 18)),
    ("own", just_after_doubling(1 << 20)),
    ("own", just_before_doubling(1 << 20)),
    ("shared", 1_000_000),
    ("shared", 5_000_000),
];

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn report(own_groups: bool, k: usize) -> StatsReport {
    let k128 = k as u128;
    let (user, method, app) = if own_groups {
        (k128, 0, k % 10)
    } else {
        (k128 % 1000, k % 3, k % 10)
    };
    let start = T0 + Duration::milliseconds((k % 1000) as i64);
    StatsReport {
        user_id: Uuid::from_u128(0x1_0000_0000 + user),
        workspace_id: Uuid::from_u128(0x2_0000_0000 + user),
        agent_id: Uuid::from_u128(0x3_0000_0000 + user),
        access_method: [
            AccessMethod::Path,
            AccessMethod::Subdomain,
            AccessMethod::Terminal,
        ][method],
        slug_or_port: format!("app-{app}"),
        session_id: Uuid::from_u128(0x4_0000_0000 + k128),
        session_started_at: start,
        session_ended_at: Some(start + Duration::seconds(5)),
        requests: 1,
        sessions: 1,
    }
}

/// One shape, in this process: prints one line of the table.
fn measure(own_groups: bool, sessions: usize) {
    let weights = Weights::RSS_BYTES;
    let mut batch = Vec::with_capacity(BATCH);
    batch.extend((0..BATCH).map(|k| report(own_groups, k)));
    batch.clear();
    let base = rss_bytes();
    let mut rollup = Rollup::with_weights(DEFAULT_ROLLUP_WINDOW, weights);
    for k in 0..sessions {
        batch.push(report(own_groups, k));
        if batch.len() == BATCH {
            rollup.collect_batch(&batch, usize::MAX);
            batch.clear();
        }
    }
    rollup.collect_batch(&batch, usize::MAX);
    batch.clear();
    let held = rss_bytes() - base;
    let counted = rollup.reserved_units() as u64;
    let groups = rollup.groups();
    let rows = rollup.rollup(T0 + Duration::seconds(10));
    let with_rows = rss_bytes() - base;
    let counted_with_rows = (rollup.reserved_units() + weights.rows(rows.len())) as u64;
    let per = |bytes: u64| bytes as f64 / sessions as f64;
    println!(
        "| {} | {sessions} | {groups} | {:.0} | {:.0} | {:.2} | {} | {:.0} | {:.0} | {:.2} | {:.0} |",
        if own_groups {
            "own group each"
        } else {
            "3,000 groups"
        },
        per(held),
        per(counted),
        held as f64 / counted as f64,
        rows.len(),
        per(with_rows),
        per(counted_with_rows),
        with_rows as f64 / counted_with_rows as f64,
        (with_rows - held) as f64 / rows.len() as f64,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let (Some(shape), Some(n)) = (args.next(), args.next()) {
        measure(shape == "own", n.parse().expect("a session count"));
        return;
    }
    let w = Weights::RSS_BYTES;
    println!(
        "Weights::RSS_BYTES: session {}, group {}, row {} (a new session in a group of its own {}, in a group held {})\n",
        w.session,
        w.group,
        w.row,
        w.new_group(),
        w.new_session()
    );
    println!(
        "| shape | sessions | groups | RSS per session held | counted | RSS / counted | rows after the rollup | RSS per session, rows kept | counted | RSS / counted | RSS per row |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let me = std::env::current_exe().expect("this example's path");
    for (shape, n) in RUNS {
        let status = Command::new(&me)
            .args([shape, &n.to_string()])
            .status()
            .expect("run one shape");
        assert!(status.success(), "{shape} {n}: {status}");
    }
}
