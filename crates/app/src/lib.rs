//! The `tally` binary's library: configuration, HTTP API, background loops,
//! sinks, metrics, and the wiring of the adapters into the domain.

pub mod cli;
pub mod config;
pub mod deadline;
pub mod http;
pub mod logging;
pub mod loops;
pub mod metrics;
pub mod migrate;
pub mod ready;
pub mod serve;
pub mod simulate;
pub mod sink;
pub mod store;
pub mod tls;

use std::process::ExitCode;

/// Exit code for configuration errors (also clap's code for usage errors).
pub const EXIT_CONFIG: u8 = 2;

/// Runs a loaded command line ([`config::load`]).
pub async fn run(loaded: config::Loaded) -> anyhow::Result<ExitCode> {
    match loaded.cli.command {
        cli::Command::Serve(args) => serve::run(*args).await,
        cli::Command::Simulate(args) => simulate::run(args).await,
        cli::Command::Migrate(args) => migrate::run(args).await,
        cli::Command::Config(args) => {
            serve::check(&args)?;
            print!("{}", config::render(&loaded.effective));
            Ok(ExitCode::SUCCESS)
        }
    }
}
