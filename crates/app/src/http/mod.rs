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
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tally_domain::appstats::collector::StatsCollector;
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::ports::Store;
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
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        .layer(TraceLayer::new_for_http())
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
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.").with_detail(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

async fn not_found(request: Request) -> ApiError {
    metrics::counter!(
        crate::metrics::HTTP_REQUESTS,
        "method" => request.method().as_str().to_owned(),
        "route" => "unmatched",
        "status" => "404",
    )
    .increment(1);
    ApiError::new(StatusCode::NOT_FOUND, "Route not found.")
        .with_detail(format!("no route for {}", request.uri().path()))
}

#[cfg(test)]
mod tests;
