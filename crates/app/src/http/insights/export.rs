//! The raw app-stat export as NDJSON: every stored row whose session
//! started in a range, streamed an hour of session starts at a time.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use tally_domain::appstats::StatsReport;
use tally_domain::authz::{Action, Authorized, Resource};
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::export::export_app_stats;
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::row_sessions;

use super::super::AppState;
use super::super::auth::Caller;
use super::super::error::{ApiError, ErrorBody};
use super::super::openapi::responses::StoreReadFailures;
use super::super::read::any_range;

pub const NDJSON: &str = "application/x-ndjson";

/// One line of the export: a stored row as the proxy reports it, plus the
/// number of sessions it stands for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedRow {
    #[serde(flatten)]
    pub row: StatsReport,
    /// Sessions this row stands for (a rolled-up row of short sessions, many).
    pub sessions: u64,
}

/// The longest range one export request may cover.
pub const MAX_EXPORT_RANGE: time::Duration = time::Duration::days(31);

/// Every stored app-stat row whose session started in the range, as NDJSON.
///
/// One JSON object per line, by session start, then (user, agent,
/// session); streamed, read from the store an hour of session starts at a
/// time. A store failure after the first line ends the response early
/// (the body is cut off, never silently short with a complete ending).
#[utoipa::path(
    get,
    path = super::super::APP_STATS_EXPORT_PATH,
    tag = "read",
    params(
        ("start_time" = OffsetDateTime, Query, description = "Start of the range (RFC 3339, any \
            time), at most 9999-12-31T23:59:59.999999Z in UTC.", example = "2026-11-25T00:00:00Z"),
        ("end_time" = OffsetDateTime, Query, description = "End of the range (RFC 3339), after \
            `start_time` and at most 31 days after it, at most 9999-12-31T23:59:59.999999Z in UTC.", example = "2026-11-26T00:00:00Z"),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "The rows, one JSON object per line.", body = ExportedRow,
            content_type = "application/x-ndjson"),
        (status = 400, description = "`Invalid request parameters.`: the validation names the \
            parameter (`start_time`, `end_time`, an unknown one).", body = ErrorBody),
        StoreReadFailures,
    ),
)]
pub async fn export_app_stats_ndjson(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let range = any_range(query.as_deref(), "start_time", "end_time")?;
    // The export reads an hour per store call: a bounded range keeps one
    // request's work bounded too; a warehouse loader pages by month.
    if range.to - range.from > MAX_EXPORT_RANGE {
        return Err(ApiError::bad_param(
            "end_time",
            format!("at most {} days after start_time", MAX_EXPORT_RANGE.whole_days()),
        ));
    }
    caller.require(Action::Read, Resource::WorkspaceAppStats)?;
    let store = Arc::new(Authorized::new(state.store.clone(), caller.0));
    // The first page (to the end of the first hour) is read before
    // answering: a store that is down gets its 503 before any line is sent.
    let first_end = hour_start(hour_of(range.from) + 1).min(range.to);
    let first = store
        .app_stats_started_in(TimeRange {
            from: range.from,
            to: first_end,
        })
        .await?;
    let rest = match TimeRange::new(first_end, range.to) {
        Ok(rest) => export_app_stats(store, rest),
        Err(_) => stream::empty().boxed(),
    };
    let lines = stream::iter(first.into_iter().map(Ok))
        .chain(rest)
        .map_ok(line)
        .inspect_err(|e| {
            tracing::warn!(error = %tally_domain::error::Report(e), "app stats export cut off by a store failure");
        });
    Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response())
}

fn line(row: StatsReport) -> Bytes {
    let exported = ExportedRow {
        sessions: row_sessions(&row),
        row,
    };
    let mut out = serde_json::to_vec(&exported).expect("a stats row serializes");
    out.push(b'\n');
    Bytes::from(out)
}
