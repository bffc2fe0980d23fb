//! Reading a replica's `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::common::READER;

pub const APP_FAILED_FLUSHES: &str = "tally_app_stats_failed_flushes_total";
pub const APP_BACKLOG: &str = "tally_app_stats_backlog_rows";
pub const APP_ROWS_WRITTEN: &str = "tally_app_stats_rows_written_total";
pub const BOUNDARY_FAILURES: &str = "tally_boundary_flush_failures_total";
pub const BOUNDARY_PENDING: &str = "tally_boundary_requests_pending";
pub const REPORTS_REFUSED: &str = "tally_app_stats_reports_refused_total";
pub const TRACKED_SESSIONS: &str = "tally_app_stats_tracked_sessions";
pub const STORE_UP: &str = "tally_store_up";

/// Samples without labels, by name; a metric not yet recorded is absent.
#[derive(Debug, Clone, Default)]
pub struct Sample(pub HashMap<String, f64>);

impl Sample {
    /// The value, 0 if the metric was never recorded.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

pub async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> Sample {
    let response = client
        .get(format!("http://{addr}/metrics"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap_or_else(|e| panic!("replica {addr}: /metrics failed: {e}"));
    assert_eq!(response.status(), reqwest::StatusCode::OK, "/metrics of {addr}");
    let text = response.text().await.unwrap();
    Sample(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}
