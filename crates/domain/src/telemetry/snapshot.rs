//! The snapshot step: once per period, one replica closes it
//! (docs/rules.md#closing-a-period).
//!
//! Every replica runs this each interval; the store's period lock lets one
//! win. The winner's store call takes the lock, reads and resets the period's
//! totals and writes the snapshot to the outbox in one atomic step, so the
//! snapshot survives a crash or a sink outage and is published from there.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{BOUNDARY_USAGE_EVENT, Period, PeriodClose, PeriodCloseOutcome, Snapshot};
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
    if interval <= time::Duration::ZERO {
        return Err(StoreError::invalid(format!(
            "snapshot interval must be positive, got {interval}"
        )));
    }
    let close = PeriodClose {
        event_type: BOUNDARY_USAGE_EVENT.to_owned(),
        period: Period::last_ended(now, interval),
        snapshot_id: Uuid::new_v4(),
        replica_id,
        now,
    };
    match store.close_period(&close).await? {
        PeriodCloseOutcome::Closed(snapshot) => {
            tracing::info!(
                snapshot_id = %snapshot.id,
                period_end = %close.period.end,
                "closed telemetry period"
            );
            Ok(Some(snapshot))
        }
        PeriodCloseOutcome::AlreadyClosed => Ok(None),
    }
}
