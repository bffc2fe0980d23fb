//! `tally migrate`: apply the PostgreSQL migrations and exit.

use std::process::ExitCode;

use crate::cli::MigrateArgs;
use crate::config::{ConfigError, redact_database_url};

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_tracing(args.log_json);
    let url = args.database_url.expose();
    let what = redact_database_url(url);
    // Connecting applies pending migrations.
    match crate::store::patiently(args.connect_timeout, || crate::store::connect_postgres(url)).await {
        Some(Ok(_)) => {
            tracing::info!(database = %what, "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => Err(ConfigError(format!("{e:#}")).into()),
        None => Err(ConfigError(format!(
            "cannot open the database {what}: not reachable within {} (is it running, is the URL right?)",
            humantime::format_duration(args.connect_timeout)
        ))
        .into()),
    }
}
