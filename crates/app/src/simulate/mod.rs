//! Placeholder: `tally simulate` is written in parallel and replaces this file.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("tally simulate is not implemented yet")
}
