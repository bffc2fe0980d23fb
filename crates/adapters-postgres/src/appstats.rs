//! Writing app stat rows and workspaces' last-used time.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, Transaction};
use tally_domain::error::StoreError;
use tally_domain::ports::{AppStatsStore, AppStatsWrite};

use tally_domain::usage::minutes::{hour_of, hour_start};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::copy::CopyBuf;
use crate::error::{is_lock_timeout, is_unique_violation, map_sqlx_error};
use crate::timeconv::floor_micros;
use crate::{AppStatsWriteMode, PgStore};

const COLUMNS: &str = "user_id, agent_id, session_id, workspace_id, access_method, slug_or_port, \
                       session_started_at, session_ended_at, requests, sessions";

/// The upsert by (user, agent, session): end time and requests each move
/// forward on their own (`GREATEST`), the rule of
/// `StatsReport::merge_forward` that the memory store applies too.
///
/// Why per column and not "replaced only if not older and not smaller",
/// and what it costs: docs/rules.md#row-merge. Ends only move forward, so
/// `session_ended_at >= session_started_at` keeps holding.
///
/// Rows that would not change are left alone, so a replay costs index
/// lookups and no new row versions.
///
/// Run as it is only without usage marks, for the write benchmark's
/// comparison; writes otherwise go through [`UPSERT`].
const UPSERT_UNMARKED: &str = "INSERT INTO workspace_app_stats AS t (user_id, agent_id, session_id, \
        workspace_id, access_method, slug_or_port, session_started_at, session_ended_at, requests, sessions) \
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
        $7::timestamptz[], $8::timestamptz[], $9::int8[], $10::int8[]) \
    ON CONFLICT (user_id, agent_id, session_id) DO UPDATE \
    SET session_ended_at = GREATEST(t.session_ended_at, excluded.session_ended_at), \
        requests = GREATEST(t.requests, excluded.requests), \
        sessions = GREATEST(t.sessions, excluded.sessions) \
    WHERE excluded.session_ended_at > t.session_ended_at OR excluded.requests > t.requests \
        OR excluded.sessions > t.sessions";

/// [`UPSERT_UNMARKED`] that also marks the start hours of the rows it
/// inserted or changed (their stored start, which an update keeps) for the
/// next rollup tick, in the same statement.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH up AS ({UPSERT_UNMARKED} RETURNING t.session_started_at) \
         INSERT INTO app_usage_dirty_hours (start_hour) \
         SELECT DISTINCT date_trunc('hour', session_started_at, 'UTC') FROM up"
    )
});

/// Last-used times move forward only. The same statement marks the start
/// hours of rows written by COPY for the next rollup tick (`$3`).
const TOUCH_WORKSPACES: &str = "WITH marked AS (INSERT INTO app_usage_dirty_hours (start_hour) \
        SELECT unnest($3::timestamptz[])) \
    INSERT INTO workspaces AS w (id, last_used_at) \
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) \
    ON CONFLICT (id) DO UPDATE SET last_used_at = GREATEST(w.last_used_at, excluded.last_used_at)";

/// A validated row in column form.
struct Row<'a> {
    /// Position in the caller's list, for error messages.
    index: usize,
    user: Uuid,
    agent: Uuid,
    session: Uuid,
    workspace: Uuid,
    method: &'static str,
    slug: &'a str,
    started: OffsetDateTime,
    ended: OffsetDateTime,
    requests: i64,
    sessions: i64,
}

/// A write that passed validation, times at microsecond precision.
struct Prepared<'a> {
    rows: Vec<Row<'a>>,
    batch_size: usize,
    workspaces: Vec<Uuid>,
    last_used: Vec<OffsetDateTime>,
    /// Distinct start hours of the rows, for the rollup marker of a COPY.
    start_hours: Vec<OffsetDateTime>,
}

fn invalid(msg: String) -> StoreError {
    StoreError::invalid(msg)
}

impl<'a> Prepared<'a> {
    /// Checks everything before anything is written.
    fn new(write: &'a AppStatsWrite) -> Result<Self, StoreError> {
        if write.batch_size == 0 {
            return Err(invalid("batch_size must be positive, got 0".into()));
        }
        let mut rows = Vec::with_capacity(write.rows.len());
        for (i, r) in write.rows.iter().enumerate() {
            let Some(ended) = r.session_ended_at else {
                return Err(invalid(format!(
                    "row {i} (session {}): session_ended_at is not set; only ended sessions are stored",
                    r.session_id
                )));
            };
            if ended < r.session_started_at {
                return Err(invalid(format!(
                    "row {i} (session {}): session_ended_at {ended} is before session_started_at {}",
                    r.session_id, r.session_started_at
                )));
            }
            let requests = i64::try_from(r.requests).map_err(|_| {
                invalid(format!(
                    "row {i} (session {}): requests {} is larger than the store's maximum {}",
                    r.session_id,
                    r.requests,
                    i64::MAX
                ))
            })?;
            // A row stands for at least one session (a rolled-up record for
            // every session folded into it).
            let sessions = match i64::try_from(r.sessions) {
                Ok(0) => {
                    return Err(invalid(format!(
                        "row {i} (session {}): sessions must be at least 1",
                        r.session_id
                    )));
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(invalid(format!(
                        "row {i} (session {}): sessions {} is larger than the store's maximum {}",
                        r.session_id,
                        r.sessions,
                        i64::MAX
                    )));
                }
            };
            rows.push(Row {
                index: i,
                user: r.user_id,
                agent: r.agent_id,
                session: r.session_id,
                workspace: r.workspace_id,
                method: r.access_method.as_str(),
                slug: &r.slug_or_port,
                started: floor_micros(r.session_started_at),
                ended: floor_micros(ended),
                requests,
                sessions,
            });
        }
        // Key order: concurrent writers then take row locks in the same order
        // (no deadlocks between them), index inserts have better locality,
        // and duplicates are neighbours.
        rows.sort_unstable_by_key(|r| (r.user, r.agent, r.session));
        if let Some(w) = rows
            .windows(2)
            .find(|w| (w[0].user, w[0].agent, w[0].session) == (w[1].user, w[1].agent, w[1].session))
        {
            let (a, b) = (w[0].index.min(w[1].index), w[0].index.max(w[1].index));
            return Err(invalid(format!(
                "rows {a} and {b} have the same (user, agent, session) = ({}, {}, {}); merge them before writing",
                w[0].user, w[0].agent, w[0].session
            )));
        }
        // One entry per workspace (the latest time), in key order so
        // concurrent writers lock workspace rows in the same order.
        let mut latest: HashMap<Uuid, OffsetDateTime> = HashMap::with_capacity(write.last_used.len());
        for &(id, at) in &write.last_used {
            let at = floor_micros(at);
            latest.entry(id).and_modify(|t| *t = (*t).max(at)).or_insert(at);
        }
        let mut touched: Vec<_> = latest.into_iter().collect();
        touched.sort_unstable_by_key(|(id, _)| *id);
        let (workspaces, last_used) = touched.into_iter().unzip();
        // A write holds a few start hours: a linear scan beats hashing.
        let mut hours: Vec<i64> = Vec::new();
        for r in &rows {
            let h = hour_of(r.started);
            if !hours.contains(&h) {
                hours.push(h);
            }
        }
        Ok(Self {
            rows,
            batch_size: write.batch_size,
            workspaces,
            last_used,
            start_hours: hours.into_iter().map(hour_start).collect(),
        })
    }
}

#[async_trait]
impl AppStatsStore for PgStore {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        let prepared = Prepared::new(write)?;
        if prepared.rows.is_empty() && prepared.workspaces.is_empty() {
            return Ok(());
        }
        let hashes: Vec<u64> = prepared
            .rows
            .iter()
            .map(|r| self.recent.hash((r.user, r.agent, r.session)))
            .collect();
        if self.write_mode == AppStatsWriteMode::Copy {
            let seen = self.recent.seen(&hashes);
            match self.write_once(&prepared, Some(&seen)).await {
                // Some row already exists (a replay, another replica's
                // session, a row forgotten) or another writer holds it:
                // redo the whole write as upserts.
                Err(e) if is_unique_violation(&e) || is_lock_timeout(&e) => {}
                other => {
                    other.map_err(map_sqlx_error)?;
                    self.recent.remember(&hashes);
                    return Ok(());
                }
            }
        }
        self.write_once(&prepared, None).await.map_err(map_sqlx_error)?;
        self.recent.remember(&hashes);
        Ok(())
    }
}

/// How long the COPY of a mixed write may wait for a lock before it gives up
/// as if its rows existed (see [`PgStore::write_once`]): far below
/// PostgreSQL's `deadlock_timeout` (1 s), so a wait that would close a cycle
/// ends before the server looks for one.
const COPY_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1ms'";

impl PgStore {
    /// One transaction. With `copy_unless_seen`, rows not written recently
    /// go by COPY (as if new) and the others by upsert; without it every
    /// row goes by upsert.
    ///
    /// Lock order, so that concurrent writers (other replicas, retention)
    /// cannot deadlock: every wait that can last happens in one global
    /// order, rows by key, then workspaces by id. Each part alone is in key
    /// order, but not one after the other. The cycle of COPY first: replica
    /// A COPYs a new row k2, then upserting its own k1 (k1 < k2) waits for
    /// B, whose key-ordered upserts (its redo of a COPY that hit an
    /// existing row) took k1 and wait, in the conflict check, for A's
    /// uncommitted k2. So a mixed write upserts first, touches the
    /// workspaces, and COPYs last under a lock timeout: a COPY that would
    /// wait for another writer's row fails at once, and the call is redone
    /// as upserts, as for a row that exists. A write of one kind is in key
    /// order as it is.
    async fn write_once(
        &self,
        p: &Prepared<'_>,
        copy_unless_seen: Option<&[bool]>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = crate::tx::begin(self.pool()).await?;
        let upsert = if self.usage_marks {
            UPSERT.as_str()
        } else {
            UPSERT_UNMARKED
        };
        // Both parts stay in key order.
        let (mut copied, mut upserted): (Vec<&Row<'_>>, Vec<&Row<'_>>) = (Vec::new(), Vec::new());
        for (i, row) in p.rows.iter().enumerate() {
            match copy_unless_seen {
                Some(seen) if !seen[i] => copied.push(row),
                _ => upserted.push(row),
            }
        }
        let mixed = !copied.is_empty() && !upserted.is_empty();
        if !mixed {
            for batch in copied.chunks(p.batch_size) {
                tx = copy_batch(tx, batch).await?;
            }
        }
        for batch in upserted.chunks(p.batch_size) {
            upsert_batch(&mut tx, batch, upsert).await?;
        }
        // Upserts mark the hours they change themselves.
        let marks: &[OffsetDateTime] = if self.usage_marks && !copied.is_empty() {
            &p.start_hours
        } else {
            &[]
        };
        if !p.workspaces.is_empty() || !marks.is_empty() {
            sqlx::query(TOUCH_WORKSPACES)
                .bind(&p.workspaces)
                .bind(&p.last_used)
                .bind(marks)
                .execute(&mut *tx)
                .await?;
        }
        if mixed {
            sqlx::query(COPY_LOCK_TIMEOUT).execute(&mut *tx).await?;
            for batch in copied.chunks(p.batch_size) {
                tx = copy_batch(tx, batch).await?;
            }
        }
        tx.commit().await
    }
}

async fn upsert_batch(
    conn: &mut PgConnection,
    batch: &[&Row<'_>],
    statement: &str,
) -> Result<(), sqlx::Error> {
    let n = batch.len();
    let (mut users, mut agents, mut sessions, mut workspaces) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut methods, mut slugs, mut started, mut ended, mut requests, mut counts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in batch {
        users.push(r.user);
        agents.push(r.agent);
        sessions.push(r.session);
        workspaces.push(r.workspace);
        methods.push(r.method);
        slugs.push(r.slug);
        started.push(r.started);
        ended.push(r.ended);
        requests.push(r.requests);
        counts.push(r.sessions);
    }
    sqlx::query(statement)
        .bind(users)
        .bind(agents)
        .bind(sessions)
        .bind(workspaces)
        .bind(methods)
        .bind(slugs)
        .bind(started)
        .bind(ended)
        .bind(requests)
        .bind(counts)
        .execute(conn)
        .await?;
    Ok(())
}

/// Binary COPY of rows assumed new, straight into the table (no staging
/// table, so no second merge rule): fails with a unique violation if one
/// exists, and the caller redoes the whole write with [`UPSERT`].
async fn copy_batch(
    tx: Transaction<'static, Postgres>,
    batch: &[&Row<'_>],
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut buf = CopyBuf::with_capacity(batch.len() * 160);
    for r in batch {
        buf.tuple(10)
            .uuid(r.user)
            .uuid(r.agent)
            .uuid(r.session)
            .uuid(r.workspace)
            .text(r.method)
            .text(r.slug)
            .timestamptz(r.started)
            .timestamptz(r.ended)
            .int8(r.requests)
            .int8(r.sessions);
    }
    let statement = format!("COPY workspace_app_stats ({COLUMNS}) FROM STDIN (FORMAT binary)");
    crate::tx::copy_in(tx, statement, buf.finish()).await
}
