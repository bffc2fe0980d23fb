//! Configuration errors end `tally` at once: one clear line, exit code 2.
// Tables of cases read best as tuples.
#![allow(clippy::type_complexity)]

use crate::common;

use std::process::Output;

use common::tally;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tally();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_config_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // Our own errors are one line; clap's usage errors start with one.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tally: configuration error:") || l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains(needle) || stderr.contains(needle),
        "{needle:?} not in {stderr}"
    );
}

#[test]
fn bad_options_exit_2_with_one_line() {
    let cases: &[(&[&str], &[(&str, &str)], &str)] = &[
        (&["serve", "--report-interval", "soon"], &[], "--report-interval"),
        (
            &["serve", "--snapshot-interval", "0s"],
            &[],
            "--snapshot-interval",
        ),
        (
            &["serve"],
            &[("TALLY_ROLLUP_WINDOW", "forever")],
            "--rollup-window",
        ),
        (&["serve", "--listen", "localhost"], &[], "--listen"),
        (&["serve", "--rollup-window", "10ms"], &[], "--rollup-window"),
        (
            &["serve", "--store-timeout", "20s", "--shutdown-timeout", "30s"],
            &[],
            "--store-timeout (20s) must be at most half of --shutdown-timeout (30s)",
        ),
        (
            &["serve", "--database-url", "mysql://u:pw@db/tally"],
            &[],
            "postgres://",
        ),
        (&["serve", "--database-url", "::"], &[], "--database-url"),
        (
            &["serve", "--telemetry-url", "ftp://example.com/x"],
            &[],
            "--telemetry-url",
        ),
        (&["serve"], &[("TALLY_TOKENS", "root=hunter2")], "unknown role"),
        (&["serve"], &[("TALLY_TOKENS", "proxy")], "ROLE=TOKEN"),
        (&["migrate"], &[], "--database-url"),
    ];
    for (args, env, needle) in cases {
        let out = run(args, env);
        assert_config_error(&out, needle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("hunter2") && !stderr.contains(":pw@"),
            "secret echoed: {stderr}"
        );
    }
}

#[test]
fn unreachable_database_and_busy_port_exit_2() {
    // A port nobody listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://tally:secretpw@127.0.0.1:{port}/tally");
    let out = run(&["serve", "--database-url", &url, "--connect-timeout", "2s"], &[]);
    assert_config_error(&out, "127.0.0.1");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secretpw"));
    let out = run(
        &["migrate", "--database-url", &url, "--connect-timeout", "2s"],
        &[],
    );
    assert_config_error(&out, "database");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = run(&["serve", "--listen", &addr], &[]);
    assert_config_error(&out, "cannot listen");
}
