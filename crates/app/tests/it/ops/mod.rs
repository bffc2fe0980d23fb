//! Operability of the real binary: readiness, the open metrics listener,
//! the metric names, request ids and the access log, `Retry-After`, and
//! the migration controls (`migrate --status`, `serve --no-migrate`).

mod memory;
mod postgres;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::Server;

/// The address `--metrics-listen` bound, from the log line `metrics at http://ADDR/metrics`.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = server.logs();
        if let Some(addr) = logs
            .lines()
            .find_map(|l| l.split("metrics at http://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
        {
            return addr;
        }
        assert!(Instant::now() < deadline, "no metrics address logged:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log lines of the access log.
pub fn access_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.contains("tally::access")).collect()
}
