//! Compact storage of one rollup group: the key fields once, and a small
//! record per session (times as nanosecond offsets from the group's start).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::appstats::{AccessMethod, StatsReport};

/// `end_off` of a session that is still open; sorts before every end time,
/// like `None` before `Some` in [`StatsReport::apply_guarded`].
pub(super) const OPEN: i64 = i64::MIN;

/// Groups up to this size are searched linearly; bigger ones get an index.
const LINEAR_MAX: usize = 16;

pub(super) type FastState = foldhash::fast::RandomState;

/// Session record states, as bit flags.
pub(super) mod flags {
    /// Reported on its own at least once: never rolled up afterwards.
    pub const INDIVIDUAL: u8 = 1;
    /// Closed and fully reported (rolled up or reported alone); kept only to
    /// recognise replays until its group is dropped.
    pub const DONE: u8 = 2;
    /// Its requests are in the group's rolled-up record.
    pub const ROLLED: u8 = 4;
}

/// One session inside a group: 56 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub id: Uuid,
    /// Nanoseconds from the group's start to the session's start.
    pub start_off: i64,
    /// Nanoseconds from the group's start to the session's end, or [`OPEN`].
    pub end_off: i64,
    /// The latest provisional end reported for it while open, or `i64::MIN`.
    /// Its closed row never ends earlier: the store's guarded rule would
    /// refuse a row whose end moved backwards, and its requests with it.
    pub floor_off: i64,
    pub requests: u64,
    pub flags: u8,
}

impl Session {
    pub fn is_open(&self) -> bool {
        self.end_off == OPEN
    }

    pub fn is_done(&self) -> bool {
        self.flags & flags::DONE != 0
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The group's rolled-up record.
#[derive(Debug, Clone, Copy)]
pub(super) struct RolledUp {
    /// Borrowed from the first session rolled into it.
    pub session_id: Uuid,
    pub requests: u64,
}

/// The fields shared by every session of a group, which is also the
/// database's unique key of a rolled-up row.
#[derive(Debug)]
pub(super) struct GroupKey {
    /// Start truncated to the window, in Unix nanoseconds.
    pub start_ns: i128,
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub access_method: AccessMethod,
    pub slug_or_port: Arc<str>,
}

impl GroupKey {
    pub fn matches(&self, start_ns: i128, r: &StatsReport) -> bool {
        self.start_ns == start_ns
            && self.user_id == r.user_id
            && self.workspace_id == r.workspace_id
            && self.agent_id == r.agent_id
            && self.access_method == r.access_method
            && *self.slug_or_port == *r.slug_or_port
    }
}

/// Hash of a group key given as the report's fields, so lookups need no
/// allocation. Stored in the group, so rehashing never recomputes it.
pub(super) fn key_hash(state: &FastState, start_ns: i128, r: &StatsReport) -> u64 {
    let mut h = state.build_hasher();
    h.write_i128(start_ns);
    r.user_id.hash(&mut h);
    r.workspace_id.hash(&mut h);
    r.agent_id.hash(&mut h);
    h.write_u8(r.access_method as u8);
    h.write(r.slug_or_port.as_bytes());
    h.finish()
}

fn id_hash(state: &FastState, id: &Uuid) -> u64 {
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

    pub fn find(&self, state: &FastState, id: Uuid) -> Option<usize> {
        if self.sessions.len() <= LINEAR_MAX {
            return self.sessions.iter().position(|s| s.id == id);
        }
        let sessions = &self.sessions;
        self.index
            .find(id_hash(state, &id), |&slot| sessions[slot as usize].id == id)
            .map(|&slot| slot as usize)
    }

    pub fn push(&mut self, state: &FastState, session: Session) {
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
                self.index.insert_unique(id_hash(state, &s.id), slot as u32, hasher);
            }
        }
        let slot = (len - 1) as u32;
        self.index
            .insert_unique(id_hash(state, &sessions[len - 1].id), slot, hasher);
    }
}
