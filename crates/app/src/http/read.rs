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
use tally_domain::usage::interval::retained;
use tally_domain::usage::{AppUsageSeries, Intervals};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::openapi::responses::{Forbidden, StoreReadFailures, Unauthorized};
use crate::ready::NotReady;

pub const DEFAULT_SNAPSHOT_LIMIT: usize = 100;
pub const MAX_SNAPSHOT_LIMIT: usize = 1000;

/// The query's parameters by name. An unknown or repeated name is refused
/// rather than ignored, so a typo (`limt=5`) is not silently answered with
/// the defaults.
pub(super) fn query_params(
    raw: Option<&str>,
    known: &[&'static str],
) -> Result<Vec<(String, String)>, ApiError> {
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

pub(super) fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `limit`: a whole number from 1 to `max`, `default` when absent.
pub(super) fn limit_param(pairs: &[(String, String)], default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = query_param(pairs, "limit") else {
        return Ok(default);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_param(
            "limit",
            format!("limit must be a whole number from 1 to {max}, got {raw:?}"),
        )),
    }
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

/// A range of any two RFC 3339 times, the first before the second, from a
/// query that names only them.
pub(super) fn any_range(
    query: Option<&str>,
    from: &'static str,
    to: &'static str,
) -> Result<TimeRange, ApiError> {
    let pairs = query_params(query, &[from, to])?;
    let start = time_param(&pairs, from)?;
    let end = time_param(&pairs, to)?;
    TimeRange::new(start, end).map_err(|e| ApiError::bad_param(to, e))
}

/// One app over the range. The field names are the route's first ones;
/// the figures follow docs/insights.md.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppInsights {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub apps: Vec<AppUsageJson>,
}

/// Usage of each app over a time range, from the usage rollup (as of its
/// last tick).
///
/// Any range is taken, and only the part of it the rollup keeps is read:
/// from the usage horizon (now minus `--retention-usage`, truncated to the
/// UTC hour) to the end of the current hour; a range wholly outside it
/// answers no apps. That part is widened to the whole minutes it touches.
/// Usage time is 60 s for each distinct (user, minute) inside it; sessions
/// and requests count when the UTC hour their session started in begins
/// inside it. `from` and `to` are echoed as given.
#[utoipa::path(
    get,
    path = super::APP_INSIGHTS_PATH,
    tag = "read",
    params(
        ("from" = OffsetDateTime, Query, description = "Start of the range (RFC 3339), at most \
            9999-12-31T23:59:59.999999Z in UTC.", example = "2026-11-25T00:00:00Z"),
        ("to" = OffsetDateTime, Query, description = "End of the range (RFC 3339), after `from`, \
            at most 9999-12-31T23:59:59.999999Z in UTC.", example = "2026-11-26T00:00:00Z"),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Usage by app.", body = AppInsights),
        (status = 400, description = "`Invalid request parameters.`: the validation names the \
            parameter (`from`, `to`, an unknown one).", body = ErrorBody),
        StoreReadFailures,
    ),
)]
pub async fn app_insights(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AppInsights>, ApiError> {
    let range = any_range(query.as_deref(), "from", "to")?;
    let (from, to) = (range.from, range.to);
    caller.require(Action::Read, Resource::WorkspaceAppStats)?;
    // Older clients send any range (from year 1 to 9999 for "everything"):
    // only the part the rollup keeps is read, so a read's work is bounded
    // by the retention however wide the range.
    let Some(kept) = retained(range, state.clock.now(), state.usage_retention) else {
        return Ok(Json(AppInsights {
            from,
            to,
            apps: Vec::new(),
        }));
    };
    let minutes = Intervals::covering(kept).map_err(|e| ApiError::bad_param("to", e))?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let apps = store
        .app_usage_by_interval(&minutes)
        .await?
        .into_iter()
        .map(AppUsageJson::from)
        .collect();
    Ok(Json(AppInsights { from, to, apps }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastUsed {
    pub workspace_id: Uuid,
    /// `null` when the workspace was never used.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub last_used_at: Option<OffsetDateTime>,
}

/// When a workspace was last used.
///
/// The latest end (or, while open, the latest report) of its app sessions.
#[utoipa::path(
    get,
    path = super::LAST_USED_PATH,
    tag = "read",
    params(
        ("id" = Uuid, Path, description = "The workspace's id.",
            example = "2b9d7f3e-41a6-4c55-8e0b-9a1d2c3e4f50"),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Its last-used time, `null` if never used.", body = LastUsed),
        (status = 400, description = "`Invalid request parameters.`: `workspace_id` is not a \
            UUID, or a query parameter was given.", body = ErrorBody),
        StoreReadFailures,
    ),
)]
pub async fn last_used(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<LastUsed>, ApiError> {
    // axum's own rejection (a percent-encoded non-UTF-8 id) is plain text.
    let Path(id) = path.map_err(|e| ApiError::bad_param("workspace_id", e.body_text()))?;
    query_params(query.as_deref(), &[])?;
    let workspace_id = Uuid::parse_str(&id)
        .map_err(|e| ApiError::bad_param("workspace_id", format!("invalid UUID {id:?}: {e}")))?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let last_used_at = store.workspace_last_used(workspace_id).await?;
    Ok(Json(LastUsed {
        workspace_id,
        last_used_at,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Snapshots {
    pub snapshots: Vec<Snapshot>,
}

/// Boundary usage snapshots, newest period first.
///
/// One per closed telemetry period, published or still waiting in the outbox.
#[utoipa::path(
    get,
    path = super::SNAPSHOTS_PATH,
    tag = "read",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "How many, newest first (default 100).", example = 10),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "The snapshots.", body = Snapshots),
        (status = 400, description = "`Invalid request parameters.`: `limit` is not a whole \
            number from 1 to 1000, or an unknown parameter was given.", body = ErrorBody),
        StoreReadFailures,
    ),
)]
pub async fn snapshots(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Snapshots>, ApiError> {
    let pairs = query_params(query.as_deref(), &["limit"])?;
    let limit = limit_param(&pairs, DEFAULT_SNAPSHOT_LIMIT, MAX_SNAPSHOT_LIMIT)?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let snapshots = store.list_snapshots(limit).await?;
    Ok(Json(Snapshots { snapshots }))
}

/// The answer of `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// Liveness: the replica answers.
///
/// 200 whenever the process serves requests, even while the store is down
/// (ingest is then still taken into memory).
#[utoipa::path(
    get,
    path = super::HEALTHZ_PATH,
    tag = "meta",
    responses((status = 200, description = "Alive.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// The answer of `/readyz` when ready.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    pub status: ReadyStatus,
    /// What was checked, e.g. the schema version found.
    pub detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    Ready,
}

/// Readiness: the store answers and its schema is current.
///
/// 503 says which of the two is not so; `/healthz` is the liveness probe.
#[utoipa::path(
    get,
    path = super::READYZ_PATH,
    tag = "meta",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready: the store does not answer, or its schema is not current.",
            body = ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    match state.readiness.check().await {
        Ok(detail) => Ok(Json(Ready {
            status: ReadyStatus::Ready,
            detail,
        })),
        Err(e @ NotReady::StoreUnavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the store does not answer.",
        )
        .with_detail(e.to_string())),
        Err(e @ NotReady::SchemaNotCurrent(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the database schema is not current.",
        )
        .with_detail(e.to_string())),
    }
}

/// Prometheus metrics of this replica.
///
/// Fleet-wide figures, so they need the right to read app stats.
#[utoipa::path(
    get,
    path = super::METRICS_PATH,
    tag = "read",
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4.", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    // Metrics are fleet-wide figures, so they need the right to read app stats.
    caller.require(Action::Read, Resource::WorkspaceAppStats)?;
    Ok(open_metrics(State(state)).await)
}

/// `GET /metrics` of `--metrics-listen`, without a token.
pub async fn open_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let memory = state.memory_store.as_deref().map(|m| m.memory_use());
    let body = crate::metrics::render(&state.collector.stats(), &state.tracker.pending(), memory);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
