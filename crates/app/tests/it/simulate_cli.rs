//! `tally simulate` as a newcomer runs it, small.

use std::process::Command;

fn tally() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    // Options come from flags here, not from the environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("TALLY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn a_small_simulation_ends_with_a_passing_conservation_line() {
    let out = tally()
        .args([
            "simulate",
            "--workspaces",
            "30",
            "--users",
            "20",
            "--apps",
            "6",
            "--duration",
            "90m",
            "--seed",
            "7",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("conservation:"))
        .unwrap_or_else(|| panic!("no conservation line in:\n{stdout}"));
    assert!(line.starts_with("conservation: OK requests sent="), "{line}");
    assert!(line.contains("snapshots=3 for 3 periods"), "{line}");
    assert!(line.contains("uniques exact in 3/3 periods"), "{line}");
    // The two numbers of each pair agree.
    let pairs: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(pairs[0], pairs[1], "{line}");
    assert_eq!(pairs[2], pairs[3], "{line}");
    assert_insights_ok(&stdout);
    assert!(stdout.contains("Published snapshots"), "{stdout}");
    assert!(stdout.contains("Top apps"), "{stdout}");
    // No progress bar drawn into a pipe.
    assert!(!stderr.contains("ticks"), "{stderr}");
}

#[test]
fn options_also_come_from_the_environment() {
    let out = tally()
        .args(["simulate", "--workspaces", "5", "--users", "5", "--apps", "2"])
        .env("TALLY_DURATION", "30m")
        .env("TALLY_REPLICAS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("tally simulate: 2 replicas"), "{stdout}");
    assert!(stdout.contains("snapshots=1 for 1 periods"), "{stdout}");
}

#[test]
fn a_bad_option_is_one_clear_line_and_exit_code_2() {
    let out = tally().args(["simulate", "--duration", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn options_that_contradict_each_other_are_a_configuration_error() {
    let out = tally()
        .args([
            "simulate",
            "--report-interval",
            "1h",
            "--snapshot-interval",
            "30m",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--report-interval") && stderr.contains("--snapshot-interval"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_simulation_over_postgresql_passes_too() {
    let db = tally_tests::pg::fresh_database().await;
    let out = tally()
        .args([
            "simulate",
            "--workspaces",
            "20",
            "--users",
            "10",
            "--apps",
            "4",
            "--duration",
            "1h",
        ])
        .arg("--database-url")
        .arg(&db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.starts_with("tally simulate: 3 replicas over PostgreSQL"),
        "{stdout}"
    );
    assert!(!stdout.contains(&db.url), "the URL stays out of the output");
    let line = stdout.lines().find(|l| l.starts_with("conservation:")).unwrap();
    assert!(line.starts_with("conservation: OK"), "{line}");
    assert!(line.contains("snapshots=2 for 2 periods"), "{line}");
    assert_insights_ok(&stdout);
}

/// The insights line follows the conservation line: OK, and the figures
/// sent and rolled up agree.
fn assert_insights_ok(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("insights:"))
        .unwrap_or_else(|| panic!("no insights line in:\n{stdout}"));
    assert!(lines[at - 1].starts_with("conservation:"), "{stdout}");
    let line = lines[at];
    assert!(line.starts_with("insights: OK usage seconds of "), "{stdout}");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // pairs, usage sent, rolled up, sessions sent, rolled up, ...
    assert!(numbers[0] > 0 && numbers[1] > 0, "{line}");
    assert_eq!(numbers[1], numbers[2], "{line}");
    assert_eq!(numbers[3], numbers[4], "{line}");
}

/// Rows the simulator did not send, in the hours it checks (someone else
/// wrote to its database): the rollup holds more than was sent, so the run
/// fails (exit 1), naming the figures that differ; conservation, which
/// reads only the run's own rows, still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_simulation_did_not_send_fail_the_insights_check() {
    use tally_domain::authz::{Authorized, Subject};
    use tally_domain::ports::{AppStatsStore, AppStatsWrite};

    let db = tally_tests::pg::fresh_database().await;
    let store = tally_adapters_postgres::PgStore::connect(&db.url).await.unwrap();
    let start = time::macros::datetime!(2026-01-05 08:10 UTC);
    let row = tally_domain::appstats::StatsReport {
        user_id: uuid::Uuid::new_v4(),
        workspace_id: uuid::Uuid::new_v4(),
        agent_id: uuid::Uuid::new_v4(),
        access_method: tally_domain::appstats::AccessMethod::Path,
        slug_or_port: "not-from-the-simulation".into(),
        session_id: uuid::Uuid::new_v4(),
        session_started_at: start,
        session_ended_at: Some(start + time::Duration::minutes(20)),
        requests: 3,
        sessions: 1,
    };
    Authorized::new(store, Subject::SystemRestricted)
        .write_app_stats(&AppStatsWrite {
            rows: vec![row],
            batch_size: 16,
            last_used: Vec::new(),
        })
        .await
        .unwrap();
    let out = tally()
        .args([
            "simulate",
            "--workspaces",
            "10",
            "--users",
            "5",
            "--apps",
            "3",
            "--duration",
            "30m",
        ])
        .arg("--database-url")
        .arg(&db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let conservation = stdout.lines().find(|l| l.starts_with("conservation:")).unwrap();
    assert!(conservation.starts_with("conservation: OK"), "{stdout}");
    let insights = stdout.lines().find(|l| l.starts_with("insights:")).unwrap();
    assert!(insights.starts_with("insights: FAILED"), "{stdout}");
    for figure in ["app usage", "active users", "user activity"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("  - ") && l.contains(figure)),
            "{figure} not named:\n{stdout}"
        );
    }
    assert!(stdout.contains("path not-from-the-simulation"), "{stdout}");
}

#[test]
fn an_unreachable_database_is_a_configuration_error() {
    let out = tally()
        .args([
            "simulate",
            "--database-url",
            "postgres://nobody:secret@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("secret"), "{stderr}");
    assert!(out.stdout.is_empty());
}
