//! The rollup rule written plainly (in words: docs/rules.md#rollup). A rule changes here first;
//! property tests then hold the engine ([`super::Rollup`]) to the same rows and memory accounting.
//!
//! Sessions live in groups keyed by their start truncated to the window,
//! user, workspace, agent, access method and slug or port. A later report of
//! a session is merged into it ([`StatsReport::merge_forward`]). At each
//! rollup, in every group:
//! - a closed session no longer than the window, never reported alone, is
//!   folded into the group's record (the window's start to one window later,
//!   the first folded session's id, the requests and count of the sessions
//!   folded so far), which is reported whenever it changed;
//! - an open session not older than the window waits (it may yet close
//!   short), except at the final rollup;
//! - any other session is reported alone, an open one with `now` as its
//!   provisional end and again at each rollup until its close is reported,
//!   never ending before a row already sent for it;
//! - a group with nothing left to report goes once more than one window has
//!   passed after its record's end; until then replays change nothing.

use std::collections::HashMap;

use indexmap::IndexMap;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{Collected, Held, RollupRows, Weights};
use crate::appstats::{AccessMethod, StatsReport};
use crate::telemetry::truncate;

/// The rollup as a map of groups, each holding its sessions by id.
#[derive(Debug)]
pub struct ReferenceRollup {
    window: Duration,
    weights: Weights,
    groups: HashMap<GroupKey, Group>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    start: OffsetDateTime,
    user_id: Uuid,
    workspace_id: Uuid,
    agent_id: Uuid,
    access_method: AccessMethod,
    slug_or_port: String,
}

#[derive(Debug, Default)]
struct Group {
    /// Each session's reports merged, and its state, in order of arrival.
    sessions: IndexMap<Uuid, (StatsReport, State)>,
    /// The rolled-up record, as the row it is reported as.
    record: Option<StatsReport>,
    /// A rolled-up session brought more requests since the last rollup.
    record_changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In no row yet.
    Unreported,
    /// In a row of its own, sent again at the next rollup if `due`: while
    /// open, and after a later report changed it. `last_end` is the end of
    /// the last row sent, which a later row never ends before.
    Alone { due: bool, last_end: OffsetDateTime },
    /// Folded into the group's record.
    RolledUp,
}

impl ReferenceRollup {
    /// An empty rollup with this window, counting in [`Weights::UNITS`].
    pub fn new(window: Duration) -> Self {
        Self::with_weights(window, Weights::UNITS)
    }

    /// An empty rollup with this window, weighing what it holds with `weights`.
    pub fn with_weights(window: Duration, weights: Weights) -> Self {
        let groups = HashMap::new();
        Self {
            window,
            weights,
            groups,
        }
    }

    /// Tracks a report, unless that takes [`ReferenceRollup::reserved_units`]
    /// past `budget` (`usize::MAX`: no budget): a new session costs a
    /// session and its row (and a group, in a new group), news of a session
    /// already reported a row.
    pub fn collect_within(&mut self, report: StatsReport, budget: usize) -> Collected {
        let units = (budget != usize::MAX).then(|| self.reserved_units());
        let fits = |more: usize| units.unwrap_or(0).saturating_add(more) <= budget;
        let w = self.weights;
        let key = GroupKey {
            start: truncate(report.session_started_at, self.window),
            user_id: report.user_id,
            workspace_id: report.workspace_id,
            agent_id: report.agent_id,
            access_method: report.access_method,
            slug_or_port: report.slug_or_port.clone(),
        };
        if !self.groups.contains_key(&key) && !fits(w.group + w.session + w.row) {
            return Collected::Dropped;
        }
        let group = self.groups.entry(key).or_default();
        let Some((held, state)) = group.sessions.get_mut(&report.session_id) else {
            if !fits(w.session + w.row) {
                return Collected::Dropped;
            }
            group
                .sessions
                .insert(report.session_id, (report, State::Unreported));
            return Collected::New;
        };
        let ended_at = held.session_ended_at.max(report.session_ended_at);
        let added = report.requests.saturating_sub(held.requests);
        if ended_at == held.session_ended_at && added == 0 {
            return Collected::Unchanged;
        }
        // News of a session already reported needs room for one more row.
        match state {
            State::Unreported => {}
            State::Alone { due, .. } => {
                if !*due && !fits(w.row) {
                    return Collected::Dropped;
                }
                *due = true;
            }
            State::RolledUp => {
                if added > 0 && !group.record_changed && !fits(w.row) {
                    return Collected::Dropped;
                }
                if let Some(record) = group.record.as_mut().filter(|_| added > 0) {
                    record.requests += added;
                    group.record_changed = true;
                }
            }
        }
        held.merge_forward(&report);
        Collected::Updated
    }

    /// One flush's rows at `now`, in no particular order.
    pub fn rollup(&mut self, now: OffsetDateTime) -> Vec<StatsReport> {
        self.rollup_rows(now, false).rows
    }

    pub(crate) fn rollup_rows(&mut self, now: OffsetDateTime, is_final: bool) -> RollupRows {
        let (window, mut out) = (self.window, RollupRows::default());
        self.groups.retain(|key, group| {
            let mut record_changed = std::mem::take(&mut group.record_changed);
            for (r, state) in group.sessions.values_mut() {
                let length = r.session_ended_at.map(|end| end - r.session_started_at);
                let young = now - r.session_started_at <= window;
                match *state {
                    State::RolledUp | State::Alone { due: false, .. } => {}
                    State::Unreported if length.is_some_and(|l| l <= window) => {
                        let record = group.record.get_or_insert_with(|| StatsReport {
                            session_started_at: key.start,
                            session_ended_at: Some(key.start + window),
                            requests: 0,
                            sessions: 0,
                            ..r.clone()
                        });
                        record.requests += r.requests;
                        record.sessions += 1;
                        *state = State::RolledUp;
                        record_changed = true;
                    }
                    State::Unreported if r.is_open() && young && !is_final => {}
                    State::Unreported | State::Alone { .. } => {
                        let end = match (r.session_ended_at, *state) {
                            (None, _) => now.max(r.session_started_at),
                            (Some(end), State::Alone { last_end, .. }) => end.max(last_end),
                            (Some(end), _) => end,
                        };
                        if r.is_open() {
                            out.provisional.push(out.rows.len());
                        }
                        out.rows.push(StatsReport {
                            session_ended_at: Some(end),
                            ..r.clone()
                        });
                        let due = r.is_open();
                        *state = State::Alone { due, last_end: end };
                    }
                }
            }
            if let Some(record) = group.record.as_ref().filter(|_| record_changed) {
                out.rows.push(record.clone());
            }
            group.live() > 0 || now - key.start <= 2 * window
        });
        out
    }

    /// What is held, counted over every group.
    pub fn held(&self) -> Held {
        let mut held = Held::default();
        for g in self.groups.values() {
            held.sessions += g.sessions.len();
            held.live += g.live();
            held.groups += 1;
            held.changed_groups += usize::from(g.record_changed);
        }
        held
    }

    /// Worst-case memory in the weights' unit: every session costs a
    /// session, and a row more while it has a row to send; every group a
    /// group, and a row more while its record changed.
    pub fn reserved_units(&self) -> usize {
        let w = self.weights;
        let cost = |g: &Group| {
            let rows = g.live() + usize::from(g.record_changed);
            w.session * g.sessions.len() + w.group + w.row * rows
        };
        self.groups.values().map(cost).sum()
    }
}

impl Group {
    /// Sessions with a row still to send.
    fn live(&self) -> usize {
        let live = |s: &State| matches!(s, State::Unreported | State::Alone { due: true, .. });
        self.sessions.values().filter(|(_, state)| live(state)).count()
    }
}
