//! Developer tasks: `cargo xtask <task>`. Each task is a thin, documented
//! wrapper around cargo and the tally binary, so CI and people run the same.

mod browser;
mod capacity;
mod fuzz;
mod load;
mod schemathesis;
mod server;

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Developer tasks for tally")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// What CI runs: formatting, lints, the test suite, the bounded schemathesis runs.
    Ci,
    /// Run the criterion benchmarks (domain and PostgreSQL store).
    Bench {
        /// Only benchmarks whose name contains this.
        filter: Option<String>,
    },
    /// Load-test a real `tally serve` over loopback (app stats, boundary logs).
    Load(load::LoadArgs),
    /// One replica's ingest capacity at default settings under wrk, beside
    /// a do-nothing handler on the same HTTP stack; RSS sampled throughout.
    /// Needs `apt-get install wrk`.
    Capacity(capacity::CapacityArgs),
    /// Three `tally serve` replicas on one fresh PostgreSQL under load, with a
    /// SIGTERM or SIGKILL mid-load and a failing snapshot sink; checks
    /// conservation, exact per-period figures and the metrics.
    Replicas {
        /// Seconds of load (the test's own default is 6).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Telemetry periods (2 s each) of the exact scenario (the test's own default is 5).
        #[arg(long, default_value_t = 15)]
        periods: u64,
    },
    /// The database crashed (or stopped cleanly) under load while three
    /// replicas run, then restarted; a longer run of the CI outage test.
    Outage {
        /// Seconds the database stays down (the test's own default is 10).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Seconds of load before and after the outage (the test's default is 4).
        #[arg(long, default_value_t = 10)]
        load_seconds: u64,
        /// How the database goes down.
        #[arg(long, value_enum, default_value_t = Shutdown::Immediate)]
        shutdown: Shutdown,
    },
    /// schemathesis (PyPI) against a live `tally serve` on the chosen store,
    /// with the project's hooks; then audits the store against every
    /// request sent. Needs `pip install schemathesis`.
    Schemathesis(schemathesis::SchemathesisArgs),
    /// Fuzz the payload decoders (cargo-fuzz, crates/app/fuzz) for a bounded
    /// time per target; installs cargo-fuzz if missing.
    Fuzz(fuzz::FuzzArgs),
    /// The dashboard in headless Chromium (Debian's `chromium`, driven by
    /// playwright-core from xtask/browser) against a seeded `tally simulate
    /// --serve`: every panel against the JSON API, a wrong token, console
    /// errors; screenshots in target/browser/.
    Browser(browser::BrowserArgs),
}

/// How `cargo xtask outage` stops the database.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shutdown {
    /// A crash (`pg_ctl stop -m immediate`).
    Immediate,
    /// A clean stop (`pg_ctl stop -m fast`).
    Fast,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Ci => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            cargo_env(
                &["doc", "--no-deps", "-p", "tally-domain"],
                &[("RUSTDOCFLAGS", "-D warnings")],
            )?;
            // The fuzz crate is a workspace of its own: lint it, don't fuzz.
            let fuzz = "crates/app/fuzz/Cargo.toml";
            cargo(&["fmt", "--manifest-path", fuzz, "--", "--check"])?;
            cargo(&[
                "clippy",
                "--locked",
                "--manifest-path",
                fuzz,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["test", "--workspace"])?;
            // As .ci/run: the bounded schemathesis runs (pip install schemathesis first).
            for store in ["memory", "postgres"] {
                cargo(&["xtask", "schemathesis", "--store", store, "--examples", "10"])?;
            }
            // As .ci/run: the dashboard in Chromium (apt-get install chromium first).
            cargo(&["xtask", "browser"])
        }
        Task::Bench { filter } => {
            let mut args = vec!["bench", "--workspace"];
            if let Some(filter) = filter.as_deref() {
                args.extend(["--", filter]);
            }
            cargo(&args)
        }
        Task::Load(args) => load::run(args),
        Task::Capacity(args) => capacity::run(args),
        Task::Replicas { seconds, periods } => {
            let (seconds, periods) = (seconds.to_string(), periods.to_string());
            cargo_env(
                &[
                    "test",
                    "-p",
                    "tally",
                    "--test",
                    "it",
                    "replicas::",
                    "--",
                    "--nocapture",
                ],
                &[
                    ("TALLY_REPLICAS_SECONDS", &seconds),
                    ("TALLY_REPLICAS_PERIODS", &periods),
                ],
            )
        }
        Task::Outage {
            seconds,
            load_seconds,
            shutdown,
        } => {
            let (seconds, load_seconds) = (seconds.to_string(), load_seconds.to_string());
            let shutdown = match shutdown {
                Shutdown::Immediate => "immediate",
                Shutdown::Fast => "fast",
            };
            cargo_env(
                &[
                    "test",
                    "-p",
                    "tally",
                    "--test",
                    "it",
                    "db_outage::",
                    "--",
                    "--nocapture",
                ],
                &[
                    ("TALLY_OUTAGE_SECONDS", &seconds),
                    ("TALLY_OUTAGE_LOAD_SECONDS", &load_seconds),
                    ("TALLY_OUTAGE_SHUTDOWN", shutdown),
                ],
            )
        }
        Task::Fuzz(args) => fuzz::run(args),
        Task::Schemathesis(args) => schemathesis::run(args),
        Task::Browser(args) => browser::run(args),
    }
}

/// The workspace's root directory.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), std::path::PathBuf::from)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("could not start {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
