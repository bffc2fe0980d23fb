//! The valid edge cases of both ingest endpoints: accepted, and exactly their
//! known fields stored.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::harness::{Stored, Target, stored};
use crate::common::*;

/// What the accepted requests stored.
#[derive(Debug)]
pub struct Accepted {
    pub workspace: uuid::Uuid,
    /// (access method, slug, requests) of each app.
    pub apps: Vec<(&'static str, &'static str, u64)>,
    pub allowed: u64,
    pub denied: u64,
}

/// Posts `body` and checks it stored `delta` (reports, allowed, denied).
async fn accepted(target: &Target, name: &str, path: &str, body: Value, delta: (u64, u64, u64)) {
    accepted_as(target, name, path, "application/json", body.to_string(), delta).await;
}

async fn accepted_as(
    target: &Target,
    name: &str,
    path: &str,
    ct: &str,
    body: String,
    delta: (u64, u64, u64),
) {
    let token = if path == APP_STATS { PROXY } else { AGENT };
    let before = stored(target).await;
    let response = target
        .client
        .post(target.url(path))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{name}: {}",
        response.text().await.unwrap()
    );
    let after = stored(target).await;
    let want = Stored {
        collected: before.collected + delta.0 as f64,
        allowed: before.allowed + delta.1 as f64,
        denied: before.denied + delta.2 as f64,
        ..before
    };
    assert_eq!(after, want, "{name}");
}

pub async fn run(target: &Target, now: OffsetDateTime) -> Accepted {
    let (workspace, user) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (start, end) = (
        now - time::Duration::minutes(30),
        Some(now - time::Duration::minutes(20)),
    );
    let report = |method: &str, slug: &str, requests: u64| {
        go_report(
            user,
            workspace,
            method,
            slug,
            uuid::Uuid::new_v4(),
            start,
            end,
            requests,
        )
    };

    // Exactly the per-request limit (a cap of 100 reports), into
    // an empty collector; then wait until it is written and its room freed.
    let full: Vec<_> = (0..100).map(|_| report("path", "at-the-limit", 1)).collect();
    accepted(
        target,
        "100 reports",
        APP_STATS,
        json!({ "stats": full }),
        (100, 0, 0),
    )
    .await;
    let now_str = |d| url_time(now + time::Duration::hours(d));
    // From a whole hour: requests count where their session's UTC hour starts.
    let hour = time::Duration::HOUR;
    let from = url_time(tally_domain::telemetry::truncate(now - hour, hour));
    let insights = format!("/api/v2/insights/apps?from={from}&to={}", now_str(1));
    eventually(
        std::time::Duration::from_secs(15),
        "the 100 reports to be written",
        || async {
            let apps = get(target, &insights).await;
            app(&apps, "path", "at-the-limit")
                .is_some_and(|a| a["requests"] == 100)
                .then_some(())
        },
    )
    .await;

    accepted(target, "empty stats", APP_STATS, json!({"stats": []}), (0, 0, 0)).await;
    accepted(
        target,
        "null stats (Go's nil slice)",
        APP_STATS,
        json!({"stats": null}),
        (0, 0, 0),
    )
    .await;
    let mut extra = report("path", "extra-fields", 3);
    extra["region"] = "eu-west".into();
    extra["labels"] = json!({"tier": [1, null, {"deep": true}]});
    extra["gone"] = Value::Null;
    let body = json!({"stats": [extra], "proxy_version": "v2.99.0", "future": {"nested": [null]}});
    accepted(target, "unknown fields", APP_STATS, body, (1, 0, 0)).await;
    // serde_json skips an unknown value without recursion, at any depth the
    // body limit allows (about 32,000 here).
    let deep = format!(
        r#"{{"stats": [], "future": {}{}}}"#,
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let json = "application/json";
    accepted_as(
        target,
        "deep nesting in an unknown field",
        APP_STATS,
        json,
        deep,
        (0, 0, 0),
    )
    .await;
    let mut open = report("subdomain", "null-end", 2);
    open["session_ended_at"] = Value::Null;
    accepted(
        target,
        "null end time (Go's zero time)",
        APP_STATS,
        json!({"stats": [open]}),
        (1, 0, 0),
    )
    .await;
    let mut no_end = report("subdomain", "no-end", 1);
    no_end.as_object_mut().unwrap().remove("session_ended_at");
    accepted(
        target,
        "no end time",
        APP_STATS,
        json!({"stats": [no_end]}),
        (1, 0, 0),
    )
    .await;
    let max = report("terminal", "", 4_294_967_295);
    accepted(
        target,
        "requests at the limit",
        APP_STATS,
        json!({"stats": [max]}),
        (1, 0, 0),
    )
    .await;
    let body = json!({"stats": [report("path", "charset", 5)]}).to_string();
    let ct = "application/json; charset=UTF-8";
    accepted_as(target, "explicit UTF-8 charset", APP_STATS, ct, body, (1, 0, 0)).await;
    // A proxy's backlog from an outage, within the raw retention (90 days).
    let mut backlog = report("path", "backlog", 2);
    let old = now - time::Duration::days(89);
    backlog["session_started_at"] = rfc3339(old).into();
    backlog["session_ended_at"] = rfc3339(old + time::Duration::minutes(5)).into();
    accepted(
        target,
        "a backlog of 89 days",
        APP_STATS,
        json!({"stats": [backlog]}),
        (1, 0, 0),
    )
    .await;

    let owner = uuid::Uuid::new_v4();
    let boundary = |fields: Value| {
        let mut body = json!({"workspace_id": workspace, "owner_id": owner});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        body
    };
    let b = BOUNDARY_LOGS;
    accepted(target, "empty logs", b, boundary(json!({"logs": []})), (0, 0, 0)).await;
    accepted(
        target,
        "zero counts",
        b,
        boundary(json!({"allowed": 0, "denied": 0})),
        (0, 0, 0),
    )
    .await;
    let logs = json!({
        "agent_version": "v2.99.0",
        "future": {"nested": [null, 1]},
        "logs": [
            {"decision": "allow", "http_method": "GET", "http_url": "https://example.com", "matched_rule": null},
            {"decision": "deny", "time": "2026-11-25T10:00:00Z", "extra": {"a": [1]}},
            {"decision": "denied"},
            {"decision": "allowed"},
        ],
    });
    accepted(target, "unknown fields in logs", b, boundary(logs), (0, 2, 2)).await;
    let body = boundary(json!({"logs": null, "allowed": 2}));
    accepted(target, "null logs with counts", b, body, (0, 2, 0)).await;
    let body = boundary(json!({"allowed": null, "denied": 3}));
    accepted(target, "null allowed", b, body, (0, 0, 3)).await;
    let body = boundary(json!({"allowed": 4_294_967_295u64}));
    accepted(target, "count at the limit", b, body, (0, 4_294_967_295, 0)).await;

    Accepted {
        workspace,
        apps: vec![
            ("path", "at-the-limit", 100),
            ("path", "extra-fields", 3),
            ("subdomain", "null-end", 2),
            ("subdomain", "no-end", 1),
            ("terminal", "", 4_294_967_295),
            ("path", "charset", 5),
            ("path", "backlog", 2),
        ],
        allowed: 2 + 2 + 4_294_967_295,
        denied: 2 + 3,
    }
}

/// (access method, slug, requests) of every app in an insights answer.
pub fn apps(body: &Value) -> BTreeSet<(String, String, u64)> {
    body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            (
                s("access_method"),
                s("slug_or_port"),
                a["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn url_time(t: OffsetDateTime) -> String {
    url::form_urlencoded::byte_serialize(rfc3339(t).as_bytes()).collect()
}

pub async fn get(target: &Target, path: &str) -> Value {
    let response = target
        .client
        .get(target.url(path))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}
