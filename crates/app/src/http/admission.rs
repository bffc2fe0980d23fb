//! Admission of app stats requests against the collector's memory cap.
//!
//! The collector drops (and counts) reports beyond its cap one at a time; a
//! request must be taken whole or refused whole, so the handler refuses with
//! 503 *before* collecting when the request might not fit. The estimate is
//! conservative (every session and every incoming report counted at the
//! collector's worst case of three units) and lock-free between refreshes:
//! the collector's own figures are read at most every [`REFRESH_EVERY`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tally_domain::appstats::collector::{CollectorStats, StatsCollector};

/// Worst-case memory units of one report or tracked session in the collector
/// (see `CollectorConfig::max_buffered`).
pub const UNITS_PER_REPORT: usize = 3;
pub const REFRESH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Admission {
    cap: usize,
    /// Units held at the last refresh.
    base: AtomicUsize,
    /// Units admitted since the last refresh.
    since: AtomicUsize,
    /// When the last refresh happened, in nanoseconds after `epoch`.
    refreshed_at: AtomicU64,
    epoch: Instant,
}

impl Admission {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            base: AtomicUsize::new(0),
            since: AtomicUsize::new(0),
            refreshed_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn units(stats: &CollectorStats) -> usize {
        stats
            .tracked_sessions
            .saturating_mul(UNITS_PER_REPORT)
            .saturating_add(stats.backlog_rows)
    }

    /// Takes fresh figures from the collector.
    pub fn refresh(&self, stats: &CollectorStats) {
        self.base.store(Self::units(stats), Ordering::Release);
        self.since.store(0, Ordering::Release);
        self.refreshed_at
            .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Release);
    }

    /// Reserves room for `reports` new reports, or says there is none.
    pub fn try_admit(&self, collector: &StatsCollector, reports: usize) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.refreshed_at.load(Ordering::Acquire);
        if last == 0 || now.saturating_sub(last) >= REFRESH_EVERY.as_nanos() as u64 {
            self.refresh(&collector.stats());
        }
        let need = reports.saturating_mul(UNITS_PER_REPORT);
        let before = self.since.fetch_add(need, Ordering::AcqRel);
        let total = self
            .base
            .load(Ordering::Acquire)
            .saturating_add(before)
            .saturating_add(need);
        if total > self.cap {
            self.since.fetch_sub(need, Ordering::AcqRel);
            // Figures may be stale after a flush freed room: look again once.
            let fresh = collector.stats();
            if Self::units(&fresh).saturating_add(need) > self.cap {
                return false;
            }
            self.refresh(&fresh);
            self.since.fetch_add(need, Ordering::AcqRel);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tally_domain::appstats::collector::CollectorConfig;
    use tally_domain::ports::MockReporter;
    use tally_domain::{StatsReport, SystemClock};

    use super::*;

    fn collector() -> Arc<StatsCollector> {
        StatsCollector::new(
            CollectorConfig::default(),
            Arc::new(MockReporter::new()),
            Arc::new(SystemClock),
        )
    }

    fn report() -> StatsReport {
        StatsReport {
            user_id: uuid::Uuid::new_v4(),
            workspace_id: uuid::Uuid::new_v4(),
            agent_id: uuid::Uuid::new_v4(),
            access_method: tally_domain::AccessMethod::Path,
            slug_or_port: "app".into(),
            session_id: uuid::Uuid::new_v4(),
            session_started_at: time::OffsetDateTime::now_utc(),
            session_ended_at: None,
            requests: 1,
        }
    }

    #[test]
    fn admits_until_the_worst_case_would_pass_the_cap() {
        let c = collector();
        let a = Admission::new(30);
        let admit = |n: usize| {
            let ok = a.try_admit(&c, n);
            if ok {
                (0..n).for_each(|_| c.collect(report()));
            }
            ok
        };
        assert!(admit(4)); // 12 units
        assert!(admit(6)); // 30 units
        assert!(!admit(1));
        assert!(!admit(100));
        assert_eq!(c.stats().collected, 10);
    }

    #[test]
    fn counts_what_the_collector_holds() {
        let c = collector();
        for _ in 0..5 {
            c.collect(report());
        }
        let a = Admission::new(30);
        // Five held sessions are 15 units; five more reports fit, six do not.
        assert!(!a.try_admit(&c, 6));
        assert!(a.try_admit(&c, 5));
    }
}
