//! Simulated time: report ticks and telemetry period boundaries.

use tally_domain::telemetry::truncate;
use time::{Duration, OffsetDateTime};

/// How long after a period ends the replicas wake to close it.
pub const CLOSE_DELAY: Duration = Duration::SECOND;

/// Traffic runs over `[start, end)`; proxies report and collectors flush
/// every `tick`; telemetry periods of length `period` are aligned to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub tick: Duration,
    pub period: Duration,
}

impl Timeline {
    /// `start` must be aligned to `period` so the first period is whole.
    pub fn new(
        start: OffsetDateTime,
        duration: Duration,
        tick: Duration,
        period: Duration,
    ) -> Result<Self, String> {
        if !duration.is_positive() || !tick.is_positive() || !period.is_positive() {
            return Err("duration, tick and period must be positive".into());
        }
        if truncate(start, period) != start {
            return Err(format!("start {start} is not aligned to the period {period}"));
        }
        Ok(Self {
            start,
            end: start + duration,
            tick,
            period,
        })
    }

    /// When proxies report and collectors flush: every tick, and at the end.
    pub fn ticks(&self) -> Vec<OffsetDateTime> {
        let mut ticks = Vec::new();
        let mut t = self.start + self.tick;
        while t < self.end {
            ticks.push(t);
            t += self.tick;
        }
        ticks.push(self.end);
        ticks
    }

    /// Periods that hold traffic: the last one may end after the traffic.
    pub fn period_count(&self) -> usize {
        let ns = (self.end - self.start).whole_nanoseconds();
        let p = self.period.whole_nanoseconds();
        ((ns + p - 1) / p) as usize
    }

    /// End of each period, in order.
    pub fn period_ends(&self) -> Vec<OffsetDateTime> {
        (1..=self.period_count())
            .map(|j| self.start + self.period * j as u32)
            .collect()
    }

    /// The period the events of the tick ending at `tick` happen in: they
    /// happen during `(tick - self.tick, tick]`.
    pub fn period_of_tick(&self, tick: OffsetDateTime) -> usize {
        let since = (tick - self.start - Duration::NANOSECOND)
            .whole_nanoseconds()
            .max(0);
        ((since / self.period.whole_nanoseconds()) as usize).min(self.period_count() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const START: OffsetDateTime = datetime!(2026-01-05 08:00 UTC);

    #[test]
    fn ticks_cover_the_traffic_and_end_at_its_end() {
        let t = Timeline::new(
            START,
            Duration::minutes(100),
            Duration::seconds(45),
            Duration::minutes(30),
        )
        .unwrap();
        let ticks = t.ticks();
        assert_eq!(ticks[0], START + Duration::seconds(45));
        assert_eq!(*ticks.last().unwrap(), t.end);
        assert!(
            ticks
                .windows(2)
                .all(|w| w[0] < w[1] && w[1] - w[0] <= Duration::seconds(45))
        );
        assert_eq!(t.period_count(), 4);
        assert_eq!(t.period_ends().last(), Some(&(START + Duration::hours(2))));
    }

    #[test]
    fn a_tick_on_a_boundary_belongs_to_the_period_it_ends() {
        let t = Timeline::new(
            START,
            Duration::hours(1),
            Duration::seconds(30),
            Duration::minutes(30),
        )
        .unwrap();
        assert_eq!(t.period_count(), 2);
        assert_eq!(t.period_of_tick(START + Duration::seconds(30)), 0);
        assert_eq!(t.period_of_tick(START + Duration::minutes(30)), 0);
        assert_eq!(
            t.period_of_tick(START + Duration::minutes(30) + Duration::seconds(30)),
            1
        );
        assert_eq!(t.period_of_tick(t.end), 1);
    }

    #[test]
    fn refuses_unaligned_starts_and_empty_spans() {
        assert!(
            Timeline::new(
                START + Duration::minutes(1),
                Duration::hours(1),
                Duration::SECOND,
                Duration::minutes(30)
            )
            .is_err()
        );
        assert!(Timeline::new(START, Duration::ZERO, Duration::SECOND, Duration::minutes(30)).is_err());
    }
}
