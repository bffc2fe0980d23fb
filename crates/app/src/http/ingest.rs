//! Submissions: app stats from workspace proxies, boundary logs from agents.
//!
//! A request is decoded and validated whole before anything is collected, so
//! it is applied whole or not at all.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tally_domain::appstats::MAX_REQUESTS_PER_REPORT;
use tally_domain::appstats::StatsReport;
use tally_domain::authz::{Action, Resource};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::body::Object;
use super::body::{decode, read_json_body};
use super::error::ApiError;
use crate::metrics as m;

#[derive(Debug, Deserialize)]
struct AppStatsRequest {
    // Go encodes a nil slice as `null`.
    #[serde(deserialize_with = "null_as_empty")]
    stats: Vec<Object<StatsReport>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Decodes and validates a whole app stats request.
pub fn decode_app_stats(bytes: &[u8]) -> Result<Vec<StatsReport>, ApiError> {
    let request: AppStatsRequest = decode(bytes)?;
    for (i, Object(report)) in request.stats.iter().enumerate() {
        report
            .validate()
            .map_err(|e| ApiError::bad_field(format!("stats[{i}].{}", e.field), e.reason))?;
    }
    Ok(request.stats.into_iter().map(|Object(r)| r).collect())
}

pub async fn app_stats(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::Create, Resource::WorkspaceAppStats)?;
    let bytes = read_json_body(&headers, body, state.body_limit).await?;
    let reports = decode_app_stats(&bytes)?;
    if reports.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    // A request the collector could not take even when empty would be
    // refused with 503 forever: say so once, naming the limit.
    let max = state.collector.max_reports_per_call();
    if reports.len() > max {
        return Err(ApiError::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too many app stats in one request.",
            "stats",
            format!(
                "{} reports in one request; at most {max} fit the collector buffer (the server's --max-buffered): split the request",
                reports.len()
            ),
        ));
    }
    // Refuse the whole request rather than let the collector drop part of it:
    // the proxy keeps it and retries.
    let incoming = reports.len();
    if !state.collector.try_collect_all(reports) {
        metrics::counter!(m::REPORTS_REFUSED).increment(incoming as u64);
        tracing::warn!(incoming, "app stats refused: collector buffer full");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many app stats buffered; retry later.",
        )
        .with_detail("the collector's buffer (--max-buffered) is full; the store may be unavailable"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One boundary decision; other fields an agent sends are ignored.
#[derive(Debug, Deserialize)]
struct BoundaryLog {
    decision: Decision,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Decision {
    #[serde(alias = "allowed")]
    Allow,
    #[serde(alias = "denied")]
    Deny,
}

#[derive(Debug, Deserialize)]
struct BoundaryLogsRequest {
    workspace_id: Uuid,
    owner_id: Uuid,
    allowed: Option<u64>,
    denied: Option<u64>,
    logs: Option<Vec<Object<BoundaryLog>>>,
}

/// A validated boundary logs request: what to track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryBatch {
    pub workspace_id: Uuid,
    pub owner_id: Uuid,
    pub allowed: u64,
    pub denied: u64,
}

/// Decodes either pre-counted `allowed`/`denied` or a `logs` list of decisions.
pub fn decode_boundary_logs(bytes: &[u8]) -> Result<BoundaryBatch, ApiError> {
    let r: BoundaryLogsRequest = decode(bytes)?;
    if r.workspace_id.is_nil() {
        return Err(ApiError::bad_field("workspace_id", "must not be the nil UUID"));
    }
    if r.owner_id.is_nil() {
        return Err(ApiError::bad_field("owner_id", "must not be the nil UUID"));
    }
    let (allowed, denied) = match (r.logs, r.allowed, r.denied) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::bad_field(
                "logs",
                "give either logs or allowed/denied counts, not both",
            ));
        }
        (Some(logs), None, None) => logs
            .iter()
            .fold((0, 0), |(a, d), Object(log)| match log.decision {
                Decision::Allow => (a + 1, d),
                Decision::Deny => (a, d + 1),
            }),
        (None, None, None) => {
            return Err(ApiError::bad_field(
                "allowed",
                "missing decisions: give allowed/denied counts or a logs list",
            ));
        }
        (None, a, d) => (a.unwrap_or(0), d.unwrap_or(0)),
    };
    for (field, n) in [("allowed", allowed), ("denied", denied)] {
        if n > MAX_REQUESTS_PER_REPORT {
            return Err(ApiError::bad_field(
                field,
                format!("larger than {MAX_REQUESTS_PER_REPORT}"),
            ));
        }
    }
    Ok(BoundaryBatch {
        workspace_id: r.workspace_id,
        owner_id: r.owner_id,
        allowed,
        denied,
    })
}

pub async fn boundary_logs(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::Create, Resource::BoundaryLog)?;
    let bytes = read_json_body(&headers, body, state.body_limit).await?;
    let b = decode_boundary_logs(&bytes)?;
    // Nothing decided, nothing used: an empty batch counts no workspace.
    if b.allowed + b.denied > 0 {
        state
            .tracker
            .track(b.workspace_id, b.owner_id, b.allowed, b.denied);
        metrics::counter!(m::BOUNDARY_TRACKED, "decision" => "allowed").increment(b.allowed);
        metrics::counter!(m::BOUNDARY_TRACKED, "decision" => "denied").increment(b.denied);
    }
    Ok(StatusCode::NO_CONTENT)
}
