//! The domain embedded in a program of its own, with a store of its own
//! (none of tally's adapters): a map of rows and a list of deltas behind a
//! mutex, implementing the two store ports it needs. The domain's services
//! run on it unchanged: the collector through the store reporter, the
//! boundary tracker, and the access rules around the store.
//!
//! `cargo run -p tally-domain --example embed`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::reporter::{DEFAULT_BATCH_SIZE, StoreReporter};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::clock::{Clock, ManualClock};
use tally_domain::error::{Report, StoreError};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, BoundaryUsageStore, Layered};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, macros::datetime};
use uuid::Uuid;

/// Everything the program stores.
#[derive(Debug, Default)]
struct Tables {
    /// App stat rows by (user, agent, session).
    rows: HashMap<(Uuid, Uuid, Uuid), StatsReport>,
    last_used: HashMap<Uuid, OffsetDateTime>,
    /// Applied boundary deltas; a (replica, seq) is applied once.
    deltas: Vec<BoundaryDelta>,
}

/// The program's own store: one mutex, no I/O.
#[derive(Debug, Default)]
struct TinyStore(Mutex<Tables>);

#[async_trait]
impl AppStatsStore for TinyStore {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        let mut tables = self.0.lock().unwrap();
        for row in &write.rows {
            // The one merge rule every store follows: each column forward.
            tables
                .rows
                .entry(row.row_key())
                .and_modify(|stored| stored.merge_forward(row))
                .or_insert_with(|| row.clone());
        }
        for &(workspace, at) in &write.last_used {
            let last = tables.last_used.entry(workspace).or_insert(at);
            *last = (*last).max(at);
        }
        Ok(())
    }
}

#[async_trait]
impl BoundaryUsageStore for TinyStore {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        let mut tables = self.0.lock().unwrap();
        let seen = |d: &BoundaryDelta| (d.replica_id, d.seq) == (delta.replica_id, delta.seq);
        if tables.deltas.iter().any(seen) {
            return Ok(FlushOutcome::Duplicate);
        }
        tables.deltas.push(delta.clone());
        Ok(FlushOutcome::Applied)
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        let tables = self.0.lock().unwrap();
        let distinct = |ids: fn(&BoundaryDelta) -> &Vec<Uuid>| {
            let mut all: Vec<Uuid> = tables
                .deltas
                .iter()
                .flat_map(|d| ids(d).iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            all.len() as u64
        };
        Ok(BoundaryUsageSummary {
            unique_workspaces: distinct(|d| &d.workspace_ids),
            unique_users: distinct(|d| &d.user_ids),
            allowed_requests: tables.deltas.iter().map(|d| d.allowed).sum(),
            denied_requests: tables.deltas.iter().map(|d| d.denied).sum(),
            replicas: 1,
            tracked_from: tables.deltas.iter().map(|d| d.tracked_from).min(),
            tracked_to: tables.deltas.iter().map(|d| d.tracked_to).max(),
        })
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        let mut tables = self.0.lock().unwrap();
        let before = tables.deltas.len();
        tables.deltas.retain(|d| d.replica_id != replica_id);
        Ok((before - tables.deltas.len()) as u64)
    }
}

/// A new open session of `app` in the user's workspace.
fn session(ids: (Uuid, Uuid, Uuid), app: &str, start: OffsetDateTime) -> StatsReport {
    let (user_id, workspace_id, agent_id) = ids;
    StatsReport {
        user_id,
        workspace_id,
        agent_id,
        access_method: AccessMethod::Subdomain,
        slug_or_port: app.into(),
        session_id: Uuid::new_v4(),
        session_started_at: start,
        session_ended_at: None,
        requests: 1,
        sessions: 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let failed = |e: StoreError| Report(&e).to_string();
    let show = |t: OffsetDateTime| t.format(&Rfc3339).expect("a valid time");
    let clock = ManualClock::new(datetime!(2026-12-01 10:00 UTC));
    let store = Arc::new(TinyStore::default());

    // App sessions: the collector flushes its rollup through the store
    // reporter, which writes as the restricted system subject.
    let as_system = Layered::new(store.clone(), Subject::SystemRestricted);
    let reporter = StoreReporter::new(as_system, DEFAULT_BATCH_SIZE, Arc::new(clock.clone()));
    let collector = StatsCollector::new(
        CollectorConfig::default(),
        Arc::new(reporter),
        Arc::new(clock.clone()),
    );
    let (user, workspace, agent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ids = (user, workspace, agent);
    let mut long = session(ids, "jupyter", clock.now());
    for n in 0..3 {
        // Three short sessions of one app in the first minute.
        let short = session(ids, "code-server", clock.now() + Duration::seconds(10 * n));
        collector.collect(short.clone());
        collector.collect(StatsReport {
            session_ended_at: Some(short.session_started_at + Duration::seconds(5)),
            requests: 4,
            ..short
        });
    }
    collector.collect(long.clone());
    clock.advance(Duration::minutes(5));
    long.session_ended_at = Some(clock.now());
    long.requests = 120;
    collector.collect(long);
    collector.close().await.map_err(failed)?;

    // Boundary usage: one replica's tracker, flushing as the tracker subject.
    let as_tracker: Authorized<_> = Layered::new(store.clone(), Subject::BoundaryUsageTracker);
    let tracker = BoundaryTracker::new(Uuid::new_v4(), Arc::new(clock.clone()));
    tracker.track(workspace, user, 40, 2);
    tracker.track(Uuid::new_v4(), user, 7, 0);
    tracker.flush(&as_tracker).await.map_err(failed)?;
    let usage = as_tracker.boundary_usage_summary().await.map_err(failed)?;

    // The access rules hold for this store too: a workspace proxy may not
    // read boundary usage.
    let as_proxy = Layered::new(store.clone(), Subject::WorkspaceProxy);
    let refused = as_proxy.boundary_usage_summary().await.expect_err("refused");

    let tables = store.0.lock().unwrap();
    let mut rows: Vec<_> = tables.rows.values().collect();
    rows.sort_by_key(|r| (r.slug_or_port.clone(), r.session_started_at));
    println!("app stat rows:");
    for r in rows {
        let end = r.session_ended_at.expect("rows have an end");
        println!(
            "  {:12} {} to {}  {:>3} requests, {} session(s)",
            r.slug_or_port,
            show(r.session_started_at),
            show(end),
            r.requests,
            r.sessions
        );
    }
    println!(
        "workspace {workspace} last used {}",
        show(tables.last_used[&workspace])
    );
    println!(
        "boundary usage: {} workspaces, {} users, {} allowed, {} denied",
        usage.unique_workspaces, usage.unique_users, usage.allowed_requests, usage.denied_requests
    );
    println!("a workspace proxy reading it: {}", Report(&refused));
    Ok(())
}
