//! What a run produced, and the conservation check over it.

use std::collections::HashSet;
use std::fmt::Write as _;

use tally_domain::telemetry::Snapshot;
use tally_domain::usage::AppUsageSeries;
use time::OffsetDateTime;

use super::fleet::FleetSpec;
use super::ground_truth::InsightsCheck;
use super::timeline::Timeline;

/// Boundary usage with the exact distinct workspaces and owners (fleet
/// indices) behind it: the simulator's own account, to check the store's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub allowed: u64,
    pub denied: u64,
    pub workspaces: HashSet<u32>,
    pub users: HashSet<u32>,
}

impl Usage {
    pub fn add(&mut self, workspace: u32, owner: u32, allowed: u64, denied: u64) {
        self.allowed += allowed;
        self.denied += denied;
        self.workspaces.insert(workspace);
        self.users.insert(owner);
    }

    pub fn absorb(&mut self, other: Usage) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.workspaces.extend(other.workspaces);
        self.users.extend(other.users);
    }
}

/// What the simulator knows landed in the period that ends at `period_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPeriod {
    pub period_end: OffsetDateTime,
    pub usage: Usage,
}

/// Workspaces' last-used times as the store holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastUsed {
    /// Workspaces that had at least one session.
    pub expected: usize,
    /// Of those, how many have a last-used time inside the traffic.
    pub set: usize,
    /// A few of the others, for the report.
    pub wrong: Vec<String>,
}

/// Store or sink calls that failed during the run and were retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub collector_flushes: usize,
    pub tracker_flushes: usize,
    pub snapshot_steps: usize,
    pub publishes: usize,
    /// Failures that outlived their retries.
    pub unrecovered: usize,
    /// Tracker flushes answered "already applied": an attempt reported as
    /// failed had landed after all, maybe in an earlier period.
    pub acks_lost: usize,
}

impl Faults {
    /// Whether the simulator still knows which period each flushed delta
    /// landed in; if not, uniques are only bounded by the fleet size.
    pub fn attribution_exact(&self) -> bool {
        self.unrecovered == 0 && self.acks_lost == 0
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub timeline: Timeline,
    pub fleet: FleetSpec,
    pub sessions: usize,
    /// Short, medium and long sessions.
    pub session_mix: [usize; 3],
    pub reports_sent: u64,
    /// Sum over sessions of the last cumulative request count sent.
    pub requests_sent: u64,
    /// Sum of `requests` over this run's rows in the store.
    pub requests_stored: u64,
    pub rows_in_store: u64,
    /// Rows the collectors handed to their reporters (upserts).
    pub rows_reported: u64,
    pub dropped: u64,
    pub boundary_batches: u64,
    pub tracked: Usage,
    /// Whether a tracker still held unacknowledged usage at the end.
    pub unflushed_left: bool,
    pub expected: Vec<ExpectedPeriod>,
    /// Snapshots of this run's periods as the sink received them.
    pub published: Vec<Snapshot>,
    /// Snapshots of this run's periods as the store lists them.
    pub stored_snapshots: Vec<Snapshot>,
    /// Replicas that won the close of each period.
    pub winners: Vec<(OffsetDateTime, usize)>,
    pub top_apps: Vec<AppUsageSeries>,
    /// The rollup's figures against what was sent.
    pub insights: InsightsCheck,
    pub last_used: LastUsed,
    pub faults: Faults,
    pub wall: std::time::Duration,
}

/// The verdict: `line` is what the CLI prints, `problems` the reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conservation {
    pub ok: bool,
    pub line: String,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn snapshot_totals(&self) -> (u64, u64) {
        self.published.iter().fold((0, 0), |(a, d), s| {
            (a + s.usage.allowed_requests, d + s.usage.denied_requests)
        })
    }

    pub fn conservation(&self) -> Conservation {
        let mut problems = Vec::new();
        if self.requests_sent != self.requests_stored {
            problems.push(format!(
                "requests: sent {} but the store holds {}",
                self.requests_sent, self.requests_stored
            ));
        }
        if self.dropped > 0 {
            problems.push(format!("collectors dropped {} reports", self.dropped));
        }
        let (allowed, denied) = self.snapshot_totals();
        if (allowed, denied) != (self.tracked.allowed, self.tracked.denied) {
            problems.push(format!(
                "boundary: tracked allowed={} denied={} but snapshots hold allowed={allowed} denied={denied}",
                self.tracked.allowed, self.tracked.denied
            ));
        }
        if self.last_used.set != self.last_used.expected {
            problems.push(format!(
                "last used: {} of {} workspaces with sessions have it set within the traffic ({})",
                self.last_used.set,
                self.last_used.expected,
                self.last_used.wrong.join("; ")
            ));
        }
        if self.unflushed_left {
            problems.push("a tracker still holds unflushed usage".into());
        }

        let periods = self.timeline.period_ends();
        for &(end, won) in &self.winners {
            // None is possible when the winner's acknowledgement was lost;
            // the store's outbox then still holds the one snapshot.
            if won > 1 {
                problems.push(format!(
                    "period ending {end}: {won} replicas closed it, expected one"
                ));
            }
        }
        for end in &periods {
            let n = self.published.iter().filter(|s| s.period_end == *end).count();
            if n != 1 {
                problems.push(format!("period ending {end}: published {n} times, expected once"));
            }
            let n = self
                .stored_snapshots
                .iter()
                .filter(|s| s.period_end == *end)
                .count();
            if n != 1 {
                problems.push(format!(
                    "period ending {end}: {n} snapshots in the store, expected one"
                ));
            }
        }
        if self.stored_snapshots.iter().any(|s| s.published_at.is_none()) {
            problems.push("a snapshot is still unpublished in the outbox".into());
        }

        let exact = self.faults.attribution_exact();
        let mut uniques_exact = 0;
        for snapshot in &self.published {
            let u = &snapshot.usage;
            let period = snapshot.period_end;
            if u.unique_workspaces > self.fleet.workspaces as u64 || u.unique_users > self.fleet.users as u64
            {
                problems.push(format!(
                    "period ending {period}: {} workspaces and {} users exceed the fleet",
                    u.unique_workspaces, u.unique_users
                ));
            }
            if !exact {
                continue;
            }
            let Some(expected) = self.expected.iter().find(|e| e.period_end == period) else {
                problems.push(format!(
                    "period ending {period}: published but never closed by a replica"
                ));
                continue;
            };
            let e = &expected.usage;
            let want = (
                e.workspaces.len() as u64,
                e.users.len() as u64,
                e.allowed,
                e.denied,
            );
            let got = (
                u.unique_workspaces,
                u.unique_users,
                u.allowed_requests,
                u.denied_requests,
            );
            if want == got {
                uniques_exact += 1;
            } else {
                problems.push(format!(
                    "period ending {period}: (workspaces, users, allowed, denied) expected {want:?}, got {got:?}"
                ));
            }
        }

        let ok = problems.is_empty();
        let mut line = format!(
            "conservation: {} requests sent={} stored={}; boundary decisions sent={} in snapshots={}; snapshots={} for {} periods",
            if ok { "OK" } else { "FAILED" },
            self.requests_sent,
            self.requests_stored,
            self.tracked.allowed + self.tracked.denied,
            allowed + denied,
            self.published.len(),
            periods.len(),
        );
        if exact {
            let _ = write!(
                line,
                "; uniques exact in {uniques_exact}/{} periods",
                periods.len()
            );
        } else {
            line.push_str(
                "; uniques within fleet size (unrecovered store faults: per-period attribution unknown)",
            );
        }
        Conservation { ok, line, problems }
    }
}
