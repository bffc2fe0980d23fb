//! The synthetic fleet and its workload, generated from a seed.
//!
//! Everything here is pure: the same spec, timeline and seed give the same
//! fleet and the same workload, so runs are reproducible.

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_domain::AccessMethod;
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
mod tests {
    use super::*;
    use time::macros::datetime;

    fn spec(seed: u64) -> FleetSpec {
        FleetSpec {
            workspaces: 40,
            users: 25,
            apps: 6,
            replicas: 3,
            sessions_per_user_hour: 10.0,
            seed,
        }
    }

    fn timeline() -> Timeline {
        Timeline::new(
            datetime!(2026-01-05 08:00 UTC),
            Duration::hours(2),
            Duration::seconds(30),
            Duration::minutes(30),
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_fleet_and_workload() {
        let (a, b) = (Fleet::generate(&spec(7)), Fleet::generate(&spec(7)));
        assert_eq!(a, b);
        let t = timeline();
        assert_eq!(
            Workload::generate(&a, &spec(7), &t),
            Workload::generate(&b, &spec(7), &t)
        );
    }

    #[test]
    fn another_seed_another_fleet_and_workload() {
        let (a, b) = (Fleet::generate(&spec(7)), Fleet::generate(&spec(8)));
        assert_ne!(a.users, b.users);
        assert_ne!(a.workspaces, b.workspaces);
        let t = timeline();
        let (wa, wb) = (
            Workload::generate(&a, &spec(7), &t),
            Workload::generate(&b, &spec(8), &t),
        );
        assert_ne!(wa.sessions, wb.sessions);
    }

    #[test]
    fn a_later_start_gives_new_session_ids_for_the_same_seed() {
        let fleet = Fleet::generate(&spec(7));
        let t = timeline();
        let later = Timeline::new(t.start + Duration::hours(4), t.end - t.start, t.tick, t.period).unwrap();
        let (a, b) = (
            Workload::generate(&fleet, &spec(7), &t),
            Workload::generate(&fleet, &spec(7), &later),
        );
        let ids: std::collections::HashSet<_> = a.sessions.iter().map(|s| s.id).collect();
        assert!(b.sessions.iter().all(|s| !ids.contains(&s.id)));
    }

    #[test]
    fn fleet_has_the_requested_size_and_every_user_owns_a_workspace() {
        let fleet = Fleet::generate(&spec(1));
        assert_eq!(
            (fleet.users.len(), fleet.workspaces.len(), fleet.apps.len()),
            (25, 40, 6)
        );
        for u in 0..25u32 {
            assert!(
                fleet.workspaces.iter().any(|w| w.owner == u),
                "user {u} owns nothing"
            );
        }
        let ids: std::collections::HashSet<_> = fleet.workspaces.iter().map(|w| w.id).collect();
        assert_eq!(ids.len(), 40);
        let keys: std::collections::HashSet<_> = fleet
            .apps
            .iter()
            .map(|a| (a.access_method, a.slug_or_port.clone()))
            .collect();
        assert_eq!(keys.len(), 6, "apps must be distinct");
        // More apps than the catalogue still gives distinct apps.
        let many = Fleet::generate(&FleetSpec { apps: 30, ..spec(1) });
        let keys: std::collections::HashSet<_> = many.apps.iter().map(|a| a.label()).collect();
        assert_eq!(keys.len(), 30);
    }

    #[test]
    fn durations_are_mostly_short_partly_long() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let samples: Vec<Duration> = (0..n).map(|_| sample_duration(&mut rng)).collect();
        let share = |c| samples.iter().filter(|&&d| DurationClass::of(d) == c).count() as f64 / n as f64;
        for (class, expected) in DURATION_MIX {
            let got = share(class);
            assert!((got - expected).abs() < 0.02, "{class:?}: {got} vs {expected}");
        }
        assert!(
            samples
                .iter()
                .all(|&d| d >= Duration::SECOND && d <= Duration::hours(4))
        );
        assert!(
            samples.iter().any(|&d| d > Duration::hours(1)),
            "some sessions last hours"
        );
        assert!(
            samples.iter().all(|d| d.subsec_nanoseconds() % 1000 == 0),
            "microsecond precision"
        );
    }

    #[test]
    fn workload_fits_the_timeline_and_fleet() {
        let s = spec(5);
        let fleet = Fleet::generate(&s);
        let t = timeline();
        let w = Workload::generate(&fleet, &s, &t);
        // 25 users x 10 per hour x 2 hours.
        assert_eq!(w.sessions.len(), 500);
        assert!(w.sessions.windows(2).all(|p| p[0].start <= p[1].start));
        for session in &w.sessions {
            assert!(session.start >= t.start && session.start < t.end);
            assert!((session.replica as usize) < s.replicas);
            assert!(session.requests_at(session.end()) >= session.requests_at(session.start));
        }
        assert_eq!(w.boundary.len(), t.ticks().len());
        let batches: usize = w.boundary.iter().map(Vec::len).sum();
        assert!(batches > 0);
        // Every replica gets sessions and boundary batches.
        for r in 0..s.replicas as u16 {
            assert!(w.sessions.iter().any(|x| x.replica == r));
            assert!(w.boundary.iter().flatten().any(|b| b.replica == r));
        }
    }

    #[test]
    fn some_short_sessions_come_in_bursts_the_rollup_can_fold() {
        let s = spec(6);
        let fleet = Fleet::generate(&s);
        let w = Workload::generate(&fleet, &s, &timeline());
        let minute = |t: OffsetDateTime| tally_domain::telemetry::truncate(t, Duration::minutes(1));
        let mut groups = std::collections::HashMap::new();
        for x in w
            .sessions
            .iter()
            .filter(|x| DurationClass::of(x.duration) == DurationClass::Short)
        {
            *groups
                .entry((minute(x.start), x.user, x.workspace, x.app, x.replica))
                .or_insert(0) += 1;
        }
        let shared = groups.values().filter(|&&n| n > 1).count();
        assert!(
            shared * 20 > groups.len(),
            "{shared} of {} groups hold several sessions",
            groups.len()
        );
    }

    #[test]
    fn requests_grow_and_stop_at_the_end() {
        let session = PlannedSession {
            id: Uuid::from_u128(1),
            user: 0,
            workspace: 0,
            app: 0,
            replica: 0,
            start: datetime!(2026-01-05 08:00 UTC),
            duration: Duration::seconds(100),
            base_requests: 5,
            requests_per_sec: 0.5,
        };
        assert_eq!(session.requests_at(session.start), 5);
        assert_eq!(session.requests_at(session.start + Duration::seconds(10)), 10);
        assert_eq!(session.requests_at(session.end()), 55);
        assert_eq!(session.requests_at(session.end() + Duration::hours(1)), 55);
    }
}
