//! The one retry policy: exponential backoff with jitter.
//!
//! Every loop that retries a failed call (the collector's flush, the tracker
//! flush, the snapshot step, the publisher, the start-up connect, the
//! shutdown flushes, the HTTP sink) draws its delays from a [`Backoff`] and
//! gives only its bounds. The jitter keeps replicas that failed at the same
//! moment (a database outage) from retrying in lockstep once it ends.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// Delays that double from `first` and never pass `most`: the n-th delay
/// (from 0) is drawn uniformly from `[d, 2d)` with `d = min(first * 2^n,
/// most / 2)`. Built on backon's exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    most: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays that start near `first`, double, and never exceed `most`, with
    /// jitter.
    pub const fn new(first: Duration, most: Duration) -> Self {
        Self {
            first,
            most,
            jitter: true,
        }
    }

    /// The same bounds, each delay the top of its range (`min(2 * first *
    /// 2^n, most)`): for tests that count calls on a fixed schedule.
    pub const fn without_jitter(self) -> Self {
        Self {
            jitter: false,
            ..self
        }
    }

    /// The longest delay.
    pub const fn most(&self) -> Duration {
        self.most
    }

    /// The policy as a backon builder, unlimited in tries (`with_max_times`
    /// bounds them), for `backon::Retryable`.
    pub fn builder(&self) -> ExponentialBuilder {
        let top = self.most.max(Duration::from_nanos(2));
        if self.jitter {
            let half = top / 2;
            ExponentialBuilder::new()
                .with_min_delay(self.first.min(half))
                .with_max_delay(half)
                .with_jitter()
                .without_max_times()
        } else {
            ExponentialBuilder::new()
                .with_min_delay(self.first.saturating_mul(2).min(top))
                .with_max_delay(top)
                .without_max_times()
        }
    }

    /// The delays, one per failure in a row; endless.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let most = self.most;
        // backon's jitter can reach the top of the range; stay below `most`.
        self.builder().build().map(move |d| d.min(most))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_jitter_the_delays_double_up_to_the_bound() {
        let delays: Vec<_> = Backoff::new(100 * MS, 1000 * MS)
            .without_jitter()
            .delays()
            .take(6)
            .map(|d| d.as_millis())
            .collect();
        // backon multiplies in f32: a few nanoseconds off.
        assert_eq!(delays, [200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn two_replicas_do_not_retry_in_lockstep() {
        let policy = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let a: Vec<_> = policy.delays().take(10).collect();
        let b: Vec<_> = policy.delays().take(10).collect();
        assert_ne!(a, b, "two replicas' delays after the same outage differ");
        // At the bound too, not only while the delays grow.
        let late = |d: &[Duration]| d[6..].to_vec();
        assert_ne!(late(&a), late(&b));
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|_| policy.delays().nth(8).unwrap().as_millis())
            .collect();
        assert!(spread.len() > 25, "{spread:?}");
    }

    proptest! {
        /// Each delay lies in its range: at least half the un-jittered delay,
        /// below it, and never past the bound.
        #[test]
        fn every_delay_is_in_its_range(first in 1u32..5_000, most in 1u32..60_000, n in 0usize..20) {
            let policy = Backoff::new(MS * first, MS * most);
            let top = policy.without_jitter().delays().nth(n).unwrap();
            let got = policy.delays().nth(n).unwrap();
            prop_assert!(got <= top && got <= MS * most, "{got:?} > {top:?}");
            prop_assert!(got >= (top / 2).saturating_sub(MS), "{got:?} < half of {top:?}");
        }
    }
}
