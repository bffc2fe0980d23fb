//! The insights read API: app usage, active users and user activity over a
//! range cut into day or week intervals, from the usage rollup; and the raw
//! app-stat export as NDJSON. The figures are defined in docs/insights.md.
//!
//! The range is checked as Coder's insights endpoints check theirs
//! (`tally_domain::usage::interval`); each refusal names its parameter.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::authz::{Action, Authorized, Resource};
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::export::export_app_stats;
use tally_domain::usage::interval::{check_range, intervals, parse_time};
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::{IntervalKind, Intervals, RangeError, UsageFigures, row_sessions};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::openapi::responses::{Forbidden, StoreFailed, StoreUnavailable, Unauthorized};
use super::read::{query_param, query_params, time_param};

pub const DEFAULT_USER_LIMIT: usize = 100;
pub const MAX_USER_LIMIT: usize = 1000;
pub const NDJSON: &str = "application/x-ndjson";

fn range_error(e: RangeError) -> ApiError {
    ApiError::bad_param(e.field, e.reason)
}

/// `start_time` and `end_time`, checked against the current time.
fn checked_range(pairs: &[(String, String)], now: OffsetDateTime) -> Result<TimeRange, ApiError> {
    let time = |name: &'static str| {
        let raw = query_param(pairs, name)
            .ok_or_else(|| ApiError::bad_param(name, "missing: an RFC 3339 time is required"))?;
        parse_time(name, raw).map_err(range_error)
    };
    let (start, end) = (time("start_time")?, time("end_time")?);
    check_range(start, end, now).map_err(range_error)
}

/// `interval`: absent or empty for totals only (as Coder), else `day` or `week`.
fn interval_param(pairs: &[(String, String)]) -> Result<Option<IntervalKind>, ApiError> {
    match query_param(pairs, "interval") {
        None | Some("") => Ok(None),
        Some(raw) => IntervalKind::parse(raw).map(Some).map_err(range_error),
    }
}

/// The intervals the store reads: the requested ones, or the whole range
/// as one when only totals are asked for.
fn read_intervals(range: TimeRange, kind: Option<IntervalKind>) -> Result<Intervals, ApiError> {
    match kind {
        Some(kind) => intervals(range, kind).map_err(range_error),
        None => Intervals::single(range).map_err(|e| ApiError::bad_param("end_time", e)),
    }
}

/// The query of the range reads: the range, its interval kind and the cut.
struct RangeQuery {
    range: TimeRange,
    interval: Option<IntervalKind>,
    intervals: Intervals,
}

fn range_query(state: &AppState, query: Option<String>) -> Result<RangeQuery, ApiError> {
    let pairs = query_params(query, &["start_time", "end_time", "interval"])?;
    let range = checked_range(&pairs, state.clock.now())?;
    let interval = interval_param(&pairs)?;
    let intervals = read_intervals(range, interval)?;
    Ok(RangeQuery {
        range,
        interval,
        intervals,
    })
}

/// One app's figures over the range or an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppUsageEntry {
    pub access_method: AccessMethod,
    /// The app's slug, or the port; empty for the web terminal.
    pub slug_or_port: String,
    /// 60 × the distinct (user, minute) pairs its sessions cover.
    pub usage_seconds: u64,
    /// Real sessions, counted in the interval of the UTC hour they started in.
    pub sessions: u64,
    pub requests: u64,
    pub unique_users: u64,
}

impl AppUsageEntry {
    fn new(access_method: AccessMethod, slug_or_port: &str, f: &UsageFigures) -> Self {
        Self {
            access_method,
            slug_or_port: slug_or_port.to_owned(),
            usage_seconds: f.usage_seconds,
            sessions: f.sessions,
            requests: f.requests,
            unique_users: f.unique_users,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppUsageInterval {
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
    /// Only the apps with usage in this interval, in the order of `apps`.
    pub apps: Vec<AppUsageEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppUsageReport {
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
    /// `null` when no interval was asked for.
    #[schema(required = true)]
    pub interval: Option<IntervalKind>,
    /// Every app with usage in the range: most unique users first, then most usage.
    pub apps: Vec<AppUsageEntry>,
    /// One per interval, in order; empty without `interval`.
    pub intervals: Vec<AppUsageInterval>,
}

const START_TIME_DOC: &str = "Start of the range (RFC 3339), at 00:00:00 in its offset, not zero, not \
    after the current hour's end. Its offset is the time zone of the intervals: each begins at \
    midnight there.";
const END_TIME_DOC: &str = "End of the range (RFC 3339), after `start_time`, at 00:00:00 in its offset, \
    or a whole hour when it is on today's date; not after the current hour's end.";
const INTERVAL_DOC: &str = "`day` or `week` (7 days; the last interval is cut at `end_time`, and \
    must have at least 6 days unless the range is whole weeks). Absent: totals only.";

/// App usage per app and access method, over a range and per interval.
///
/// From the usage rollup (as of its last tick): usage seconds (distinct
/// minutes per user), sessions, requests and unique users.
#[utoipa::path(
    get,
    path = super::APP_USAGE_PATH,
    tag = "read",
    params(
        ("start_time" = OffsetDateTime, Query, description = START_TIME_DOC, example = "2026-11-23T00:00:00Z"),
        ("end_time" = OffsetDateTime, Query, description = END_TIME_DOC, example = "2026-11-30T00:00:00Z"),
        ("interval" = Option<IntervalKind>, Query, description = INTERVAL_DOC),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Usage by app, over the range and per interval.", body = AppUsageReport),
        (status = 400, description = "`Invalid request parameters.`: the validation names the \
            parameter (`start_time`, `end_time`, `interval`, an unknown one).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed),
        (status = 503, response = StoreUnavailable),
    ),
)]
pub async fn app_usage(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AppUsageReport>, ApiError> {
    let q = range_query(&state, query)?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let series = store.app_usage_by_interval(&q.intervals).await?;
    let apps = series
        .iter()
        .map(|s| AppUsageEntry::new(s.access_method, &s.slug_or_port, &s.total))
        .collect();
    let intervals = match q.interval {
        None => Vec::new(),
        Some(_) => q
            .intervals
            .iter()
            .enumerate()
            .map(|(i, interval)| AppUsageInterval {
                start_time: interval.from,
                end_time: interval.to,
                apps: series
                    .iter()
                    .filter_map(|s| {
                        let f = s.intervals.get(i)?;
                        (*f != UsageFigures::default())
                            .then(|| AppUsageEntry::new(s.access_method, &s.slug_or_port, f))
                    })
                    .collect(),
            })
            .collect(),
    };
    Ok(Json(AppUsageReport {
        start_time: q.range.from,
        end_time: q.range.to,
        interval: q.interval,
        apps,
        intervals,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActiveUsersInterval {
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
    pub active_users: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActiveUsersReport {
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
    /// `null` when no interval was asked for.
    #[schema(required = true)]
    pub interval: Option<IntervalKind>,
    /// Distinct users with any usage in the range.
    pub active_users: u64,
    /// Every interval, zeros included; empty without `interval`.
    pub intervals: Vec<ActiveUsersInterval>,
}

/// Active users: distinct users with any app usage, over a range and per interval.
#[utoipa::path(
    get,
    path = super::ACTIVE_USERS_PATH,
    tag = "read",
    params(
        ("start_time" = OffsetDateTime, Query, description = START_TIME_DOC, example = "2026-11-23T00:00:00Z"),
        ("end_time" = OffsetDateTime, Query, description = END_TIME_DOC, example = "2026-11-30T00:00:00Z"),
        ("interval" = Option<IntervalKind>, Query, description = INTERVAL_DOC),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Active users over the range and per interval.", body = ActiveUsersReport),
        (status = 400, description = "`Invalid request parameters.`: the validation names the \
            parameter (`start_time`, `end_time`, `interval`, an unknown one).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed),
        (status = 503, response = StoreUnavailable),
    ),
)]
pub async fn active_users(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ActiveUsersReport>, ApiError> {
    let q = range_query(&state, query)?;
    let store = Authorized::new(state.store.clone(), caller.0);
    let active = store.active_users(&q.intervals).await?;
    let intervals = match q.interval {
        None => Vec::new(),
        Some(_) => q
            .intervals
            .iter()
            .enumerate()
            .map(|(i, interval)| ActiveUsersInterval {
                start_time: interval.from,
                end_time: interval.to,
                active_users: active.intervals.get(i).copied().unwrap_or(0),
            })
            .collect(),
    };
    Ok(Json(ActiveUsersReport {
        start_time: q.range.from,
        end_time: q.range.to,
        interval: q.interval,
        active_users: active.total,
        intervals,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserActivityEntry {
    pub user_id: Uuid,
    /// 60 × the distinct minutes any of the user's sessions cover, over all apps.
    pub usage_seconds: u64,
    pub sessions: u64,
    pub requests: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserActivityReport {
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_time: OffsetDateTime,
    /// Most usage first, then by user id; at most `limit`.
    pub users: Vec<UserActivityEntry>,
}

/// User activity: usage per user over all apps, the most active first.
#[utoipa::path(
    get,
    path = super::USER_ACTIVITY_PATH,
    tag = "read",
    params(
        ("start_time" = OffsetDateTime, Query, description = START_TIME_DOC, example = "2026-11-23T00:00:00Z"),
        ("end_time" = OffsetDateTime, Query, description = END_TIME_DOC, example = "2026-11-30T00:00:00Z"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "How many users, most active first (default 100).", example = 10),
    ),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "The most active users.", body = UserActivityReport),
        (status = 400, description = "`Invalid request parameters.`: the validation names the \
            parameter (`start_time`, `end_time`, `limit`, an unknown one).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed),
        (status = 503, response = StoreUnavailable),
    ),
)]
pub async fn user_activity(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<UserActivityReport>, ApiError> {
    let pairs = query_params(query, &["start_time", "end_time", "limit"])?;
    let range = checked_range(&pairs, state.clock.now())?;
    let limit = match query_param(&pairs, "limit") {
        None => DEFAULT_USER_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_USER_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_USER_LIMIT}, got {raw:?}"),
                ));
            }
        },
    };
    let store = Authorized::new(state.store.clone(), caller.0);
    let users = store
        .user_activity(range, limit)
        .await?
        .into_iter()
        .map(|u| UserActivityEntry {
            user_id: u.user_id,
            usage_seconds: u.usage_seconds,
            sessions: u.sessions,
            requests: u.requests,
        })
        .collect();
    Ok(Json(UserActivityReport {
        start_time: range.from,
        end_time: range.to,
        users,
    }))
}

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
    path = super::APP_STATS_EXPORT_PATH,
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
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed),
        (status = 503, response = StoreUnavailable),
    ),
)]
pub async fn export_app_stats_ndjson(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_params(query, &["start_time", "end_time"])?;
    let from = time_param(&pairs, "start_time")?;
    let to = time_param(&pairs, "end_time")?;
    let range = TimeRange::new(from, to).map_err(|e| ApiError::bad_param("end_time", e))?;
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
