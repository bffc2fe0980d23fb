//! One rollup pass over the groups.

use time::{Duration, OffsetDateTime};

use super::group::{Group, GroupKey, RolledUp, Session, State, clamp_off};
use super::slugs::Slugs;
use super::{Rollup, RollupRows};
use crate::appstats::StatsReport;

impl Rollup {
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
        };
        let slugs = &mut self.slugs;
        self.groups.retain(|g| {
            let keep = pass.group(g, slugs, &mut out);
            if !keep {
                slugs.remove_group(g.key.slug);
            }
            keep
        });
        self.live -= pass.finished;
        self.done = self.done + pass.finished - pass.released;
        self.changed_groups -= pass.changed_seen;
        out
    }
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
}

impl Pass {
    /// Reports what the group has to report; whether the group stays.
    fn group(&mut self, g: &mut Group, slugs: &Slugs, out: &mut RollupRows) -> bool {
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
            for s in g.sessions.iter_mut().filter(|s| s.is_live()) {
                match (s.state, s.end_off) {
                    // Closed, short and never reported alone: rolled up.
                    (State::Unreported, Some(end)) if end.saturating_sub(s.start_off) <= window_ns => {
                        let r = rolled.get_or_insert(RolledUp {
                            session_id: s.id,
                            requests: 0,
                            sessions: 0,
                        });
                        r.requests += s.requests;
                        r.sessions += 1;
                        s.state = State::RolledUp;
                        changed = true;
                    }
                    // Open and young: it may yet close short.
                    (State::Unreported, None)
                        if !self.is_final && now_off.saturating_sub(s.start_off) <= window_ns =>
                    {
                        still_live += 1;
                    }
                    // Open: reported with `now` as its provisional end, again
                    // at every rollup until its close is reported.
                    (_, None) => {
                        let end = now_off.max(s.start_off);
                        s.state = State::Alone {
                            due: true,
                            last_end_off: end,
                        };
                        still_live += 1;
                        out.provisional.push(out.rows.len());
                        out.rows.push(row(&g.key, slug, g.start, s, end));
                    }
                    (state, Some(end)) => {
                        let end = match state {
                            State::Alone { last_end_off, .. } => end.max(last_end_off),
                            _ => end,
                        };
                        s.state = State::Alone {
                            due: false,
                            last_end_off: end,
                        };
                        out.rows.push(row(&g.key, slug, g.start, s, end));
                    }
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
        let keep = g.live > 0 || now_off.saturating_sub(window_ns) <= window_ns;
        if !keep {
            self.released += g.sessions.len();
        }
        keep
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
        sessions: 1,
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
        sessions: r.sessions,
    }
}
