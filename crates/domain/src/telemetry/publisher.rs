//! The outbox publisher: unpublished snapshots go to the sink, once each.
//!
//! A snapshot is claimed for a lease before it is sent, so two replicas do
//! not publish it at once; a sink failure gives the claim back (with the
//! error and an attempt count) for a later round, a success marks it
//! published for good.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::StoreError;
use crate::ports::{SnapshotSink, TelemetryStore};

/// How long a claim on a snapshot lasts before another replica may retry it.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::minutes(1);

/// What one publishing round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishRound {
    pub published: usize,
    pub failed: usize,
}

/// Claims unpublished snapshots and sends each to the sink; a failure gives
/// the claim back so a later round retries it.
///
/// A store error ends the round at once and is returned; snapshots still
/// claimed by it become free again when their lease expires. If marking a
/// delivered snapshot fails it is delivered again later: delivery is at
/// least once, and the snapshot id lets the receiver drop a repeat.
pub async fn publish_pending<S: TelemetryStore + ?Sized, K: SnapshotSink + ?Sized>(
    store: &S,
    sink: &K,
    claimer: Uuid,
    now: OffsetDateTime,
    lease: Duration,
    limit: usize,
) -> Result<PublishRound, StoreError> {
    let mut round = PublishRound::default();
    if limit == 0 {
        return Ok(round);
    }
    let claimed = store
        .claim_unpublished_snapshots(claimer, now, lease, limit)
        .await?;
    for snapshot in &claimed {
        match sink.publish(snapshot).await {
            Ok(()) => {
                store.mark_snapshot_published(snapshot.id, claimer, now).await?;
                round.published += 1;
            }
            Err(error) => {
                tracing::warn!(
                    snapshot_id = %snapshot.id,
                    attempts = snapshot.publish_attempts + 1,
                    %error,
                    "publishing telemetry snapshot failed; will retry"
                );
                store
                    .release_snapshot_claim(snapshot.id, claimer, &error.to_string())
                    .await?;
                round.failed += 1;
            }
        }
    }
    Ok(round)
}
