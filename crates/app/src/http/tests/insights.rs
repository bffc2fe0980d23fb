//! The insights routes over a mock store: what reaches the store, the
//! export read page by page while the body streams, and the range rules
//! against a fixed clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream as _, StreamExt as _};
use tally_domain::appstats::StatsReport;
use tally_domain::clock::ManualClock;
use tally_domain::usage::ActiveUsers;
use time::OffsetDateTime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-25 14:20 UTC);

fn app_at(store: MockStore, now: OffsetDateTime) -> Router {
    let state = state(store, 4096).with_clock(Arc::new(ManualClock::new(now)));
    router(state, std::time::Duration::from_secs(5))
}

fn row(start: OffsetDateTime) -> StatsReport {
    StatsReport {
        user_id: uuid::Uuid::from_u128(1),
        workspace_id: uuid::Uuid::from_u128(2),
        agent_id: uuid::Uuid::from_u128(3),
        access_method: AccessMethod::Path,
        slug_or_port: "code-server".into(),
        session_id: uuid::Uuid::from_u128(4),
        session_started_at: start,
        session_ended_at: Some(start + time::Duration::minutes(5)),
        requests: 9,
        sessions: 1,
    }
}

/// The store is read an hour of session starts at a time, each page only
/// when the body gets that far: nothing is buffered for the whole range.
#[tokio::test]
async fn the_export_reads_one_hour_per_page_as_the_body_streams() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut store = MockStore::new();
    let seen = calls.clone();
    store
        .expect_app_stats_started_in()
        .times(3)
        .returning(move |range| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(vec![row(range.from)])
        });
    let app = app_at(store, NOW);
    let uri =
        "/api/v2/insights/app-stats/export?start_time=2026-11-25T10:30:00Z&end_time=2026-11-25T13:00:00Z";
    let response = app.oneshot(get(uri, Some("rtok"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    // Only the first page was read to answer.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut body = response.into_body().into_data_stream();
    let mut lines = Vec::new();
    while let Some(chunk) = body.next().await {
        lines.push(String::from_utf8(chunk.unwrap().to_vec()).unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // 10:30 to 11:00, 11:00 to 12:00, 12:00 to 13:00: one row each.
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(lines[0].trim_end()).unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with('\n') && l.matches('\n').count() == 1)
    );
    assert_eq!(first["session_started_at"], "2026-11-25T10:30:00Z");
    assert_eq!(first["requests"], 9);
    assert_eq!(first["sessions"], 1);
    assert_eq!(first["slug_or_port"], "code-server");
}

/// A store that is down before the first line is a 503; one that fails
/// later cuts the body off (an error, not a short but complete answer).
#[tokio::test]
async fn export_failures_are_a_503_first_and_a_cut_body_later() {
    let mut store = MockStore::new();
    store
        .expect_app_stats_started_in()
        .returning(|_| Err(StoreError::unavailable("connection refused")));
    let uri =
        "/api/v2/insights/app-stats/export?start_time=2026-11-25T10:00:00Z&end_time=2026-11-25T13:00:00Z";
    let (status, body) = call(&app_at(store, NOW), get(uri, Some("admtok"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let mut store = MockStore::new();
    let mut page = 0;
    store.expect_app_stats_started_in().returning(move |range| {
        page += 1;
        if page == 1 {
            Ok(vec![row(range.from)])
        } else {
            Err(StoreError::unavailable("connection reset"))
        }
    });
    let response = app_at(store, NOW).oneshot(get(uri, Some("rtok"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let read = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    assert!(read.is_err(), "the body must end in an error: {read:?}");
}

/// Today (in the end time's offset) may end at a whole hour up to the end
/// of the current hour; the intervals keep the start's offset.
#[tokio::test]
async fn ranges_are_checked_against_the_clock() {
    let mut store = MockStore::new();
    store
        .expect_active_users()
        .withf(|iv| {
            iv.bounds()
                == [
                    datetime!(2026-11-24 00:00 +02:00),
                    datetime!(2026-11-25 00:00 +02:00),
                    datetime!(2026-11-25 17:00 +02:00),
                ]
        })
        .times(1)
        .returning(|_| {
            Ok(ActiveUsers {
                total: 3,
                intervals: vec![2, 1],
            })
        });
    let app = app_at(store, NOW);
    // 14:20 UTC is 16:20 at +02:00: 17:00 is the end of the current hour.
    let uri = "/api/v2/insights/active-users?start_time=2026-11-24T00:00:00%2B02:00\
        &end_time=2026-11-25T17:00:00%2B02:00&interval=day";
    let (status, body) = call(&app, get(uri, Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active_users"], 3);
    assert_eq!(body["intervals"][1]["start_time"], "2026-11-25T00:00:00+02:00");
    assert_eq!(body["intervals"][1]["end_time"], "2026-11-25T17:00:00+02:00");
    assert_eq!(body["intervals"][1]["active_users"], 1);

    for (query, field) in [
        // 18:00 is past the current hour's end.
        (
            "start_time=2026-11-24T00:00:00%2B02:00&end_time=2026-11-25T18:00:00%2B02:00",
            "end_time",
        ),
        // A whole hour of another day than today.
        (
            "start_time=2026-11-23T00:00:00%2B02:00&end_time=2026-11-24T17:00:00%2B02:00",
            "end_time",
        ),
        // Today in UTC is the 25th; at +10:00 it is the 26th already.
        (
            "start_time=2026-11-24T00:00:00%2B10:00&end_time=2026-11-25T05:00:00%2B10:00",
            "end_time",
        ),
        (
            "start_time=2026-11-26T00:00:00Z&end_time=2026-11-27T00:00:00Z",
            "start_time",
        ),
    ] {
        let (status, body) = call(
            &app,
            get(&format!("/api/v2/insights/active-users?{query}"), Some("rtok")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error_body(&body).validations[0].field, field, "{query}: {body}");
    }
}

/// Totals only: one interval over the range reaches the store, and the
/// answer lists no intervals.
#[tokio::test]
async fn without_interval_the_store_reads_the_range_as_one() {
    let mut store = MockStore::new();
    store
        .expect_app_usage_by_interval()
        .withf(|iv| iv.bounds() == [datetime!(2026-11-20 00:00 UTC), datetime!(2026-11-25 00:00 UTC)])
        .times(1)
        .returning(|_| {
            let total = UsageFigures {
                usage_seconds: 600,
                sessions: 2,
                requests: 7,
                unique_users: 1,
            };
            Ok(vec![AppUsageSeries {
                access_method: AccessMethod::Terminal,
                slug_or_port: String::new(),
                total,
                intervals: vec![total],
            }])
        });
    let uri = "/api/v2/insights/app-usage?start_time=2026-11-20T00:00:00Z&end_time=2026-11-25T00:00:00Z";
    let (status, body) = call(&app_at(store, NOW), get(uri, Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["interval"], serde_json::Value::Null);
    assert_eq!(body["intervals"], serde_json::json!([]));
    assert_eq!(
        body["apps"],
        serde_json::json!([{"access_method": "terminal", "slug_or_port": "", "usage_seconds": 600,
                            "sessions": 2, "requests": 7, "unique_users": 1}])
    );
}

/// A long, empty export over a store that answers at once gives the
/// runtime back between pages instead of walking every hour in one poll
/// (which held a worker thread, and with two such requests the server).
#[tokio::test]
async fn a_long_export_gives_the_thread_back_between_pages() {
    let state = AppState::new(
        Arc::new(tally_adapters_memory::MemoryStore::new()),
        StatsCollector::new(
            CollectorConfig::default(),
            Arc::new(MockReporter::new()),
            Arc::new(SystemClock),
        ),
        Arc::new(BoundaryTracker::new(uuid::Uuid::new_v4(), Arc::new(SystemClock))),
        crate::config::Tokens::parse(TOKENS).unwrap(),
        4096,
    );
    let app = router(state, std::time::Duration::from_secs(5));
    // Longer than one export may cover: refused, naming the parameter.
    let too_long =
        "/api/v2/insights/app-stats/export?start_time=2026-01-01T00:00:00Z&end_time=2026-02-01T00:00:01Z";
    let response = app.clone().oneshot(get(too_long, Some("rtok"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("end_time"));
    let uri =
        "/api/v2/insights/app-stats/export?start_time=2026-01-01T00:00:00Z&end_time=2026-02-01T00:00:00Z";
    let response = app.oneshot(get(uri, Some("rtok"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    // 744 empty hours: the first poll must not walk them all.
    assert!(std::pin::Pin::new(&mut body).poll_next(&mut cx).is_pending());
}

/// A rollup read covers at most the usage retention plus a day; a longer
/// range is refused naming `start_time` before the store is asked (the
/// mock has no expectation for the refused ones: a call would panic).
#[tokio::test]
async fn a_range_longer_than_the_retention_plus_a_day_is_refused_naming_start_time() {
    let mut store = MockStore::new();
    store
        .expect_active_users()
        .withf(|iv| iv.len() == 366)
        .times(2)
        .returning(|iv| {
            Ok(ActiveUsers {
                total: 0,
                intervals: vec![0; iv.len()],
            })
        });
    let app = app_at(store, NOW);
    // "The last 365 days" to the end of the current hour: 365 days and 15 hours.
    let last_year = "start_time=2025-11-25T00:00:00Z&end_time=2026-11-25T15:00:00Z";
    let (status, body) = call(
        &app,
        get(
            &format!("/api/v2/insights/active-users?{last_year}&interval=day"),
            Some("rtok"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 366 days exactly is the longest; the intervals reach the store.
    let longest = "start_time=2025-11-24T00:00:00Z&end_time=2026-11-25T00:00:00Z";
    let (status, body) = call(
        &app,
        get(
            &format!("/api/v2/insights/active-users?{longest}&interval=day"),
            Some("rtok"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for route in ["app-usage", "active-users", "user-activity"] {
        for query in [
            "start_time=2025-11-23T00:00:00Z&end_time=2026-11-25T00:00:00Z",
            "start_time=0001-01-02T00:00:00Z&end_time=2026-11-25T00:00:00Z",
            "start_time=0000-01-01T00:00:00Z&end_time=2026-11-25T14:00:00Z",
            // The same instants, the start in the earliest offset.
            "start_time=2025-11-24T00:00:00%2B14:00&end_time=2026-11-25T00:00:00-12:00",
        ] {
            let uri = format!("/api/v2/insights/{route}?{query}");
            let (status, body) = call(&app, get(&uri, Some("rtok"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let error = error_body(&body);
            assert_eq!(error.field(), Some("start_time"), "{uri}: {body}");
            assert!(error.text().contains("366 days"), "{uri}: {body}");
            assert!(error.text().contains("retention"), "{uri}: {body}");
        }
    }
}

/// The bound follows `--retention-usage`.
#[tokio::test]
async fn the_range_bound_is_the_configured_retention_plus_a_day() {
    let state = state(MockStore::new(), 4096)
        .with_clock(Arc::new(ManualClock::new(NOW)))
        .with_usage_retention(time::Duration::days(30));
    let app = router(state, std::time::Duration::from_secs(5));
    let uri = "/api/v2/insights/user-activity?start_time=2026-10-24T00:00:00Z&end_time=2026-11-25T00:00:00Z";
    let (status, body) = call(&app, get(uri, Some("rtok"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = error_body(&body);
    assert_eq!(error.field(), Some("start_time"));
    assert!(
        error.text().contains("31 days") && error.text().contains("30 days"),
        "{body}"
    );
}

/// The first route takes any range and reads only the part the rollup
/// keeps: from the usage horizon (now minus the retention, to the hour)
/// to the end of the current hour. A range wholly outside it is answered
/// without the store, but not to a caller who may not read.
#[tokio::test]
async fn the_old_route_reads_only_the_part_of_its_range_the_rollup_keeps() {
    let mut store = MockStore::new();
    store
        .expect_app_usage_by_interval()
        .withf(|iv| {
            iv.len() == 1
                && iv.range()
                    == TimeRange {
                        from: datetime!(2025-11-25 14:00 UTC),
                        to: datetime!(2026-11-25 15:00 UTC),
                    }
        })
        .times(1)
        .returning(|_| Ok(vec![]));
    store
        .expect_app_usage_by_interval()
        .withf(|iv| {
            iv.range()
                == TimeRange {
                    from: datetime!(2026-11-25 10:00 UTC),
                    to: datetime!(2026-11-25 15:00 UTC),
                }
        })
        .times(1)
        .returning(|_| Ok(vec![]));
    let app = app_at(store, NOW);
    let everything = "/api/v2/insights/apps?from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z";
    let (status, body) = call(&app, get(everything, Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The answer echoes the range asked for.
    assert_eq!(body["from"], "0000-01-01T00:00:00Z");
    assert_eq!(body["to"], "9999-12-31T23:59:59.999999Z");
    let (status, body) = call(
        &app,
        get(
            "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=2026-11-26T10:00:00Z",
            Some("rtok"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for outside in [
        "from=0001-01-01T00:00:00Z&to=2002-01-01T00:00:00Z",
        "from=2025-11-25T13:00:00Z&to=2025-11-25T14:00:00Z",
        "from=2026-11-25T15:00:00Z&to=9999-12-31T23:59:59Z",
    ] {
        let uri = format!("/api/v2/insights/apps?{outside}");
        let (status, body) = call(&app, get(&uri, Some("rtok"))).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(body["apps"], serde_json::json!([]), "{uri}: {body}");
        let (status, body) = call(&app, get(&uri, Some("mtok"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
    }
}
