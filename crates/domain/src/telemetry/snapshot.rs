//! The snapshot step of SPEC §4: once per period, one replica closes it.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Period, Snapshot};
use crate::error::StoreError;
use crate::ports::TelemetryStore;

/// Tries to close the period that ended last before `now`. Returns the
/// snapshot if this replica won the lock, `None` if another one had.
pub async fn snapshot_step<S: TelemetryStore + ?Sized>(
    store: &S,
    replica_id: Uuid,
    now: OffsetDateTime,
    interval: time::Duration,
) -> Result<Option<Snapshot>, StoreError> {
    let _ = (store, replica_id, now, interval, Period::last_ended);
    todo!("issue 2: snapshot step")
}
