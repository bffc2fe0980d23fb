//! The `tally` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use tally::EXIT_CONFIG;
use tally::config::ConfigError;

fn main() -> ExitCode {
    let cli = tally::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tally::run(cli)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("tally: configuration error: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("tally: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
