//! The outbox publisher: unpublished snapshots go to the sink, once each.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

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
pub async fn publish_pending<S: TelemetryStore + ?Sized, K: SnapshotSink + ?Sized>(
    store: &S,
    sink: &K,
    claimer: Uuid,
    now: OffsetDateTime,
    lease: Duration,
    limit: usize,
) -> Result<PublishRound, StoreError> {
    let _ = (store, sink, claimer, now, lease, limit);
    todo!("issue 2: publisher")
}
