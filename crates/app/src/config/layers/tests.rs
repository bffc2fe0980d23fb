use std::io::Write as _;
use std::time::Duration;

use super::*;
use crate::cli::Command as Cmd;

/// Loads `args` with `text` as the `--config` file (when given), in an
/// environment without `TALLY_` variables (clap reads the real one: the
/// test runner's own must not set any).
fn load_file(args: &[&str], text: Option<&str>) -> Result<Loaded, LoadError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut argv: Vec<OsString> = vec!["tally".into()];
    argv.extend(args.iter().map(OsString::from));
    if let Some(text) = text {
        file.write_all(text.as_bytes()).unwrap();
        argv.push("--config".into());
        argv.push(file.path().into());
    }
    load_from(argv, std::iter::empty())
}

fn serve(loaded: Loaded) -> crate::cli::ServeArgs {
    match loaded.cli.command {
        Cmd::Serve(a) | Cmd::Config(a) => *a,
        other => panic!("expected serve, got {other:?}"),
    }
}

fn config_error(result: Result<Loaded, LoadError>) -> String {
    match result {
        Err(LoadError::Config(e)) => e.to_string(),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn origin<'a>(loaded: &'a Loaded, key: &str) -> &'a Origin {
    &loaded
        .effective
        .settings
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key}"))
        .origin
}

#[test]
fn the_file_beats_the_defaults_and_flags_beat_the_file() {
    let text = "report_interval = \"250ms\"\nbatch_size = 64\nlog_json = true\n\
                listen = \"127.0.0.1:9999\"\ntokens = [\"proxy=p\", \"agent=a\"]\n";
    let loaded = load_file(&["serve", "--batch-size", "7"], Some(text)).unwrap();
    assert!(matches!(origin(&loaded, "report_interval"), Origin::File(p) if p.ends_with(":1")));
    assert_eq!(
        origin(&loaded, "batch_size"),
        &Origin::Flag("--batch-size".into())
    );
    assert_eq!(origin(&loaded, "rollup_window"), &Origin::Default);
    assert_eq!(origin(&loaded, "replica_id"), &Origin::Unset);
    let a = serve(loaded);
    assert_eq!(a.report_interval, Duration::from_millis(250));
    assert_eq!(a.batch_size, 7);
    assert!(a.log_json);
    assert_eq!(a.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(a.tokens.unwrap().expose(), "proxy=p,agent=a");
    assert_eq!(a.rollup_window, Duration::from_secs(60));
    // A flag set to its default value still beats the file.
    let a = serve(load_file(&["serve", "--report-interval", "30s"], Some(text)).unwrap());
    assert_eq!(a.report_interval, Duration::from_secs(30));
}

#[test]
fn without_a_file_everything_is_as_before() {
    let loaded = load_file(&["serve"], None).unwrap();
    assert!(loaded.effective.file.is_none());
    assert!(
        loaded
            .effective
            .settings
            .iter()
            .all(|s| matches!(s.origin, Origin::Default | Origin::Unset)),
        "{:?}",
        loaded.effective.settings
    );
    let a = serve(loaded);
    assert_eq!(a.report_interval, Duration::from_secs(30));
    assert_eq!(a.listen, "127.0.0.1:8080".parse().unwrap());
}

#[test]
fn an_unknown_key_is_refused_naming_it_and_its_line() {
    let err = config_error(load_file(
        &["serve"],
        Some("listen = \"127.0.0.1:0\"\nreport_intervall = \"1s\"\n"),
    ));
    assert!(err.contains(":2: unknown key report_intervall"), "{err}");
    assert!(err.contains("did you mean report_interval?"), "{err}");
    // The flag's spelling is not the key.
    let err = config_error(load_file(&["serve"], Some("report-interval = \"1s\"\n")));
    assert!(err.contains("did you mean report_interval?"), "{err}");
    let err = config_error(load_file(&["serve"], Some("colour = \"blue\"\n")));
    assert!(err.contains("unknown key colour;"), "{err}");
    let err = config_error(load_file(&["serve"], Some("config = \"other.toml\"\n")));
    assert!(err.contains("cannot name another"), "{err}");
    // A simulation option is no setting of the server.
    let err = config_error(load_file(&["serve"], Some("seed = 42\n")));
    assert!(err.contains("unknown key seed"), "{err}");
}

#[test]
fn a_bad_value_is_refused_naming_the_key_even_when_a_flag_overrides_it() {
    for (text, needle) in [
        (
            "report_interval = \"soon\"",
            "report_interval: invalid value \"soon\"",
        ),
        ("rollup_window = \"0s\"", "must be longer than zero"),
        ("batch_size = 0", "batch_size: invalid value \"0\""),
        ("batch_size = \"lots\"", "batch_size: invalid value \"lots\""),
        ("listen = \"nowhere\"", "listen: invalid value \"nowhere\""),
        ("replica_id = \"not-a-uuid\"", "replica_id: invalid value"),
        (
            "body_limit = \"8 parsecs\"",
            "body_limit: invalid value \"8 parsecs\"",
        ),
        (
            "log_json = \"yes\"",
            "log_json: invalid value \"yes\": expected true or false",
        ),
        ("log_json = 1", "expected true or false"),
    ] {
        let err = config_error(load_file(&["serve"], Some(&format!("\n{text}\n"))));
        assert!(err.contains(needle) && err.contains(":2: "), "{text}: {err}");
    }
    let err = config_error(load_file(
        &["serve", "--report-interval", "1s"],
        Some("report_interval = \"soon\""),
    ));
    assert!(err.contains("report_interval"), "{err}");
}

#[test]
fn a_missing_file_or_bad_toml_is_a_configuration_error() {
    let argv = ["tally", "serve", "--config", "/nonexistent/tally.toml"].map(OsString::from);
    let err = config_error(load_from(argv.to_vec(), std::iter::empty()));
    assert!(
        err.contains("/nonexistent/tally.toml") && err.contains("cannot read"),
        "{err}"
    );
    let err = config_error(load_file(&["serve"], Some("listen = \n")));
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn migrate_reads_its_own_keys_and_skips_serves() {
    let text =
        "database_url = \"postgres://u:pw@db/tally\"\nconnect_timeout = \"3s\"\nreport_interval = \"1s\"\n";
    let loaded = load_file(&["migrate"], Some(text)).unwrap();
    let keys: Vec<&str> = loaded.effective.settings.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["database_url", "connect_timeout", "log_json"]);
    match loaded.cli.command {
        Cmd::Migrate(a) => {
            assert_eq!(a.database_url.expose(), "postgres://u:pw@db/tally");
            assert_eq!(a.connect_timeout, Duration::from_secs(3));
        }
        other => panic!("{other:?}"),
    }
    // A serve key's bad value is still refused; an unknown key too.
    let err = config_error(load_file(
        &["migrate"],
        Some("database_url = \"postgres://db/t\"\nreport_interval = \"soon\"\n"),
    ));
    assert!(err.contains("report_interval"), "{err}");
    assert!(matches!(
        load_file(&["migrate"], Some("databse_url = \"postgres://db/t\"\n")),
        Err(LoadError::Config(_))
    ));
    // Without the URL anywhere, clap's own error (exit 2) names the flag.
    match load_file(&["migrate"], Some("connect_timeout = \"3s\"\n")) {
        Err(LoadError::Usage(e)) => {
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--database-url"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn migrate_status_is_taken_from_the_command_line_only() {
    let loaded = load_file(
        &["migrate", "--status"],
        Some("database_url = \"postgres://db/t\"\n"),
    )
    .unwrap();
    assert!(matches!(loaded.cli.command, Cmd::Migrate(a) if a.status));
    assert!(loaded.effective.settings.iter().all(|s| s.key != "status"));
    // In a file (shared with serve) it is no setting: a migration step
    // reading that file must still migrate.
    let err = config_error(load_file(
        &["migrate"],
        Some("database_url = \"postgres://db/t\"\nstatus = true\n"),
    ));
    assert!(err.contains("unknown key status"), "{err}");
}

#[test]
fn the_access_log_is_a_boolean_option() {
    let a = serve(load_file(&["serve"], None).unwrap());
    assert!(a.access_log && !a.no_migrate && a.metrics_listen.is_none());
    let a = serve(load_file(&["serve", "--access-log", "false"], None).unwrap());
    assert!(!a.access_log);
    let loaded = load_file(
        &["serve"],
        Some("access_log = false\nno_migrate = true\nmetrics_listen = \"127.0.0.1:9100\"\n"),
    )
    .unwrap();
    assert!(matches!(origin(&loaded, "access_log"), Origin::File(_)));
    let a = serve(loaded);
    assert!(!a.access_log && a.no_migrate);
    assert_eq!(a.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    let err = config_error(load_file(&["serve"], Some("access_log = \"sometimes\"\n")));
    assert!(err.contains("access_log"), "{err}");
}

#[test]
fn tally_config_takes_serves_options() {
    let loaded = load_file(&["config", "--batch-size", "9"], Some("log_json = true\n")).unwrap();
    assert_eq!(loaded.effective.command, "config");
    assert_eq!(
        origin(&loaded, "batch_size"),
        &Origin::Flag("--batch-size".into())
    );
    let a = serve(loaded);
    assert_eq!(a.batch_size, 9);
    assert!(a.log_json);
}

#[test]
fn options_follow_the_naming_conventions() {
    // The layering and the docs rely on these: a file key is the option's
    // id, its flag the id with - for _, its variable TALLY_ and the id.
    let root = Cli::command();
    for name in CONFIGURED {
        let sub = root.find_subcommand(name).unwrap();
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{name} {id}");
            if crate::cli::COMMAND_LINE_ONLY.contains(&id) {
                assert_eq!(arg.get_env(), None, "{name} {id} is read from its flag only");
                continue;
            }
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(format!("TALLY_{}", id.to_ascii_uppercase()).as_str()),
                "{name} {id}"
            );
        }
    }
    // An option both commands have is the same option.
    let serve = root.find_subcommand("serve").unwrap();
    let migrate = root.find_subcommand("migrate").unwrap();
    for arg in migrate.get_arguments() {
        if let Some(other) = serve.get_arguments().find(|a| a.get_id() == arg.get_id()) {
            assert_eq!(
                arg.get_default_values(),
                other.get_default_values(),
                "{}",
                arg.get_id()
            );
            assert_eq!(arg.is_hide_env_values_set(), other.is_hide_env_values_set());
        }
    }
}

#[test]
fn a_misspelt_variable_is_an_error_and_others_are_left_alone() {
    let root = Cli::command();
    let names = |list: &[&str]| {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    };
    for (typo, meant) in [
        ("TALLY_TOKEN", "TALLY_TOKENS"),
        ("TALLY_REPORT_INTERVALL", "TALLY_REPORT_INTERVAL"),
        ("TALLY_DATABASE_URI", "TALLY_DATABASE_URL"),
        ("TALLY_LISTNE", "TALLY_LISTEN"),
    ] {
        let err = check_environment(&root, names(&[typo])).unwrap_err().to_string();
        assert!(
            err.contains(typo) && err.contains(&format!("did you mean {meant}?")),
            "{err}"
        );
    }
    let others = [
        // A Kubernetes service named tally.
        "TALLY_SERVICE_HOST",
        "TALLY_SERVICE_PORT",
        "TALLY_PORT",
        "TALLY_PORT_8080_TCP_ADDR",
        // The test harness and developer tasks.
        "TALLY_TEST_DATABASE_URL",
        "TALLY_LOAD_DATABASE_URL",
        "TALLY_OUTAGE_SECONDS",
        "TALLY_REPLICAS_SECONDS",
        "TALLY_FUZZ_SKIP",
        "TALLY_LOGS",
    ];
    let known = ["TALLY_LOG", "TALLY_TOKENS", "TALLY_SEED", "HOME"];
    let all: Vec<&str> = others.iter().chain(known.iter()).copied().collect();
    let mut ignored = check_environment(&root, names(&all)).unwrap();
    ignored.sort();
    let mut want: Vec<String> = others.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(ignored, want);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// Duration options and their defaults in seconds.
    const OPTIONS: [(&str, u64); 4] = [
        ("report_interval", 30),
        ("tracker_flush_interval", 10),
        ("publish_interval", 5),
        ("request_timeout", 30),
    ];

    fn value(a: &crate::cli::ServeArgs, key: &str) -> Duration {
        match key {
            "report_interval" => a.report_interval,
            "tracker_flush_interval" => a.tracker_flush_interval,
            "publish_interval" => a.publish_interval,
            "request_timeout" => a.request_timeout,
            other => unreachable!("{other}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For any mix, each option takes its flag, else the file's value,
        /// else its default, and says which.
        #[test]
        fn each_option_takes_the_highest_layer_that_sets_it(
            layers in prop::collection::vec((prop::option::of(1u64..1000), prop::option::of(1u64..1000)), 4),
        ) {
            let mut args = vec!["serve".to_owned()];
            let mut text = String::new();
            for ((key, _), (flag, file)) in OPTIONS.iter().zip(&layers) {
                if let Some(s) = flag {
                    args.push(format!("--{}={s}s", key.replace('_', "-")));
                }
                if let Some(s) = file {
                    text.push_str(&format!("{key} = \"{s}s\"\n"));
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let loaded = load_file(&args, Some(&text)).unwrap();
            for ((key, _), (flag, file)) in OPTIONS.iter().zip(&layers) {
                let want_origin = match (flag, file) {
                    (Some(_), _) => "flag",
                    (None, Some(_)) => "file",
                    (None, None) => "default",
                };
                let got = origin(&loaded, key).to_string();
                prop_assert!(got.starts_with(want_origin), "{key}: {got}");
            }
            let a = serve(loaded);
            for ((key, default), (flag, file)) in OPTIONS.iter().zip(&layers) {
                let want = Duration::from_secs(flag.or(*file).unwrap_or(*default));
                prop_assert_eq!(value(&a, key), want, "{}", key);
            }
        }
    }
}
