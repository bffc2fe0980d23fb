//! Shared by the benchmarks: app stat rows as one binary COPY payload.

use tally_domain::appstats::StatsReport;
use time::OffsetDateTime;
use time::macros::datetime;

/// The columns [`binary_copy`] writes, in order.
pub const COPY_COLUMNS: &str = "(user_id, agent_id, session_id, workspace_id, access_method, slug_or_port, \
     session_started_at, session_ended_at, requests, sessions)";

/// `rows` in PostgreSQL's binary COPY format, columns as [`COPY_COLUMNS`].
pub fn binary_copy(rows: &[StatsReport]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 160);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
    let ts =
        |t: OffsetDateTime| ((t - datetime!(2000-01-01 0:00 UTC)).whole_microseconds() as i64).to_be_bytes();
    for r in rows {
        buf.extend_from_slice(&10i16.to_be_bytes());
        for u in [r.user_id, r.agent_id, r.session_id, r.workspace_id] {
            buf.extend_from_slice(&16i32.to_be_bytes());
            buf.extend_from_slice(u.as_bytes());
        }
        for s in [r.access_method.as_str(), &r.slug_or_port] {
            buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        for t in [
            r.session_started_at,
            r.session_ended_at.unwrap_or(r.session_started_at),
        ] {
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&ts(t));
        }
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(r.requests as i64).to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(r.sessions as i64).to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}
