//! Retention purging raw rows while replicas still write them (sessions
//! older than the raw retention, rewritten at every flush): the purge and
//! the writers lock the same rows, and must never deadlock.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_adapters_postgres::PgStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::Report;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, UsageStore};
use tally_domain::usage::RetentionPolicy;
use time::Duration;
use uuid::Uuid;

use super::{T0, fixture};

const WRITERS: usize = 2;
const ROUNDS: u64 = 80;
const SESSIONS: usize = 300;

/// "deadlock" if `e` is one, else a panic naming `what`.
fn deadlock_or_panic(what: &str, e: &tally_domain::error::StoreError) -> String {
    let text = Report(e).to_string();
    assert!(text.contains("40P01"), "{what}: {text}");
    format!("{what}: {text}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_and_writers_of_the_same_old_rows_never_deadlock() {
    let f = fixture().await;
    let mut rng = StdRng::seed_from_u64(11);
    let workspace = Uuid::from_u128(rng.random());
    let sessions: Vec<StatsReport> = (0..SESSIONS)
        .map(|_| {
            let start = T0 + Duration::seconds(rng.random_range(0..3600));
            StatsReport {
                user_id: Uuid::from_u128(rng.random_range(0..4)),
                workspace_id: workspace,
                agent_id: Uuid::from_u128(7),
                access_method: AccessMethod::Terminal,
                slug_or_port: String::new(),
                session_id: Uuid::from_u128(rng.random()),
                session_started_at: start,
                session_ended_at: Some(start),
                requests: 0,
                sessions: 1,
            }
        })
        .collect();
    // 91 days on: every row is past the raw retention, and still written.
    let now = T0 + Duration::days(91);
    let mut writers = vec![];
    for w in 0..WRITERS {
        let store = PgStore::connect(&f.db.url).await.expect("connect");
        let sessions = sessions.clone();
        writers.push(tokio::spawn(async move {
            let mut deadlocks = vec![];
            for round in 1..=ROUNDS {
                let rows = sessions
                    .iter()
                    .map(|s| StatsReport {
                        session_ended_at: Some(s.session_started_at + Duration::seconds(round as i64)),
                        requests: round,
                        ..s.clone()
                    })
                    .collect();
                let write = AppStatsWrite {
                    rows,
                    batch_size: 64,
                    last_used: vec![],
                };
                if let Err(e) = store.write_app_stats(&write).await {
                    deadlocks.push(deadlock_or_panic(&format!("writer {w}, round {round}"), &e));
                }
            }
            deadlocks
        }));
    }
    let purger = {
        let store = f.store.clone();
        tokio::spawn(async move {
            let mut deadlocks = vec![];
            for round in 0..ROUNDS {
                if let Err(e) = store.purge_expired(now, &RetentionPolicy::default()).await {
                    deadlocks.push(deadlock_or_panic(&format!("purge round {round}"), &e));
                }
            }
            deadlocks
        })
    };
    let mut deadlocks = purger.await.unwrap();
    for w in writers {
        deadlocks.extend(w.await.unwrap());
    }
    assert!(
        deadlocks.is_empty(),
        "{} deadlocks: {deadlocks:#?}",
        deadlocks.len()
    );
}
