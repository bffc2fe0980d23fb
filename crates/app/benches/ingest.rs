//! The app stats ingest path: decoding a proxy's batch, and a whole request
//! through the router (auth, body, decode, validate, collect) in-process.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally::config::Tokens;
use tally::http::{APP_STATS_PATH, AppState, ingest::decode_app_stats, router};
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::reporter::StoreReporter;
use tally_domain::appstats::session_times::SessionTimeLimits;
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::{ManualClock, SystemClock};
use tally_domain::ports::Store;
use tower::ServiceExt as _;

const BATCH: usize = 100;
/// The server's clock for ingest: the batch's sessions are of its day.
const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-25 12:00 UTC);

fn batch_body(seed: u64) -> Vec<u8> {
    let stats: Vec<_> = (0..BATCH as u64)
        .map(|i| {
            let n = seed * BATCH as u64 + i;
            let method = ["path", "subdomain", "terminal"][(n % 3) as usize];
            let ended = if n.is_multiple_of(4) {
                "0001-01-01T00:00:00Z"
            } else {
                "2026-11-25T10:15:50.5Z"
            };
            serde_json::json!({
                "user_id": uuid::Uuid::from_u128(u128::from(n % 1000) + 1),
                "workspace_id": uuid::Uuid::from_u128(u128::from(n % 1000) + 10_000),
                "agent_id": uuid::Uuid::from_u128(u128::from(n % 1000) + 20_000),
                "access_method": method,
                "slug_or_port": format!("app-{}", n % 10),
                "session_id": uuid::Uuid::new_v4(),
                "session_started_at": "2026-11-25T10:15:30.123456789Z",
                "session_ended_at": ended,
                "requests": n % 50,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "stats": stats })).unwrap()
}

fn decode(c: &mut Criterion) {
    let body = batch_body(0);
    let window = SessionTimeLimits::default().at(NOW);
    let mut g = c.benchmark_group("app_stats");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("decode_and_validate_batch_of_100", |b| {
        b.iter(|| decode_app_stats(std::hint::black_box(&body), &window).unwrap())
    });
    g.finish();
}

fn request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = rt.block_on(tally::store::open_store(None)).unwrap();
    let clock = Arc::new(SystemClock);
    let reporter = Arc::new(StoreReporter::new(
        Authorized::new(store.clone(), Subject::SystemRestricted),
        1024,
        clock.clone(),
    ));
    let collector = StatsCollector::new(
        CollectorConfig {
            max_buffered: usize::MAX / 2,
            ..CollectorConfig::default()
        },
        reporter,
        clock.clone(),
    );
    let app = router(
        AppState::new(
            store,
            collector.clone(),
            Arc::new(BoundaryTracker::new(uuid::Uuid::new_v4(), clock)),
            Tokens::parse("proxy=bench").unwrap(),
            8 << 20,
        )
        .with_clock(Arc::new(ManualClock::new(NOW))),
        std::time::Duration::from_secs(30),
    );
    // Distinct sessions per request, as a fleet would send; flushed now and
    // then so memory stays flat.
    let bodies: Vec<_> = (0..64).map(batch_body).collect();
    let mut i = 0usize;
    let mut g = c.benchmark_group("app_stats");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("post_batch_of_100_through_router", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let body = bodies[i % bodies.len()].clone();
            let app = app.clone();
            let collector = collector.clone();
            async move {
                let req = Request::post(APP_STATS_PATH)
                    .header("authorization", "Bearer bench")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap();
                let res = app.oneshot(req).await.unwrap();
                assert_eq!(res.status(), 204);
                if i.is_multiple_of(1000) {
                    collector.flush().await.unwrap();
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode, request);
criterion_main!(benches);
