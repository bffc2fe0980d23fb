//! Writing app stat rows and workspaces' last-used time.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, Transaction};
use tally_domain::error::StoreError;
use tally_domain::ports::{AppStatsStore, AppStatsWrite};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::copy::CopyBuf;
use crate::error::{is_unique_violation, map_sqlx_error};
use crate::timeconv::floor_micros;
use crate::{AppStatsWriteMode, PgStore};

const COLUMNS: &str = "user_id, agent_id, session_id, workspace_id, access_method, slug_or_port, \
                       session_started_at, session_ended_at, requests";

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
const UPSERT: &str = "INSERT INTO workspace_app_stats AS t (user_id, agent_id, session_id, workspace_id, \
        access_method, slug_or_port, session_started_at, session_ended_at, requests) \
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
        $7::timestamptz[], $8::timestamptz[], $9::int8[]) \
    ON CONFLICT (user_id, agent_id, session_id) DO UPDATE \
    SET session_ended_at = GREATEST(t.session_ended_at, excluded.session_ended_at), \
        requests = GREATEST(t.requests, excluded.requests) \
    WHERE excluded.session_ended_at > t.session_ended_at OR excluded.requests > t.requests";

/// Last-used times move forward only.
const TOUCH_WORKSPACES: &str = "INSERT INTO workspaces AS w (id, last_used_at) \
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
}

/// A write that passed validation, times at microsecond precision.
struct Prepared<'a> {
    rows: Vec<Row<'a>>,
    batch_size: usize,
    workspaces: Vec<Uuid>,
    last_used: Vec<OffsetDateTime>,
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
        Ok(Self {
            rows,
            batch_size: write.batch_size,
            workspaces,
            last_used,
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
        if self.write_mode == AppStatsWriteMode::Copy {
            match self.write_once(&prepared, AppStatsWriteMode::Copy).await {
                // Some row already exists (an update, a replay, or a
                // concurrent writer): redo the whole write as upserts.
                Err(e) if is_unique_violation(&e) => {}
                other => return other.map_err(map_sqlx_error),
            }
        }
        self.write_once(&prepared, AppStatsWriteMode::Upsert)
            .await
            .map_err(map_sqlx_error)
    }
}

impl PgStore {
    async fn write_once(&self, p: &Prepared<'_>, mode: AppStatsWriteMode) -> Result<(), sqlx::Error> {
        let mut tx: Transaction<'_, Postgres> = self.pool().begin().await?;
        for batch in p.rows.chunks(p.batch_size) {
            match mode {
                AppStatsWriteMode::Upsert => upsert_batch(&mut tx, batch).await?,
                AppStatsWriteMode::Copy => copy_batch(&mut tx, batch).await?,
            }
        }
        if !p.workspaces.is_empty() {
            sqlx::query(TOUCH_WORKSPACES)
                .bind(&p.workspaces)
                .bind(&p.last_used)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

async fn upsert_batch(conn: &mut PgConnection, batch: &[Row<'_>]) -> Result<(), sqlx::Error> {
    let n = batch.len();
    let (mut users, mut agents, mut sessions, mut workspaces) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut methods, mut slugs, mut started, mut ended, mut requests) = (
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
    }
    sqlx::query(UPSERT)
        .bind(users)
        .bind(agents)
        .bind(sessions)
        .bind(workspaces)
        .bind(methods)
        .bind(slugs)
        .bind(started)
        .bind(ended)
        .bind(requests)
        .execute(conn)
        .await?;
    Ok(())
}

/// Binary COPY of rows assumed new, straight into the table (no staging
/// table, so no second merge rule): fails with a unique violation if one
/// exists, and the caller redoes the whole write with [`UPSERT`].
async fn copy_batch(conn: &mut PgConnection, batch: &[Row<'_>]) -> Result<(), sqlx::Error> {
    let mut buf = CopyBuf::with_capacity(batch.len() * 160);
    for r in batch {
        buf.tuple(9)
            .uuid(r.user)
            .uuid(r.agent)
            .uuid(r.session)
            .uuid(r.workspace)
            .text(r.method)
            .text(r.slug)
            .timestamptz(r.started)
            .timestamptz(r.ended)
            .int8(r.requests);
    }
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY workspace_app_stats ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    if let Err(e) = copy.send(buf.finish()).await {
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}
