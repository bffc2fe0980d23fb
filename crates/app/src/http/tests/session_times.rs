//! The session times ingest takes, at the route: the server's clock and its
//! limits decide (docs/rules.md#session-times), a time outside them refuses
//! the whole request naming the field, and nothing of it is collected.

use time::Duration;
use time::format_description::well_known::Rfc3339;

use super::*;

fn at(t: time::OffsetDateTime) -> serde_json::Value {
    t.format(&Rfc3339).unwrap().into()
}

/// A closed report of a new session, started and ended as given.
fn report(start: time::OffsetDateTime, end: time::OffsetDateTime) -> serde_json::Value {
    let mut r = report_json(&uuid::Uuid::new_v4().to_string(), "", 1);
    r["session_started_at"] = at(start);
    r["session_ended_at"] = at(end);
    r
}

fn app_with(limits: SessionTimeLimits) -> (Router, Arc<StatsCollector>) {
    let s = state(MockStore::new(), 1 << 20).with_session_times(limits);
    let collector = s.collector.clone();
    (router(s, std::time::Duration::from_secs(5)), collector)
}

async fn post_stats(app: &Router, reports: Vec<serde_json::Value>) -> (StatusCode, serde_json::Value) {
    let json = Some("application/json");
    call(app, post(APP_STATS_PATH, "ptok", json, body_of(reports))).await
}

#[tokio::test]
async fn times_at_the_edges_are_taken_and_one_second_past_refuses_the_whole_request() {
    let limits = SessionTimeLimits {
        clock_skew: Duration::minutes(5),
        retention: Duration::days(7),
    };
    let (app, collector) = app_with(limits);
    let (oldest, latest) = (READ_NOW - Duration::days(7), READ_NOW + Duration::minutes(5));
    let good = || report(READ_NOW - Duration::minutes(10), READ_NOW);

    let (status, body) = post_stats(&app, vec![good(), report(oldest, latest), report(latest, latest)]).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(collector.stats().collected, 3);

    let second = Duration::SECOND;
    for (bad, field, says) in [
        (
            report(oldest - second, READ_NOW),
            "stats[1].session_started_at",
            "2026-11-18T14:20:00Z",
        ),
        (
            report(latest + second, latest + second),
            "stats[1].session_started_at",
            "2026-11-25T14:25:00Z",
        ),
        (
            report(READ_NOW, latest + second),
            "stats[1].session_ended_at",
            "5m",
        ),
        // What schemathesis sent: a session from 1970 to 2262.
        (
            report(
                datetime!(1970-01-01 00:00 UTC),
                datetime!(2262-04-11 23:47:16 UTC),
            ),
            "stats[1].session_started_at",
            "7d",
        ),
    ] {
        let (status, body) = post_stats(&app, vec![good(), bad, good()]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = error_body(&body);
        assert_eq!(error.message, "Invalid request body.", "{body}");
        assert_eq!(error.field(), Some(field), "{body}");
        assert!(error.text().contains(says), "{says:?} not in {body}");
        assert_eq!(collector.stats().collected, 3, "half taken: {body}");
    }
}

#[tokio::test]
async fn the_default_limits_take_an_outage_backlog_and_sessions_open_past_the_raw_retention() {
    let (app, collector) = app_with(SessionTimeLimits::default());
    // 91 and 364 days: sessions still open after raw rows (90 days) would
    // have been purged, within the usage retention (365 days).
    let backlog: Vec<_> = [1, 30, 89, 91, 364]
        .into_iter()
        .map(|days| {
            let start = READ_NOW - Duration::days(days);
            report(start, start + Duration::minutes(3))
        })
        .collect();
    let (status, body) = post_stats(&app, backlog).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(collector.stats().collected, 5);
    let (status, body) = post_stats(&app, vec![report(READ_NOW - Duration::days(366), READ_NOW)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_body(&body).field(), Some("stats[0].session_started_at"));
}
