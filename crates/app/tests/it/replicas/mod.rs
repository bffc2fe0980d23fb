//! Three `tally serve` replicas on one PostgreSQL under load, one of them
//! stopped with SIGTERM mid-load, a snapshot sink that fails at first: every
//! acknowledged request is counted exactly once, in exactly one snapshot per
//! period, and every snapshot is delivered once; the replicas that stayed
//! count in their metrics what they acknowledged. A second, exact scenario
//! (`replicas/exact.rs`) knows the period of every decision and checks each
//! snapshot's figures and the replicas' metrics for equality, through a sink
//! outage longer than three periods.
//!
//! `TALLY_REPLICAS_SECONDS` sets the load duration (default 6 s) and
//! `TALLY_REPLICAS_PERIODS` the exact scenario's periods (default 5);
//! `cargo xtask replicas` runs longer ones.

mod checks;
mod exact;
mod load;

use crate::common::{self, scrape, sink};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Server;
use common::db::{
    SnapshotRow, assert_boundary_exact, assert_sessions_exact, counted_boundary, snapshots, stored_sessions,
};
use load::{Driver, USERS, WORKSPACES};
use uuid::Uuid;

/// Sink requests answered 500 before it recovers; more than one publish
/// round's retries, so the outbox has to try again later.
const SINK_OUTAGE: u64 = 6;

fn load_seconds() -> u64 {
    common::number_from_env("TALLY_REPLICAS_SECONDS", 6)
}

fn stop(server: Server) {
    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

/// How replica 2 is stopped halfway through the load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Halt {
    Term,
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_count_every_acknowledged_request_exactly_once() {
    scenario(Halt::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_loses_at_most_what_it_acknowledged_since_its_last_flush() {
    scenario(Halt::Kill).await;
}

/// Unique workspaces and users, allowed and denied decisions of every
/// snapshot equal what was sent in its period; metrics agree with the driver,
/// the outbox and the sink; snapshots wait out a long sink outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_period_counts_exactly_what_was_sent_in_it_through_a_long_sink_outage() {
    exact::scenario(common::number_from_env("TALLY_REPLICAS_PERIODS", 5) as usize).await;
}

async fn scenario(halt: Halt) {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let sink = sink::Sink::start(SINK_OUTAGE).await;
    let mut servers: Vec<Option<Server>> = (0..3)
        .map(|_| Some(common::replica(&url, &sink.url(), &[])))
        .collect();
    let addrs = servers.iter().map(|s| s.as_ref().unwrap().addr).collect();
    // Replica 2 is stopped halfway through the load.
    let driver = Driver::new(addrs, Some(2));

    let seconds = load_seconds();
    let until = Instant::now() + Duration::from_secs(seconds);
    let run = {
        let driver = driver.clone();
        tokio::spawn(async move { driver.run(until, 4, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(seconds * 500)).await;
    driver.retiring_signalled.store(true, Ordering::SeqCst);
    let retiring = servers[2].take().unwrap();
    let client = common::client();
    // What the killed replica may lose: what it held unflushed just before
    // the kill, plus what it acknowledged from then on.
    let scraped_at = Instant::now();
    let unflushed = match halt {
        Halt::Kill => scrape::scrape(&client, retiring.addr)
            .await
            .count(tally::metrics::BOUNDARY_PENDING, &[]),
        Halt::Term => 0,
    };
    let retired = tokio::task::spawn_blocking(move || match halt {
        Halt::Term => stop(retiring),
        Halt::Kill => {
            retiring.signal("-KILL");
            let (status, _) = retiring.wait(Duration::from_secs(10));
            assert_eq!(status.code(), None, "killed by a signal");
        }
    });
    run.await.unwrap();
    retired.await.unwrap();
    // The replicas that stayed: their counters show what they acknowledged.
    for (i, server) in servers.iter().enumerate() {
        if let Some(s) = server {
            let mx = scrape::settled(&client, s.addr).await;
            let want = driver
                .acked
                .lock()
                .by_replica
                .get(&i)
                .copied()
                .unwrap_or_default();
            checks::replica_metrics(i, &mx, want);
        }
    }
    for server in servers.iter_mut() {
        if let Some(s) = server.take() {
            tokio::task::spawn_blocking(move || stop(s)).await.unwrap();
        }
    }

    // One more replica, idle, publishes what the others left in the outbox.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    if halt == Halt::Kill {
        // The killed replica's publishing claims would hold its snapshots for
        // the claim lease (5 min); let that time pass.
        sqlx::query(
            "UPDATE telemetry_snapshots SET claimed_until = now() \
             WHERE published_at IS NULL AND claimed_until > now()",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    let last = common::replica(&url, &sink.url(), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let rows = snapshots(&pool).await;
        if !rows.is_empty() && rows.iter().all(|r| r.published) {
            break rows;
        }
        assert!(Instant::now() < deadline, "snapshots left unpublished: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::task::spawn_blocking(move || stop(last)).await.unwrap();

    let acked = std::mem::take(&mut *driver.acked.lock());
    let rows = snapshots(&pool).await;
    eprintln!(
        "{seconds}s of load: {} boundary logs, {} app stats posts acknowledged; {} snapshots, {} failed publish rounds",
        acked.boundary_posts,
        acked.app_posts,
        rows.len(),
        rows.iter().map(|r| r.attempts).sum::<i32>()
    );
    assert!(
        acked.boundary_posts > 100 && acked.app_posts > 10,
        "too little load to prove anything"
    );

    // Exactly one snapshot per period.
    let mut ends = HashSet::new();
    for r in &rows {
        assert!(
            ends.insert(r.period_end),
            "two snapshots for period ending {}: {rows:#?}",
            r.period_end
        );
    }

    // Conservation: snapshots plus what is still unclosed is what was acknowledged.
    let (allowed, denied) = counted_boundary(&pool, &rows).await;
    match halt {
        Halt::Term => assert_boundary_exact((allowed, denied), (acked.allowed, acked.denied), &rows),
        Halt::Kill => {
            let since: u64 = acked
                .retiring_boundary
                .iter()
                .filter(|(t, _, _)| *t >= scraped_at)
                .map(|(_, a, d)| a + d)
                .sum();
            let lost_allowed = acked
                .allowed
                .checked_sub(allowed)
                .expect("more allowed counted than sent");
            let lost_denied = acked
                .denied
                .checked_sub(denied)
                .expect("more denied counted than sent");
            let bound = unflushed + since;
            eprintln!(
                "SIGKILL lost {lost_allowed} allowed / {lost_denied} denied; bound {bound} decisions \
                 ({unflushed} unflushed just before the kill, {since} acknowledged by it after that)"
            );
            assert!(
                lost_allowed + lost_denied <= bound,
                "lost {} > {bound}",
                lost_allowed + lost_denied
            );
        }
    }

    // Unique counts are exact: a workspace seen by several replicas counts once.
    for r in &rows {
        assert!(r.unique_workspaces <= WORKSPACES as i64, "{r:?}");
        assert!(r.unique_users <= USERS as i64, "{r:?}");
    }
    assert!(
        rows.iter().any(|r| r.replicas >= 2
            && r.unique_workspaces == WORKSPACES as i64
            && r.unique_users == USERS as i64),
        "no period where several replicas saw all workspaces and counted each once: {rows:#?}"
    );

    // The sink: the outage was felt, then each snapshot arrived exactly once.
    let received = std::mem::take(&mut *sink.received.lock());
    assert_eq!(received.refused, SINK_OUTAGE);
    let mut by_id: HashMap<Uuid, &serde_json::Value> = HashMap::new();
    for (key, body) in &received.accepted {
        let id: Uuid = key.parse().unwrap_or_else(|_| panic!("Idempotency-Key {key:?}"));
        assert_eq!(body["id"], key.as_str(), "{body}");
        // A killed replica may have delivered a snapshot without marking it.
        if let Some(before) = by_id.insert(id, body) {
            assert!(
                halt == Halt::Kill && before == body,
                "snapshot {id} delivered twice"
            );
        }
    }
    for r in &delivered {
        let body = by_id
            .get(&r.id)
            .unwrap_or_else(|| panic!("published snapshot {} never reached the sink", r.id));
        assert_eq!(body["allowed_requests"], r.allowed, "{body}");
        assert_eq!(body["denied_requests"], r.denied, "{body}");
        assert_eq!(body["unique_workspaces"], r.unique_workspaces, "{body}");
    }
    let known: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    assert!(
        by_id.keys().all(|id| known.contains(id)),
        "the sink got a snapshot not in the outbox"
    );

    // App stats: each session holds the highest count acknowledged for it,
    // whatever the replays, the replica that stopped and the order in which
    // the replicas' provisional and final rows reached the store.
    let stored = stored_sessions(&pool).await;
    match halt {
        Halt::Term => assert_sessions_exact(&stored, &acked.sessions),
        Halt::Kill => {
            // Only what the killed replica alone acknowledged may be missing
            // (here nothing: every close is also replayed to another replica).
            for (session, &got) in &stored {
                let most = acked
                    .sessions
                    .get(session)
                    .unwrap_or_else(|| panic!("unsent session {session}"));
                assert!(got as u64 <= *most, "session {session}: {got} > {most}");
            }
            for session in acked.sessions.keys() {
                let got = stored.get(session).copied().unwrap_or(0) as u64;
                let floor = acked.surviving.get(session).copied().unwrap_or(0);
                assert!(
                    got >= floor,
                    "session {session}: {got} < {floor} acknowledged by a surviving replica"
                );
            }
        }
    }
    pool.close().await;
    drop(db);
}
