//! One bounded purge round; see `UsageStore::purge_expired`.

use sqlx::PgPool;
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::{PurgeOutcome, RetentionPolicy};
use time::{Duration, OffsetDateTime};

use super::{packed, roll_up, try_lock};
use crate::timeconv::ceil_micros;

/// The hour of the oldest raw row with a start in `[$1, $2)` (`$1` NULL:
/// from the beginning).
pub const OLDEST_RAW: &str = "SELECT date_trunc('hour', min(session_started_at), 'UTC') FROM workspace_app_stats \
     WHERE session_started_at >= coalesce($1, '-infinity') AND session_started_at < $2";

/// Deletes the raw rows that started before `$1`, answering how many, and
/// notes the heap blocks they were on for the next round to summarize
/// again ([`RESUMMARIZE`]). Rows are locked in key order, the order writers
/// lock them in: deleting in heap order could lock a row a writer wants next
/// while waiting for one that writer holds (a write of sessions older than
/// the retention). The start bound is repeated on `t` so that the join reads
/// only what the BRIN finds: without it the planner, whose estimate of rows
/// before the cut still counts those earlier rounds deleted, hash-joined the
/// locked rows against a scan of the whole table.
pub const DELETE_RAW: &str = "WITH gone AS ( \
         DELETE FROM workspace_app_stats t USING ( \
             SELECT user_id, agent_id, session_id FROM workspace_app_stats \
             WHERE session_started_at < $1 \
             ORDER BY user_id, agent_id, session_id FOR UPDATE) old \
         WHERE t.session_started_at < $1 \
           AND (t.user_id, t.agent_id, t.session_id) = (old.user_id, old.agent_id, old.session_id) \
         RETURNING t.ctid), \
     noted AS ( \
         INSERT INTO app_stats_purged_blocks (block) \
         SELECT DISTINCT (ctid::text::point)[0]::int8 FROM gone) \
     SELECT count(*) FROM gone";

/// Summarizes again, from the rows they hold now, the BRIN page ranges of
/// the start that held rows earlier rounds deleted, and forgets those
/// blocks. A range's summary only widens: deleted rows stay in it (VACUUM
/// does not narrow it), and once the heap reuses their space for new rows
/// the range matches every start between the oldest row it ever held and
/// the newest, so reads of one recent hour and the purge's own search came
/// to read most of the table. Deleted rows drop out of a summary only once
/// no transaction that began before their delete committed is left, which
/// is why this waits for the next round rather than following the delete.
/// Each range is summarized right after being cleared: an unsummarized
/// range matches every read.
const RESUMMARIZE: &str = "WITH taken AS (DELETE FROM app_stats_purged_blocks RETURNING block), \
     brin AS ( \
         SELECT c.oid AS index, coalesce(( \
             SELECT split_part(o, '=', 2)::int8 FROM unnest(c.reloptions) o \
             WHERE o LIKE 'pages_per_range=%'), 128) AS pages \
         FROM pg_class c WHERE c.oid = 'workspace_app_stats_started_brin'::regclass) \
     SELECT count(*) FROM ( \
         SELECT brin_desummarize_range(index, first), brin_summarize_range(index, first) \
         FROM (SELECT DISTINCT index, block / pages * pages AS first FROM brin, taken) r) s";

pub(super) async fn purge(
    pool: &PgPool,
    now: OffsetDateTime,
    policy: &RetentionPolicy,
) -> Result<PurgeOutcome, sqlx::Error> {
    let batch = Duration::hours(policy.max_batch.whole_hours().max(1));
    if let Err(e) = resummarize(pool).await {
        tracing::warn!(error = %e, "the BRIN ranges of purged raw rows were not summarized again; the next round tries");
    }
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
    let oldest: Option<OffsetDateTime> = sqlx::query_scalar(OLDEST_RAW)
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
    let deleted: i64 = sqlx::query_scalar(DELETE_RAW)
        .bind(cut)
        .fetch_one(&mut *tx)
        .await?;
    outcome.app_stats_rows = deleted as u64;

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

/// [`RESUMMARIZE`] in a transaction of its own, under the usage lock (one
/// replica at a time; skipped while another holds it), giving up on a
/// table lock it would wait for: summarizing takes the lock an autovacuum
/// of the table holds, and a wait past `deadlock_timeout` would cancel that
/// autovacuum. Blocks not summarized stay noted for the next round.
async fn resummarize(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = crate::tx::begin(pool).await?;
    if !try_lock(&mut tx).await? {
        return Ok(());
    }
    let done = async {
        sqlx::query("SET LOCAL lock_timeout = '50ms'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(RESUMMARIZE).execute(&mut *tx).await
    }
    .await;
    match done {
        Ok(_) => tx.commit().await,
        // Rolled back before the round goes on: a dropped transaction would
        // keep the usage lock until its queued rollback ran, and the round's
        // own transaction would find it held and skip.
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
