//! The in-memory store: tally's embedded default.
//!
//! [`MemoryStore`] implements every store port of [`tally_domain::ports`] with
//! the observable behaviour of the PostgreSQL store, so the one conformance
//! suite in `tests/` holds both. Each port method takes one lock for its whole
//! duration, which gives the atomicity and isolation the ports promise: a
//! write is validated completely before anything changes, and a period close
//! holds the same lock as boundary flushes, so a racing flush lands wholly
//! before or wholly after it.
//!
//! # Semantics where the port docs leave room (the PostgreSQL store matches)
//!
//! - **Precision.** Every timestamp is stored truncated (floored) to whole
//!   microseconds (PostgreSQL's `timestamptz`) and returned in UTC; so are
//!   the `now` of a claim (`claimed_until = floor(floor(now) + lease)`) and
//!   the `at` of a publish. Bounds that are only compared with stored times
//!   (row ranges, the `before` of a lock prune) are compared exactly,
//!   which for whole-microsecond values is comparing with the bound rounded
//!   up to a whole microsecond.
//! - **App stats** ([`AppStatsStore::write_app_stats`]): all or nothing. The
//!   whole write is validated first; `batch_size == 0`, a row without an end
//!   time, a row ending before it starts, or a row with more than `i64::MAX`
//!   requests is [`StoreError::Invalid`] naming the row and field, and
//!   nothing is written. Rows are upserted by (user, agent, session) with
//!   [`StatsReport::merge_forward`]: end time and requests each become the
//!   larger of stored and incoming (so the order of writes never matters);
//!   an existing row keeps its other columns (workspace, method, slug,
//!   start). Two rows with the same key in one
//!   write are [`StoreError::Invalid`] naming both rows, as in PostgreSQL,
//!   which cannot upsert a key twice in one statement (the reporter merges
//!   duplicates first). `last_used` entries move a workspace's time forward only
//!   (`GREATEST`); a workspace listed twice ends at the later time.
//! - **Boundary usage** ([`BoundaryUsageStore`]): one row per replica with its
//!   counters, its last applied `seq` and the tracking range of the current
//!   period. A delta is a [`FlushOutcome::Duplicate`] if the replica has a row
//!   and `seq <= last_seq`; a replica without a row accepts any `seq`.
//!   `seq`, `allowed` or `denied` above `i64::MAX`, counters that would pass
//!   `i64::MAX`, or `tracked_to < tracked_from` are [`StoreError::Invalid`]
//!   and change nothing. The distinct ids belong to the period, not to a
//!   replica: deleting a replica removes its counters and `seq`, not the ids
//!   it contributed. The summary's `replicas` counts replicas that applied a
//!   delta in the current period; `tracked_from`/`tracked_to` are the min/max
//!   over those deltas.
//! - **Period close** ([`TelemetryStore::close_period`]): refused with
//!   `AlreadyClosed` (nothing changes) if a lock of the same event type with a
//!   period end at or after this one exists; a period with `start >= end` or
//!   a snapshot id already in the outbox is [`StoreError::Invalid`]. Otherwise
//!   the lock is recorded, the snapshot built from the summary (published
//!   `None`, zero attempts, `created_at = now`), the period reset (counters
//!   zeroed, ids cleared, ranges cleared; every replica keeps its `last_seq`),
//!   and the snapshot put in the outbox. An empty period gets a zero snapshot.
//! - **Outbox.** Claimable: unpublished and unclaimed, or `claimed_until <=
//!   now`, or claimed by the same claimer (whatever its lease); ordered by
//!   period end, then id, ascending; `claimed_until = now + lease` (see
//!   Precision). [`TelemetryStore::mark_snapshot_published`] keeps the first
//!   `published_at` and clears the claim whoever holds it;
//!   [`TelemetryStore::release_snapshot_claim`] acts only for the current
//!   claimer (otherwise it is a no-op): clears the claim, counts the attempt
//!   and keeps the error. Both do nothing for an unknown snapshot id.
//!   [`TelemetryStore::list_snapshots`] orders by period end,
//!   then id, descending. Locks are pruned when their period end is strictly
//!   before `before`.
//! - **Stored rows.** `app_stats` orders by start, session id, user id,
//!   agent id.
//!
//! - **Usage rollup** ([`UsageStore`]): writes mark the start hours they
//!   touch (an existing row's stored start); a tick rolls them up again with
//!   `tally_domain::usage::rollup`, the same rules as PostgreSQL's SQL;
//!   reads answer from the rollup only, apps ordered by unique users desc,
//!   usage desc, method name asc, slug asc (byte order, PostgreSQL's
//!   `COLLATE "C"`); the export sorts rows by start, user, agent, session; retention deletes raw rows by whole start hours (after a
//!   tick) and freezes those hours, as PostgreSQL does.
//!
//! - **Memory limit** ([`MemoryStore::with_limit`]): every raw row, rollup
//!   row, last-used time and distinct boundary id of the current period is
//!   charged at a fixed size ([`budget`]) while it is held; a write of
//!   raw rows or a boundary delta that would pass the limit is refused
//!   whole as [`StoreError::Unavailable`] (retryable, nothing changes) until
//!   retention or a period close deletes what makes room. Deletes, ticks,
//!   period closes and the outbox are never refused. [`MemoryStore::new`]
//!   has no limit.
//!
//! [`UsageStore`]: tally_domain::ports::UsageStore
//! [`StoreError::Unavailable`]: tally_domain::error::StoreError::Unavailable
//! [`AppStatsStore::write_app_stats`]: tally_domain::ports::AppStatsStore::write_app_stats
//! [`StatsReport::merge_forward`]: tally_domain::appstats::StatsReport::merge_forward
//! [`BoundaryUsageStore`]: tally_domain::ports::BoundaryUsageStore
//! [`FlushOutcome::Duplicate`]: tally_domain::boundary::FlushOutcome::Duplicate
//! [`StoreError::Invalid`]: tally_domain::error::StoreError::Invalid
//! [`TelemetryStore::close_period`]: tally_domain::ports::TelemetryStore::close_period
//! [`TelemetryStore::mark_snapshot_published`]: tally_domain::ports::TelemetryStore::mark_snapshot_published
//! [`TelemetryStore::release_snapshot_claim`]: tally_domain::ports::TelemetryStore::release_snapshot_claim
//! [`TelemetryStore::list_snapshots`]: tally_domain::ports::TelemetryStore::list_snapshots

mod appstats;
mod boundary;
pub mod budget;
#[cfg(test)]
mod tests;
mod usage;

use parking_lot::{Mutex, RwLock};
use time::{OffsetDateTime, UtcOffset};

type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

/// Every store port in memory. Share it as `Arc<MemoryStore>`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// App stat rows and last-used times; readers share it.
    apps: RwLock<appstats::AppsState>,
    /// Boundary usage, period locks and the outbox: one lock, so a period
    /// close is atomic against flushes.
    telemetry: Mutex<boundary::TelemetryState>,
    /// What it holds, in bytes, against its limit; locked inside either
    /// lock above, never the other way round.
    budget: budget::Budget,
}

impl MemoryStore {
    /// A store without a memory limit (tests, embedding).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that holds at most `max_bytes` as its [`budget`] counts them:
    /// a write that would pass it is refused as unavailable, until retention
    /// deletes rows.
    pub fn with_limit(max_bytes: u64) -> Self {
        Self {
            budget: budget::Budget::new(max_bytes),
            ..Self::default()
        }
    }

    /// Sets the limit of [`MemoryStore::with_limit`] anew.
    pub fn set_limit(&self, max_bytes: u64) {
        self.budget.set_limit(max_bytes);
    }

    /// What it holds against its limit, now.
    pub fn memory_use(&self) -> budget::MemoryUse {
        self.budget.usage()
    }
}

/// A timestamp as PostgreSQL stores it: whole microseconds, UTC.
pub(crate) fn pg_time(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000)
        .expect("dropping sub-microsecond digits keeps the nanosecond in range")
        .to_offset(UtcOffset::UTC)
}

/// The smallest whole-microsecond time not before `t`, in UTC. For a stored
/// (whole microsecond) `x`, `x < t` iff `x < pg_time_ceil(t)`, and likewise
/// for `>=`: comparing against it is comparing against `t` exactly.
pub(crate) fn pg_time_ceil(t: OffsetDateTime) -> OffsetDateTime {
    let floor = pg_time(t);
    if floor == t {
        floor
    } else {
        floor + time::Duration::microseconds(1)
    }
}

/// The largest value a PostgreSQL `bigint` column holds.
pub(crate) const PG_BIGINT_MAX: u64 = i64::MAX as u64;
