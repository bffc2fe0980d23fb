//! Conversions between domain values and column values.

use tally_domain::error::StoreError;
use time::{Duration, OffsetDateTime};

/// PostgreSQL keeps microseconds: round down before binding so what is
/// stored is exactly what the in-memory store keeps.
pub(crate) fn floor_micros(t: OffsetDateTime) -> OffsetDateTime {
    t - Duration::nanoseconds(i64::from(t.nanosecond() % 1_000))
}

/// The smallest microsecond time not before `t`: for a stored (whole
/// microsecond) `x`, `x < t` iff `x < ceil_micros(t)`, and likewise for `>=`.
pub(crate) fn ceil_micros(t: OffsetDateTime) -> OffsetDateTime {
    let rest = t.nanosecond() % 1_000;
    if rest == 0 {
        t
    } else {
        t + Duration::nanoseconds(i64::from(1_000 - rest))
    }
}

/// A count from a `bigint` column (non-negative by constraint).
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::other(format!("{what} is negative in the database: {v}")))
}

/// A count for a `bigint` column.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::invalid(format!(
            "{what} {v} is larger than the store's maximum {}",
            i64::MAX
        ))
    })
}

/// A row limit for SQL `LIMIT`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
