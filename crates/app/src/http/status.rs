//! `GET /api/v2/status`: this replica's health, for the dashboard. Every
//! figure is read where `/metrics` reads it (the collector's stats, the
//! store-up flag of `crate::metrics`), so the two never disagree.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use tally_domain::authz::{Action, Resource};
use time::OffsetDateTime;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::openapi::responses::{Forbidden, Unauthorized};

pub const STATUS_PATH: &str = "/api/v2/status";

/// Which store this replica runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Postgres,
}

/// The health of this replica.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub store: StoreKind,
    /// Whether the last store call of the background loops found the store
    /// answering (`tally_store_up`).
    pub store_up: bool,
    /// App sessions the collector holds in memory (`tally_app_stats_tracked_sessions`).
    pub buffered_sessions: u64,
    /// App stat rows accepted and not yet written to the store: left by a
    /// failed flush or in the flush under way (`tally_app_stats_backlog_rows`).
    pub backlog_reports: u64,
    /// When the last successful collector flush ended; `null` before the first.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_flush: Option<OffsetDateTime>,
    /// Why the last collector flush failed; `null` when it succeeded.
    #[schema(required = true)]
    pub last_flush_error: Option<String>,
    /// This build's version.
    pub version: String,
}

/// This replica's health: its store, backlog and last flush.
///
/// The same figures `/metrics` exports, as JSON.
#[utoipa::path(
    get,
    path = STATUS_PATH,
    tag = "read",
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "This replica's health.", body = Status),
        (status = 400, description = "`Invalid request parameters.`: a query parameter was \
            given (this route takes none).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Status>, ApiError> {
    // Fleet-wide figures, as /metrics: the right to read app stats.
    caller.require(Action::Read, Resource::WorkspaceAppStats)?;
    super::read::query_params(query.as_deref(), &[])?;
    let stats = state.collector.stats();
    Ok(Json(Status {
        store: state.store_kind,
        store_up: crate::metrics::store_up(),
        buffered_sessions: stats.tracked_sessions as u64,
        backlog_reports: stats.backlog_rows as u64,
        last_flush: stats.last_flush_at,
        last_flush_error: stats.last_flush_error,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

#[cfg(test)]
mod tests;
