//! Prometheus metrics: names, the process-wide recorder, and the render step
//! that copies collector and tracker state into gauges at scrape time.
//!
//! Names: `tally_<part>_<what>` with the part `app_stats`, `boundary`,
//! `snapshots`, `http` or `store`; a counter ends in `_total`, a duration is
//! in seconds and ends in `_seconds`, a size in bytes ends in `_bytes`
//! (base units throughout). The process's own figures are the standard
//! `process_*` ones (`metrics-process`). An end-to-end test holds every
//! name served to these rules.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tally_adapters_memory::budget::MemoryUse;
use tally_domain::appstats::collector::CollectorStats;
use tally_domain::boundary::tracker::PendingUsage;
use tally_domain::error::StoreError;
use tally_domain::ports::{CallInfo, Layer};

pub const REPORTS_COLLECTED: &str = "tally_app_stats_reports_collected_total";
pub const REPORTS_REFUSED: &str = "tally_app_stats_reports_refused_total";
pub const ROWS_WRITTEN: &str = "tally_app_stats_rows_written_total";
pub const DROPPED: &str = "tally_app_stats_reports_dropped_total";
pub const FAILED_FLUSHES: &str = "tally_app_stats_flush_failures_total";
pub const BACKLOG_ROWS: &str = "tally_app_stats_backlog_rows";
pub const TRACKED_SESSIONS: &str = "tally_app_stats_tracked_sessions";
pub const BUFFERED_BYTES: &str = "tally_app_stats_buffered_bytes";
pub const FLUSH_SECONDS: &str = "tally_app_stats_last_flush_duration_seconds";
pub const LAST_FLUSH_TIME: &str = "tally_app_stats_last_flush_timestamp_seconds";
pub const BOUNDARY_TRACKED: &str = "tally_boundary_requests_tracked_total";
pub const BOUNDARY_PENDING: &str = "tally_boundary_requests_pending";
pub const BOUNDARY_FLUSH_FAILURES: &str = "tally_boundary_flush_failures_total";
pub const SNAPSHOTS_CLOSED: &str = "tally_snapshots_closed_total";
pub const SNAPSHOTS_PUBLISHED: &str = "tally_snapshots_published_total";
pub const SNAPSHOT_PUBLISH_FAILURES: &str = "tally_snapshots_publish_failures_total";
pub const HTTP_REQUESTS: &str = "tally_http_requests_total";
pub const STORE_UP: &str = "tally_store_up";
pub const HTTP_REQUEST_SECONDS: &str = "tally_http_request_duration_seconds";
pub const STORE_CALL_SECONDS: &str = "tally_store_call_duration_seconds";
pub const MEMORY_STORE_BYTES: &str = "tally_store_memory_bytes";
pub const MEMORY_STORE_RESERVED: &str = "tally_store_memory_reserved_bytes";
pub const MEMORY_STORE_LIMIT: &str = "tally_store_memory_limit_bytes";
pub const MEMORY_STORE_REFUSED: &str = "tally_store_memory_writes_refused_total";

/// Bucket bounds of [`HTTP_REQUEST_SECONDS`]: from an ingest answered in
/// memory (well under a millisecond) to the default request timeout.
const HTTP_REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of [`STORE_CALL_SECONDS`]: a millisecond up to the longest
/// store timeout one would set.
const STORE_CALL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use. Tests in one
/// process share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_SECONDS.into()), HTTP_REQUEST_BUCKETS)
            .expect("the HTTP request buckets are not empty")
            .set_buckets_for_metric(Matcher::Full(STORE_CALL_SECONDS.into()), STORE_CALL_BUCKETS)
            .expect("the store call buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        process().describe();
        handle
    })
}

/// The process's CPU, memory, open files and start time, read at scrape time.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// The Prometheus text of a scrape: the registry after the collector's,
/// tracker's, in-memory store's (when it is the store) and process's current
/// figures are copied in.
pub fn render(collector: &CollectorStats, pending: &PendingUsage, memory: Option<MemoryUse>) -> String {
    let handle = handle();
    record_state(collector, pending);
    if let Some(memory) = memory {
        record_memory_store(&memory);
    }
    process().collect();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REPORTS_COLLECTED, "App stat reports accepted by the collector.");
    describe_counter!(
        REPORTS_REFUSED,
        "App stat reports refused because the buffer was full."
    );
    describe_counter!(ROWS_WRITTEN, "App stat rows written to the store.");
    describe_counter!(
        DROPPED,
        "App stat reports the collector dropped at its memory cap."
    );
    describe_counter!(
        FAILED_FLUSHES,
        "Collector flushes that failed and left a backlog."
    );
    describe_gauge!(
        BACKLOG_ROWS,
        "App stat rows waiting to be written: left by a failed flush, or in the flush under way."
    );
    describe_gauge!(TRACKED_SESSIONS, "App sessions held in memory.");
    describe_gauge!(
        BUFFERED_BYTES,
        "Bytes of app stats held as the memory cap counts them (--max-memory refuses beyond it)."
    );
    describe_gauge!(FLUSH_SECONDS, "Duration of the last collector flush in seconds.");
    describe_gauge!(
        LAST_FLUSH_TIME,
        "Unix time in seconds when the last successful collector flush ended (0: none yet)."
    );
    describe_counter!(BOUNDARY_TRACKED, "Boundary decisions tracked, by decision.");
    describe_gauge!(
        BOUNDARY_PENDING,
        "Boundary decisions tracked but not yet flushed to the store."
    );
    describe_counter!(BOUNDARY_FLUSH_FAILURES, "Boundary tracker flushes that failed.");
    describe_counter!(SNAPSHOTS_CLOSED, "Telemetry periods this replica closed.");
    describe_counter!(
        SNAPSHOTS_PUBLISHED,
        "Snapshots delivered to the sink by this replica."
    );
    describe_counter!(SNAPSHOT_PUBLISH_FAILURES, "Failed snapshot deliveries.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status.");
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer HTTP requests in seconds, by method, route and status class (2xx, 4xx...)."
    );
    describe_gauge!(
        STORE_UP,
        "1 when the last store call of the background loops succeeded, 0 when it failed."
    );
    describe_gauge!(
        MEMORY_STORE_BYTES,
        "Bytes the in-memory store holds as its share of --max-memory counts them."
    );
    describe_gauge!(
        MEMORY_STORE_RESERVED,
        "Bytes the in-memory store keeps free for the usage rollup rows of its next tick."
    );
    describe_gauge!(
        MEMORY_STORE_LIMIT,
        "The in-memory store's share of --max-memory, in bytes."
    );
    describe_counter!(
        MEMORY_STORE_REFUSED,
        "Writes the in-memory store refused because its share of --max-memory was full."
    );
    describe_histogram!(
        STORE_CALL_SECONDS,
        metrics::Unit::Seconds,
        "Duration of store calls in seconds, by call and outcome (ok, unavailable, invalid, forbidden, other)."
    );
}

/// The layer that times every store call into [`STORE_CALL_SECONDS`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreMetrics;

impl Layer for StoreMetrics {
    async fn around<T, F>(&self, info: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        metrics::histogram!(STORE_CALL_SECONDS, "call" => info.name, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Copies the collector's and tracker's own counters into the registry.
pub fn record_state(collector: &CollectorStats, pending: &PendingUsage) {
    metrics::counter!(REPORTS_COLLECTED).absolute(collector.collected);
    metrics::counter!(ROWS_WRITTEN).absolute(collector.rows_reported);
    metrics::counter!(DROPPED).absolute(collector.dropped);
    metrics::counter!(FAILED_FLUSHES).absolute(collector.failed_flushes);
    metrics::gauge!(BACKLOG_ROWS).set(collector.backlog_rows as f64);
    metrics::gauge!(TRACKED_SESSIONS).set(collector.tracked_sessions as f64);
    metrics::gauge!(BUFFERED_BYTES).set(collector.held_units as f64);
    metrics::gauge!(FLUSH_SECONDS).set(collector.last_flush_seconds);
    let last_flush = collector
        .last_flush_at
        .map_or(0.0, |t| t.unix_timestamp_nanos() as f64 / 1e9);
    metrics::gauge!(LAST_FLUSH_TIME).set(last_flush);
    metrics::gauge!(BOUNDARY_PENDING).set((pending.allowed + pending.denied) as f64);
}

/// Copies what the in-memory store holds into the registry.
fn record_memory_store(memory: &MemoryUse) {
    metrics::gauge!(MEMORY_STORE_BYTES).set(memory.held_bytes as f64);
    metrics::gauge!(MEMORY_STORE_RESERVED).set(memory.reserved_bytes as f64);
    metrics::gauge!(MEMORY_STORE_LIMIT).set(memory.limit_bytes as f64);
    metrics::counter!(MEMORY_STORE_REFUSED).absolute(memory.refused_writes);
}

/// What `tally_store_up` shows, also read by `GET /api/v2/status`.
static STORE_UP_NOW: AtomicBool = AtomicBool::new(true);

/// Whether the last store call of the background loops found the store up
/// (the `tally_store_up` gauge).
pub fn store_up() -> bool {
    STORE_UP_NOW.load(Ordering::Acquire)
}

/// Records the outcome of a store call made in the background (loops,
/// collector flushes): the `tally_store_up` gauge, and a log line when the
/// store answers again after failing (each failure logs its own warning).
/// Only unavailability counts as down: a store that rejects data is up.
pub fn store_result<T>(result: &Result<T, StoreError>) {
    let up = match result {
        Ok(_) => true,
        Err(e) if e.is_retryable() => false,
        Err(_) => return,
    };
    metrics::gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
    if STORE_UP_NOW.swap(up, Ordering::AcqRel) != up && up {
        tracing::info!("store reachable again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::ports::{Layered, MockStore, TelemetryStore};
    use time::OffsetDateTime;

    fn count(rendered: &str, call: &str, outcome: &str) -> Option<u64> {
        let key = format!("{STORE_CALL_SECONDS}_count{{call=\"{call}\",outcome=\"{outcome}\"}} ");
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .map(|n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn store_calls_are_timed_by_call_and_outcome() {
        let handle = handle();
        let mut mock = MockStore::new();
        mock.expect_prune_telemetry_locks().times(2).returning(|_| Ok(1));
        mock.expect_list_snapshots()
            .times(1)
            .returning(|_| Err(StoreError::unavailable("down")));
        let store = Layered::new(mock, StoreMetrics);
        store
            .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
        store
            .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
        store.list_snapshots(1).await.unwrap_err();

        let rendered = handle.render();
        assert_eq!(
            count(&rendered, "prune_telemetry_locks", "ok"),
            Some(2),
            "{rendered}"
        );
        assert_eq!(
            count(&rendered, "list_snapshots", "unavailable"),
            Some(1),
            "{rendered}"
        );
        assert!(
            rendered.contains(&format!(
                "{STORE_CALL_SECONDS}_bucket{{call=\"list_snapshots\",outcome=\"unavailable\",le=\"0.001\"}}"
            )),
            "a histogram with buckets, not a summary:\n{rendered}"
        );
    }
}
