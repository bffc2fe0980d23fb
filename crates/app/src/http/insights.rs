//! The insights read API: app usage, active users and user activity over a
//! range cut into day or week intervals, from the usage rollup
//! ([`params`] checks their query); and the raw app-stat export as NDJSON
//! ([`export`]). The figures are defined in docs/insights.md.
//!
//! The range is checked as Coder's insights endpoints check theirs
//! (`tally_domain::usage::interval`) and may be at most the usage retention
//! plus a day long; each refusal names its parameter.

pub mod export;
pub mod params;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tally_domain::appstats::AccessMethod;
use tally_domain::authz::Authorized;
use tally_domain::ports::UsageStore;
use tally_domain::usage::{IntervalKind, UsageFigures};
use time::OffsetDateTime;
use uuid::Uuid;

use self::params::{ActivityRead, IntervalParams, IntervalRead, LimitParams, RangeParams};
use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::openapi::responses::{RangeReadRefused, StoreReadFailures};

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

/// App usage per app and access method, over a range and per interval.
///
/// From the usage rollup (as of its last tick): usage seconds (distinct
/// minutes per user), sessions, requests and unique users.
#[utoipa::path(
    get,
    path = super::APP_USAGE_PATH,
    tag = "read",
    params(RangeParams, IntervalParams),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Usage by app, over the range and per interval.", body = AppUsageReport),
        RangeReadRefused,
        StoreReadFailures,
    ),
)]
pub async fn app_usage(
    State(state): State<AppState>,
    caller: Caller,
    q: IntervalRead,
) -> Result<Json<AppUsageReport>, ApiError> {
    let store = Authorized::new(state.store.clone(), caller.0);
    let series = store.app_usage_by_interval(&q.intervals).await?;
    let apps = series
        .iter()
        .map(|s| AppUsageEntry::new(s.access_method, &s.slug_or_port, &s.total))
        .collect();
    let intervals = q
        .listed()
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
        .collect();
    Ok(Json(AppUsageReport {
        start_time: q.range.start_time,
        end_time: q.range.end_time,
        interval: q.interval.interval,
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
    params(RangeParams, IntervalParams),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "Active users over the range and per interval.", body = ActiveUsersReport),
        RangeReadRefused,
        StoreReadFailures,
    ),
)]
pub async fn active_users(
    State(state): State<AppState>,
    caller: Caller,
    q: IntervalRead,
) -> Result<Json<ActiveUsersReport>, ApiError> {
    let store = Authorized::new(state.store.clone(), caller.0);
    let active = store.active_users(&q.intervals).await?;
    let intervals = q
        .listed()
        .map(|(i, interval)| ActiveUsersInterval {
            start_time: interval.from,
            end_time: interval.to,
            active_users: active.intervals.get(i).copied().unwrap_or(0),
        })
        .collect();
    Ok(Json(ActiveUsersReport {
        start_time: q.range.start_time,
        end_time: q.range.end_time,
        interval: q.interval.interval,
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
    params(RangeParams, LimitParams),
    security(("bearer" = []), ("coder_session_token" = [])),
    extensions(("x-tally-roles" = json!(["reader", "admin"]))),
    responses(
        (status = 200, description = "The most active users.", body = UserActivityReport),
        RangeReadRefused,
        StoreReadFailures,
    ),
)]
pub async fn user_activity(
    State(state): State<AppState>,
    caller: Caller,
    q: ActivityRead,
) -> Result<Json<UserActivityReport>, ApiError> {
    let store = Authorized::new(state.store.clone(), caller.0);
    let users = store
        .user_activity(q.range.range(), q.limit)
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
        start_time: q.range.start_time,
        end_time: q.range.end_time,
        users,
    }))
}
