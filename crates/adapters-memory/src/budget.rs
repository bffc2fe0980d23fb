//! The store's memory budget: what it holds, charged in bytes against a
//! limit, and the refusal of a write that would pass it.
//!
//! Each kept thing is charged at a fixed size when it is created and
//! given back when it is deleted, so the bytes charged are always the sum
//! over what is held ([`held_bytes`] below says how much each thing costs).
//! The sizes are RSS measured at the worst point of a hash table's growth
//! (just after it doubled), rounded up: `cargo run --release -p
//! tally-adapters-memory --example bytes_per_row` measures them (figures in
//! BENCHMARKS.md, "What the in-memory store's rows cost").
//!
//! A write of raw rows also reserves room for the usage rollup rows the next
//! tick may create from it (one per hour each row covers, an upper bound);
//! the tick charges what it created and gives the reservation back. So the
//! charges plus the reservations never pass the limit after a write, and a
//! tick stays within the room reserved for it.
//!
//! A write that does not fit is refused whole as [`StoreError::Unavailable`]:
//! to its caller the store is like a database that is down (the collector
//! keeps its rows and retries), until retention deletes rows and makes room.

use parking_lot::Mutex;
use tally_domain::appstats::StatsReport;
use tally_domain::error::StoreError;
use tally_domain::usage::minutes::hour_of;
use tally_domain::usage::rollup::HourlyRollup;
use time::OffsetDateTime;

/// RSS of one raw app stat row: its entry in the row table (key, row, the
/// table's slack), its key in the start-hour index; its slug's bytes come on
/// top (measured worst 541 with a 5-byte slug).
pub const RAW_ROW_BYTES: u64 = 560;
/// RSS of one usage rollup row (user, app, hour) in its hour's table; its
/// slug's bytes come on top (measured 173 to 203 with a 5-byte slug).
pub const ROLLUP_ROW_BYTES: u64 = 200;
/// RSS of one workspace's last-used time (measured worst 148).
pub const LAST_USED_BYTES: u64 = 150;
/// RSS of one distinct workspace or user id of the current telemetry period
/// (measured worst 40).
pub const BOUNDARY_ID_BYTES: u64 = 40;

/// What a raw row costs while it is held.
pub fn raw_row_bytes(row: &StatsReport) -> u64 {
    RAW_ROW_BYTES + row.slug_or_port.len() as u64
}

/// What a usage rollup row with this slug costs while it is held.
pub fn rollup_row_bytes(slug: &str) -> u64 {
    ROLLUP_ROW_BYTES + slug.len() as u64
}

/// What every rollup row held costs.
pub fn rollup_bytes(rollup: &HourlyRollup) -> u64 {
    ROLLUP_ROW_BYTES * rollup.len() as u64 + rollup.slug_bytes() as u64
}

/// Room reserved for the rollup rows a row with `slug` may add in hours
/// `from_hour` to the hour of `end`, both included: one per hour, an upper
/// bound (rows of one user and app share an hour's rollup row).
pub fn rollup_reservation(slug: &str, from_hour: i64, end: OffsetDateTime) -> u64 {
    let hours = (hour_of(end) - from_hour + 1).max(0) as u64;
    hours * rollup_row_bytes(slug)
}

/// How much of its budget the store uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes charged for what the store holds now.
    pub held_bytes: u64,
    /// Bytes reserved for rollup rows the next tick may create.
    pub reserved_bytes: u64,
    /// The limit (`u64::MAX`: none).
    pub limit_bytes: u64,
    /// Writes refused because they did not fit.
    pub refused_writes: u64,
}

#[derive(Debug)]
pub(crate) struct Budget {
    state: Mutex<Charges>,
}

#[derive(Debug, Default)]
struct Charges {
    limit: u64,
    held: u64,
    reserved: u64,
    refused: u64,
    /// The last write was refused; a warning is logged once per spell.
    full: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            state: Mutex::new(Charges {
                limit,
                ..Charges::default()
            }),
        }
    }

    /// A new limit; what is held already stays (a write refuses while the
    /// charges pass it).
    pub(crate) fn set_limit(&self, limit: u64) {
        self.state.lock().limit = limit;
    }

    /// Charges `held` and reserves `reserve` bytes if both fit beside what is
    /// charged and reserved; else refuses, changing nothing but the count of
    /// refusals. `what` names the write in the error.
    pub(crate) fn take(
        &self,
        held: u64,
        reserve: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let need = held.saturating_add(reserve);
        if need == 0 {
            // Adds nothing (an upsert that covers no new hour): always fits.
            return Ok(());
        }
        let mut c = self.state.lock();
        let used = c.held.saturating_add(c.reserved);
        if used.saturating_add(need) > c.limit {
            c.refused += 1;
            if !c.full {
                c.full = true;
                tracing::warn!(
                    used_bytes = used,
                    needed_bytes = need,
                    limit_bytes = c.limit,
                    "in-memory store full: refusing writes until retention deletes rows \
                     (its share of --max-memory; a long-running replica wants --database-url)"
                );
            }
            return Err(StoreError::unavailable(format!(
                "in-memory store full: {} needs {need} bytes, {} of its {} bytes are free; \
                 retention makes room",
                what(),
                c.limit.saturating_sub(used),
                c.limit
            )));
        }
        c.held += held;
        c.reserved += reserve;
        if std::mem::take(&mut c.full) {
            tracing::info!("in-memory store takes writes again");
        }
        Ok(())
    }

    /// Gives back the charges of deleted things.
    pub(crate) fn give_back(&self, held: u64) {
        let mut c = self.state.lock();
        c.held -= held;
    }

    /// A rollup tick: every reservation is given back, the rows it created
    /// are charged.
    pub(crate) fn settle_tick(&self, created: u64) {
        let mut c = self.state.lock();
        c.reserved = 0;
        c.held += created;
    }

    pub(crate) fn usage(&self) -> MemoryUse {
        let c = self.state.lock();
        MemoryUse {
            held_bytes: c.held,
            reserved_bytes: c.reserved,
            limit_bytes: c.limit,
            refused_writes: c.refused,
        }
    }
}
