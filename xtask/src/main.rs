//! Developer tasks: `cargo xtask <task>`. Each task is a thin, documented
//! wrapper around cargo and the tally binary, so CI and people run the same.

mod fuzz;
mod load;

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
    /// What CI runs: formatting, lints, the test suite.
    Ci,
    /// Run the criterion benchmarks (domain and PostgreSQL store).
    Bench {
        /// Only benchmarks whose name contains this.
        filter: Option<String>,
    },
    /// Load-test a real `tally serve` over loopback (app stats, boundary logs).
    Load(load::LoadArgs),
    /// Three `tally serve` replicas on one fresh PostgreSQL under load, with a
    /// SIGTERM mid-load and a failing snapshot sink; checks conservation.
    Replicas {
        /// Seconds of load (the test's own default is 6).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Fuzz the payload decoders (cargo-fuzz, crates/app/fuzz) for a bounded
    /// time per target; installs cargo-fuzz if missing.
    Fuzz(fuzz::FuzzArgs),
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
            cargo(&["test", "--workspace"])
        }
        Task::Bench { filter } => {
            let mut args = vec!["bench", "--workspace"];
            if let Some(filter) = filter.as_deref() {
                args.extend(["--", filter]);
            }
            cargo(&args)
        }
        Task::Load(args) => load::run(args),
        Task::Replicas { seconds } => {
            let seconds = seconds.to_string();
            cargo_env(
                &["test", "-p", "tally", "--test", "replicas", "--", "--nocapture"],
                &[("TALLY_REPLICAS_SECONDS", &seconds)],
            )
        }
        Task::Fuzz(args) => fuzz::run(args),
    }
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
