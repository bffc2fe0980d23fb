//! `tally simulate --serve ADDR`: after the run, the simulated store is
//! served as `tally serve` serves a store (API, dashboard, loops, graceful
//! shutdown), with a reader token made up for the session.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tally_adapters_memory::MemoryStore;
use uuid::Uuid;

use super::{SimConfig, SimulateArgs};
use crate::cli::ServeArgs;
use crate::store::Opened;

/// `tally serve`'s options, parsed on their own (flags given here win over
/// `TALLY_` variables, as for `tally serve`).
#[derive(Debug, Parser)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

/// Serves the simulated store (`memory`, or the database) at `addr` until SIGTERM or Ctrl-C. The dashboard's URL
/// names the simulated days (in its fragment; the token never is in a URL).
pub async fn serve_simulated(
    args: &SimulateArgs,
    addr: SocketAddr,
    memory: Option<Arc<MemoryStore>>,
    config: &SimConfig,
) -> anyhow::Result<ExitCode> {
    let token = Uuid::new_v4().simple().to_string();
    let mut flags = vec![
        "tally simulate --serve".to_owned(),
        "--listen".into(),
        addr.to_string(),
        "--tokens".into(),
        format!("reader={token}"),
        // A line per dashboard request would bury the URL and token.
        "--access-log".into(),
        "false".into(),
    ];
    // Simulated time lies in the past: keep all of it for this session,
    // whatever the retention defaults would purge.
    let age = time::OffsetDateTime::now_utc() - config.start;
    let keep = format!("{}days", age.whole_days().max(0) + 366);
    for retention in [
        "--retention-app-stats",
        "--retention-usage",
        "--retention-snapshots",
    ] {
        flags.extend([retention.to_owned(), keep.clone()]);
    }
    // On PostgreSQL the server opens the database itself (the rows are
    // there); the in-memory store is handed over.
    let opened = match (&args.database_url, memory) {
        (Some(url), _) => {
            flags.extend(["--database-url".into(), url.clone()]);
            None
        }
        (None, memory) => Some(Opened::memory(
            memory.expect("the simulation ran on the in-memory store"),
        )),
    };
    let serve_args = ServeOnly::try_parse_from(flags)?.args;
    crate::logging::init_tracing(serve_args.log_json);
    let first_day = config.start.date();
    let last_day = (config.start + config.duration - time::Duration::NANOSECOND).date();
    crate::serve::run_with(serve_args, opened, |bound| {
        println!();
        println!("Dashboard: http://{bound}/#start={first_day}&end={last_day}");
        println!("Reader token: {token}");
        println!("API: curl -H 'Authorization: Bearer {token}' http://{bound}/api/v2/status");
        println!("Serving the simulated data until Ctrl-C.");
        let _ = std::io::stdout().flush();
    })
    .await
}
