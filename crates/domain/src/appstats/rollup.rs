//! The rollup state machine of SPEC §2: pure, driven by the `now` it is given.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

use time::{Duration, OffsetDateTime};

use super::StatsReport;

/// Default rollup window.
pub const DEFAULT_ROLLUP_WINDOW: Duration = Duration::minutes(1);

/// Tracked sessions grouped by (start truncated to the window, user,
/// workspace, agent, access method, slug or port).
#[derive(Debug)]
pub struct Rollup {
    window: Duration,
}

impl Rollup {
    /// # Panics
    /// If `window` is not positive.
    pub fn new(window: Duration) -> Self {
        assert!(window.is_positive(), "rollup window must be positive");
        Self { window }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Tracks a report by session id (see SPEC §2 "Collect").
    pub fn collect(&mut self, report: StatsReport) {
        let _ = report;
        todo!("issue 2: rollup collect")
    }

    /// One flush's worth of rows at `now` (see SPEC §2 "Rollup").
    pub fn rollup(&mut self, now: OffsetDateTime) -> Vec<StatsReport> {
        let _ = now;
        todo!("issue 2: rollup")
    }

    /// The final rollup on close: like [`Rollup::rollup`], but open sessions
    /// of any age are reported with `now` as their provisional end.
    pub fn rollup_final(&mut self, now: OffsetDateTime) -> Vec<StatsReport> {
        let _ = now;
        todo!("issue 2: final rollup")
    }

    /// Sessions currently held (open or waiting), for the memory cap.
    pub fn tracked_sessions(&self) -> usize {
        todo!("issue 2: tracked sessions")
    }
}
