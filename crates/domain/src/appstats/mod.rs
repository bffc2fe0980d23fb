//! Workspace app sessions: the report type, its wire shape, and the rules
//! that turn a stream of reports into database rows.

pub mod collector;
pub mod reporter;
pub mod rollup;
pub mod session_times;
pub mod wire;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest `slug_or_port` accepted; longer values are not app slugs or ports.
pub const MAX_SLUG_OR_PORT_LEN: usize = 1024;
/// Largest request count one report may carry. Rolled-up sums of many such
/// reports still fit the store's signed 64-bit counters.
pub const MAX_REQUESTS_PER_REPORT: u64 = u32::MAX as u64;
/// Latest session time accepted: the collector keeps times as `i64` Unix
/// nanoseconds (2262-04-11T23:47:16.854775807Z), and a later time would be
/// dropped or clamped after the request was acknowledged.
pub const LATEST_SESSION_TIME: OffsetDateTime = time::macros::datetime!(2262-04-11 23:47:16.854775807 UTC);

/// How a user reached an app.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AccessMethod {
    /// By a URL path under the proxy's own host.
    Path,
    /// By a subdomain of its own.
    Subdomain,
    /// As the web terminal.
    Terminal,
}

impl AccessMethod {
    /// Every method, in the order of their names.
    pub const ALL: [AccessMethod; 3] = [Self::Path, Self::Subdomain, Self::Terminal];

    /// The wire name: `path`, `subdomain` or `terminal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Subdomain => "subdomain",
            Self::Terminal => "terminal",
        }
    }
}

impl std::fmt::Display for AccessMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccessMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown access method {s:?} (expected path, subdomain or terminal)"))
    }
}

/// One app session as a workspace proxy reports it, and also one row of the
/// app stats table (rows always carry an end time).
///
/// The JSON shape is the Go proxy's: RFC 3339 timestamps with nanoseconds, and
/// an open session's end time sent as Go's zero time `0001-01-01T00:00:00Z`.
///
/// The rules JSON Schema cannot state (a time's range, the end not before
/// the start, the slug's length in bytes) are said in the field
/// descriptions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = codersdk::WorkspaceAppStatsReport)]
pub struct StatsReport {
    /// The user who opened the app.
    pub user_id: Uuid,
    /// The workspace the app runs in.
    pub workspace_id: Uuid,
    /// The workspace agent serving the app.
    pub agent_id: Uuid,
    /// How the user reached the app.
    pub access_method: AccessMethod,
    /// The app's slug or the port; at most 1024 bytes of UTF-8, no NUL.
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    pub slug_or_port: String,
    /// The proxy's id of the session (of the first session, for a rolled-up
    /// record); not the nil UUID.
    #[schema(schema_with = crate::schema::non_nil_uuid)]
    pub session_id: Uuid,
    /// RFC 3339, from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z;
    /// ingest also refuses a start older than the server's raw app stats
    /// retention, or further ahead of the server's clock than its clock
    /// skew allowance (both settings of the server).
    #[serde(with = "wire::go_time")]
    pub session_started_at: OffsetDateTime,
    /// RFC 3339, not before `session_started_at` and not after
    /// 2262-04-11T23:47:16.854775807Z (at ingest, not further ahead of the
    /// server's clock than its clock skew allowance); Go's zero time
    /// `0001-01-01T00:00:00Z` (any offset), `null` or no value at all for
    /// a session still open.
    #[serde(with = "wire::go_time_opt", default)]
    pub session_ended_at: Option<OffsetDateTime>,
    /// Requests of the session so far (cumulative).
    #[serde(deserialize_with = "wire::whole_number::deserialize")]
    #[schema(maximum = 4294967295u64)]
    pub requests: u64,
    /// How many sessions the row stands for: 1 for a session reported on its
    /// own; for a rolled-up record, the short sessions folded into it so far
    /// (cumulative, like its requests). Not in the proxy's JSON, where every
    /// report is one session, so decoding gives 1.
    #[serde(skip, default = "one_session")]
    pub sessions: u64,
}

fn one_session() -> u64 {
    1
}

/// Why a report was refused, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidReport {
    /// The JSON name of the field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl StatsReport {
    /// The store's identity of a row: (user, agent, session).
    pub fn row_key(&self) -> (Uuid, Uuid, Uuid) {
        (self.user_id, self.agent_id, self.session_id)
    }

    /// Whether the session is still open (no end time yet).
    pub fn is_open(&self) -> bool {
        self.session_ended_at.is_none()
    }

    /// Checks what serde cannot: ranges and relations between fields. The
    /// times ingest takes relative to its clock are checked apart, by
    /// [`session_times::SessionWindow::check`].
    pub fn validate(&self) -> Result<(), InvalidReport> {
        let invalid = |field, reason: &str| {
            Err(InvalidReport {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.session_id.is_nil() {
            return invalid("session_id", "must not be the nil UUID");
        }
        if self.session_started_at < OffsetDateTime::UNIX_EPOCH {
            return invalid("session_started_at", "must be set (got a time before 1970)");
        }
        if self.session_started_at > LATEST_SESSION_TIME {
            return invalid("session_started_at", "later than 2262-04-11T23:47:16Z");
        }
        if self.session_ended_at.is_some_and(|end| end > LATEST_SESSION_TIME) {
            return invalid("session_ended_at", "later than 2262-04-11T23:47:16Z");
        }
        if let Some(end) = self.session_ended_at
            && end < self.session_started_at
        {
            return invalid("session_ended_at", "must not be before session_started_at");
        }
        if self.slug_or_port.len() > MAX_SLUG_OR_PORT_LEN {
            return invalid("slug_or_port", "longer than 1024 bytes");
        }
        // PostgreSQL text cannot hold NUL: such a row could never be written.
        if self.slug_or_port.contains('\0') {
            return invalid("slug_or_port", "must not contain NUL characters");
        }
        if self.requests > MAX_REQUESTS_PER_REPORT {
            return invalid("requests", "larger than 4294967295");
        }
        if self.sessions == 0 {
            return invalid("sessions", "must be at least 1");
        }
        Ok(())
    }

    /// Merges another write of the same row into this one the way every
    /// store must: end time and request count each move forward on their
    /// own (`GREATEST` of the two, an open `None` end before any time), and
    /// so does the session count of a rolled-up record; the other columns
    /// stay as they are.
    ///
    /// A stricter rule ("a later write replaces end and requests only if it
    /// is not older and not smaller") would lose requests: a session opened
    /// on one replica and closed on another would lose the close's requests
    /// when the first replica's provisional end (its flush or shutdown time) lies
    /// after the real close. A per-column maximum is idempotent, commutative
    /// and associative, so replays and the order of writes across replicas
    /// never matter and no acknowledged request is lost. The cost: after such
    /// a handoff the end can be the stopped replica's provisional end, later
    /// than the real close by at most that replica's report interval. The
    /// session count only grows as sessions are folded into a record, so its
    /// maximum is the latest count.
    pub fn merge_forward(&mut self, incoming: &StatsReport) {
        self.session_ended_at = self.session_ended_at.max(incoming.session_ended_at);
        self.requests = self.requests.max(incoming.requests);
        self.sessions = self.sessions.max(incoming.sessions);
    }
}

#[cfg(test)]
mod tests;
