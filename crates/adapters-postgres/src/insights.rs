//! The read side: stored rows over a time range, last-used times (insights
//! come from the usage rollup, `usage/`).

use async_trait::async_trait;
use sqlx::Row as _;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::StoreError;
use tally_domain::ports::{InsightsStore, TimeRange};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PgStore;
use crate::error::map_sqlx_error;
use crate::timeconv::{ceil_micros, limit, to_u64};

const APP_STATS: &str = "SELECT user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, \
        session_started_at, session_ended_at, requests, sessions \
    FROM workspace_app_stats \
    WHERE session_started_at < $2 AND session_ended_at >= $1 \
    ORDER BY session_started_at, session_id, user_id, agent_id \
    LIMIT $3";

fn access_method(s: &str) -> Result<AccessMethod, StoreError> {
    s.parse().map_err(StoreError::other)
}

#[async_trait]
impl InsightsStore for PgStore {
    async fn app_stats(&self, range: TimeRange, max: usize) -> Result<Vec<StatsReport>, StoreError> {
        let rows = sqlx::query(APP_STATS)
            .bind(ceil_micros(range.from))
            .bind(ceil_micros(range.to))
            .bind(limit(max))
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        rows.iter()
            .map(|row| {
                let requests: i64 = row.try_get("requests").map_err(map_sqlx_error)?;
                Ok(StatsReport {
                    user_id: row.try_get("user_id").map_err(map_sqlx_error)?,
                    workspace_id: row.try_get("workspace_id").map_err(map_sqlx_error)?,
                    agent_id: row.try_get("agent_id").map_err(map_sqlx_error)?,
                    access_method: access_method(row.try_get("access_method").map_err(map_sqlx_error)?)?,
                    slug_or_port: row.try_get("slug_or_port").map_err(map_sqlx_error)?,
                    session_id: row.try_get("session_id").map_err(map_sqlx_error)?,
                    session_started_at: row.try_get("session_started_at").map_err(map_sqlx_error)?,
                    session_ended_at: Some(row.try_get("session_ended_at").map_err(map_sqlx_error)?),
                    requests: to_u64(requests, "requests")?,
                    sessions: to_u64(row.try_get("sessions").map_err(map_sqlx_error)?, "sessions")?,
                })
            })
            .collect()
    }

    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        sqlx::query_scalar("SELECT last_used_at FROM workspaces WHERE id = $1")
            .bind(workspace_id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_sqlx_error)
    }
}
