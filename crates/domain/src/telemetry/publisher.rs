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
//!
//! A snapshot delivered but not yet marked (the store failed right after
//! the sink took it) is remembered in [`Delivered`], and the claimer's next
//! round marks it before claiming anything: taking its own claim back would
//! otherwise send it again. Only a process that stops in between sends a
//! snapshot twice (under the same id, so the receiver can drop the repeat).

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

/// Snapshots a claimer delivered whose published mark has not reached the
/// store yet; kept between its rounds.
#[derive(Debug, Default)]
pub struct Delivered {
    unmarked: Vec<(Uuid, OffsetDateTime)>,
}

impl Delivered {
    /// How many delivered snapshots still wait for their mark.
    pub fn len(&self) -> usize {
        self.unmarked.len()
    }

    /// True when every delivered snapshot is marked.
    pub fn is_empty(&self) -> bool {
        self.unmarked.is_empty()
    }
}

/// Claims unpublished snapshots and sends each to the sink; a failure gives
/// the claim back so a later round retries it. Each snapshot is marked
/// published at the time its delivery succeeded.
///
/// A store error ends the round at once and is returned; snapshots still
/// claimed by it go out in `claimer`'s next round (other claimers wait for
/// the lease). If marking a delivered snapshot fails, `delivered` keeps it
/// and the next round with the same `delivered` marks it first, without
/// sending it again.
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
    delivered: &mut Delivered,
) -> Result<PublishRound, StoreError> {
    let mut round = PublishRound::default();
    while let Some(&(id, at)) = delivered.unmarked.first() {
        store.mark_snapshot_published(id, claimer, at).await?;
        delivered.unmarked.remove(0);
        round.published += 1;
    }
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
                let at = clock.now();
                if let Err(e) = store.mark_snapshot_published(snapshot.id, claimer, at).await {
                    delivered.unmarked.push((snapshot.id, at));
                    return Err(e);
                }
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

#[cfg(test)]
mod tests;
