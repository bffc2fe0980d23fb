//! Whole runs, small, in process, over the in-memory store.

use std::sync::Arc;

use clap::Parser;
use indicatif::ProgressBar;
use tally_adapters_memory::MemoryStore;
use tally_domain::ports::Store;
use time::Duration;

use super::*;

mod database;
mod flaky;

fn small(seed: u64) -> SimConfig {
    SimConfig {
        fleet: FleetSpec {
            workspaces: 24,
            users: 15,
            apps: 5,
            replicas: 3,
            sessions_per_user_hour: 30.0,
            seed,
        },
        start: DEFAULT_START,
        duration: Duration::hours(2),
        report_interval: Duration::seconds(30),
        snapshot_interval: Duration::minutes(30),
        batch_size: 64,
        tracker_flush_interval: Duration::minutes(1),
        retry_delay: std::time::Duration::ZERO,
    }
}

async fn run_small(config: &SimConfig) -> Outcome {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    simulate(config, store, &ProgressBar::hidden()).await.unwrap()
}

#[tokio::test]
async fn a_small_run_conserves_everything_with_one_snapshot_per_period() {
    let outcome = run_small(&small(1)).await;
    let verdict = outcome.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &outcome.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    assert!(
        verdict.line.starts_with("conservation: OK requests sent="),
        "{}",
        verdict.line
    );
    assert!(
        verdict.line.contains("uniques exact in 4/4 periods"),
        "{}",
        verdict.line
    );
    assert_eq!(outcome.published.len(), 4);
    assert_eq!(outcome.stored_snapshots.len(), 4);
    assert!(outcome.winners.iter().all(|&(_, won)| won == 1));
    // Real traffic went through: sessions of every kind, open ones re-reported.
    assert_eq!(outcome.sessions, 15 * 30 * 2);
    assert!(
        outcome.session_mix.iter().all(|&n| n > 0),
        "{:?}",
        outcome.session_mix
    );
    assert!(outcome.reports_sent > outcome.sessions as u64);
    assert!(outcome.requests_sent > 0 && outcome.requests_stored == outcome.requests_sent);
    assert!(outcome.tracked.allowed > 0 && outcome.tracked.denied > 0);
    // Short sessions are rolled up: fewer rows than sessions.
    assert!(
        outcome.rows_in_store < outcome.sessions as u64,
        "{} rows",
        outcome.rows_in_store
    );
    assert!(!outcome.top_apps.is_empty());
    assert!(outcome.last_used.expected > 0);
    assert_eq!(outcome.last_used.set, outcome.last_used.expected);
    // Workspaces are seen by several replicas, yet counted once per period.
    for s in &outcome.published {
        assert!(s.usage.unique_workspaces <= 24 && s.usage.unique_users <= 15);
        assert!(s.usage.replicas >= 2, "{:?}", s.usage);
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_results() {
    let (a, b) = (run_small(&small(9)).await, run_small(&small(9)).await);
    let totals = |o: &Outcome| {
        let mut snaps: Vec<_> = o
            .published
            .iter()
            .map(|s| (s.period_end, s.usage.clone()))
            .collect();
        snaps.sort_by_key(|s| s.0);
        (
            o.requests_stored,
            o.rows_in_store,
            o.reports_sent,
            snaps,
            o.top_apps.clone(),
        )
    };
    assert_eq!(totals(&a), totals(&b));
    let c = run_small(&small(10)).await;
    assert_ne!(totals(&a).0, totals(&c).0);
}

#[tokio::test]
async fn traffic_ending_inside_a_period_still_closes_it() {
    // 100 minutes with 30-minute periods: the fourth period holds 10 minutes
    // of traffic; a report interval that does not divide the period.
    let config = SimConfig {
        duration: Duration::minutes(100),
        report_interval: Duration::seconds(45),
        ..small(3)
    };
    let outcome = run_small(&config).await;
    let verdict = outcome.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &outcome.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    assert_eq!(outcome.published.len(), 4);
}

#[tokio::test]
async fn a_single_replica_works_too() {
    let config = SimConfig {
        fleet: FleetSpec {
            replicas: 1,
            ..small(4).fleet
        },
        duration: Duration::hours(1),
        ..small(4)
    };
    let outcome = run_small(&config).await;
    assert!(outcome.conservation().ok, "{:?}", outcome.conservation());
    assert_eq!(outcome.published.len(), 2);
}

#[tokio::test]
async fn the_check_fails_when_the_store_lost_something() {
    let good = run_small(&small(5)).await;

    let mut lost_requests = good.clone();
    lost_requests.requests_stored -= 1;
    let v = lost_requests.conservation();
    assert!(!v.ok);
    assert!(v.line.starts_with("conservation: FAILED"), "{}", v.line);
    assert!(
        v.problems.iter().any(|p| p.starts_with("requests:")),
        "{:?}",
        v.problems
    );

    let mut lost_snapshot = good.clone();
    lost_snapshot.published.pop();
    let v = lost_snapshot.conservation();
    assert!(!v.ok);
    assert!(
        v.problems.iter().any(|p| p.starts_with("boundary:")),
        "{:?}",
        v.problems
    );
    assert!(
        v.problems.iter().any(|p| p.contains("published 0 times")),
        "{:?}",
        v.problems
    );

    let mut inflated = good.clone();
    inflated.published[0].usage.unique_workspaces += 1;
    let v = inflated.conservation();
    assert!(!v.ok);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("(workspaces, users, allowed, denied)")),
        "{:?}",
        v.problems
    );

    let mut stale = good.clone();
    stale.last_used.set -= 1;
    let v = stale.conservation();
    assert!(
        v.problems.iter().any(|p| p.starts_with("last used:")),
        "{:?}",
        v.problems
    );

    let mut two_winners = good;
    two_winners.winners[1].1 = 2;
    assert!(!two_winners.conservation().ok);

    let mut twice = run_small(&small(5)).await;
    let again = twice.stored_snapshots[0].clone();
    twice.stored_snapshots.push(again);
    let v = twice.conservation();
    assert!(
        v.problems.iter().any(|p| p.contains("2 snapshots in the store")),
        "{:?}",
        v.problems
    );
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

fn parse(argv: &[&str]) -> Result<SimulateArgs, String> {
    Cli::try_parse_from(std::iter::once("simulate").chain(argv.iter().copied()))
        .map(|c| c.args)
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_give_several_periods_from_an_aligned_start() {
    let config = parse(&[]).unwrap().to_config().unwrap();
    assert_eq!(config.duration, Duration::hours(4));
    assert_eq!(config.snapshot_interval, Duration::minutes(30));
    assert_eq!(config.report_interval, Duration::seconds(30));
    assert_eq!(config.fleet.replicas, 3);
    let t = Timeline::new(
        config.start,
        config.duration,
        config.report_interval,
        config.snapshot_interval,
    )
    .unwrap();
    assert_eq!(t.period_count(), 8);
}

#[test]
fn bad_options_are_refused_naming_the_option() {
    let err = parse(&["--replicas", "0"]).unwrap_err();
    assert!(err.contains("--replicas"), "{err}");
    let err = parse(&["--duration", "soon"]).unwrap_err();
    assert!(err.contains("--duration"), "{err}");
    let err = parse(&["--report-interval", "0s"]).unwrap_err();
    assert!(err.contains("--report-interval"), "{err}");
    let err = parse(&["--report-interval", "1h"])
        .unwrap()
        .to_config()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--report-interval") && err.contains("--snapshot-interval"),
        "{err}"
    );
    let err = parse(&["--users", "1000000", "--duration", "30days"])
        .unwrap()
        .to_config()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--users") && err.contains("--sessions-per-user-hour"),
        "{err}"
    );
    let err = parse(&["--duration", "40days"])
        .unwrap()
        .to_config()
        .unwrap_err()
        .to_string();
    assert!(err.contains("--duration"), "{err}");
}

#[test]
fn an_odd_interval_still_starts_aligned() {
    let config = parse(&["--snapshot-interval", "7m"])
        .unwrap()
        .to_config()
        .unwrap();
    assert!(
        Timeline::new(
            config.start,
            config.duration,
            config.report_interval,
            config.snapshot_interval
        )
        .is_ok()
    );
}

#[test]
fn a_rerun_starts_on_a_whole_hour_so_its_insights_hours_are_its_own() {
    use time::macros::datetime;
    let half = Duration::minutes(30);
    assert_eq!(
        on_a_whole_hour(datetime!(2026-01-05 09:30 UTC), half),
        datetime!(2026-01-05 10:00 UTC)
    );
    assert_eq!(
        on_a_whole_hour(datetime!(2026-01-05 09:00 UTC), half),
        datetime!(2026-01-05 09:00 UTC)
    );
    // 7-minute periods meet the hour every 60 periods.
    let t = on_a_whole_hour(datetime!(2026-01-05 09:07 UTC), Duration::minutes(7));
    assert_eq!(t.minute(), 0);
    assert_eq!((t - datetime!(2026-01-05 09:07 UTC)).whole_minutes() % 7, 0);
}
