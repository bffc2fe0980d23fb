//! The fleet and workload generator.

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
