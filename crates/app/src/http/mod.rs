//! The HTTP API (axum); what it promises: docs/rules.md#http-api.

pub mod auth;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod ingest;
pub mod insights;
pub mod observe;
pub mod openapi;
pub mod read;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tally_domain::appstats::collector::StatsCollector;
use tally_domain::appstats::session_times::SessionTimeLimits;
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::{Clock, SystemClock};
use tally_domain::ports::Store;
use tally_domain::usage::RetentionPolicy;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Tokens;
use crate::ready::{AlwaysReady, Readiness};
use error::ApiError;

pub const APP_STATS_PATH: &str = "/api/v2/workspaceproxies/me/app-stats";
pub const BOUNDARY_LOGS_PATH: &str = "/api/v2/workspaceagents/me/boundary-logs";
pub const APP_INSIGHTS_PATH: &str = "/api/v2/insights/apps";
pub const APP_USAGE_PATH: &str = "/api/v2/insights/app-usage";
pub const ACTIVE_USERS_PATH: &str = "/api/v2/insights/active-users";
pub const USER_ACTIVITY_PATH: &str = "/api/v2/insights/user-activity";
pub const APP_STATS_EXPORT_PATH: &str = "/api/v2/insights/app-stats/export";
pub const LAST_USED_PATH: &str = "/api/v2/workspaces/{id}/last-used";
pub const SNAPSHOTS_PATH: &str = "/api/v2/telemetry/snapshots";
pub const METRICS_PATH: &str = "/metrics";
pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub collector: Arc<StatsCollector>,
    pub tracker: Arc<BoundaryTracker>,
    pub tokens: Tokens,
    pub body_limit: usize,
    /// What `/readyz` asks.
    pub readiness: Arc<dyn Readiness>,
    /// Whether each request is logged (`--access-log`).
    pub access_log: bool,
    /// The current time, for the session times ingest takes and the
    /// insights' "not in the future" and "today" rules.
    pub clock: Arc<dyn Clock>,
    /// The session times ingest takes (`--clock-skew`, `--retention-usage`).
    pub session_times: SessionTimeLimits,
    /// What `GET /api/v2/status` names as the store.
    pub store_kind: status::StoreKind,
    /// How long the usage rollup keeps an hour (`--retention-usage`): the
    /// longest range an insights read covers.
    pub usage_retention: time::Duration,
    /// The in-memory store, when it is the store: `/metrics` shows what it
    /// holds against its share of `--max-memory`.
    pub memory_store: Option<Arc<tally_adapters_memory::MemoryStore>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        collector: Arc<StatsCollector>,
        tracker: Arc<BoundaryTracker>,
        tokens: Tokens,
        body_limit: usize,
    ) -> Self {
        Self {
            store,
            collector,
            tracker,
            tokens,
            body_limit,
            readiness: Arc::new(AlwaysReady),
            access_log: true,
            clock: Arc::new(SystemClock),
            session_times: SessionTimeLimits::default(),
            store_kind: status::StoreKind::Memory,
            usage_retention: RetentionPolicy::default().usage,
            memory_store: None,
        }
    }

    pub fn with_memory_store(mut self, store: Option<Arc<tally_adapters_memory::MemoryStore>>) -> Self {
        self.memory_store = store;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_readiness(mut self, readiness: Arc<dyn Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    pub fn with_access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    pub fn with_store_kind(mut self, kind: status::StoreKind) -> Self {
        self.store_kind = kind;
        self
    }

    pub fn with_usage_retention(mut self, retention: time::Duration) -> Self {
        self.usage_retention = retention;
        self
    }

    pub fn with_session_times(mut self, limits: SessionTimeLimits) -> Self {
        self.session_times = limits;
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .field("body_limit", &self.body_limit)
            .field("access_log", &self.access_log)
            .field("store_kind", &self.store_kind)
            .field("usage_retention", &self.usage_retention)
            .field("session_times", &self.session_times)
            .finish_non_exhaustive()
    }
}

/// Every route of the API, each with its description: the router and the
/// OpenAPI document are both built from this list. A handler gets in with
/// `#[utoipa::path]` (its method, path, parameters, bodies, statuses, roles)
/// and one `.routes(routes!(handler))` line here; never add a route to the
/// router any other way (`http::openapi` tests compare the two).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(ingest::app_stats))
        .routes(routes!(ingest::boundary_logs))
        .routes(routes!(read::app_insights))
        .routes(routes!(insights::app_usage))
        .routes(routes!(insights::active_users))
        .routes(routes!(insights::user_activity))
        .routes(routes!(insights::export::export_app_stats_ndjson))
        .routes(routes!(read::last_used))
        .routes(routes!(read::snapshots))
        .routes(routes!(read::metrics))
        .routes(routes!(read::healthz))
        .routes(routes!(read::readyz))
        .routes(routes!(status::status))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::asset))
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let access_log = state.access_log;
    let (routes, _) = routes().split_for_parts();
    let routes = routes
        .route_layer(middleware::from_fn(close_after_refused_upload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(request_timeout, deadline));
    observe::observe(routes, access_log).with_state(state)
}

/// The router of `--metrics-listen`: `GET /metrics` without a token, for a
/// Prometheus server on a network of its own. Not part of the API document:
/// it is served on another address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(METRICS_PATH, get(read::open_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Answers 408 (as JSON, like every error) when a request takes longer than
/// `limit`, e.g. a client that stops sending its body.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "Request timed out.")
                .with_detail(format!(
                    "request not completed within {} (the server's --request-timeout)",
                    humantime::format_duration(limit)
                ))
                .into_response();
            // The rest of a stalled body may still be on the connection.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

async fn close_after_refused_upload(request: Request, next: Next) -> Response {
    // A refused upload may leave its body unread on the connection: tell an
    // HTTP/1 client not to reuse it, or its next request could hit a closing
    // connection.
    let close =
        request.method() == axum::http::Method::POST && request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if close && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.").with_detail(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Route not found.")
        .with_detail(format!("no route for {}", request.uri().path()))
}

#[cfg(test)]
mod tests;
