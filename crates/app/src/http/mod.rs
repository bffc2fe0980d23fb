//! The HTTP API of SPEC §7 (axum).

pub mod auth;
pub mod body;
pub mod error;
pub mod ingest;
pub mod read;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tally_domain::appstats::collector::StatsCollector;
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::ports::Store;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Tokens;
use error::ApiError;

pub const APP_STATS_PATH: &str = "/api/v2/workspaceproxies/me/app-stats";
pub const BOUNDARY_LOGS_PATH: &str = "/api/v2/workspaceagents/me/boundary-logs";
pub const APP_INSIGHTS_PATH: &str = "/api/v2/insights/apps";
pub const LAST_USED_PATH: &str = "/api/v2/workspaces/{id}/last-used";
pub const SNAPSHOTS_PATH: &str = "/api/v2/telemetry/snapshots";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub collector: Arc<StatsCollector>,
    pub tracker: Arc<BoundaryTracker>,
    pub tokens: Tokens,
    pub body_limit: usize,
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
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route(APP_STATS_PATH, post(ingest::app_stats))
        .route(BOUNDARY_LOGS_PATH, post(ingest::boundary_logs))
        .route(APP_INSIGHTS_PATH, get(read::app_insights))
        .route(LAST_USED_PATH, get(read::last_used))
        .route(SNAPSHOTS_PATH, get(read::snapshots))
        .route("/metrics", get(read::metrics))
        .route("/healthz", get(read::healthz))
        .route_layer(middleware::from_fn(count_requests))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Counts requests by method, matched route and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
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
    metrics::counter!(
        crate::metrics::HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

async fn not_found(request: Request) -> ApiError {
    metrics::counter!(
        crate::metrics::HTTP_REQUESTS,
        "method" => request.method().as_str().to_owned(),
        "route" => "unmatched",
        "status" => "404",
    )
    .increment(1);
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", request.uri().path()),
    )
}

#[cfg(test)]
mod tests;
