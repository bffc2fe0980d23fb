//! Compact storage of one rollup group: the key fields once, and a small
//! record per session (times as nanosecond offsets from the group's start).

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use hashbrown::HashTable;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::appstats::{AccessMethod, StatsReport};

/// Groups up to this size are searched linearly (a scan of a few records in
/// one cache line or two beats hashing); bigger ones get an index.
const LINEAR_MAX: usize = 16;

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// In no row yet: open and young, or closed and due at the next rollup.
    Unreported,
    /// In a row of its own, and never rolled up afterwards. Sent again at
    /// the next rollup if `due`: while open, and after a later report
    /// changed it. `last_end_off` is the end of the last row sent; a later
    /// row never ends earlier (the store keeps the later end anyway, so the
    /// row sent is the row stored).
    Alone { due: bool, last_end_off: i64 },
    /// Its requests are in the group's rolled-up record.
    RolledUp,
}

/// One session inside a group: 64 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub id: Uuid,
    /// Nanoseconds from the group's start to the session's start.
    pub start_off: i64,
    /// Nanoseconds from the group's start to the session's end; `None`
    /// while open, which orders before every end as in
    /// [`StatsReport::merge_forward`].
    pub end_off: Option<i64>,
    pub requests: u64,
    pub state: State,
}

impl Session {
    /// Whether it has a row still to send; the others are kept only to
    /// recognise replays until their group goes.
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Unreported | State::Alone { due: true, .. })
    }
}

/// The group's rolled-up record.
#[derive(Debug, Clone, Copy)]
pub(super) struct RolledUp {
    /// Borrowed from the first session rolled into it.
    pub session_id: Uuid,
    pub requests: u64,
    /// Sessions rolled into it.
    pub sessions: u64,
}

/// The fields shared by every session of a group, which is also the
/// database's unique key of a rolled-up row.
#[derive(Debug)]
pub(super) struct GroupKey {
    /// Start truncated to the window, in Unix nanoseconds.
    pub start_ns: i64,
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub access_method: AccessMethod,
    /// Interned in [`super::slugs::Slugs`].
    pub slug: u32,
}

impl GroupKey {
    pub fn matches(&self, p: &Prepared) -> bool {
        self.start_ns == p.group_ns
            && self.user_id == p.user_id
            && self.workspace_id == p.workspace_id
            && self.agent_id == p.agent_id
            && self.access_method == p.access_method
            && self.slug == p.slug
    }
}

/// A report reduced to what the rollup needs, its group's hash computed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prepared {
    pub hash: u64,
    pub group_ns: i64,
    pub start_off: i64,
    pub end_off: Option<i64>,
    pub requests: u64,
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub session_id: Uuid,
    pub slug: u32,
    pub access_method: AccessMethod,
}

impl Prepared {
    /// `None` if the start is outside the nanosecond range (years 1678 to 2262).
    /// `slug` is the report's interned slug.
    pub fn new(r: &StatsReport, slug: u32, window_ns: i64, state: &RandomState) -> Option<Self> {
        let start_ns = i64::try_from(r.session_started_at.unix_timestamp_nanos()).ok()?;
        // The floor of `crate::telemetry::truncate`, in integers.
        let group_ns = start_ns.checked_sub(start_ns.rem_euclid(window_ns))?;
        let end_off = r
            .session_ended_at
            .map(|end| clamp_off(end.unix_timestamp_nanos() - i128::from(group_ns)));
        let hash = state.hash_one((
            group_ns,
            r.user_id.as_u128(),
            r.workspace_id.as_u128(),
            r.agent_id.as_u128(),
            r.access_method as u8,
            slug,
        ));
        Some(Self {
            hash,
            group_ns,
            start_off: start_ns - group_ns,
            end_off,
            requests: r.requests,
            user_id: r.user_id,
            workspace_id: r.workspace_id,
            agent_id: r.agent_id,
            session_id: r.session_id,
            slug,
            access_method: r.access_method,
        })
    }

    pub fn key(&self) -> GroupKey {
        GroupKey {
            start_ns: self.group_ns,
            user_id: self.user_id,
            workspace_id: self.workspace_id,
            agent_id: self.agent_id,
            access_method: self.access_method,
            slug: self.slug,
        }
    }

    pub fn session(&self) -> Session {
        Session {
            id: self.session_id,
            start_off: self.start_off,
            end_off: self.end_off,
            requests: self.requests,
            state: State::Unreported,
        }
    }
}

/// Offsets beyond ±292 years from the group's start saturate.
pub(super) fn clamp_off(ns: i128) -> i64 {
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn id_hash(state: &RandomState, id: &Uuid) -> u64 {
    state.hash_one(id.as_u128())
}

#[derive(Debug)]
pub(super) struct Group {
    pub hash: u64,
    pub key: GroupKey,
    pub start: OffsetDateTime,
    pub sessions: Vec<Session>,
    /// Slots of `sessions` by session id, once the group outgrows a scan.
    index: HashTable<u32>,
    pub rolled: Option<RolledUp>,
    /// The rolled-up record changed outside a rollup (a later report of a
    /// rolled session carried more requests) and must be reported.
    pub rolled_changed: bool,
    /// Sessions not yet done (open, or closed and waiting to be reported).
    pub live: u32,
}

impl Group {
    pub fn new(hash: u64, key: GroupKey, start: OffsetDateTime) -> Self {
        Self {
            hash,
            key,
            start,
            sessions: Vec::new(),
            index: HashTable::new(),
            rolled: None,
            rolled_changed: false,
            live: 0,
        }
    }

    pub fn find(&self, state: &RandomState, id: Uuid) -> Option<usize> {
        if self.sessions.len() <= LINEAR_MAX {
            return self.sessions.iter().position(|s| s.id == id);
        }
        let sessions = &self.sessions;
        self.index
            .find(id_hash(state, &id), |&slot| sessions[slot as usize].id == id)
            .map(|&slot| slot as usize)
    }

    pub fn push(&mut self, state: &RandomState, session: Session) {
        self.sessions.push(session);
        self.live += 1;
        let len = self.sessions.len();
        if len <= LINEAR_MAX {
            return;
        }
        let sessions = &self.sessions;
        let hasher = |&slot: &u32| id_hash(state, &sessions[slot as usize].id);
        if len == LINEAR_MAX + 1 {
            self.index.reserve(len * 2, hasher);
            for (slot, s) in sessions[..len - 1].iter().enumerate() {
                self.index
                    .insert_unique(id_hash(state, &s.id), slot as u32, hasher);
            }
        }
        let slot = (len - 1) as u32;
        self.index
            .insert_unique(id_hash(state, &sessions[len - 1].id), slot, hasher);
    }
}
