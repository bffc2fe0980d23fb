//! `tally simulate`: several replicas in one process over one store, a
//! synthetic fleet, a simulated clock through several telemetry periods,
//! and a conservation check at the end.

mod engine;
mod fleet;
mod ground_truth;
mod outcome;
mod render;
mod serve;
mod sink;
mod timeline;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tally_domain::authz::{Authorized, Role, Subject};
use tally_domain::ports::{BoundaryUsageStore, Store, TelemetryStore};
use tally_domain::telemetry::truncate;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

pub use engine::{SimConfig, simulate};
pub use fleet::{Fleet, FleetSpec, Workload};
pub use ground_truth::InsightsCheck;
pub use outcome::{Conservation, Outcome};
pub use timeline::Timeline;

/// Where simulated time starts on an empty store: a Monday morning.
pub const DEFAULT_START: OffsetDateTime = datetime!(2026-01-05 08:00 UTC);
/// Real time between tries of a failed store call: the store may need a moment.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest traffic span accepted.
const MAX_DURATION: Duration = Duration::days(31);
/// Most sessions a run may plan (they are generated up front).
const MAX_SESSIONS: f64 = 20_000_000.0;
/// Most report ticks accepted (duration / report interval).
const MAX_TICKS: i128 = 1_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Control-plane replicas in the process.
    #[arg(long, env = "TALLY_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub replicas: u16,

    /// Workspaces in the fleet (each with one agent).
    #[arg(long, env = "TALLY_WORKSPACES", default_value_t = 1200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub workspaces: u32,

    /// Users in the fleet.
    #[arg(long, env = "TALLY_USERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub users: u32,

    /// Apps (path, subdomain and terminal) workspaces expose.
    #[arg(long, env = "TALLY_APPS", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub apps: u16,

    /// App sessions each user opens per hour, on average.
    #[arg(long, env = "TALLY_SESSIONS_PER_USER_HOUR", default_value_t = 20.0, value_parser = parse_rate)]
    pub sessions_per_user_hour: f64,

    /// Simulated traffic time (for example 4h, 90m).
    #[arg(long, env = "TALLY_DURATION", default_value = "4h", value_parser = parse_duration)]
    pub duration: Duration,

    /// Telemetry period: one snapshot each.
    #[arg(long, env = "TALLY_SNAPSHOT_INTERVAL", default_value = "30m", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// How often proxies report and collectors flush.
    #[arg(long, env = "TALLY_REPORT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub report_interval: Duration,

    /// How often each replica flushes its boundary tracker.
    #[arg(long, env = "TALLY_TRACKER_FLUSH_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub tracker_flush_interval: Duration,

    /// Seed of the fleet and workload: the same seed gives the same run.
    #[arg(long, env = "TALLY_SEED", default_value_t = 42)]
    pub seed: u64,

    /// PostgreSQL URL; the in-memory store when absent. Use a database of
    /// its own: the simulation writes rows, locks and snapshots there.
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// App stat rows per database statement.
    #[arg(long, env = "TALLY_BATCH_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,

    /// After the run, keep serving the API and the dashboard over the
    /// simulated data at this address until Ctrl-C (port 0 picks a free
    /// one), as `tally serve` would; prints the dashboard's URL and a reader
    /// token.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (expected for example 30s, 5m, 4h)"))?;
    let d = Duration::try_from(d).map_err(|_| "too long".to_owned())?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e} (expected a number)"))?;
    if !(r > 0.0 && r <= 10_000.0) {
        return Err("must be above 0 and at most 10000".into());
    }
    Ok(r)
}

impl SimulateArgs {
    /// Checks what clap cannot check option by option.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let show = |d: Duration| humantime::format_duration(d.unsigned_abs()).to_string();
        if self.duration > MAX_DURATION {
            bail!("--duration {} is longer than 31 days", show(self.duration));
        }
        if self.report_interval < Duration::SECOND {
            bail!(
                "--report-interval {} is shorter than 1s",
                show(self.report_interval)
            );
        }
        if self.report_interval > self.snapshot_interval {
            bail!(
                "--report-interval {} is longer than --snapshot-interval {}",
                show(self.report_interval),
                show(self.snapshot_interval)
            );
        }
        if self.snapshot_interval > Duration::days(1) {
            bail!(
                "--snapshot-interval {} is longer than a day",
                show(self.snapshot_interval)
            );
        }
        if self.duration.whole_nanoseconds() / self.report_interval.whole_nanoseconds() > MAX_TICKS {
            bail!(
                "--duration {} / --report-interval {} gives more than {MAX_TICKS} ticks",
                show(self.duration),
                show(self.report_interval)
            );
        }
        let sessions =
            f64::from(self.users) * self.sessions_per_user_hour * self.duration.as_seconds_f64() / 3600.0;
        if sessions > MAX_SESSIONS {
            bail!(
                "--users {} x --sessions-per-user-hour {} x --duration {} plans {sessions:.0} sessions, more than {MAX_SESSIONS}",
                self.users,
                self.sessions_per_user_hour,
                show(self.duration)
            );
        }
        Ok(SimConfig {
            fleet: FleetSpec {
                workspaces: self.workspaces as usize,
                users: self.users as usize,
                apps: usize::from(self.apps),
                replicas: usize::from(self.replicas),
                sessions_per_user_hour: self.sessions_per_user_hour,
                seed: self.seed,
            },
            start: truncate(DEFAULT_START, self.snapshot_interval),
            duration: self.duration,
            report_interval: self.report_interval,
            snapshot_interval: self.snapshot_interval,
            batch_size: self.batch_size as usize,
            tracker_flush_interval: self.tracker_flush_interval,
            retry_delay: RETRY_DELAY,
        })
    }
}

/// Exit code of a configuration error: bad options, a store that cannot be
/// opened or is not empty enough to simulate on.
pub const EXIT_CONFIG: u8 = 2;

/// Runs `tally simulate`: exit 0 when the conservation check and the
/// insights' ground truth hold, 1 when not, 2 on a configuration error (one
/// line on stderr).
pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let config_error = |e: anyhow::Error| {
        eprintln!("tally: configuration error: {e:#}");
        ExitCode::from(EXIT_CONFIG)
    };
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(e) => return Ok(config_error(e)),
    };
    // The in-memory store is kept as such, for `--serve` to hand over.
    let memory = args
        .database_url
        .is_none()
        .then(crate::store::default_memory_store);
    let store: Arc<dyn Store> = match &memory {
        Some(memory) => memory.clone(),
        None => match crate::store::open_store(args.database_url.as_deref()).await {
            Ok(s) => s,
            Err(e) => return Ok(config_error(e)),
        },
    };
    config.start = match start_after_earlier_runs(&store, config.start, config.snapshot_interval).await {
        Ok(start) => start,
        Err(e) => return Ok(config_error(e)),
    };
    let label = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "the in-memory store"
    };

    print!("{}", render::header(&config, label));
    let outcome = simulate(&config, store.clone(), &progress_bar()).await?;
    let verdict = outcome.conservation();
    print!("{}", render::report(&outcome, &verdict));
    let ok = verdict.ok && outcome.insights.ok;
    if let Some(addr) = args.serve {
        let served = serve::serve_simulated(&args, addr, memory, &config).await?;
        return Ok(if ok { served } else { ExitCode::FAILURE });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A database may hold earlier runs: start after their last period so this
/// run's period locks are free, and refuse if a period is half-filled.
pub(crate) async fn start_after_earlier_runs(
    store: &Arc<dyn Store>,
    start: OffsetDateTime,
    interval: Duration,
) -> anyhow::Result<OffsetDateTime> {
    let tracker = Authorized::new(store.clone(), Subject::BoundaryUsageTracker);
    let pending = tracker
        .boundary_usage_summary()
        .await
        .context("cannot read the store's current boundary usage")?;
    if pending.allowed_requests + pending.denied_requests + pending.unique_workspaces > 0 {
        bail!(
            "the store already holds boundary usage of an unclosed period (allowed {}, denied {}); \
             simulate against an empty database",
            pending.allowed_requests,
            pending.denied_requests
        );
    }
    let reader = Authorized::new(store.clone(), Subject::User(Role::Admin));
    let latest = reader
        .list_snapshots(1)
        .await
        .context("cannot list the store's snapshots")?;
    Ok(match latest.first() {
        Some(s) if s.period_end > start => {
            let floor = truncate(s.period_end, interval);
            let next = if floor < s.period_end {
                floor + interval
            } else {
                floor
            };
            on_a_whole_hour(next, interval)
        }
        _ => start,
    })
}

/// The first period start from `at` on that is also a whole UTC hour (when
/// one comes within a few thousand periods): the insights check reads whole
/// hours, so an earlier run's rows must end before this run's first hour.
fn on_a_whole_hour(at: OffsetDateTime, interval: Duration) -> OffsetDateTime {
    (0..4096)
        .map(|k: i32| at + interval * k)
        .find(|t: &OffsetDateTime| t.unix_timestamp_nanos() % 3_600_000_000_000 == 0)
        .unwrap_or(at)
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:30}] {pos}/{len} ticks {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
