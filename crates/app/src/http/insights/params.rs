//! The query parameters of the rollup reads, declared once: each struct is
//! both the OpenAPI description of its parameters (`IntoParams`) and what
//! a handler gets once they are checked. The extractors
//! ([`IntervalRead`], [`ActivityRead`]) run the shared prologue: known
//! names only, Coder's range rules against the clock, the length bound of
//! the usage retention, then the route's own parameter.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tally_domain::ports::TimeRange;
use tally_domain::usage::interval::{check_length, check_range, intervals, parse_time};
use tally_domain::usage::{IntervalKind, Intervals, RangeError};
use time::OffsetDateTime;

use super::super::AppState;
use super::super::error::ApiError;
use super::super::read::{limit_param, query_param, query_params};

pub const DEFAULT_USER_LIMIT: usize = 100;
pub const MAX_USER_LIMIT: usize = 1000;

fn range_error(e: RangeError) -> ApiError {
    ApiError::bad_param(e.field, e.reason)
}

/// The range of a rollup read.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Start of the range (RFC 3339), at 00:00:00 in its offset, not zero, not after the
    /// current hour's end. Its offset is the time zone of the intervals: each begins at
    /// midnight there. At most the usage retention (`--retention-usage`, 365 days unless
    /// configured) plus one day before `end_time`, so "the last 365 days" fits: a longer
    /// range is refused naming `start_time`.
    #[param(example = "2026-11-23T00:00:00Z")]
    pub start_time: OffsetDateTime,
    /// End of the range (RFC 3339), after `start_time`, at 00:00:00 in its offset, or a
    /// whole hour when it is on today's date; not after the current hour's end.
    #[param(example = "2026-11-30T00:00:00Z")]
    pub end_time: OffsetDateTime,
}

impl RangeParams {
    /// `start_time` and `end_time` of `pairs`, checked against `now` and
    /// bounded by `retention`.
    fn parse(
        pairs: &[(String, String)],
        now: OffsetDateTime,
        retention: time::Duration,
    ) -> Result<Self, ApiError> {
        let time = |name: &'static str| {
            let raw = query_param(pairs, name)
                .ok_or_else(|| ApiError::bad_param(name, "missing: an RFC 3339 time is required"))?;
            parse_time(name, raw).map_err(range_error)
        };
        let (start, end) = (time("start_time")?, time("end_time")?);
        let range = check_range(start, end, now).map_err(range_error)?;
        check_length(range, retention).map_err(range_error)?;
        Ok(Self {
            start_time: start,
            end_time: end,
        })
    }

    /// The prologue of every range read: the query may name the range and
    /// `other` only; the range is checked at the state's clock and bounded
    /// by its usage retention. Returns the query's pairs for `other`.
    fn with(
        parts: &Parts,
        state: &AppState,
        other: &'static str,
    ) -> Result<(Self, Vec<(String, String)>), ApiError> {
        let pairs = query_params(parts.uri.query(), &["start_time", "end_time", other])?;
        let range = Self::parse(&pairs, state.clock.now(), state.usage_retention)?;
        Ok((range, pairs))
    }

    pub fn range(&self) -> TimeRange {
        TimeRange {
            from: self.start_time,
            to: self.end_time,
        }
    }
}

/// How the range is cut.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IntervalParams {
    /// `day` or `week` (7 days; the last interval is cut at `end_time`, and must have at
    /// least 6 days unless the range is whole weeks). Absent: totals only.
    pub interval: Option<IntervalKind>,
}

/// How many users to list.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitParams {
    /// How many users, most active first (default 100).
    #[param(minimum = 1, maximum = 1000, example = 10)]
    pub limit: Option<u32>,
}

/// A checked read over intervals: `start_time`, `end_time`, `interval`.
#[derive(Debug)]
pub struct IntervalRead {
    pub range: RangeParams,
    pub interval: IntervalParams,
    /// What the store reads: the intervals asked for, or the whole range
    /// as one when only totals are.
    pub intervals: Intervals,
}

impl FromRequestParts<AppState> for IntervalRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (range, pairs) = RangeParams::with(parts, state, "interval")?;
        // Absent or empty: totals only, as Coder.
        let interval = match query_param(&pairs, "interval") {
            None | Some("") => None,
            Some(raw) => Some(IntervalKind::parse(raw).map_err(range_error)?),
        };
        let intervals = match interval {
            Some(kind) => intervals(range.range(), kind).map_err(range_error)?,
            None => Intervals::single(range.range()).map_err(|e| ApiError::bad_param("end_time", e))?,
        };
        Ok(Self {
            range,
            interval: IntervalParams { interval },
            intervals,
        })
    }
}

/// A checked read of user activity: `start_time`, `end_time`, `limit`.
#[derive(Debug)]
pub struct ActivityRead {
    pub range: RangeParams,
    pub limit: usize,
}

impl FromRequestParts<AppState> for ActivityRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (range, pairs) = RangeParams::with(parts, state, "limit")?;
        let limit = limit_param(&pairs, DEFAULT_USER_LIMIT, MAX_USER_LIMIT)?;
        Ok(Self { range, limit })
    }
}

impl IntervalRead {
    /// The intervals the answer lists, with their index: none when only
    /// totals were asked for.
    pub fn listed(&self) -> impl Iterator<Item = (usize, TimeRange)> + '_ {
        let listed = self.interval.interval.is_some();
        self.intervals.iter().enumerate().filter(move |_| listed)
    }
}
