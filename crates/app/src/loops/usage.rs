//! The usage rollup tick and the retention purge. Every replica runs both;
//! the store lets one at a time do either (another replica's tick or purge
//! in progress makes this one a no-op).

use std::future::Future;
use std::time::Duration;

use tally_domain::error::{Report, StoreError};
use tally_domain::ports::UsageStore;
use tally_domain::usage::{PurgeOutcome, TickOutcome};
use tokio::sync::watch;

use super::{Background, sleep_or_stop};
use crate::metrics as m;

/// Wait before the first tick or purge after start-up.
const FIRST_RUN: Duration = Duration::from_secs(5);
/// Retries of a failed tick or purge: from about 5 s up to a minute (or the
/// loop's interval, if shorter).
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MOST_RETRY: Duration = Duration::from_secs(60);

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

    pub(super) async fn rollup_loop(self, stop: watch::Receiver<bool>) {
        let interval = self.settings.usage_rollup_interval;
        self.repeat(interval, stop, "usage rollup tick failed; retrying later", || {
            self.tick_once()
        })
        .await;
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

    pub(super) async fn purge_loop(self, stop: watch::Receiver<bool>) {
        let interval = self.settings.purge_interval;
        self.repeat(interval, stop, "retention purge failed; retrying later", || {
            self.purge_once()
        })
        .await;
    }

    /// Runs `round` every `interval` until `stop`; a failed round is retried
    /// after the one backoff policy's delays.
    async fn repeat<T, F>(
        &self,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
        failed: &str,
        round: impl Fn() -> F,
    ) where
        F: Future<Output = Result<T, StoreError>>,
    {
        let backoff = self.backoff(FIRST_RETRY.min(interval), MOST_RETRY.min(interval));
        let mut retries = backoff.delays();
        let mut wait = FIRST_RUN;
        while sleep_or_stop(wait, &mut stop).await {
            wait = match round().await {
                Ok(_) => {
                    retries = backoff.delays();
                    interval
                }
                Err(e) => {
                    let retry = retries.next().unwrap_or(backoff.most());
                    tracing::warn!(error = %Report(&e), retry_in = ?retry, "{failed}");
                    retry
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
