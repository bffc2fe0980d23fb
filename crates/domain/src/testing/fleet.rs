//! The benchmark fleet: 1000 users, each with one workspace and one agent,
//! 10 apps, access method path, window one minute.

use crate::appstats::{AccessMethod, StatsReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Users in the fleet, each with one workspace and one agent.
pub const USERS: u128 = 1000;
/// Apps each user opens.
pub const APPS: u64 = 10;
/// When the fleet's first window starts.
pub const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

/// The fleet's generator: seeded, so every run gets the same sessions.
#[derive(Debug)]
pub struct Fleet {
    rng: StdRng,
    slugs: Vec<String>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// A fleet seeded with a fixed seed.
    pub fn new() -> Self {
        Self {
            rng: StdRng::seed_from_u64(7),
            slugs: (0..APPS).map(|a| format!("app-{a}")).collect(),
        }
    }

    /// A session of `user` on app `app`, started at `start`; ids are random.
    pub fn report(
        &mut self,
        user: u128,
        app: u64,
        start: OffsetDateTime,
        end: Option<OffsetDateTime>,
    ) -> StatsReport {
        StatsReport {
            user_id: Uuid::from_u128(0x1_0000 + user),
            workspace_id: Uuid::from_u128(0x2_0000 + user),
            agent_id: Uuid::from_u128(0x3_0000 + user),
            access_method: AccessMethod::Path,
            slug_or_port: self.slugs[app as usize].clone(),
            session_id: Uuid::from_u128(self.rng.random()),
            session_started_at: start,
            session_ended_at: end,
            requests: 1,
            sessions: 1,
        }
    }

    /// `n` sessions of one window in 10k groups (every user × app),
    /// round-robin over groups, starts spread over the minute.
    pub fn one_window(&mut self, n: u64, end_after: Option<Duration>) -> Vec<StatsReport> {
        (0..n)
            .map(|k| {
                let user = u128::from(k % USERS as u64);
                let app = (k / USERS as u64) % APPS;
                let start = T0 + Duration::milliseconds((k * 7919 % 50_000) as i64);
                self.report(user, app, start, end_after.map(|d| start + d))
            })
            .collect()
    }

    /// Session `k` of 1M spread over 100k groups: users × apps × 10 windows.
    pub fn ten_windows(&mut self, k: u64, closed: bool) -> StatsReport {
        let group = k % 100_000;
        let user = u128::from(group % USERS as u64);
        let app = (group / USERS as u64) % APPS;
        let window = (group / (USERS as u64 * APPS)) as i64;
        let start = T0 + Duration::minutes(window) + Duration::milliseconds((k / 100_000 * 4_999) as i64);
        let end = closed.then(|| start + Duration::seconds(10));
        self.report(user, app, start, end)
    }
}

/// `now` of the rollup benchmarks: start + 12 min 1 s.
pub fn rollup_now() -> OffsetDateTime {
    T0 + Duration::minutes(12) + Duration::seconds(1)
}
