//! The rollup state machine of SPEC §2: pure, driven by the `now` it is given.
//!
//! Sessions live in their group (start truncated to the window, user,
//! workspace, agent, access method, slug or port). A session's reports all
//! carry the start and identity the proxy fixed when the session began, so a
//! report's own fields name its group, and the session is found by id inside
//! it. Each group keeps its key once (the slug interned) and a 56-byte record
//! per session. Batches are applied group by group for cache locality.

mod batch;
mod group;
mod pass;
pub mod reference;
mod storage;
#[cfg(test)]
mod tests;

use hashbrown::HashTable;
use time::{Duration, OffsetDateTime};

use self::group::{FastState, Group, LINEAR_MAX, Prepared, State};
use self::storage::{BufferPool, Slugs};
use super::StatsReport;

pub use self::batch::BatchCollected;

/// Switches that turn one optimization off each, to measure what it buys
/// end to end (the `rollup_end_to_end` benchmark). All on by default.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Ablation {
    pub intern_slugs: bool,
    pub buffer_pool: bool,
    pub bucket_sort: bool,
    pub touch_ahead: bool,
    pub small_group_scan: bool,
    pub foldhash: bool,
}

impl Default for Ablation {
    fn default() -> Self {
        Self {
            intern_slugs: true,
            buffer_pool: true,
            bucket_sort: true,
            touch_ahead: true,
            small_group_scan: true,
            foldhash: true,
        }
    }
}

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
    hasher: FastState,
    groups: HashTable<Group>,
    slugs: Slugs,
    /// Sessions open or waiting to be reported.
    live: usize,
    /// Sessions done and kept only to recognise replays.
    done: usize,
    /// Groups whose rolled-up record changed outside a rollup.
    changed_groups: usize,
    /// Scratch buffers of batch collection, kept to avoid page faults.
    scratch: batch::Scratch,
    pool: BufferPool,
    ablation: Ablation,
    linear_max: usize,
}

impl Rollup {
    /// # Panics
    /// If `window` is not positive, or longer than 100 years.
    pub fn new(window: Duration) -> Self {
        Self::with_ablation(window, Ablation::default())
    }

    #[doc(hidden)]
    pub fn with_ablation(window: Duration, ablation: Ablation) -> Self {
        assert!(window.is_positive(), "rollup window must be positive");
        assert!(
            window <= Duration::days(36_525),
            "rollup window must be at most 100 years"
        );
        Self {
            window,
            window_ns: window.whole_nanoseconds() as i64,
            hasher: if ablation.foldhash {
                FastState::default()
            } else {
                FastState::Sip(Default::default())
            },
            groups: HashTable::new(),
            slugs: Slugs::default(),
            live: 0,
            done: 0,
            changed_groups: 0,
            scratch: batch::Scratch::default(),
            pool: BufferPool::new(!ablation.buffer_pool),
            ablation,
            linear_max: if ablation.small_group_scan { LINEAR_MAX } else { 0 },
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Tracks a report by session id (see SPEC §2 "Collect").
    pub fn collect(&mut self, report: StatsReport) {
        self.collect_within(&report, usize::MAX);
    }

    /// Like [`Rollup::collect`], but refuses a report whose tracking would
    /// take [`Rollup::reserved_units`] past `budget`: a new session (two
    /// units, three with a new group), a later report of a session already
    /// reported alone (one unit), or more requests for a rolled-up session
    /// (one unit per group). Updates of live sessions are always taken.
    pub fn collect_within(&mut self, report: &StatsReport, budget: usize) -> Collected {
        if !self.ablation.intern_slugs {
            return match Prepared::new(report, 0, self.window_ns, &self.hasher, true) {
                Some(p) => self.apply(&p, budget, Some(&report.slug_or_port)),
                None => Collected::Dropped,
            };
        }
        let slug = self.slugs.intern(&self.hasher, &report.slug_or_port);
        let outcome = match Prepared::new(report, slug, self.window_ns, &self.hasher, false) {
            Some(p) => self.apply(&p, budget, None),
            None => Collected::Dropped,
        };
        if outcome != Collected::New {
            self.slugs.sweep_one(slug);
        }
        outcome
    }

    /// `text`: the report's slug, when slugs are not interned.
    fn apply(&mut self, p: &Prepared, budget: usize, text: Option<&str>) -> Collected {
        let reserved = self.reserved_units();
        let linear_max = self.linear_max;
        let Some(group) = self.groups.find_mut(p.hash, |g| g.key.matches(p, text)) else {
            if reserved.saturating_add(3) > budget {
                return Collected::Dropped;
            }
            let start = OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.group_ns))
                .expect("a nanosecond timestamp in i64 is a valid time");
            let mut group = Group::new(p.hash, p.key(text), start, self.pool.take());
            group.push(&self.hasher, p.session(), linear_max);
            self.groups.insert_unique(p.hash, group, |g| g.hash);
            if text.is_none() {
                self.slugs.add_group(p.slug);
            }
            self.live += 1;
            self.pool.note_held(self.live + self.done);
            return Collected::New;
        };
        let Some(slot) = group.find(&self.hasher, p.session_id, linear_max) else {
            if reserved.saturating_add(2) > budget {
                return Collected::Dropped;
            }
            group.push(&self.hasher, p.session(), linear_max);
            self.live += 1;
            self.pool.note_held(self.live + self.done);
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
                    if reserved.saturating_add(1) > budget {
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
                if reserved.saturating_add(1) > budget {
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

    /// One flush's worth of rows at `now` (see SPEC §2 "Rollup"), in no
    /// particular order.
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

    /// Worst-case memory units of what is held, counting for each live
    /// session the row it may yet leave in a failed flush's backlog, and for
    /// each group its rolled-up row: `2 × live + done + groups + changed
    /// groups`. A rollup never increases this plus the rows it returns
    /// (provisional rows aside), which is what makes a memory cap exact.
    pub fn reserved_units(&self) -> usize {
        2 * self.live + self.done + self.groups.len() + self.changed_groups
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
        let interned = self.groups.iter().filter(|g| g.key.own_slug.is_none());
        let mut slugs: Vec<u32> = interned.map(|g| g.key.slug).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(
            slugs.len(),
            self.slugs.len(),
            "every interned slug is used by a group"
        );
    }
}
