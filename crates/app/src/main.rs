//! The `tally` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use tally::EXIT_CONFIG;
use tally::config::{ConfigError, LoadError};

// The allocator comparison's candidates (BENCHMARKS.md, "Allocators").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let loaded = match tally::config::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        // Usage errors exit 2, --help and --version 0.
        Err(LoadError::Usage(e)) => e.exit(),
        Err(LoadError::Config(e)) => {
            eprintln!("tally: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tally::run(loaded)) {
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
