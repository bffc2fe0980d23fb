//! The synthetic fleet and its workload, generated from a seed.
//!
//! Everything here is pure: the same spec, timeline and seed give the same
//! fleet and the same workload, so runs are reproducible.

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_domain::appstats::AccessMethod;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::timeline::Timeline;

/// Size and shape of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    pub workspaces: usize,
    pub users: usize,
    pub apps: usize,
    pub replicas: usize,
    /// App sessions each user opens per hour, on average.
    pub sessions_per_user_hour: f64,
    pub seed: u64,
}

/// An app of the catalogue: how it is reached and its slug or port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub access_method: AccessMethod,
    pub slug_or_port: String,
}

impl App {
    pub fn label(&self) -> String {
        if self.slug_or_port.is_empty() {
            self.access_method.to_string()
        } else {
            format!("{} {}", self.access_method, self.slug_or_port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// Index into [`Fleet::users`].
    pub owner: u32,
    /// Chance the workspace is running in a given period.
    pub activity: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub users: Vec<Uuid>,
    pub workspaces: Vec<Workspace>,
    pub apps: Vec<App>,
}

/// Apps people open most, first; the web terminal has no slug.
const CATALOGUE: &[(AccessMethod, &str)] = &[
    (AccessMethod::Subdomain, "code-server"),
    (AccessMethod::Terminal, ""),
    (AccessMethod::Path, "jupyter"),
    (AccessMethod::Subdomain, "8080"),
    (AccessMethod::Subdomain, "vscode-web"),
    (AccessMethod::Path, "filebrowser"),
    (AccessMethod::Subdomain, "3000"),
    (AccessMethod::Path, "rstudio"),
    (AccessMethod::Subdomain, "5173"),
    (AccessMethod::Path, "grafana"),
    (AccessMethod::Subdomain, "jetbrains-gateway"),
    (AccessMethod::Path, "streamlit"),
];

fn uuid(rng: &mut StdRng) -> Uuid {
    // Version-4 bits so the ids look like the real ones.
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

impl Fleet {
    /// Users, workspaces (owned round-robin so every user owns one when there
    /// are enough), one agent each, and `apps` apps of the catalogue.
    pub fn generate(spec: &FleetSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let users = (0..spec.users).map(|_| uuid(&mut rng)).collect();
        let workspaces = (0..spec.workspaces)
            .map(|i| Workspace {
                id: uuid(&mut rng),
                agent_id: uuid(&mut rng),
                owner: (i % spec.users) as u32,
                activity: rng.random_range(0.2..0.9),
            })
            .collect();
        let apps = (0..spec.apps)
            .map(|i| match CATALOGUE.get(i) {
                Some(&(access_method, slug)) => App {
                    access_method,
                    slug_or_port: slug.to_owned(),
                },
                None => App {
                    access_method: if i % 2 == 0 {
                        AccessMethod::Path
                    } else {
                        AccessMethod::Subdomain
                    },
                    slug_or_port: format!("app-{i}"),
                },
            })
            .collect();
        Self {
            users,
            workspaces,
            apps,
        }
    }
}

/// Rough kinds of session length, for the mix and its test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationClass {
    /// One second to a minute: a page load, a quick look.
    Short,
    /// One to fifteen minutes.
    Medium,
    /// Fifteen minutes to four hours: an editor or terminal left open.
    Long,
}

impl DurationClass {
    pub fn of(d: Duration) -> Self {
        if d <= Duration::minutes(1) {
            Self::Short
        } else if d <= Duration::minutes(15) {
            Self::Medium
        } else {
            Self::Long
        }
    }
}

/// Share of short, medium and long sessions.
pub const DURATION_MIX: [(DurationClass, f64); 3] = [
    (DurationClass::Short, 0.70),
    (DurationClass::Medium, 0.20),
    (DurationClass::Long, 0.10),
];

/// A session length: 70% short, 20% medium, 10% long, log-uniform inside
/// each class, in whole microseconds (the stores' precision).
pub fn sample_duration(rng: &mut impl Rng) -> Duration {
    let (lo, hi) = match rng.random_range(0.0..1.0) {
        x if x < DURATION_MIX[0].1 => (1.0, 60.0),
        x if x < DURATION_MIX[0].1 + DURATION_MIX[1].1 => (60.0, 900.0),
        _ => (900.0, 14_400.0),
    };
    let secs = (rng.random_range(f64::ln(lo)..=f64::ln(hi))).exp();
    Duration::microseconds((secs * 1e6) as i64)
}

/// One app session as the proxy will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSession {
    pub id: Uuid,
    pub user: u32,
    pub workspace: u32,
    pub app: u16,
    /// The replica the sticky proxy sends this session's reports to.
    pub replica: u16,
    pub start: OffsetDateTime,
    pub duration: Duration,
    /// Requests of the first page load.
    pub base_requests: u32,
    pub requests_per_sec: f32,
}

impl PlannedSession {
    pub fn end(&self) -> OffsetDateTime {
        self.start + self.duration
    }

    /// Cumulative requests served by `at` (never decreasing).
    pub fn requests_at(&self, at: OffsetDateTime) -> u64 {
        let elapsed = (at.min(self.end()) - self.start).as_seconds_f64().max(0.0);
        u64::from(self.base_requests) + (elapsed * f64::from(self.requests_per_sec)) as u64
    }
}

/// A batch of boundary decisions an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryBatch {
    pub workspace: u32,
    /// The replica the agent's connection lands on (random per batch).
    pub replica: u16,
    pub allowed: u32,
    pub denied: u32,
}

/// Everything that will happen, generated up front.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Sorted by start time.
    pub sessions: Vec<PlannedSession>,
    /// Boundary batches reported during each tick of the timeline.
    pub boundary: Vec<Vec<BoundaryBatch>>,
}

/// Chance per tick that a running workspace's agent reports a batch.
const BOUNDARY_BATCH_CHANCE: f64 = 0.25;
/// Chance a short session comes with a burst of more short ones.
const BURST_CHANCE: f64 = 0.3;
/// Chance a session is opened by someone other than the workspace's owner.
const SHARED_SESSION_CHANCE: f64 = 0.15;

impl Workload {
    /// Sessions start uniformly over the traffic window; apps are picked by
    /// popularity (Zipf-like), workspaces by activity. Session ids depend on
    /// the timeline's start too, so runs over the same database at different
    /// times do not reuse them.
    pub fn generate(fleet: &Fleet, spec: &FleetSpec, timeline: &Timeline) -> Self {
        let start_salt = timeline.start.unix_timestamp() as u64;
        let mut rng = StdRng::seed_from_u64(spec.seed.rotate_left(17) ^ start_salt ^ 0x5eed_5e55_1045);
        let traffic = timeline.end - timeline.start;
        let hours = traffic.as_seconds_f64() / 3600.0;
        let count = (spec.users as f64 * spec.sessions_per_user_hour * hours).round() as usize;

        let app_pick = WeightedIndex::new((0..fleet.apps.len()).map(|i| 1.0 / (i as f64 + 1.0)))
            .expect("at least one app");
        let ws_pick =
            WeightedIndex::new(fleet.workspaces.iter().map(|w| w.activity)).expect("at least one workspace");
        let traffic_micros = traffic.whole_microseconds() as i64;

        let mut sessions: Vec<PlannedSession> = Vec::with_capacity(count);
        while sessions.len() < count {
            let workspace = ws_pick.sample(&mut rng);
            let owner = fleet.workspaces[workspace].owner;
            let user = if rng.random_bool(SHARED_SESSION_CHANCE) {
                rng.random_range(0..fleet.users.len()) as u32
            } else {
                owner
            };
            let app = app_pick.sample(&mut rng) as u16;
            let terminal = fleet.apps[usize::from(app)].access_method == AccessMethod::Terminal;
            let first = PlannedSession {
                id: uuid(&mut rng),
                user,
                workspace: workspace as u32,
                app,
                replica: rng.random_range(0..spec.replicas) as u16,
                start: timeline.start + Duration::microseconds(rng.random_range(0..traffic_micros)),
                duration: sample_duration(&mut rng),
                base_requests: rng.random_range(1..if terminal { 3 } else { 40 }),
                requests_per_sec: if terminal {
                    rng.random_range(0.01..0.5)
                } else {
                    rng.random_range(0.05..3.0)
                },
            };
            // A short look often comes in a burst (reloads, reconnects): more
            // short sessions of the same user and app through the same proxy
            // within seconds, which the rollup folds into one row.
            let burst = if DurationClass::of(first.duration) == DurationClass::Short
                && rng.random_bool(BURST_CHANCE)
            {
                rng.random_range(1..=4).min(count - sessions.len() - 1)
            } else {
                0
            };
            for _ in 0..burst {
                let start = first.start + Duration::microseconds(rng.random_range(0..20_000_000));
                if start >= timeline.end {
                    continue;
                }
                let secs = rng.random_range(1.0f64..30.0);
                sessions.push(PlannedSession {
                    id: uuid(&mut rng),
                    start,
                    duration: Duration::microseconds((secs * 1e6) as i64),
                    base_requests: rng.random_range(1..20),
                    ..first.clone()
                });
            }
            sessions.push(first);
        }
        sessions.sort_by_key(|s| (s.start, s.id));

        // Which workspaces run in each period: their agents report boundary
        // decisions; the set changes from period to period.
        let running: Vec<Vec<u32>> = (0..timeline.period_count())
            .map(|_| {
                (0..fleet.workspaces.len() as u32)
                    .filter(|&w| rng.random_bool(fleet.workspaces[w as usize].activity))
                    .collect()
            })
            .collect();
        let boundary = timeline
            .ticks()
            .iter()
            .map(|&tick| {
                let mut batches = Vec::new();
                for &workspace in &running[timeline.period_of_tick(tick)] {
                    if !rng.random_bool(BOUNDARY_BATCH_CHANCE) {
                        continue;
                    }
                    batches.push(BoundaryBatch {
                        workspace,
                        replica: rng.random_range(0..spec.replicas) as u16,
                        // At least one decision: a batch is never empty.
                        allowed: rng.random_range(1..60),
                        // Mostly nothing denied, now and then a burst.
                        denied: if rng.random_bool(0.1) {
                            rng.random_range(1..30)
                        } else {
                            0
                        },
                    });
                }
                batches
            })
            .collect();
        Self { sessions, boundary }
    }
}

#[cfg(test)]
mod tests;
