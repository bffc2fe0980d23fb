//! Request bodies, generated before timing: Go-shaped app stats batches
//! and boundary log batches.

use super::USERS;

/// One app stats body. `session_at` and `requests_at` are the offsets of
/// each report's session id and (space-padded) request count, rewritten per
/// request: the session id picks a session from the session space, and the
/// count grows with each round, so a session sent again is a newer report
/// of it (as a proxy re-reporting it), not a replay.
pub(super) struct AppStatsBody {
    bytes: Vec<u8>,
    session_at: Vec<usize>,
    requests_at: Vec<(usize, u64)>,
}

const REQUESTS_WIDTH: usize = 10;

impl AppStatsBody {
    pub(super) fn new(seed: u64, batch: u32, open_percent: u8, now: time::OffsetDateTime) -> Self {
        let fmt = &time::format_description::well_known::Rfc3339;
        let mut bytes = br#"{"stats":["#.to_vec();
        let mut session_at = Vec::with_capacity(batch as usize);
        let mut requests_at = Vec::with_capacity(batch as usize);
        let started = (now - time::Duration::seconds(30))
            .format(fmt)
            .unwrap_or_default();
        for i in 0..u64::from(batch) {
            let n = seed * u64::from(batch) + i;
            if i > 0 {
                bytes.push(b',');
            }
            let u = n.wrapping_mul(7919) % USERS;
            let method = ["path", "subdomain", "terminal"][(n % 3) as usize];
            // Mostly short closed sessions, some still open (Go's zero time).
            let ended = if n % 100 < u64::from(open_percent) {
                "0001-01-01T00:00:00Z".to_string()
            } else {
                let end = now - time::Duration::seconds(1 + (n % 25) as i64);
                end.format(fmt).unwrap_or_default()
            };
            let head = format!(
                r#"{{"user_id":"{}","workspace_id":"{}","agent_id":"{}","access_method":"{method}","slug_or_port":"app-{}","session_id":""#,
                uuid(1, u),
                uuid(2, u),
                uuid(3, u),
                n % 10,
            );
            bytes.extend_from_slice(head.as_bytes());
            session_at.push(bytes.len());
            bytes.extend_from_slice(uuid(4, n).as_bytes());
            let mid =
                format!(r#"","session_started_at":"{started}","session_ended_at":"{ended}","requests":"#);
            bytes.extend_from_slice(mid.as_bytes());
            requests_at.push((bytes.len(), n % 50));
            bytes.extend_from_slice(&[b' '; REQUESTS_WIDTH]);
            bytes.push(b'}');
        }
        bytes.extend_from_slice(b"]}");
        Self {
            bytes,
            session_at,
            requests_at,
        }
    }

    /// A copy for round `round`: `session` (< 2^48) in the first 12 hex
    /// digits of every session id (the pool seed stays in the last 12),
    /// and each request count raised by `round`.
    pub(super) fn render(&self, session: u64, round: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        let hex = format!("{:012x}", session & 0xffff_ffff_ffff);
        for &at in &self.session_at {
            out[at..at + 8].copy_from_slice(&hex.as_bytes()[..8]);
            out[at + 9..at + 13].copy_from_slice(&hex.as_bytes()[8..]);
        }
        for &(at, base) in &self.requests_at {
            let count = format!("{:>REQUESTS_WIDTH$}", (base + round) % 1_000_000_000);
            out[at..at + REQUESTS_WIDTH].copy_from_slice(count.as_bytes());
        }
        out
    }
}

/// A version-4-shaped UUID from a kind and a number.
fn uuid(kind: u64, n: u64) -> String {
    format!("00000000-0000-4{kind:03x}-8000-{:012x}", n & 0xffff_ffff_ffff)
}

pub(super) fn boundary_body(n: u64) -> &'static [u8] {
    let u = n.wrapping_mul(7919) % USERS;
    let body = format!(
        r#"{{"workspace_id":"{}","owner_id":"{}","allowed":{},"denied":{}}}"#,
        uuid(2, u),
        uuid(1, u),
        1 + n % 40,
        n % 5,
    );
    Box::leak(body.into_bytes().into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_stats_body_is_json_with_fresh_session_ids() {
        let body = AppStatsBody::new(3, 100, 10, time::OffsetDateTime::now_utc());
        let a: serde_json::Value = serde_json::from_slice(&body.render(1, 1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&body.render(2, 7)).unwrap();
        let requests = |v: &serde_json::Value| v["stats"][5]["requests"].as_u64().unwrap();
        assert_eq!(requests(&b), requests(&a) + 6);
        let stats = a["stats"].as_array().unwrap();
        assert_eq!(stats.len(), 100);
        let open = stats
            .iter()
            .filter(|s| s["session_ended_at"] == "0001-01-01T00:00:00Z")
            .count();
        assert_eq!(open, 10);
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v["stats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_string())
                .collect()
        };
        let (ia, ib) = (ids(&a), ids(&b));
        assert!(ia.iter().all(|id| id.len() == 36 && uuid_shaped(id)));
        assert!(ia.iter().zip(&ib).all(|(x, y)| x != y));
        let mut unique = ia.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 100);
    }

    #[test]
    fn boundary_body_is_json_with_counts() {
        let v: serde_json::Value = serde_json::from_slice(boundary_body(7)).unwrap();
        assert_eq!(v["allowed"], 8);
        assert_eq!(v["denied"], 2);
        assert!(uuid_shaped(v["workspace_id"].as_str().unwrap()));
    }

    fn uuid_shaped(s: &str) -> bool {
        s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    }
}
