//! The PostgreSQL store against a real server (the harness starts its own).

mod appstats;
mod boundary;
mod cancelled;
mod concurrency;
mod insights;
mod lock_order;
mod migrate;
mod replicas;
mod retention_writers;
mod telemetry;
mod tls;

use tally_adapters_postgres::{AppStatsWriteMode, PgStore};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_tests::pg::{TestDatabase, fresh_database};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A migrated store on a database of its own; keep `db` alive.
#[derive(Debug)]
pub struct Fixture {
    pub store: PgStore,
    pub db: TestDatabase,
}

pub async fn fixture() -> Fixture {
    let db = fresh_database().await;
    let store = PgStore::connect(&db.url).await.expect("connect and migrate");
    Fixture { store, db }
}

pub async fn fixture_with(mode: AppStatsWriteMode) -> Fixture {
    let f = fixture().await;
    Fixture {
        store: f.store.clone().with_write_mode(mode),
        db: f.db,
    }
}

pub const MODES: [AppStatsWriteMode; 2] = [AppStatsWriteMode::Copy, AppStatsWriteMode::Upsert];

pub const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

/// A closed session of `secs` seconds starting `start_secs` after [`T0`].
pub fn session(
    user: Uuid,
    workspace: Uuid,
    slug: &str,
    start_secs: i64,
    secs: i64,
    requests: u64,
) -> StatsReport {
    let start = T0 + Duration::seconds(start_secs);
    StatsReport {
        user_id: user,
        workspace_id: workspace,
        agent_id: Uuid::from_u128(workspace.as_u128() ^ 0xa9e7),
        access_method: AccessMethod::Path,
        slug_or_port: slug.to_owned(),
        session_id: Uuid::new_v4(),
        session_started_at: start,
        session_ended_at: Some(start + Duration::seconds(secs)),
        requests,
        sessions: 1,
    }
}

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}
