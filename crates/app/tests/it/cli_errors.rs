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
            &[
                "serve",
                "--listen",
                "127.0.0.1:9",
                "--metrics-listen",
                "127.0.0.1:9",
            ],
            &[],
            "--metrics-listen (127.0.0.1:9) must differ from --listen",
        ),
        (&["serve", "--metrics-listen", "here"], &[], "--metrics-listen"),
        (&["serve", "--access-log", "maybe"], &[], "--access-log"),
        (&["serve"], &[("TALLY_ACCESS_LOG", "no")], "--access-log"),
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

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let file = config_file(
        "report_interval = \"1s\"\nbatch_size = 2\nrollup_window = \"3m\"\n\
         tokens = [\"proxy=file-secret\", \"admin=file-secret-2\"]\n",
    );
    let path = file.path().to_str().unwrap();
    let out = run(
        &["config", "--config", path, "--report-interval", "5s"],
        &[
            ("TALLY_REPORT_INTERVAL", "4s"),
            ("TALLY_BATCH_SIZE", "6"),
            (
                "TALLY_DATABASE_URL",
                "postgres://tally:hunter2@db.internal:5433/tally",
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")) || l.starts_with(&format!("# {key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{stdout}"))
    };
    let has = |key: &str, value: &str, origin: &str| {
        let l = line(key);
        assert!(l.contains(value) && l.contains(origin), "{key}: {l}");
    };
    has("report_interval", "\"5s\"", "# flag --report-interval");
    has("batch_size", "= 6", "# env TALLY_BATCH_SIZE");
    has("rollup_window", "\"3m\"", &format!("# file {path}:3"));
    has("snapshot_interval", "\"30m\"", "# default");
    has("tokens", "<2 tokens: workspace-proxy, user:admin>", "redacted");
    has(
        "database_url",
        "\"postgres://db.internal:5433/tally\"",
        "env TALLY_DATABASE_URL, redacted",
    );
    assert!(
        !stdout.contains("secret") && !stdout.contains("hunter2"),
        "a secret in\n{stdout}"
    );
    // What `tally config` prints is itself a configuration file.
    let saved = config_file(&stdout);
    let again = run(&["config", "--config", saved.path().to_str().unwrap()], &[]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("report_interval = \"5s\""), "{again}");
}

#[test]
fn bad_files_and_misspelt_variables_exit_2_naming_the_key() {
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        (
            "report_intervall = \"1s\"\n",
            &[],
            "unknown key report_intervall (did you mean report_interval?)",
        ),
        (
            "\n\nreport_interval = \"soon\"\n",
            &[],
            ":3: report_interval: invalid value \"soon\"",
        ),
        ("batch_size = 0\n", &[], "batch_size: invalid value \"0\""),
        ("[serve]\nlisten = \"127.0.0.1:0\"\n", &[], "found a table"),
        ("listen = \n", &[], "not valid TOML"),
        ("tokens = \"root=hunter2\"\n", &[], "unknown role"),
        (
            "store_timeout = \"20s\"\n",
            &[],
            "--store-timeout (20s) must be at most half",
        ),
        (
            "",
            &[("TALLY_TOKEN", "proxy=hunter2")],
            "TALLY_TOKEN is not a tally setting: did you mean TALLY_TOKENS?",
        ),
    ];
    for (text, env, needle) in cases {
        let file = config_file(text);
        let path = file.path().to_str().unwrap();
        for command in ["serve", "config"] {
            let out = run(&[command, "--config", path], env);
            assert_config_error(&out, needle);
            assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
        }
    }
    let out = run(&["serve", "--config", "/nonexistent/tally.toml"], &[]);
    assert_config_error(&out, "/nonexistent/tally.toml: cannot read it");
    // The file can also be named by TALLY_CONFIG.
    let file = config_file("batch_size = 0\n");
    let out = run(&["serve"], &[("TALLY_CONFIG", file.path().to_str().unwrap())]);
    assert_config_error(&out, "batch_size");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let out = run(&["serve"], &[("TALLY_ROLLUP_WINDOW", "forever")]);
    assert_config_error(&out, "--rollup-window");
    assert_config_error(
        &out,
        "the value comes from the environment variable TALLY_ROLLUP_WINDOW",
    );
    // Given as a flag, it is the flag's.
    let out = run(
        &["serve", "--rollup-window", "forever"],
        &[("TALLY_ROLLUP_WINDOW", "forever")],
    );
    assert_config_error(&out, "--rollup-window");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("environment variable"));
}

#[test]
fn migrate_reads_the_database_from_the_same_file() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // Serve's own keys are skipped by migrate, not refused.
    let file = config_file(&format!(
        "database_url = \"postgres://tally:secretpw@127.0.0.1:{port}/tally\"\n\
         connect_timeout = \"1s\"\nreport_interval = \"1s\"\n"
    ));
    let out = run(&["migrate", "--config", file.path().to_str().unwrap()], &[]);
    assert_config_error(&out, &format!("127.0.0.1:{port}"));
    assert_config_error(&out, "within 1s");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secretpw"));
}
