//! One bounded purge round; see `UsageStore::purge_expired`.

use sqlx::PgPool;
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::{PurgeOutcome, RetentionPolicy};
use time::{Duration, OffsetDateTime};

use super::{packed, roll_up, try_lock};
use crate::timeconv::ceil_micros;

pub(super) async fn purge(
    pool: &PgPool,
    now: OffsetDateTime,
    policy: &RetentionPolicy,
) -> Result<PurgeOutcome, sqlx::Error> {
    let batch = Duration::hours(policy.max_batch.whole_hours().max(1));
    let mut tx = crate::tx::begin(pool).await?;
    if !try_lock(&mut tx).await? {
        return Ok(PurgeOutcome {
            skipped: true,
            ..PurgeOutcome::default()
        });
    }
    // Every change committed before this round is rolled up before any raw
    // row goes.
    roll_up(&mut tx).await?;
    let mut outcome = PurgeOutcome::default();

    // Raw rows, by whole start hours, from the oldest row held at or after
    // where the last round stopped (empty history is skipped, not walked):
    // the hours deleted become final.
    let horizon = hour_start(hour_of(now - policy.app_stats));
    let frozen: Option<OffsetDateTime> = sqlx::query_scalar("SELECT frozen_before FROM app_usage_state")
        .fetch_one(&mut *tx)
        .await?;
    // Only expired rows are looked at, so the BRIN on the start reads the
    // oldest page ranges, not the retained table.
    let oldest: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT date_trunc('hour', min(session_started_at), 'UTC') FROM workspace_app_stats \
         WHERE session_started_at >= coalesce($1, '-infinity') AND session_started_at < $2",
    )
    .bind(frozen)
    .bind(horizon)
    .fetch_one(&mut *tx)
    .await?;
    let cut = horizon.min(oldest.map_or(horizon, |o| o + batch));
    let cut = frozen.map_or(cut, |f| f.max(cut));
    sqlx::query("UPDATE app_usage_state SET frozen_before = $1")
        .bind(cut)
        .execute(&mut *tx)
        .await?;
    // Rows are locked in key order, the order writers lock them in: deleting
    // in heap order could lock a row a writer wants next while waiting for
    // one that writer holds (a write of sessions older than the retention).
    // The start bound is repeated on `t` so that the join reads only what
    // the BRIN finds: without it the planner, whose estimate of rows before
    // the cut still counts those earlier rounds deleted, hash-joined the
    // locked rows against a scan of the whole table.
    outcome.app_stats_rows = sqlx::query(
        "DELETE FROM workspace_app_stats t USING ( \
             SELECT user_id, agent_id, session_id FROM workspace_app_stats \
             WHERE session_started_at < $1 \
             ORDER BY user_id, agent_id, session_id FOR UPDATE) old \
         WHERE t.session_started_at < $1 \
           AND (t.user_id, t.agent_id, t.session_id) = (old.user_id, old.agent_id, old.session_id)",
    )
    .bind(cut)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    // Rollup rows, whole hours from the oldest.
    let horizon = hour_start(hour_of(now - policy.usage));
    let oldest: Option<OffsetDateTime> = sqlx::query_scalar("SELECT min(hour) FROM app_usage_hours")
        .fetch_one(&mut *tx)
        .await?;
    if let Some(oldest) = oldest {
        let cut = horizon.min(oldest + batch);
        outcome.usage_rows = sqlx::query("DELETE FROM app_usage_hours WHERE hour < $1")
            .bind(cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if outcome.usage_rows > 0 {
            packed::purged_before(&mut tx, cut).await?;
        }
    }

    // Published snapshots by period end, from the oldest; unpublished ones
    // stay whatever their age.
    let before = ceil_micros(now - policy.snapshots);
    let oldest: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT min(period_end) FROM telemetry_snapshots WHERE published_at IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
    if let Some(oldest) = oldest {
        outcome.snapshots =
            sqlx::query("DELETE FROM telemetry_snapshots WHERE published_at IS NOT NULL AND period_end < $1")
                .bind(before.min(oldest + policy.max_batch.max(Duration::HOUR)))
                .execute(&mut *tx)
                .await?
                .rows_affected();
    }
    tx.commit().await?;
    Ok(outcome)
}
