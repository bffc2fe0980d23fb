//! `tally serve`: wiring, start-up checks, and the graceful shutdown.

use std::future::IntoFuture as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::reporter::StoreReporter;
use tally_domain::appstats::rollup::Weights;
use tally_domain::appstats::session_times::SessionTimeLimits;
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::tracker::{BoundaryTracker, TrackerFlush};
use tally_domain::clock::{Clock, SystemClock};
use tally_domain::error::Report;
use tally_domain::ports::{Layered, Reporter, SnapshotSink, Store};
use tally_domain::retry::Backoff;
use tally_domain::usage::RetentionPolicy;
use tokio::sync::watch;
use uuid::Uuid;

use crate::cli::ServeArgs;
use crate::config::{ConfigError, Tokens, check_database_url, check_telemetry_url, redact_database_url};
use crate::deadline::Deadline;
use crate::http::status::StoreKind;
use crate::http::{AppState, router};
use crate::loops::{Background, LoopSettings, WatchedReporter, to_time};
use crate::metrics::StoreMetrics;
use crate::sink::{HttpSink, LogSink};
use crate::store::Opened;

/// `--max-memory` unless set.
pub const DEFAULT_MAX_MEMORY: &str = "2GiB";

/// `--memory-store-share` unless set: a quarter of the cap holds many hours
/// of rows at the ingest target's load while the collector keeps the room
/// that load needs (BENCHMARKS.md, "The in-memory store at its defaults").
pub const DEFAULT_MEMORY_STORE_SHARE: u8 = 25;

/// The in-memory store's share of `max_memory`, `percent` of it
/// (docs/rules.md#memory-cap).
pub fn memory_store_share(max_memory: u64, percent: u8) -> u64 {
    (u128::from(max_memory) * u128::from(percent) / 100) as u64
}

/// The collector's share of `max_memory`: all of it on PostgreSQL, else
/// what the in-memory store's `percent` leaves.
pub fn collector_share(max_memory: u64, memory_store_percent: Option<u8>) -> u64 {
    match memory_store_percent {
        Some(percent) => max_memory - memory_store_share(max_memory, percent),
        None => max_memory,
    }
}

/// The collector's cap for its share of `--max-memory`: its accounting
/// counts bytes ([`Weights::RSS_BYTES`]).
pub fn collector_cap(share: u64) -> usize {
    usize::try_from(share).unwrap_or(usize::MAX)
}

/// Runs the server until SIGTERM or Ctrl-C. Start-up problems are
/// [`ConfigError`]s (exit code 2).
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_tracing(args.log_json);
    run_with(args, None, |_| {}).await
}

/// [`run`] on a store already opened (`None`: the one `args` names), calling
/// `listening` with the bound address once requests are taken: how
/// `tally simulate --serve` serves the store it filled.
pub async fn run_with(
    args: ServeArgs,
    opened: Option<Opened>,
    listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<ExitCode> {
    let tokens = check(&args)?;
    let sink: Arc<dyn SnapshotSink> = match args.telemetry_url.as_deref().map(check_telemetry_url) {
        Some(url) => {
            let sink = HttpSink::new(url?, args.telemetry_ca_file.as_deref())?;
            // A certificate the sink's TLS would refuse ends the start-up.
            sink.check_tls().await?;
            Arc::new(sink)
        }
        None => Arc::new(LogSink),
    };
    let _ = crate::metrics::handle();

    let database_url = args.database_url.as_ref().map(|s| s.expose());
    let opened = match opened {
        Some(opened) => opened,
        None => open_store_in_time(database_url, &args).await?,
    };
    let store = opened.store;
    let memory_store = opened.memory;
    if let Some(memory) = &memory_store {
        memory.set_limit(memory_store_share(args.max_memory, args.memory_store_share));
    }
    // Every call from here on (loops, shutdown flushes, reads) ends within
    // the store timeout: a blackholed database shows as unavailable.
    // Each call is timed too, the timeout included.
    let store: Arc<dyn Store> = Arc::new(Layered::new(
        Layered::new(store, Deadline(args.store_timeout)),
        StoreMetrics,
    ));
    crate::metrics::store_result(&Ok::<(), tally_domain::error::StoreError>(()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match args.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| ConfigError(format!("--metrics-listen: cannot listen on {at}: {e}")))?,
        ),
        None => None,
    };

    let replica_id = args.replica_id.unwrap_or_else(Uuid::new_v4);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let reporter: Arc<dyn Reporter> = Arc::new(WatchedReporter(Arc::new(StoreReporter::new(
        Authorized::new(store.clone(), Subject::SystemRestricted),
        args.batch_size as usize,
        clock.clone(),
    ))));
    let collector = StatsCollector::new(
        CollectorConfig {
            rollup_window: to_time(args.rollup_window),
            report_interval: args.report_interval,
            max_buffered: collector_cap(collector_share(
                args.max_memory,
                memory_store.as_ref().map(|_| args.memory_store_share),
            )),
            weights: Weights::RSS_BYTES,
            retry_min_delay: args.report_interval.min(Duration::from_secs(1)),
        },
        reporter,
        clock.clone(),
    );
    // A replica id given again after a restart must not reuse its
    // predecessor's delta numbers; the start time in microseconds is above them.
    let first_seq = u64::try_from(clock.now().unix_timestamp_nanos() / 1000).unwrap_or(1);
    let tracker = Arc::new(BoundaryTracker::new(replica_id, clock.clone()).starting_at_seq(first_seq));
    let background = Background::new(
        LoopSettings {
            replica_id,
            snapshot_interval: args.snapshot_interval,
            tracker_flush_interval: args.tracker_flush_interval,
            publish_interval: args.publish_interval,
            lock_retention: args.lock_retention,
            usage_rollup_interval: args.usage_rollup_interval,
            purge_interval: args.purge_interval,
            retention: RetentionPolicy {
                app_stats: to_time(args.retention_app_stats),
                usage: to_time(args.retention_usage),
                snapshots: to_time(args.retention_snapshots),
                ..RetentionPolicy::default()
            },
        },
        store.clone(),
        tracker.clone(),
        sink,
        clock.clone(),
    );

    tracing::info!(
        config_file = %args.config.as_deref().map_or("none".into(), |p| p.display().to_string()),
        report_interval = %humantime::format_duration(args.report_interval),
        rollup_window = %humantime::format_duration(args.rollup_window),
        batch_size = args.batch_size,
        max_memory = %bytesize::ByteSize(args.max_memory).display().iec(),
        memory_store_share = memory_store.as_ref().map(|_| args.memory_store_share),
        snapshot_interval = %humantime::format_duration(args.snapshot_interval),
        tracker_flush_interval = %humantime::format_duration(args.tracker_flush_interval),
        store_timeout = %humantime::format_duration(args.store_timeout),
        clock_skew = %humantime::format_duration(args.clock_skew),
        sink = args.telemetry_url.as_deref().unwrap_or("log"),
        tokens = tokens.len(),
        body_limit = args.body_limit,
        access_log = args.access_log,
        migrate = !args.no_migrate,
        "configuration"
    );
    if tokens.is_empty() {
        tracing::warn!("no API tokens configured (--tokens / TALLY_TOKENS): every API call will be refused");
    }
    let state = AppState::new(store, collector.clone(), tracker, tokens, args.body_limit)
        .with_readiness(opened.readiness)
        .with_access_log(args.access_log)
        .with_clock(clock)
        .with_usage_retention(to_time(args.retention_usage))
        .with_memory_store(memory_store)
        .with_session_times(SessionTimeLimits {
            clock_skew: to_time(args.clock_skew),
            retention: to_time(args.retention_usage),
        })
        .with_store_kind(match database_url {
            Some(_) => StoreKind::Postgres,
            None => StoreKind::Memory,
        });
    let metrics_server = match metrics_listener {
        Some(listener) => Some(serve_metrics(listener, state.clone())?),
        None => None,
    };
    let app = router(state, args.request_timeout);

    let collector_loop = collector.spawn();
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops = background.spawn(&stop_rx);

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = drain_rx.await;
            })
            .into_future(),
    );
    tracing::info!(
        %addr,
        %replica_id,
        store = database_url.map(redact_database_url).unwrap_or_else(|| "memory".into()),
        "listening on {addr}"
    );
    listening(addr);

    // Serve until a signal (or until the server fails on its own).
    let signal = tokio::select! {
        s = shutdown_signal() => s,
        r = &mut server => {
            tracing::error!(result = ?r, "HTTP server stopped unexpectedly");
            "server failure"
        }
    };
    let deadline = Instant::now() + args.shutdown_timeout;
    tracing::info!(signal, "shutting down: no new connections, draining requests");
    tokio::spawn(async {
        let s = shutdown_signal().await;
        eprintln!("tally: second {s}: exiting at once");
        std::process::exit(130);
    });

    let _ = drain_tx.send(());
    if !server.is_finished() {
        match tokio::time::timeout_at(deadline.into(), &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(result) => tracing::error!(result = ?result, "HTTP server ended with an error"),
            Err(_) => {
                tracing::warn!("requests still running at the shutdown timeout; cutting them off");
                server.abort();
            }
        }
    }

    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    tracing::info!("requests drained");
    // Everything accepted is now in the collector and tracker: stop the loops
    // and write it out.
    let _ = stop_tx.send(true);
    let stopping = futures::future::join_all(loops);
    if tokio::time::timeout_at(deadline.into(), stopping).await.is_err() {
        tracing::warn!("background loops still busy at the shutdown timeout");
    }
    tracing::debug!("background loops stopped");
    let mut clean = final_collector_flush(&collector, deadline).await;
    // The loop ends with `close`; do not let a stuck one hold up the exit.
    let abort = collector_loop.abort_handle();
    if tokio::time::timeout_at(deadline.into(), collector_loop)
        .await
        .is_err()
    {
        abort.abort();
    }
    if !final_tracker_flush(&background, deadline).await {
        clean = false;
    }
    // Snapshots another step left pending go out now if the sink is there.
    if let Ok(Ok(round)) = tokio::time::timeout_at(deadline.into(), background.publish_once()).await
        && round.failed > 0
    {
        tracing::warn!(
            failed = round.failed,
            "snapshots left in the outbox for another replica"
        );
    }

    let stats = collector.stats();
    let pending = background.tracker.pending();
    tracing::info!(
        reports_collected = stats.collected,
        rows_written = stats.rows_reported,
        dropped = stats.dropped,
        backlog_rows = stats.backlog_rows,
        boundary_pending = pending.allowed + pending.denied,
        clean,
        "shutdown complete"
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The checks of the settings that need no I/O, also made by `tally config`:
/// the tokens, the URLs, and the rules between options.
pub fn check(args: &ServeArgs) -> Result<Tokens, ConfigError> {
    let tokens = match &args.tokens {
        Some(spec) => Tokens::parse(spec.expose())?,
        None => Tokens::default(),
    };
    if let Some(url) = &args.database_url {
        check_database_url(url.expose())?;
    }
    let telemetry_url = args
        .telemetry_url
        .as_deref()
        .map(check_telemetry_url)
        .transpose()?;
    if args.telemetry_ca_file.is_some() && telemetry_url.is_none_or(|u| u.scheme() != "https") {
        return Err(ConfigError(
            "--telemetry-ca-file needs an https:// --telemetry-url".into(),
        ));
    }
    if args.metrics_listen == Some(args.listen) && args.listen.port() != 0 {
        return Err(ConfigError(format!(
            "--metrics-listen ({}) must differ from --listen: it is a second address, serving only /metrics",
            args.listen
        )));
    }
    if args.rollup_window < Duration::from_secs(1) {
        return Err(ConfigError("--rollup-window must be at least 1s".into()));
    }
    // A final flush that times out once must still have time for a retry.
    if args.store_timeout * 2 > args.shutdown_timeout {
        return Err(ConfigError(format!(
            "--store-timeout ({}) must be at most half of --shutdown-timeout ({}), so a final flush can time out once and still be retried",
            humantime::format_duration(args.store_timeout),
            humantime::format_duration(args.shutdown_timeout)
        )));
    }
    Ok(tokens)
}

/// Serves `/metrics` without a token on `listener` until aborted: a scrape
/// holds nothing that must finish, so shutdown just stops it.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let app = crate::http::metrics_router(state);
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    }))
}

/// Opens the store within `--connect-timeout`, waiting for a database that
/// is down or still starting; every failure is a configuration error.
async fn open_store_in_time(url: Option<&str>, args: &ServeArgs) -> Result<Opened, ConfigError> {
    let what = url.map(redact_database_url).unwrap_or_default();
    let timeout = args.connect_timeout;
    let open = || crate::store::open_for_serve(url, !args.no_migrate, args.store_timeout);
    match crate::store::patiently(timeout, open).await {
        Some(Ok(opened)) => Ok(opened),
        Some(Err(e)) => Err(ConfigError(format!("{e:#}"))),
        None => Err(ConfigError(format!(
            "cannot open the database {what}: not reachable within {} (is it running, is the URL right?)",
            humantime::format_duration(timeout)
        ))),
    }
}

/// Waits between final flush attempts at shutdown: about 0.1 s, doubling to 2 s.
const FINAL_FLUSH_RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Closes the collector; if that flush fails the rows stay in its backlog, so
/// flushing is retried until it succeeds or the deadline passes.
async fn final_collector_flush(collector: &StatsCollector, deadline: Instant) -> bool {
    let mut result = tokio::time::timeout_at(deadline.into(), collector.close()).await;
    let mut waits = FINAL_FLUSH_RETRY.delays();
    loop {
        let wait = waits.next().unwrap_or(FINAL_FLUSH_RETRY.most());
        match result {
            Ok(Ok(())) => return true,
            Ok(Err(e)) if Instant::now() + wait < deadline => {
                tracing::warn!(error = %Report(&e), retry_in = ?wait, "final app stats flush failed; retrying");
            }
            Ok(Err(e)) => {
                tracing::error!(
                    error = %Report(&e),
                    backlog_rows = collector.stats().backlog_rows,
                    "final app stats flush failed; these rows are lost"
                );
                return false;
            }
            Err(_) => {
                tracing::error!(
                    backlog_rows = collector.stats().backlog_rows,
                    "final app stats flush timed out; these rows are lost"
                );
                return false;
            }
        }
        tokio::time::sleep(wait).await;
        result = tokio::time::timeout_at(deadline.into(), collector.flush()).await;
    }
}

/// Flushes the tracker, retrying until it succeeds or the deadline passes.
async fn final_tracker_flush(background: &Background, deadline: Instant) -> bool {
    let mut waits = FINAL_FLUSH_RETRY.delays();
    loop {
        let wait = waits.next().unwrap_or(FINAL_FLUSH_RETRY.most());
        match tokio::time::timeout_at(deadline.into(), background.flush_tracker()).await {
            Ok(Ok(TrackerFlush::Nothing | TrackerFlush::Flushed(_))) => return true,
            Ok(Err(_)) if Instant::now() + wait < deadline => {}
            _ => {
                let p = background.tracker.pending();
                tracing::error!(
                    allowed = p.allowed,
                    denied = p.denied,
                    "final boundary usage flush failed; these decisions are lost"
                );
                return false;
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Waits for Ctrl-C or SIGTERM and says which.
pub async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = term => "SIGTERM",
    }
}
