//! The rollup of short sessions (docs/rules.md#rollup): pure, driven by
//! the `now` it is given.
//!
//! The rule is written plainly in [`reference`](mod@reference), and a change to it is made
//! there first; property tests hold this engine to the reference's rows and
//! memory accounting. In short: sessions are grouped by their start
//! truncated to the window, user, workspace, agent, access method and slug
//! or port; at each rollup, closed sessions no longer than the window are
//! folded into one record per group (requests and session count), open ones
//! older than the window and long ones are reported alone, and a group goes
//! once nothing is left to report and one more window has passed after its
//! record's end.
//!
//! The engine differs from the reference only in how it stores what it
//! holds, each choice measured end to end (BENCHMARKS.md): a group keeps its
//! key once with its slug interned, and a 64-byte record per session with
//! times as offsets from the group's start; small groups find a session by
//! scanning, larger ones by an index; every table hashes with foldhash. (A
//! bucket sort of each batch by group, a pool of session buffers and a
//! prefetch pass each gained less than a tenth end to end, and went.)

mod batch;
mod group;
mod pass;
pub mod reference;
mod slugs;
#[cfg(test)]
mod tests;
mod weights;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use time::{Duration, OffsetDateTime};

use self::group::{Group, Prepared, State};
use self::slugs::Slugs;
use super::StatsReport;

pub use self::batch::BatchCollected;
pub use self::weights::{Held, Weights};

/// Default rollup window.
pub const DEFAULT_ROLLUP_WINDOW: Duration = Duration::minutes(1);

/// What [`Rollup::collect_within`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// A session seen for the first time joined its group.
    New,
    /// A tracked session's end time or request count moved forward to the
    /// report's (each on its own, as in the store).
    Updated,
    /// The report had no later end and no more requests than what is held
    /// (a replay or a reordered older report): nothing changed.
    Unchanged,
    /// Taking it would have gone past the budget, or its start lies outside
    /// the years 1678 to 2262; nothing changed.
    Dropped,
}

/// Rows of one flush. The rows at the `provisional` indices (ascending) are
/// open sessions reported with `now` as their end; the rollup reports those
/// sessions again at every later flush, so a failed delivery need not keep
/// them.
#[derive(Debug, Default)]
pub(crate) struct RollupRows {
    pub rows: Vec<StatsReport>,
    pub provisional: Vec<usize>,
}

/// Tracked sessions grouped by (start truncated to the window, user,
/// workspace, agent, access method, slug or port).
#[derive(Debug)]
pub struct Rollup {
    window: Duration,
    window_ns: i64,
    weights: Weights,
    hasher: RandomState,
    groups: HashTable<Group>,
    slugs: Slugs,
    /// Sessions open or waiting to be reported.
    live: usize,
    /// Sessions done and kept only to recognise replays.
    done: usize,
    /// Groups whose rolled-up record changed outside a rollup.
    changed_groups: usize,
}

impl Rollup {
    /// A rollup whose accounting counts in [`Weights::UNITS`].
    ///
    /// # Panics
    /// If `window` is not positive, or longer than 100 years.
    pub fn new(window: Duration) -> Self {
        Self::with_weights(window, Weights::UNITS)
    }

    /// A rollup whose accounting ([`Rollup::reserved_units`]) weighs what it
    /// holds with `weights`.
    ///
    /// # Panics
    /// If `window` is not positive, or longer than 100 years.
    pub fn with_weights(window: Duration, weights: Weights) -> Self {
        assert!(window.is_positive(), "rollup window must be positive");
        assert!(
            window <= Duration::days(36_525),
            "rollup window must be at most 100 years"
        );
        Self {
            window,
            window_ns: window.whole_nanoseconds() as i64,
            weights,
            hasher: RandomState::default(),
            groups: HashTable::new(),
            slugs: Slugs::default(),
            live: 0,
            done: 0,
            changed_groups: 0,
        }
    }

    /// The rollup window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Tracks a report: a session seen for the first time joins its group,
    /// a later report of it moves its end and requests forward, each on its
    /// own ([`StatsReport::merge_forward`]).
    pub fn collect(&mut self, report: StatsReport) {
        self.collect_within(&report, usize::MAX);
    }

    /// Like [`Rollup::collect`], but refuses a report whose tracking would
    /// take [`Rollup::reserved_units`] past `budget`: a new session
    /// ([`Weights::new_session`], [`Weights::new_group`] with a new group),
    /// a later report of a session already reported alone (a row), or more
    /// requests for a rolled-up session (a row per group). Updates of live
    /// sessions are always taken.
    pub fn collect_within(&mut self, report: &StatsReport, budget: usize) -> Collected {
        let slug = self.slugs.intern(&self.hasher, &report.slug_or_port);
        let outcome = match Prepared::new(report, slug, self.window_ns, &self.hasher) {
            Some(p) => self.apply(&p, budget),
            None => Collected::Dropped,
        };
        if outcome != Collected::New {
            // Forgotten again unless a group already used it.
            self.slugs.sweep_one(slug);
        }
        outcome
    }

    fn apply(&mut self, p: &Prepared, budget: usize) -> Collected {
        let reserved = self.reserved_units();
        let Some(group) = self.groups.find_mut(p.hash, |g| g.key.matches(p)) else {
            if reserved.saturating_add(self.weights.new_group()) > budget {
                return Collected::Dropped;
            }
            let start = OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.group_ns))
                .expect("a nanosecond timestamp in i64 is a valid time");
            let mut group = Group::new(p.hash, p.key(), start);
            group.push(&self.hasher, p.session());
            self.groups.insert_unique(p.hash, group, |g| g.hash);
            self.slugs.add_group(p.slug);
            self.live += 1;
            return Collected::New;
        };
        let Some(slot) = group.find(&self.hasher, p.session_id) else {
            if reserved.saturating_add(self.weights.new_session()) > budget {
                return Collected::Dropped;
            }
            group.push(&self.hasher, p.session());
            self.live += 1;
            return Collected::New;
        };
        let session = &mut group.sessions[slot];
        // The store's rule (`StatsReport::merge_forward`): end and requests
        // each move forward on their own (an open end is the smallest), so
        // replays and reordered reports change nothing and none is lost.
        let end_off = session.end_off.max(p.end_off);
        let requests = session.requests.max(p.requests);
        if end_off == session.end_off && requests == session.requests {
            return Collected::Unchanged;
        }
        match &mut session.state {
            State::Unreported | State::Alone { due: true, .. } => {}
            State::RolledUp => {
                // Already counted in the rolled-up record: add only what is new.
                let added = requests - session.requests;
                if added > 0 && !group.rolled_changed {
                    if reserved.saturating_add(self.weights.row) > budget {
                        return Collected::Dropped;
                    }
                    group.rolled_changed = true;
                    self.changed_groups += 1;
                }
                if let Some(rolled) = &mut group.rolled {
                    rolled.requests += added;
                }
            }
            State::Alone { due, .. } => {
                // Reported and done: it becomes live again to report the news.
                if reserved.saturating_add(self.weights.row) > budget {
                    return Collected::Dropped;
                }
                *due = true;
                group.live += 1;
                self.live += 1;
                self.done -= 1;
            }
        }
        session.end_off = end_off;
        session.requests = requests;
        Collected::Updated
    }

    /// One flush's worth of rows at `now`, in no particular order: every
    /// changed rolled-up record, every session to report alone (an open one
    /// older than the window with `now` as its provisional end); groups with
    /// nothing left to report go once two windows have passed since their
    /// start.
    pub fn rollup(&mut self, now: OffsetDateTime) -> Vec<StatsReport> {
        self.rollup_rows(now, false).rows
    }

    /// The final rollup on close: like [`Rollup::rollup`], but open sessions
    /// of any age are reported with `now` as their provisional end.
    pub fn rollup_final(&mut self, now: OffsetDateTime) -> Vec<StatsReport> {
        self.rollup_rows(now, true).rows
    }

    /// Sessions currently held: open, waiting to be reported, or done and
    /// kept until their group goes so that replays are recognised.
    pub fn tracked_sessions(&self) -> usize {
        self.live + self.done
    }

    /// Groups currently held.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// What is held, counted by kind: kept by counters that every change
    /// updates (the tests hold them to the reference's count over all
    /// groups), read in O(1).
    pub fn held(&self) -> Held {
        Held {
            sessions: self.live + self.done,
            live: self.live,
            groups: self.groups.len(),
            changed_groups: self.changed_groups,
        }
    }

    /// The weights this rollup's accounting counts in.
    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Worst-case memory of what is held, in the weights' unit
    /// ([`Weights::of`] of [`Rollup::held`]): every session and group, and
    /// the row each live session and each changed group's record may yet
    /// leave in a failed flush's backlog.
    ///
    /// Exact, not an estimate, in O(1). The collector's memory cap rests on
    /// two facts: collecting within a budget never takes this past the
    /// budget (live updates aside, which add nothing), and a rollup never
    /// increases this plus the weight of the rows it returns, provisional
    /// rows aside (the collector does not keep those: the next rollup
    /// reports those sessions again).
    pub fn reserved_units(&self) -> usize {
        self.weights.of(self.held())
    }

    /// Checks the counters against the groups.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let (mut live, mut done) = (0, 0);
        for g in &self.groups {
            let g_live = g.sessions.iter().filter(|s| s.is_live()).count();
            assert_eq!(g.live as usize, g_live);
            assert!(!g.sessions.is_empty());
            live += g_live;
            done += g.sessions.len() - g_live;
            for s in g.sessions.iter().filter(|s| !s.is_live()) {
                assert!(s.end_off.is_some(), "session {} done while open", s.id);
            }
        }
        assert_eq!((live, done), (self.live, self.done));
        let changed = self.groups.iter().filter(|g| g.rolled_changed).count();
        assert_eq!(changed, self.changed_groups);
        let mut slugs: Vec<u32> = self.groups.iter().map(|g| g.key.slug).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(
            slugs.len(),
            self.slugs.len(),
            "every interned slug is used by a group"
        );
    }
}
