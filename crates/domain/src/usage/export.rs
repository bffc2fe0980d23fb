//! The raw export: every stored row of a range, read an hour at a time.

use std::ops::Deref;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use time::{Duration, OffsetDateTime};

use crate::appstats::StatsReport;
use crate::error::StoreError;
use crate::ports::{TimeRange, UsageStore};
use crate::usage::minutes::{hour_of, hour_start};

/// Raw app stat rows, streamed; the stream ends after the first error.
pub type RowStream<'a> = BoxStream<'a, Result<StatsReport, StoreError>>;

/// Every stored row whose session started in `range`, by start, then (user,
/// agent, session), as [`UsageStore::app_stats_started_in`] reads them one
/// start hour at a time: each read is one short store call (with whatever
/// layers the store has, a deadline included), so a long export holds no
/// transaction open and needs memory for one hour of rows.
pub fn export_app_stats<'a, S>(store: S, range: TimeRange) -> RowStream<'a>
where
    S: Deref + Send + Sync + 'a,
    S::Target: UsageStore,
{
    stream::try_unfold((store, range.from), move |(store, at)| async move {
        if at >= range.to {
            return Ok::<_, StoreError>(None);
        }
        // A store that answers at once (the in-memory one) would otherwise
        // run through a long empty stretch in one poll, holding its thread.
        tokio::task::yield_now().await;
        let next = next_hour(at).min(range.to);
        let rows = store
            .app_stats_started_in(TimeRange { from: at, to: next })
            .await?;
        Ok(Some((stream::iter(rows.into_iter().map(Ok)), (store, next))))
    })
    .try_flatten()
    .boxed()
}

/// The start of the hour after the one containing `t`.
fn next_hour(t: OffsetDateTime) -> OffsetDateTime {
    hour_start(hour_of(t)) + Duration::HOUR
}
