//! The outbox publisher: unpublished snapshots go to the sink, once each.
//!
//! A snapshot is claimed for a lease before it is sent, so two replicas do
//! not publish it at once; a sink failure gives the claim back (with the
//! error and an attempt count) for a later round, a success marks it
//! published for good.
//!
//! A round stops sending once half its lease has gone: a delivery started
//! before then ends (sink timeouts and retries included) well before the
//! lease does, so another replica never takes over a claim that is still
//! being sent. What the round did not reach is claimed again after the lease
//! by other replicas, and at once by the same claimer's next round.
//!
//! A claimer takes back its own claims: one replica runs one round at a
//! time, so a claim of its own that it meets was left by a round that has
//! ended (a store error mid-round, or a claim that applied on the server
//! after the call had given up on it, as after a network freeze). Waiting
//! for the lease would leave those snapshots unpublished for minutes.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::{SnapshotSink, TelemetryStore};

/// How long a claim on a snapshot lasts before another replica may retry it.
/// Half of it must exceed the sink's slowest delivery (the HTTP sink: four
/// tries of at most 10 s each).
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::minutes(5);

/// What one publishing round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishRound {
    /// Snapshots delivered and marked published.
    pub published: usize,
    /// Snapshots whose delivery failed; their claims were given back.
    pub failed: usize,
    /// Claimed but not sent: the round ran out of lease time.
    pub deferred: usize,
}

/// Claims unpublished snapshots and sends each to the sink; a failure gives
/// the claim back so a later round retries it. Each snapshot is marked
/// published at the time its delivery succeeded.
///
/// A store error ends the round at once and is returned; snapshots still
/// claimed by it go out in `claimer`'s next round (other claimers wait for
/// the lease). If marking a delivered snapshot fails it is delivered again
/// later: delivery is at least once, and the snapshot id lets the receiver
/// drop a repeat.
///
/// Never run two rounds with the same `claimer` at once: each would take
/// the other's claims.
pub async fn publish_pending<S: TelemetryStore + ?Sized, K: SnapshotSink + ?Sized>(
    store: &S,
    sink: &K,
    claimer: Uuid,
    clock: &(impl Clock + ?Sized),
    lease: Duration,
    limit: usize,
) -> Result<PublishRound, StoreError> {
    let mut round = PublishRound::default();
    if limit == 0 {
        return Ok(round);
    }
    let claimed_at = clock.now();
    let send_until: OffsetDateTime = claimed_at + lease / 2;
    let claimed = store
        .claim_unpublished_snapshots(claimer, claimed_at, lease, limit)
        .await?;
    for (sent, snapshot) in claimed.iter().enumerate() {
        if clock.now() >= send_until {
            round.deferred = claimed.len() - sent;
            tracing::warn!(
                deferred = round.deferred,
                "publishing round out of lease time; the rest waits for the lease to end"
            );
            break;
        }
        match sink.publish(snapshot).await {
            Ok(()) => {
                store
                    .mark_snapshot_published(snapshot.id, claimer, clock.now())
                    .await?;
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
