//! Command line: every option is also read from a `TALLY_` environment
//! variable and, for `serve` and `migrate`, from a `--config` file
//! (`config/layers.rs`), so an option is declared once, here.
//!
//! The conventions the layering relies on (held by a test): an option's id
//! is its field name, its flag is `--` plus the id with `-` for `_`, its
//! environment variable is `TALLY_` plus the id in capitals, and its key in
//! the file is the id. A secret is a [`Secret`] marked `hide_env_values`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// Usage telemetry for a fleet of cloud development workspaces.
#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about,
    propagate_version = true,
    args_override_self = true,
    after_help = "Log level: TALLY_LOG or RUST_LOG (default: info). Configuration errors exit with code 2."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background loops.
    Serve(Box<ServeArgs>),
    /// Simulate a fleet: several replicas over one store, a simulated clock,
    /// several telemetry periods, ending in a conservation check.
    Simulate(crate::simulate::SimulateArgs),
    /// Apply the PostgreSQL migrations and exit (`--status`: list them).
    Migrate(MigrateArgs),
    /// Print the configuration `tally serve` would run with (the same
    /// options), where each value comes from, secrets redacted; exit 2 if it
    /// is not valid.
    Config(Box<ServeArgs>),
}

/// A value that must never reach logs or error messages (tokens, URLs with
/// passwords). Parsing never fails, so clap never echoes it back.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file of settings, one key per option (`report_interval = "30s"`);
    /// a flag or environment variable beats the file, the file beats the
    /// defaults. `tally config` shows the result.
    #[arg(long, env = "TALLY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port (the bound address is
    /// logged as `listening on ADDR`).
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address serving only `GET /metrics`, without a token, for a
    /// Prometheus server (as Coder's `--prometheus-address`); the bound
    /// address is logged as `metrics at ADDR`. The API's `/metrics`, which
    /// needs a reader token, keeps working.
    #[arg(long, env = "TALLY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// PostgreSQL URL (postgres://...). Without it the in-memory store is used.
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Do not apply migrations at start-up (for deployments that run
    /// `tally migrate` as a step of their own); refuse to start, exit 2,
    /// while any is pending.
    #[arg(long, env = "TALLY_NO_MIGRATE")]
    pub no_migrate: bool,

    /// How long to wait for the database at start-up.
    #[arg(long, env = "TALLY_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Longest time one store call may take once connected; past it the call
    /// counts as the database being unavailable (retried, kept, reported),
    /// so a database behind a network blackhole cannot wedge the loops.
    /// At most half of `--shutdown-timeout`.
    #[arg(long, env = "TALLY_STORE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub store_timeout: Duration,

    /// This replica's id (a UUID); generated when absent.
    #[arg(long, env = "TALLY_REPLICA_ID")]
    pub replica_id: Option<Uuid>,

    /// How often collected app stats are written to the store.
    #[arg(long, env = "TALLY_REPORT_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub report_interval: Duration,

    /// Closed sessions no longer than this are rolled up per window.
    #[arg(long, env = "TALLY_ROLLUP_WINDOW", default_value = "1m", value_parser = positive_duration)]
    pub rollup_window: Duration,

    /// Rows per database statement.
    #[arg(long, env = "TALLY_BATCH_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,

    /// Cap on the memory app stats may hold, e.g. 1GiB, 512MiB: sessions
    /// being tracked, reports not yet applied, rows waiting to be written,
    /// and, without a database, the in-memory store's rows (their share is
    /// `--memory-store-share`). An app stats request that might not fit is
    /// refused whole with 503 so the proxy retries it. The process's RSS
    /// stays within this plus a fixed overhead (README, "Memory").
    #[arg(long, env = "TALLY_MAX_MEMORY", default_value = crate::serve::DEFAULT_MAX_MEMORY, value_parser = memory_size)]
    pub max_memory: u64,

    /// Without a database: the percentage of `--max-memory` the in-memory
    /// store's rows may take (the collector has the rest); a write past it
    /// is refused like a database that is down, until retention deletes
    /// rows. Not used with `--database-url`.
    #[arg(long, env = "TALLY_MEMORY_STORE_SHARE", default_value_t = crate::serve::DEFAULT_MEMORY_STORE_SHARE,
          value_parser = clap::value_parser!(u8).range(1..=99))]
    pub memory_store_share: u8,

    /// Telemetry period; periods end at multiples of it (counted from the
    /// Unix epoch).
    #[arg(long, env = "TALLY_SNAPSHOT_INTERVAL", default_value = "30m", value_parser = positive_duration)]
    pub snapshot_interval: Duration,

    /// How often tracked boundary usage is written to the store.
    #[arg(long, env = "TALLY_TRACKER_FLUSH_INTERVAL", default_value = "10s", value_parser = positive_duration)]
    pub tracker_flush_interval: Duration,

    /// How often the snapshot outbox is checked for unpublished snapshots.
    #[arg(long, env = "TALLY_PUBLISH_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub publish_interval: Duration,

    /// Period locks older than this are pruned.
    #[arg(long, env = "TALLY_LOCK_RETENTION", default_value = "7days", value_parser = positive_duration)]
    pub lock_retention: Duration,

    /// How often the usage rollup takes in new writes (one replica at a
    /// time); insights lag writes by at most this much.
    #[arg(long, env = "TALLY_USAGE_ROLLUP_INTERVAL", default_value = "5m", value_parser = positive_duration)]
    pub usage_rollup_interval: Duration,

    /// Raw app stat rows are deleted once their session started this long
    /// ago (their figures stay in the usage rollup).
    #[arg(long, env = "TALLY_RETENTION_APP_STATS", default_value = "90days", value_parser = positive_duration)]
    pub retention_app_stats: Duration,

    /// How far ahead of this server's clock a reported app session's start
    /// or end may be (a proxy's clock may run a little fast); a request
    /// with a later time is refused with 400, as is one with a start older
    /// than `--retention-app-stats`.
    #[arg(long, env = "TALLY_CLOCK_SKEW", default_value = "1h", value_parser = positive_duration)]
    pub clock_skew: Duration,

    /// Usage rollup rows (what insights read) are deleted after this long.
    #[arg(long, env = "TALLY_RETENTION_USAGE", default_value = "365days", value_parser = positive_duration)]
    pub retention_usage: Duration,

    /// Published snapshots are deleted this long after their period ended;
    /// unpublished ones are kept.
    #[arg(long, env = "TALLY_RETENTION_SNAPSHOTS", default_value = "365days", value_parser = positive_duration)]
    pub retention_snapshots: Duration,

    /// How often one replica deletes expired data, at most 4 hours of data
    /// of each kind per round.
    #[arg(long, env = "TALLY_PURGE_INTERVAL", default_value = "10m", value_parser = positive_duration)]
    pub purge_interval: Duration,

    /// HTTP endpoint receiving each snapshot as a JSON POST (with retries).
    /// Without it snapshots are written to the log.
    #[arg(long, env = "TALLY_TELEMETRY_URL")]
    pub telemetry_url: Option<String>,

    /// CA bundle (PEM) to trust for an https `--telemetry-url`, instead of
    /// the public CAs built into tally.
    #[arg(long, env = "TALLY_TELEMETRY_CA_FILE")]
    pub telemetry_ca_file: Option<std::path::PathBuf>,

    /// API tokens as ROLE=TOKEN pairs separated by commas; roles: proxy,
    /// agent, member, reader (auditor), admin. A proxy token may be Coder's
    /// PROXY_ID:SECRET, which names the proxy. Prefer the environment
    /// variable or the file so tokens stay out of process listings.
    #[arg(long, env = "TALLY_TOKENS", hide_env_values = true)]
    pub tokens: Option<Secret>,

    /// Largest accepted request body, e.g. 8MiB, 512KiB, 1000000.
    #[arg(long, env = "TALLY_BODY_LIMIT", default_value = "8MiB", value_parser = byte_size)]
    pub body_limit: usize,

    /// Longest time a request may take before it is answered 408.
    #[arg(long, env = "TALLY_REQUEST_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,

    /// Longest time the shutdown may take to drain requests and flush.
    #[arg(long, env = "TALLY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub shutdown_timeout: Duration,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "TALLY_LOG_JSON")]
    pub log_json: bool,

    /// Log one line per HTTP request at INFO (method, route, status,
    /// duration, request id); `--access-log false` turns it off.
    #[arg(long, env = "TALLY_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub access_log: bool,
}

/// Options of a command that are taken from its command line only, never
/// from the environment or a `--config` file: they choose what the command
/// does, and a stray variable or file line must not turn `tally migrate`
/// into a command that migrates nothing.
pub const COMMAND_LINE_ONLY: &[&str] = &["status"];

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// List the applied and pending migrations (and any this tally does not
    /// know) and exit, changing nothing.
    #[arg(long)]
    pub status: bool,

    /// TOML file of settings, as for `tally serve` (keys of serve's other
    /// options are ignored here).
    #[arg(long, env = "TALLY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostgreSQL URL (postgres://...).
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// How long to wait for the database.
    #[arg(long, env = "TALLY_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "TALLY_LOG_JSON")]
    pub log_json: bool,
}

/// A humantime duration (`30s`, `1m`, `250ms`, `7days`) that is not zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 1m, 250ms)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    // Durations become `time::Duration`s and timestamps; keep them sane.
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("longer than ten years".to_owned());
    }
    Ok(d)
}

/// A size in bytes with an optional unit, as `bytesize` reads it: B,
/// KB/KiB, MB/MiB, GB/GiB, TB/TiB (case-insensitive), at least one byte.
fn bytes(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a size (expected e.g. 8MiB, 512KiB, 1000000): {e}"))?;
    match size.as_u64() {
        0 => Err("must be larger than zero".to_owned()),
        n => Ok(n),
    }
}

/// A request body limit: a size of at most 1GiB.
pub fn byte_size(s: &str) -> Result<usize, String> {
    let n = bytes(s)?;
    if n > 1 << 30 {
        return Err(format!("{s:?} is larger than 1GiB"));
    }
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// A memory cap: a size from 1KiB to 1TiB.
pub fn memory_size(s: &str) -> Result<u64, String> {
    let n = bytes(s)?;
    if n < 1 << 10 {
        return Err(format!("{s:?} is smaller than 1KiB"));
    }
    if n > 1 << 40 {
        return Err(format!("{s:?} is larger than 1TiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tally").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse(&[&["serve"], args].concat()).unwrap().command {
            Command::Serve(a) => *a,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    /// The defaults README and docs/rules.md#defaults give.
    #[test]
    fn serve_defaults_are_the_documented_ones() {
        let a = serve(&[]);
        assert_eq!(a.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(a.report_interval, Duration::from_secs(30));
        assert_eq!(a.rollup_window, Duration::from_secs(60));
        assert_eq!(a.batch_size, 1024);
        assert_eq!(a.snapshot_interval, Duration::from_secs(30 * 60));
        assert_eq!(a.body_limit, 8 << 20);
        assert_eq!(a.lock_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(a.store_timeout, Duration::from_secs(10));
        assert_eq!(a.max_memory, 2 << 30);
        assert_eq!(a.memory_store_share, 25);
        assert_eq!(
            tally_domain::appstats::session_times::SessionTimeLimits::default(),
            tally_domain::appstats::session_times::SessionTimeLimits {
                clock_skew: crate::loops::to_time(a.clock_skew),
                retention: crate::loops::to_time(a.retention_usage),
            },
            "the domain's defaults are the flags' defaults"
        );
        assert!(a.database_url.is_none() && a.tokens.is_none() && !a.log_json);
    }

    /// Without a database the cap is split; with one the collector has it all.
    #[test]
    fn the_in_memory_store_takes_its_share_of_the_cap() {
        use crate::serve::{collector_share, memory_store_share};
        let a = serve(&[]);
        assert_eq!(memory_store_share(a.max_memory, a.memory_store_share), 512 << 20);
        assert_eq!(
            collector_share(a.max_memory, Some(a.memory_store_share)),
            1536 << 20
        );
        assert_eq!(collector_share(a.max_memory, None), 2 << 30);
        let max = 1 << 40;
        assert_eq!(memory_store_share(max, 99) + collector_share(max, Some(99)), max);
        for bad in ["0", "100", "half"] {
            let err = parse(&["serve", "--memory-store-share", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn durations_and_sizes_are_parsed_and_checked() {
        let a = serve(&[
            "--report-interval",
            "250ms",
            "--snapshot-interval",
            "2s",
            "--body-limit",
            "64KiB",
        ]);
        assert_eq!(a.report_interval, Duration::from_millis(250));
        assert_eq!(a.snapshot_interval, Duration::from_secs(2));
        assert_eq!(a.body_limit, 65536);
        assert_eq!(
            serve(&["--store-timeout", "2s"]).store_timeout,
            Duration::from_secs(2)
        );
        for bad in [
            &["--report-interval", "soon"][..],
            &["--rollup-window", "0s"],
            &["--store-timeout", "0s"],
            &["--store-timeout", "never"],
            &["--batch-size", "0"],
            &["--body-limit", "8 parsecs"],
            &["--listen", "nowhere"],
            &["--replica-id", "not-a-uuid"],
        ] {
            let err = parse(&[&["serve"], bad].concat()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let a = serve(&[
            "--tokens",
            "admin=hunter2",
            "--database-url",
            "postgres://u:pw@h/db",
        ]);
        let text = format!("{a:?}");
        assert!(!text.contains("hunter2") && !text.contains("pw@"), "{text}");
        assert_eq!(a.tokens.unwrap().expose(), "admin=hunter2");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("1000"), Ok(1000));
        assert_eq!(byte_size("1k"), Ok(1000));
        assert_eq!(byte_size("2MiB"), Ok(2 << 20));
        assert_eq!(byte_size("1 GiB"), Ok(1 << 30));
        assert!(byte_size("0").is_err());
        assert!(byte_size("2GiB").is_err());
        assert!(byte_size("-1").is_err());
        assert!(byte_size("99999999999999999999").is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_size("1GiB"), Ok(1 << 30));
        assert_eq!(memory_size("512 MiB"), Ok(512 << 20));
        assert_eq!(memory_size("2gb"), Ok(2_000_000_000));
        assert!(memory_size("1000").is_err(), "below 1KiB");
        assert!(memory_size("2TiB").is_err());
        assert!(memory_size("lots").unwrap_err().contains("not a size"));
    }
}
