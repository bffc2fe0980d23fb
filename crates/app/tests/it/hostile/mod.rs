//! Hostile input to every endpoint of `tally serve`, against one
//! server process with the in-memory store.
//!
//! Every malformed request gets a 4xx with a JSON body in Coder's shape
//! (`message`, `detail`, `validations` naming the field) saying what is wrong: 400 for anything in the body or the query (syntax,
//! types, missing or repeated fields, ranges), 413 past the body limit or
//! the collector's per-request limit, 415 for a body that is not UTF-8 JSON
//! (Content-Type, charset, Content-Encoding); 404 and 405 name the path in
//! the message. After each case `/metrics` shows nothing more collected,
//! dropped or tracked, and `/healthz` answers. At the end the read endpoints
//! show exactly what the valid edge cases sent: empty lists store nothing,
//! Go's `null`s are taken, unknown fields are ignored; and the insights
//! reads take their valid edges (`read_edges`): the longest range, every
//! offset, the shortest week ranges, and the first route's widest range,
//! read as the part the rollup keeps.

mod app_stats;
mod boundary;
mod harness;
mod read_edges;
mod reads;
mod valid;

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use harness::{Target, run_table, stored};
use tally::http::error::ErrorBody;
use time::OffsetDateTime;

/// What reqwest will not send: a body that stalls, and bytes that are not HTTP.
async fn raw_connections(target: &Target) {
    let before = stored(target).await;
    let head = format!(
        "POST {APP_STATS} HTTP/1.1\r\nHost: tally\r\nAuthorization: Bearer {PROXY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"stats\": ["
    );
    let answer = target.raw(head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let error: Option<ErrorBody> = serde_json::from_str(body).ok();
    assert!(error.is_some_and(|e| e.text().contains("1s")), "{answer}");

    // Not HTTP at all: hyper answers 400 itself, before any route.
    let answer = target.raw(b"\x16\x03\x01\x00\xa5 TLS hello?\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert_eq!(stored(target).await, before);
    assert!(target.healthy().await);
}

#[tokio::test]
async fn hostile_input_to_every_endpoint_is_refused_whole_and_the_server_keeps_serving() {
    // The collector's cap is what these cases test; the in-memory store's
    // share must hold the rows of the valid ones.
    let cap = crate::common::memory_store_cap_for_reports(100, 90);
    let server = Server::start(&[
        ROLLUP_TICK[0],
        ROLLUP_TICK[1],
        "--body-limit",
        "64KiB",
        "--max-memory",
        &cap,
        "--memory-store-share",
        "90",
        "--snapshot-interval",
        "2s",
        "--request-timeout",
        "1s",
        "--clock-skew",
        "10m",
    ]);
    let target = Target::new(&server);
    let now = OffsetDateTime::now_utc();

    let tables = [app_stats::cases(now), boundary::cases(), reads::cases(now)];
    let sizes = tables.iter().map(Vec::len).collect::<Vec<_>>();
    eprintln!(
        "cases: app stats {}, boundary logs {}, reads {}",
        sizes[0], sizes[1], sizes[2]
    );
    let cases = tables.into_iter().flatten().collect();
    run_table(&target, cases).await;
    raw_connections(&target).await;
    let after_refused = stored(&target).await;
    assert_eq!(
        (
            after_refused.collected,
            after_refused.allowed,
            after_refused.denied
        ),
        (0.0, 0.0, 0.0)
    );

    let accepted = valid::run(&target, now).await;

    // The insights show exactly the accepted apps. The first route takes
    // any range, the widest too, and reads the part the rollup keeps.
    let range = "from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z";
    let want: BTreeSet<_> = accepted
        .apps
        .iter()
        .map(|(method, slug, requests)| (method.to_string(), slug.to_string(), *requests))
        .collect();
    let insights = format!("/api/v2/insights/apps?{range}");
    let apps = eventually(Duration::from_secs(15), "the accepted apps", || async {
        let apps = valid::get(&target, &insights).await;
        (valid::apps(&apps) == want).then_some(apps)
    })
    .await;
    assert!(!apps.to_string().contains("must-not-appear"), "{apps}");
    read_edges::run(&target, &want).await;

    let last_used = |ws: uuid::Uuid| {
        let target = target.clone();
        async move { valid::get(&target, &format!("/api/v2/workspaces/{ws}/last-used")).await }
    };
    assert!(last_used(app_stats::POISON_WS).await["last_used_at"].is_null());
    assert!(last_used(accepted.workspace).await["last_used_at"].is_string());

    // Every boundary decision accepted, and no other, reaches the snapshots.
    let want = (accepted.allowed, accepted.denied);
    eventually(
        Duration::from_secs(20),
        "snapshots of the accepted decisions",
        || async {
            let body = valid::get(&target, "/api/v2/telemetry/snapshots?limit=1000").await;
            let sums = body["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .fold((0, 0), |(a, d), s| {
                    let n = |k: &str| s[k].as_u64().unwrap();
                    (a + n("allowed_requests"), d + n("denied_requests"))
                });
            (sums == want).then_some(())
        },
    )
    .await;

    // The limits of the snapshot list are accepted.
    let one = valid::get(&target, "/api/v2/telemetry/snapshots?limit=1").await;
    assert_eq!(one["snapshots"].as_array().unwrap().len(), 1, "{one}");
    valid::get(&target, "/api/v2/telemetry/snapshots").await;

    let m = target.metrics().await;
    assert_eq!(m.get("tally_app_stats_reports_dropped_total", &[]), 0.0, "{m:?}");
    assert_eq!(m.get("tally_boundary_requests_pending", &[]), 0.0, "{m:?}");
    assert!(target.healthy().await);
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}
