//! `tally migrate`: apply the PostgreSQL migrations and exit; with
//! `--status`, list them and change nothing.

use std::process::ExitCode;

use anyhow::Context as _;
use tally_adapters_postgres::MigrationStatus;
use time::format_description::well_known::Rfc3339;

use crate::cli::MigrateArgs;
use crate::config::{ConfigError, redact_database_url};

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_tracing(args.log_json);
    let url = args.database_url.expose();
    let what = redact_database_url(url);
    let migrate = !args.status;
    // Connecting applies pending migrations unless only the status is asked.
    let connect_and_read = || async {
        let store = crate::store::connect_postgres_with(url, migrate).await?;
        store
            .migration_status()
            .await
            .with_context(|| format!("cannot read the migrations of {what}"))
    };
    match crate::store::patiently(args.connect_timeout, connect_and_read).await {
        Some(Ok(status)) if args.status => {
            print!("{}", render_status(&what, &status));
            Ok(ExitCode::SUCCESS)
        }
        Some(Ok(status)) => {
            tracing::info!(database = %what, "migrations applied: {}", status.summary());
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

/// One line per migration (version, name, state, when it was applied),
/// then the summary.
pub fn render_status(database: &str, status: &MigrationStatus) -> String {
    let rows: Vec<[String; 4]> = status
        .entries
        .iter()
        .map(|e| {
            [
                format!("{:04}", e.version),
                e.description.clone(),
                e.state.label().to_owned(),
                e.state
                    .installed_on()
                    .and_then(|t| t.format(&Rfc3339).ok())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["VERSION", "NAME", "STATE", "APPLIED AT"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("database {database}\n");
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&status.summary());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_adapters_postgres::{MigrationEntry, MigrationState};
    use time::macros::datetime;

    #[test]
    fn the_status_is_a_table_and_a_summary() {
        let at = datetime!(2026-01-02 03:04:05 UTC);
        let status = MigrationStatus {
            entries: vec![
                MigrationEntry {
                    version: 1,
                    description: "init".into(),
                    state: MigrationState::Applied { installed_on: at },
                },
                MigrationEntry {
                    version: 2,
                    description: "usage rollup".into(),
                    state: MigrationState::Pending,
                },
            ],
        };
        assert_eq!(
            render_status("postgres://tally@db/tally", &status),
            "database postgres://tally@db/tally\n\
             VERSION  NAME          STATE    APPLIED AT\n\
             0001     init          applied  2026-01-02T03:04:05Z\n\
             0002     usage rollup  pending\n\
             schema not current: 1 pending (0002 usage rollup)\n"
        );
    }
}
