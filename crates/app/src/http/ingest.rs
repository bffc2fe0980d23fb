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
use tally_domain::appstats::session_times::SessionWindow;
use tally_domain::appstats::wire::whole_number;
use tally_domain::authz::{Action, Resource};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::body::Object;
use super::body::{decode, read_json_body};
use super::error::{ApiError, ErrorBody};
use super::openapi::responses::{Forbidden, Unauthorized, UnsupportedMediaType};
use crate::metrics as m;

/// Coder's `wsproxysdk.ReportAppStatsRequest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = wsproxysdk::ReportAppStatsRequest)]
pub struct AppStatsRequest {
    /// The sessions, each as one report; `null` (Go's nil slice) is none.
    // Go encodes a nil slice as `null`.
    #[serde(deserialize_with = "null_as_empty")]
    #[schema(value_type = Option<Vec<StatsReport>>, required = true)]
    stats: Vec<Object<StatsReport>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Decodes and validates a whole app stats request, its times against
/// `window` (docs/rules.md#session-times): the first report that breaks a
/// rule refuses the request.
pub fn decode_app_stats(bytes: &[u8], window: &SessionWindow) -> Result<Vec<StatsReport>, ApiError> {
    let request: AppStatsRequest = decode(bytes)?;
    for (i, Object(report)) in request.stats.iter().enumerate() {
        report
            .validate()
            .and_then(|()| window.check(report))
            .map_err(|e| ApiError::bad_field(format!("stats[{i}].{}", e.field), e.reason))?;
    }
    Ok(request.stats.into_iter().map(|Object(r)| r).collect())
}

/// Report app sessions (workspace proxies).
///
/// Taken whole or not at all: every report is validated before any is
/// collected, its times against the server's clock (a start within
/// `--retention-usage`, nothing more than `--clock-skew` ahead). A later report of the same (user, agent, session) moves its
/// end time and request count forward.
#[utoipa::path(
    post,
    path = super::APP_STATS_PATH,
    tag = "ingest",
    request_body(content = AppStatsRequest, content_type = "application/json", example = json!({
        "stats": [{
            "user_id": "8f0c1e52-8a4f-4c1e-9d2a-5b7c3e1f0a11",
            "workspace_id": "2b9d7f3e-41a6-4c55-8e0b-9a1d2c3e4f50",
            "agent_id": "c4e5f6a7-b8c9-4dab-8ecf-0a1b2c3d4e5f",
            "access_method": "path",
            "slug_or_port": "code-server",
            "session_id": "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f",
            "session_started_at": "2026-11-25T06:40:12.123456789Z",
            "session_ended_at": "0001-01-01T00:00:00Z",
            "requests": 12
        }]
    })),
    security(("bearer" = []), ("coder_session_token" = []), ("coder_external_proxy_token" = [])),
    extensions(("x-tally-roles" = json!(["proxy"]))),
    responses(
        (status = 204, description = "Every report was taken (or there were none)."),
        (status = 400, description = "`Invalid request body.`: the validation names the field \
            (`stats[3].requests`, `body`). A session time the server does not take (a start \
            older than `--retention-usage`, a start or end more than `--clock-skew` ahead of \
            the server's clock) names that time (`stats[3].session_started_at`).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, description = "`Request body too large.` (field `body`, past \
            `--body-limit`) or `Too many app stats in one request.` (field `stats`: more \
            than `--max-memory` could ever hold; split the request).", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, description = "`Too many app stats buffered; retry later.`: the \
            collector's buffer is full (the store may be down); nothing was taken.",
            body = ErrorBody),
    ),
)]
pub async fn app_stats(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::Create, Resource::WorkspaceAppStats)?;
    let bytes = read_json_body(&headers, body, state.body_limit).await?;
    let window = state.session_times.at(state.clock.now());
    let reports = decode_app_stats(&bytes, &window)?;
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
                "{} reports in one request; at most {max} fit the collector buffer (the server's --max-memory): split the request",
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
        .with_detail("the collector's buffer (--max-memory) is full; the store may be unavailable")
        // Room comes back when the buffer is flushed, every report interval:
        // by then at least one flush has begun since this refusal.
        .with_retry_after(state.collector.report_interval()));
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

/// Either `logs`, the decisions one by one, or the counts `allowed` and
/// `denied` (either may be left out, meaning 0); never both kinds.
#[derive(Debug, Deserialize)]
pub struct BoundaryLogsRequest {
    workspace_id: Uuid,
    owner_id: Uuid,
    #[serde(default, deserialize_with = "whole_number::option")]
    allowed: Option<u64>,
    #[serde(default, deserialize_with = "whole_number::option")]
    denied: Option<u64>,
    logs: Option<Vec<Object<BoundaryLog>>>,
}

impl utoipa::PartialSchema for BoundaryLogsRequest {
    /// What [`decode_boundary_logs`] takes. The either-or rule is a
    /// `oneOf` (a value given as `null` counts as left out, as in serde).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use serde_json::json;
        use tally_domain::schema::{non_nil_uuid, with_keywords};
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let count = json!({
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": MAX_REQUESTS_PER_REPORT,
        });
        let logs = json!({
            "type": ["array", "null"],
            "description": "One entry per decision; other members of an entry are ignored.",
            "items": {
                "type": "object",
                "required": ["decision"],
                "properties": {
                    "decision": {"type": "string", "enum": ["allow", "deny", "allowed", "denied"]}
                }
            }
        });
        let base = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Boundary decisions of one workspace: either `logs`, the decisions one by one, \
                 or the counts `allowed` and `denied` (a count left out is 0), never both.",
            ))
            .property("workspace_id", non_nil_uuid())
            .property("owner_id", non_nil_uuid())
            .required("workspace_id")
            .required("owner_id")
            .build();
        let either = json!([
            {
                "title": "decisions",
                "required": ["logs"],
                "properties": {"logs": {"type": "array"}, "allowed": {"type": "null"}, "denied": {"type": "null"}}
            },
            {
                "title": "counts",
                "properties": {"logs": {"type": "null"}},
                "anyOf": [
                    {"required": ["allowed"], "properties": {"allowed": {"type": "integer"}}},
                    {"required": ["denied"], "properties": {"denied": {"type": "integer"}}}
                ]
            }
        ]);
        // utoipa's schema has no `oneOf` beside `properties`, nor type
        // unions with constraints on an object's members: written as keywords.
        let mut object = with_keywords(base, [("oneOf", either)]);
        for (name, schema) in [("allowed", count.clone()), ("denied", count), ("logs", logs)] {
            object.properties.insert(name.to_owned(), raw(schema));
        }
        Schema::Object(object).into()
    }
}

/// A schema given as JSON: an empty object carrying every keyword.
fn raw(schema: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let serde_json::Value::Object(keywords) = schema else {
        unreachable!("a schema is a JSON object")
    };
    let mut object = utoipa::openapi::schema::Object::new();
    object.extensions = Some(keywords.into_iter().collect());
    utoipa::openapi::Schema::Object(object).into()
}

impl utoipa::ToSchema for BoundaryLogsRequest {}

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

/// Report boundary decisions (workspace agents).
///
/// Counted once each in the current telemetry period's usage.
#[utoipa::path(
    post,
    path = super::BOUNDARY_LOGS_PATH,
    tag = "ingest",
    request_body(content = BoundaryLogsRequest, content_type = "application/json", example = json!({
        "workspace_id": "2b9d7f3e-41a6-4c55-8e0b-9a1d2c3e4f50",
        "owner_id": "8f0c1e52-8a4f-4c1e-9d2a-5b7c3e1f0a11",
        "logs": [{"decision": "allow"}, {"decision": "deny"}]
    })),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["agent"]))),
    responses(
        (status = 204, description = "The decisions were counted (or there were none)."),
        (status = 400, description = "`Invalid request body.`: the validation names the field \
            (`workspace_id`, `logs[1].decision`, `allowed`, `body`).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, description = "`Request body too large.` (field `body`, past \
            `--body-limit`).", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
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
