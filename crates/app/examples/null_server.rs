//! The limit for `cargo xtask capacity`: tally's HTTP stack (axum, the same
//! request id, span, access log and metrics layers, the same body reading
//! and limit) around handlers that do nothing with what they read. Not part
//! of the product.
//!
//! `null_server ADDR` serves the app stats and boundary log paths and logs
//! `listening on ADDR` as `tally serve` does.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tally::http::error::ApiError;
use tally::http::{APP_STATS_PATH, AppState, BOUNDARY_LOGS_PATH};
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::SystemClock;
use tally_domain::error::StoreError;
use tally_domain::ports::Reporter;

/// tally's default `--body-limit`.
const BODY_LIMIT: usize = 8 << 20;

async fn read_and_drop(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let bytes = tally::http::body::read_json_body(&headers, body, state.body_limit).await?;
    drop(bytes);
    Ok(StatusCode::NO_CONTENT)
}

/// The state's collector is never given a report.
struct Unused;

#[async_trait::async_trait]
impl Reporter for Unused {
    async fn report(&self, _: &[StatsReport]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tally::logging::init_tracing(false);
    let _ = tally::metrics::handle();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let clock = Arc::new(SystemClock);
    let collector = StatsCollector::new(CollectorConfig::default(), Arc::new(Unused), clock.clone());
    let state = AppState::new(
        Arc::new(tally_adapters_memory::MemoryStore::new()),
        collector,
        Arc::new(BoundaryTracker::new(uuid::Uuid::new_v4(), clock)),
        tally::config::Tokens::default(),
        BODY_LIMIT,
    );
    let routes = axum::Router::new()
        .route(APP_STATS_PATH, post(read_and_drop))
        .route(BOUNDARY_LOGS_PATH, post(read_and_drop));
    let app = tally::http::observe::observe(routes, true).with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
