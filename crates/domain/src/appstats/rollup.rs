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
#[cfg(test)]
mod tests;

use hashbrown::HashTable;
use time::{Duration, OffsetDateTime};

use self::group::{
    BufferPool, FastState, Group, GroupKey, Prepared, RolledUp, Session, Slugs, clamp_off, flags,
};
use super::StatsReport;

pub use self::batch::BatchCollected;

/// Default rollup window.
pub const DEFAULT_ROLLUP_WINDOW: Duration = Duration::minutes(1);

/// What [`Rollup::collect_within`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// A session seen for the first time joined its group.
    New,
    /// A tracked session took the report's newer end time or request count.
    Updated,
    /// The report was not newer than what is held (a replay or a reordered
    /// older report): nothing changed.
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
}

impl Rollup {
    /// # Panics
    /// If `window` is not positive, or longer than 100 years.
    pub fn new(window: Duration) -> Self {
        assert!(window.is_positive(), "rollup window must be positive");
        assert!(
            window <= Duration::days(36_525),
            "rollup window must be at most 100 years"
        );
        Self {
            window,
            window_ns: window.whole_nanoseconds() as i64,
            hasher: FastState::default(),
            groups: HashTable::new(),
            slugs: Slugs::default(),
            live: 0,
            done: 0,
            changed_groups: 0,
            scratch: batch::Scratch::default(),
            pool: BufferPool::default(),
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
        let slug = self.slugs.intern(&self.hasher, &report.slug_or_port);
        let outcome = match Prepared::new(report, slug, self.window_ns, &self.hasher) {
            Some(p) => self.apply(&p, budget),
            None => Collected::Dropped,
        };
        if outcome != Collected::New {
            self.slugs.sweep_one(slug);
        }
        outcome
    }

    fn apply(&mut self, p: &Prepared, budget: usize) -> Collected {
        let reserved = self.reserved_units();
        let Some(group) = self.groups.find_mut(p.hash, |g| g.key.matches(p)) else {
            if reserved.saturating_add(3) > budget {
                return Collected::Dropped;
            }
            let start = OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.group_ns))
                .expect("a nanosecond timestamp in i64 is a valid time");
            let mut group = Group::new(p.hash, p.key(), start, self.pool.take());
            group.push(&self.hasher, p.session());
            self.groups.insert_unique(p.hash, group, |g| g.hash);
            self.slugs.add_group(p.slug);
            self.live += 1;
            self.pool.note_held(self.live + self.done);
            return Collected::New;
        };
        let Some(slot) = group.find(&self.hasher, p.session_id) else {
            if reserved.saturating_add(2) > budget {
                return Collected::Dropped;
            }
            group.push(&self.hasher, p.session());
            self.live += 1;
            self.pool.note_held(self.live + self.done);
            return Collected::New;
        };
        let session = &mut group.sessions[slot];
        // The store's guarded rule: only a report that is not older and not
        // smaller replaces what is held, so replays change nothing.
        if p.end_off < session.end_off || p.requests < session.requests {
            return Collected::Unchanged;
        }
        if p.end_off == session.end_off && p.requests == session.requests {
            return Collected::Unchanged;
        }
        if !session.is_done() {
            session.end_off = p.end_off;
            session.requests = p.requests;
            return Collected::Updated;
        }
        if session.has(flags::ROLLED) {
            // Already counted in the rolled-up record: add only what is new.
            let added = p.requests - session.requests;
            if added > 0 && !group.rolled_changed {
                if reserved.saturating_add(1) > budget {
                    return Collected::Dropped;
                }
                group.rolled_changed = true;
                self.changed_groups += 1;
            }
            session.end_off = p.end_off;
            session.requests = p.requests;
            if let Some(rolled) = &mut group.rolled {
                rolled.requests += added;
            }
            return Collected::Updated;
        }
        // Reported alone and done: it becomes live again to report the news.
        if reserved.saturating_add(1) > budget {
            return Collected::Dropped;
        }
        session.end_off = p.end_off;
        session.requests = p.requests;
        session.flags &= !flags::DONE;
        group.live += 1;
        self.live += 1;
        self.done -= 1;
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

    pub(crate) fn rollup_rows(&mut self, now: OffsetDateTime, is_final: bool) -> RollupRows {
        // An upper bound; pages never written cost nothing.
        let mut out = RollupRows {
            rows: Vec::with_capacity(self.live + self.groups.len()),
            provisional: Vec::new(),
        };
        let mut pass = Pass {
            now_ns: now.unix_timestamp_nanos(),
            window_ns: self.window_ns,
            window: self.window,
            is_final,
            finished: 0,
            released: 0,
            changed_seen: 0,
            emptied: 0,
        };
        let mut batch: Vec<&mut Group> = Vec::with_capacity(TOUCH_AHEAD);
        let mut groups = self.groups.iter_mut();
        loop {
            batch.clear();
            batch.extend(groups.by_ref().take(TOUCH_AHEAD));
            if batch.is_empty() {
                break;
            }
            touch(&batch);
            for g in &mut batch {
                pass.group(g, &self.slugs, &mut self.pool, &mut out);
            }
        }
        drop(batch);
        if pass.emptied > 0 {
            let slugs = &mut self.slugs;
            self.groups.retain(|g| {
                if g.gone {
                    slugs.remove_group(g.key.slug);
                }
                !g.gone
            });
        }
        self.live -= pass.finished;
        self.done = self.done + pass.finished - pass.released;
        self.changed_groups -= pass.changed_seen;
        out
    }

    /// Checks the counters and flags against the groups.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let (mut live, mut done) = (0, 0);
        for g in &self.groups {
            let g_live = g.sessions.iter().filter(|s| !s.is_done()).count();
            assert_eq!(g.live as usize, g_live);
            assert!(!g.sessions.is_empty());
            live += g_live;
            done += g.sessions.len() - g_live;
            for s in &g.sessions {
                assert!(
                    !(s.has(flags::ROLLED) && s.has(flags::INDIVIDUAL)),
                    "session {} both rolled up and reported alone",
                    s.id
                );
                assert!(!s.has(flags::ROLLED) || s.is_done());
                assert!(!s.is_done() || !s.is_open());
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

/// Groups whose sessions are loaded together before being worked on.
const TOUCH_AHEAD: usize = 8;

/// Reads one byte of every session of the groups about to be processed, so
/// their cache misses overlap instead of stalling one group at a time.
fn touch(groups: &[&mut Group]) {
    let mut sum = 0u8;
    for g in groups.iter().filter(|g| g.live > 0) {
        for s in &g.sessions {
            sum ^= s.flags;
        }
    }
    std::hint::black_box(sum);
}

/// One rollup pass over the groups.
struct Pass {
    now_ns: i128,
    window_ns: i64,
    window: Duration,
    is_final: bool,
    /// Sessions that became done.
    finished: usize,
    /// Done sessions freed with their group.
    released: usize,
    changed_seen: usize,
    emptied: usize,
}

impl Pass {
    fn group(&mut self, g: &mut Group, slugs: &Slugs, pool: &mut BufferPool, out: &mut RollupRows) {
        let window_ns = self.window_ns;
        let now_off = clamp_off(self.now_ns - i128::from(g.key.start_ns));
        if g.live > 0 || g.rolled_changed {
            let slug = slugs.text(g.key.slug);
            let mut changed = std::mem::take(&mut g.rolled_changed);
            if changed {
                self.changed_seen += 1;
            }
            let mut rolled = g.rolled;
            let mut still_live = 0;
            for s in g.sessions.iter_mut().filter(|s| !s.is_done()) {
                if s.is_open() {
                    let young = now_off.saturating_sub(s.start_off) <= window_ns;
                    if young && !self.is_final && !s.has(flags::INDIVIDUAL) {
                        still_live += 1;
                        continue;
                    }
                    s.flags |= flags::INDIVIDUAL;
                    still_live += 1;
                    s.floor_off = now_off.max(s.start_off);
                    out.provisional.push(out.rows.len());
                    out.rows.push(row(&g.key, slug, g.start, s, s.floor_off));
                } else if !s.has(flags::INDIVIDUAL) && s.end_off.saturating_sub(s.start_off) <= window_ns {
                    let r = rolled.get_or_insert(RolledUp {
                        session_id: s.id,
                        requests: 0,
                    });
                    r.requests += s.requests;
                    s.flags |= flags::DONE | flags::ROLLED;
                    changed = true;
                } else {
                    s.flags |= flags::DONE | flags::INDIVIDUAL;
                    out.rows
                        .push(row(&g.key, slug, g.start, s, s.end_off.max(s.floor_off)));
                }
            }
            self.finished += (g.live - still_live) as usize;
            g.live = still_live;
            g.rolled = rolled;
            if changed && let Some(r) = rolled {
                out.rows.push(rolled_row(&g.key, slug, g.start, r, self.window));
            }
        }
        // Late data may still come for one more window after the
        // rolled-up record's end.
        if g.live == 0 && now_off.saturating_sub(window_ns) > window_ns {
            let sessions = g.release();
            self.released += sessions.len();
            pool.give(sessions);
            self.emptied += 1;
        }
    }
}

fn nanos(off: i64) -> Duration {
    Duration::nanoseconds(off)
}

fn row(key: &GroupKey, slug: &str, start: OffsetDateTime, s: &Session, end_off: i64) -> StatsReport {
    StatsReport {
        user_id: key.user_id,
        workspace_id: key.workspace_id,
        agent_id: key.agent_id,
        access_method: key.access_method,
        slug_or_port: slug.to_owned(),
        session_id: s.id,
        session_started_at: start + nanos(s.start_off),
        session_ended_at: Some(start + nanos(end_off)),
        requests: s.requests,
    }
}

fn rolled_row(
    key: &GroupKey,
    slug: &str,
    start: OffsetDateTime,
    r: RolledUp,
    window: Duration,
) -> StatsReport {
    StatsReport {
        user_id: key.user_id,
        workspace_id: key.workspace_id,
        agent_id: key.agent_id,
        access_method: key.access_method,
        slug_or_port: slug.to_owned(),
        session_id: r.session_id,
        session_started_at: start,
        session_ended_at: Some(start + window),
        requests: r.requests,
    }
}
