//! Read endpoints. Store reads go through [`Authorized`] with the caller's
//! subject, so a refusal comes from the domain's access rules.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tally_domain::appstats::AccessMethod;
use tally_domain::authz::Authorized;
use tally_domain::authz::{Action, Resource};
use tally_domain::ports::{InsightsStore, TelemetryStore, TimeRange, UsageStore};
use tally_domain::telemetry::Snapshot;
use tally_domain::usage::{AppUsageSeries, Intervals};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;

pub const DEFAULT_SNAPSHOT_LIMIT: usize = 100;
pub const MAX_SNAPSHOT_LIMIT: usize = 1000;

/// The query's parameters by name. An unknown or repeated name is refused
/// rather than ignored, so a typo (`limt=5`) is not silently answered with
/// the defaults.
fn query_params(raw: Option<String>, known: &[&'static str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = raw
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            let expected = if known.is_empty() {
                "this endpoint takes no query parameters".to_owned()
            } else {
                format!("expected {}", known.join(", "))
            };
            return Err(ApiError::bad_param(
                name.as_str(),
                format!("unknown query parameter {name:?}: {expected}"),
            ));
        }
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::bad_param(
                name.as_str(),
                format!("query parameter {name:?} given more than once"),
            ));
        }
    }
    Ok(pairs)
}

fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An RFC 3339 time, in UTC; refused when UTC cannot represent it.
fn time_param(pairs: &[(String, String)], name: &str) -> Result<OffsetDateTime, ApiError> {
    let raw =
        query_param(pairs, name).ok_or_else(|| ApiError::bad_param(name, "missing RFC 3339 timestamp"))?;
    let t = OffsetDateTime::parse(raw, &Rfc3339).map_err(|e| {
        // An unescaped `+` of an offset arrives as a space.
        let hint = if raw.contains(' ') {
            " (write a + in a query string as %2B)"
        } else {
            ""
        };
        ApiError::bad_param(name, format!("invalid RFC 3339 timestamp {raw:?}: {e}{hint}"))
    })?;
    // Stores compare at whole microseconds, rounding up: leave room for it.
    const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
    t.checked_to_offset(UtcOffset::UTC)
        .filter(|t| *t <= LATEST)
        .ok_or_else(|| {
            ApiError::bad_param(
                name,
                format!("timestamp {raw:?} is after 9999-12-31T23:59:59.999999Z"),
            )
        })
}

/// One app over the range. The field names are the route's first ones;
/// the figures follow docs/insights.md.
#[derive(Debug, Serialize)]
pub struct AppUsageJson {
    pub access_method: AccessMethod,
    pub slug_or_port: String,
    pub unique_users: u64,
    /// Real sessions, a rolled-up row counting all it stands for, in the
    /// range when the session's UTC hour starts in it.
    pub sessions: u64,
    pub requests: u64,
    /// Usage time in microseconds: 60 s for each distinct (user, minute).
    pub session_micros: u64,
    /// The same in seconds.
    pub session_seconds: f64,
}

impl From<AppUsageSeries> for AppUsageJson {
    fn from(app: AppUsageSeries) -> Self {
        Self {
            access_method: app.access_method,
            slug_or_port: app.slug_or_port,
            unique_users: app.total.unique_users,
            sessions: app.total.sessions,
            requests: app.total.requests,
            session_micros: app.total.usage_seconds.saturating_mul(1_000_000),
            session_seconds: app.total.usage_seconds as f64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AppInsights {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub apps: Vec<AppUsageJson>,
}

/// `GET /api/v2/insights/apps?from=RFC3339&to=RFC3339`: per app, from the
/// usage rollup (as of its last tick), over the minutes the range touches.
pub async fn app_insights(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AppInsights>, ApiError> {
    let pairs = query_params(query, &["from", "to"])?;
    let from = time_param(&pairs, "from")?;
    let to = time_param(&pairs, "to")?;
    let range = TimeRange::new(from, to).map_err(|e| ApiError::bad_param("to", e))?;
    let minutes = Intervals::covering(range).map_err(|e| ApiError::bad_param("to", e))?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let apps = store
        .app_usage_by_interval(&minutes)
        .await?
        .into_iter()
        .map(AppUsageJson::from)
        .collect();
    Ok(Json(AppInsights { from, to, apps }))
}

#[derive(Debug, Serialize)]
pub struct LastUsed {
    pub workspace_id: Uuid,
    /// `null` when the workspace was never used.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// `GET /api/v2/workspaces/{id}/last-used`
pub async fn last_used(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<LastUsed>, ApiError> {
    // axum's own rejection (a percent-encoded non-UTF-8 id) is plain text.
    let Path(id) = path.map_err(|e| ApiError::bad_param("workspace_id", e.body_text()))?;
    query_params(query, &[])?;
    let workspace_id = Uuid::parse_str(&id)
        .map_err(|e| ApiError::bad_param("workspace_id", format!("invalid UUID {id:?}: {e}")))?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let last_used_at = store.workspace_last_used(workspace_id).await?;
    Ok(Json(LastUsed {
        workspace_id,
        last_used_at,
    }))
}

#[derive(Debug, Serialize)]
pub struct Snapshots {
    pub snapshots: Vec<Snapshot>,
}

/// `GET /api/v2/telemetry/snapshots?limit=N`, newest period first.
pub async fn snapshots(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Snapshots>, ApiError> {
    let pairs = query_params(query, &["limit"])?;
    let limit = match query_param(&pairs, "limit") {
        None => DEFAULT_SNAPSHOT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_SNAPSHOT_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_SNAPSHOT_LIMIT}, got {raw:?}"),
                ));
            }
        },
    };
    let store = Authorized::new(state.store.clone(), caller.0);
    let snapshots = store.list_snapshots(limit).await?;
    Ok(Json(Snapshots { snapshots }))
}

/// `GET /healthz`, no token needed.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text, for readers (auditor, admin).
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    // Metrics are fleet-wide figures, so they need the right to read app stats.
    caller.require(Action::Read, Resource::WorkspaceAppStats)?;
    crate::metrics::record_state(&state.collector.stats(), &state.tracker.pending());
    let body = crate::metrics::handle().render();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    ))
}
