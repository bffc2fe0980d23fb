//! The session times ingest takes, relative to the server's clock
//! (docs/rules.md#session-times). `now` is passed in: this crate has no wall
//! clock.

use time::{Duration, OffsetDateTime};

use super::{InvalidReport, StatsReport};
use crate::usage::RetentionPolicy;

/// How far a reported session's times may lie from the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeLimits {
    /// How far ahead of the server's clock a time may be: a proxy's clock
    /// may run a little fast, but not this far.
    pub clock_skew: Duration,
    /// How long the usage rollup is kept ([`RetentionPolicy::usage`]):
    /// nothing of a session that started longer ago is kept, and the bound
    /// caps the hours the rollup expands one row into. Not the raw
    /// retention: a session may stay open longer than raw rows are kept
    /// (its row is purged by start and written again by its next report),
    /// and refusing it would refuse its proxy's whole batch at every retry.
    pub retention: Duration,
}

impl SessionTimeLimits {
    /// The default clock skew allowance.
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::HOUR;

    /// The times taken at `now`.
    pub fn at(&self, now: OffsetDateTime) -> SessionWindow {
        SessionWindow {
            earliest_start: now.saturating_sub(self.retention),
            latest: now.saturating_add(self.clock_skew),
            limits: *self,
        }
    }
}

impl Default for SessionTimeLimits {
    fn default() -> Self {
        Self {
            clock_skew: Self::DEFAULT_CLOCK_SKEW,
            retention: RetentionPolicy::default().usage,
        }
    }
}

/// The times taken at one instant: both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindow {
    /// The oldest start taken.
    pub earliest_start: OffsetDateTime,
    /// The latest start or end taken.
    pub latest: OffsetDateTime,
    /// The limits it was made from, for the refusals' words.
    pub limits: SessionTimeLimits,
}

impl SessionWindow {
    /// Checks a report's times against the window, naming the first field
    /// outside it. The end is not checked against the earliest start: a
    /// report that [`StatsReport::validate`] accepts ends at or after its
    /// start.
    pub fn check(&self, report: &StatsReport) -> Result<(), InvalidReport> {
        let start = report.session_started_at;
        if start < self.earliest_start {
            return Err(self.too_old(start));
        }
        if start > self.latest {
            return Err(self.too_late("session_started_at", start));
        }
        match report.session_ended_at {
            Some(end) if end > self.latest => Err(self.too_late("session_ended_at", end)),
            _ => Ok(()),
        }
    }

    fn too_old(&self, start: OffsetDateTime) -> InvalidReport {
        InvalidReport {
            field: "session_started_at",
            reason: format!(
                "{} is before {}, the oldest start taken: usage is kept {} only",
                rfc3339(start),
                rfc3339(self.earliest_start),
                self.limits.retention
            ),
        }
    }

    fn too_late(&self, field: &'static str, t: OffsetDateTime) -> InvalidReport {
        InvalidReport {
            field,
            reason: format!(
                "{} is after {}: more than {} ahead of the server's clock",
                rfc3339(t),
                rfc3339(self.latest),
                self.limits.clock_skew
            ),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests;
