//! Measures the RSS one held thing of the in-memory store takes, for the
//! sizes its memory budget charges (`src/budget.rs`):
//!
//!     cargo run --release -p tally-adapters-memory --example bytes_per_row [ROWS]
//!
//! Rows go in writes of 1024 as the store reporter sends them (1000 users,
//! 10 apps, 3 access methods, short sessions over a day), then one rollup
//! tick; then last-used times of new workspaces; then boundary ids. RSS is
//! read from `/proc/self/status` after every write, so the worst point of a
//! hash table's growth (just after it doubled) is seen; the figures are the
//! worst RSS growth per item after the first tenth of the items (before
//! that, the allocator's own arenas dominate), and the growth per item at
//! the end.

use tally_adapters_memory::MemoryStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::BoundaryDelta;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, BoundaryUsageStore, UsageStore};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-25 00:00 UTC);
const METHODS: [AccessMethod; 3] = [
    AccessMethod::Path,
    AccessMethod::Subdomain,
    AccessMethod::Terminal,
];

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// RSS growth per item: the worst after a tenth of the items, and at the end.
struct Growth {
    base: u64,
    total: u64,
    worst: f64,
    last: f64,
}

impl Growth {
    fn new(total: u64) -> Self {
        Self {
            base: rss_bytes(),
            total,
            worst: 0.0,
            last: 0.0,
        }
    }

    fn sample(&mut self, items: u64) {
        let per = rss_bytes().saturating_sub(self.base) as f64 / items.max(1) as f64;
        if items * 10 >= self.total {
            self.worst = self.worst.max(per);
        }
        self.last = per;
    }

    fn print(&self, what: &str, items: u64) {
        println!(
            "{what}: {items} items, RSS growth per item: worst {:.0} bytes, at the end {:.0} bytes",
            self.worst, self.last
        );
    }
}

fn row(i: u64) -> StatsReport {
    let user = i % 1000;
    let app = (i / 1000) % 30;
    let start = T0 + Duration::seconds((i % 86_400) as i64);
    StatsReport {
        user_id: Uuid::from_u128(u128::from(user) + 1),
        workspace_id: Uuid::from_u128(u128::from(user) + 10_000),
        agent_id: Uuid::from_u128(u128::from(user) + 20_000),
        access_method: METHODS[(app % 3) as usize],
        slug_or_port: format!("app-{}", app / 3),
        session_id: Uuid::new_v4(),
        session_started_at: start,
        session_ended_at: Some(start + Duration::minutes(5)),
        requests: 3,
        sessions: 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("ROWS is a number"));
    let store = MemoryStore::new();

    let mut growth = Growth::new(rows);
    let mut written = 0;
    while written < rows {
        let batch: Vec<StatsReport> = (written..(written + 1024).min(rows)).map(row).collect();
        let last_used = vec![(batch[0].workspace_id, T0)];
        written += batch.len() as u64;
        let write = AppStatsWrite {
            rows: batch,
            batch_size: 1024,
            last_used,
        };
        store.write_app_stats(&write).await.unwrap();
        growth.sample(written);
    }
    growth.print("raw rows (slug 5 bytes)", rows);
    let charged = store.memory_use().held_bytes;
    println!("  charged {} bytes per row", charged / rows);

    let before = rss_bytes();
    let held = store.memory_use().held_bytes;
    store.tick_usage_rollup().await.unwrap();
    let created =
        (store.memory_use().held_bytes - held) / (tally_adapters_memory::budget::ROLLUP_ROW_BYTES + 5);
    println!(
        "rollup rows: {created} created by one tick, RSS growth per row {:.0} bytes",
        rss_bytes().saturating_sub(before) as f64 / created.max(1) as f64
    );

    let workspaces = rows;
    let mut growth = Growth::new(workspaces);
    let mut done = 0;
    while done < workspaces {
        let last_used = (done..(done + 1024).min(workspaces))
            .map(|i| (Uuid::from_u128(u128::from(i) + 1_000_000_000), T0))
            .collect::<Vec<_>>();
        done += last_used.len() as u64;
        let write = AppStatsWrite {
            rows: vec![],
            batch_size: 1024,
            last_used,
        };
        store.write_app_stats(&write).await.unwrap();
        growth.sample(done);
    }
    growth.print("last-used times of new workspaces", workspaces);

    let ids = rows;
    let mut growth = Growth::new(ids);
    let (replica, mut done, mut seq) = (Uuid::new_v4(), 0, 0);
    while done < ids {
        let workspace_ids = (done..(done + 1024).min(ids))
            .map(|i| Uuid::from_u128(u128::from(i) + 2_000_000_000))
            .collect::<Vec<_>>();
        done += workspace_ids.len() as u64;
        seq += 1;
        let delta = BoundaryDelta {
            replica_id: replica,
            seq,
            allowed: 1,
            denied: 0,
            workspace_ids,
            user_ids: vec![],
            tracked_from: T0,
            tracked_to: T0,
        };
        store.flush_boundary_usage(&delta).await.unwrap();
        growth.sample(done);
    }
    growth.print("boundary ids of one period", ids);
}
