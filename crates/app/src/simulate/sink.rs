//! An in-process snapshot sink that records what it receives.

use async_trait::async_trait;
use parking_lot::Mutex;
use tally_domain::ports::{SinkError, SnapshotSink};
use tally_domain::telemetry::Snapshot;

/// Records every published snapshot, in the order received.
#[derive(Debug, Default)]
pub struct RecordingSink {
    received: Mutex<Vec<Snapshot>>,
}

impl RecordingSink {
    pub fn take(&self) -> Vec<Snapshot> {
        std::mem::take(&mut self.received.lock())
    }
}

#[async_trait]
impl SnapshotSink for RecordingSink {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        self.received.lock().push(snapshot.clone());
        Ok(())
    }
}
