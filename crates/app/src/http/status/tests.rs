//! The status route reports the collector as it is: sessions held, rows
//! waiting after a failed flush, the failure's cause, the last success.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tally_adapters_memory::MemoryStore;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::ManualClock;
use tally_domain::error::StoreError;
use tally_domain::ports::MockReporter;
use time::macros::datetime;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::*;
use crate::http::{AppState, router};

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

async fn status_of(app: &axum::Router, token: &str) -> (StatusCode, Value) {
    let request = Request::get(STATUS_PATH)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = crate::http::tests::body_bytes(response).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn status_shows_the_collectors_sessions_backlog_and_last_flush() {
    let clock = ManualClock::new(T0);
    let mut reporter = MockReporter::new();
    let mut seq = mockall::Sequence::new();
    reporter
        .expect_report()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(StoreError::unavailable("database down")));
    reporter
        .expect_report()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let collector = StatsCollector::new(
        CollectorConfig::default(),
        Arc::new(reporter),
        Arc::new(clock.clone()),
    );
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        collector.clone(),
        Arc::new(BoundaryTracker::new(Uuid::new_v4(), Arc::new(clock.clone()))),
        crate::config::Tokens::parse("reader=r,admin=a,member=m,agent=g").unwrap(),
        1 << 20,
    )
    .with_store_kind(StoreKind::Postgres);
    let app = router(state, Duration::from_secs(30));

    let (code, fresh) = status_of(&app, "r").await;
    assert_eq!(code, StatusCode::OK, "{fresh}");
    assert_eq!(fresh["store"], "postgres");
    assert_eq!(fresh["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fresh["last_flush"], Value::Null);
    assert_eq!(fresh["last_flush_error"], Value::Null);
    assert_eq!(fresh["buffered_sessions"], 0);

    collector.collect(StatsReport {
        user_id: Uuid::from_u128(1),
        workspace_id: Uuid::from_u128(2),
        agent_id: Uuid::from_u128(3),
        access_method: AccessMethod::Path,
        slug_or_port: "code-server".into(),
        session_id: Uuid::from_u128(4),
        session_started_at: T0 - time::Duration::minutes(10),
        session_ended_at: Some(T0 - time::Duration::minutes(5)),
        requests: 3,
        sessions: 1,
    });
    assert_eq!(status_of(&app, "a").await.1["buffered_sessions"], 1);

    collector.flush().await.unwrap_err();
    let (_, failed) = status_of(&app, "r").await;
    assert_eq!(failed["backlog_reports"], 1, "{failed}");
    assert_eq!(failed["last_flush"], Value::Null);
    assert!(
        failed["last_flush_error"]
            .as_str()
            .unwrap()
            .contains("database down"),
        "{failed}"
    );

    clock.set(T0 + time::Duration::minutes(1));
    collector.flush().await.unwrap();
    let (_, ok) = status_of(&app, "r").await;
    assert_eq!(ok["backlog_reports"], 0, "{ok}");
    assert_eq!(ok["last_flush"], "2026-11-25T10:01:00Z");
    assert_eq!(ok["last_flush_error"], Value::Null);

    for refused in ["m", "g"] {
        assert_eq!(
            status_of(&app, refused).await.0,
            StatusCode::FORBIDDEN,
            "{refused}"
        );
    }
}
