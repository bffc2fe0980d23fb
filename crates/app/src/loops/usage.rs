//! The usage rollup tick and the retention purge. Every replica runs both;
//! the store lets one at a time do either (another replica's tick or purge
//! in progress makes this one a no-op).

use std::time::Duration;

use tally_domain::StoreError;
use tally_domain::ports::UsageStore;
use tally_domain::usage::{PurgeOutcome, TickOutcome};
use tokio::sync::watch;

use super::{Background, sleep_or_stop};
use crate::metrics as m;

/// Wait before the first tick or purge after start-up.
const FIRST_RUN: Duration = Duration::from_secs(5);
/// Wait after a failed tick or purge.
const RETRY: Duration = Duration::from_secs(60);

impl Background {
    /// Rolls up what was written since the last tick.
    pub async fn tick_once(&self) -> Result<TickOutcome, StoreError> {
        let tick = self.as_system().tick_usage_rollup().await;
        m::store_result(&tick);
        let tick = tick?;
        if tick.rows_changed > 0 {
            tracing::debug!(
                start_hours = tick.start_hours,
                rows = tick.rows_changed,
                "usage rolled up"
            );
        }
        Ok(tick)
    }

    pub(super) async fn rollup_loop(self, mut stop: watch::Receiver<bool>) {
        let mut wait = FIRST_RUN;
        while sleep_or_stop(wait, &mut stop).await {
            wait = match self.tick_once().await {
                Ok(_) => self.settings.usage_rollup_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "usage rollup tick failed; retrying later");
                    RETRY.min(self.settings.usage_rollup_interval)
                }
            };
        }
    }

    /// One bounded retention round at the clock's time.
    pub async fn purge_once(&self) -> Result<PurgeOutcome, StoreError> {
        let now = self.clock.now();
        let purged = self
            .as_system()
            .purge_expired(now, &self.settings.retention)
            .await;
        m::store_result(&purged);
        let purged = purged?;
        if purged.app_stats_rows + purged.usage_rows + purged.snapshots > 0 {
            tracing::info!(
                app_stats_rows = purged.app_stats_rows,
                usage_rows = purged.usage_rows,
                snapshots = purged.snapshots,
                "expired data purged"
            );
        }
        Ok(purged)
    }

    pub(super) async fn purge_loop(self, mut stop: watch::Receiver<bool>) {
        let mut wait = FIRST_RUN;
        while sleep_or_stop(wait, &mut stop).await {
            wait = match self.purge_once().await {
                Ok(_) => self.settings.purge_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; retrying later");
                    RETRY.min(self.settings.purge_interval)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_domain::ports::{MockSnapshotSink, MockStore};
    use tally_domain::usage::RetentionPolicy;

    use super::super::tests::{NOW, background};
    use super::*;

    #[tokio::test]
    async fn a_purge_round_uses_the_clock_and_the_retention() {
        let mut store = MockStore::new();
        store
            .expect_purge_expired()
            .withf(|now, policy| *now == NOW && *policy == RetentionPolicy::default())
            .times(1)
            .returning(|_, _| {
                Ok(PurgeOutcome {
                    app_stats_rows: 7,
                    ..PurgeOutcome::default()
                })
            });
        let purged = background(store, MockSnapshotSink::new())
            .purge_once()
            .await
            .unwrap();
        assert_eq!(purged.app_stats_rows, 7);
    }

    #[tokio::test]
    async fn a_tick_is_passed_on() {
        let mut store = MockStore::new();
        store.expect_tick_usage_rollup().times(1).returning(|| {
            Ok(TickOutcome {
                skipped: true,
                ..TickOutcome::default()
            })
        });
        assert!(
            background(store, MockSnapshotSink::new())
                .tick_once()
                .await
                .unwrap()
                .skipped
        );
    }
}
