//! `cargo xtask load`: drives a real `tally serve` over loopback at a fixed
//! concurrency and prints sustained throughput, p50/p99 latency and errors,
//! first for app stats (batches of Go-shaped reports), then boundary logs.

mod payload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::server::Server;
use payload::{AppStatsBody, boundary_body};

const PROXY_TOKEN: &str = "load-proxy";
const AGENT_TOKEN: &str = "load-agent";
const APP_STATS_PATH: &str = "/api/v2/workspaceproxies/me/app-stats";
const BOUNDARY_LOGS_PATH: &str = "/api/v2/workspaceagents/me/boundary-logs";
/// Distinct bodies per phase; app stat bodies get their session ids and
/// request counts rewritten per request (see [`AppStatsBody::render`]).
const POOL: usize = 256;
const USERS: u64 = 1000;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Requests in flight at once (one task each).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Timed seconds per phase (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    seconds: u64,
    /// Reports per app stats request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Percent of app stat sessions sent open (Go's zero end time).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    open_percent: u8,
    /// Distinct app sessions, sent round after round with growing request
    /// counts (rounded up to a multiple of 256 x batch). 0: every report a
    /// new session, which fills the server's `--max-memory` cap within
    /// seconds, since done sessions are kept a rollup window for replays.
    #[arg(long, default_value_t = 204_800)]
    sessions: u64,
    /// PostgreSQL URL for the server (default: the in-memory store). Must be
    /// a throwaway database: the server migrates it and writes to it.
    #[arg(long, env = "TALLY_LOAD_DATABASE_URL")]
    database_url: Option<String>,
    /// Client runtime worker threads (the server runs on the same cores).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,
    /// The server's `--report-interval` (collector flushes to the store).
    /// Queued reports count three units against tally's default
    /// cap (`--max-memory`), so at 200,000 reports/s its default 30s,
    /// and even 1s, fill the cap and the run measures 503s; 250ms still
    /// refuses some on a busy machine.
    #[arg(long, default_value = "100ms")]
    report_interval: String,
    /// Extra argument for `tally serve` (repeat for several).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Use the existing target/release/tally instead of building it first.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if !args.no_build {
        crate::cargo(&["build", "--release", "-p", "tally"])?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release").join("tally");
    if !binary.is_file() {
        bail!("{} does not exist: build it or drop --no-build", binary.display());
    }

    // Generated before the server starts, so none of it is timed.
    let now = time::OffsetDateTime::now_utc();
    let sessions_per_round = POOL as u64 * u64::from(args.batch);
    let cycles = args.sessions.div_ceil(sessions_per_round);
    let app_bodies = Arc::new(
        (0..POOL as u64)
            .map(|seed| AppStatsBody::new(seed, args.batch, args.open_percent, now))
            .collect::<Vec<_>>(),
    );
    let boundary_bodies: Arc<Vec<&'static [u8]>> =
        Arc::new((0..POOL as u64 * 16).map(boundary_body).collect());

    let mut serve_args = vec![
        "--tokens".to_owned(),
        format!("proxy={PROXY_TOKEN},agent={AGENT_TOKEN}"),
        "--report-interval".to_owned(),
        args.report_interval.clone(),
    ];
    serve_args.extend(args.server_args.iter().cloned());
    let mut server = Server::start(&binary, args.database_url.as_deref(), &serve_args)?;
    println!(
        "tally at {} (store: {}, report interval {}), concurrency {}, {} s per phase, batch {}, {}% open",
        server.addr,
        if args.database_url.is_some() {
            "postgres"
        } else {
            "memory"
        },
        args.report_interval,
        args.concurrency,
        args.seconds,
        args.batch,
        args.open_percent,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads as usize)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency as usize)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = format!("http://{}", server.addr);
        let phase = |name, payload| PhaseSpec {
            name,
            url: String::new(),
            concurrency: args.concurrency,
            seconds: args.seconds,
            payload,
            client: client.clone(),
            next: std::sync::atomic::AtomicU64::new(0),
        };
        let app = PhaseSpec {
            url: format!("{base}{APP_STATS_PATH}"),
            ..phase(
                "app stats",
                Payload::AppStats(app_bodies.clone(), args.batch, cycles),
            )
        }
        .run()
        .await;
        let boundary = PhaseSpec {
            url: format!("{base}{BOUNDARY_LOGS_PATH}"),
            ..phase("boundary logs", Payload::Boundary(boundary_bodies.clone()))
        }
        .run()
        .await;
        anyhow::Ok([app, boundary])
    });
    drop(rt);

    let status = server.stop();
    let phases = outcome?;
    for p in &phases {
        p.print();
    }
    let status = status?;
    println!(
        "server: SIGTERM -> {status}; {} WARN/ERROR log lines",
        server.bad_lines()
    );
    for line in server.last_bad_lines() {
        println!("  {line}");
    }
    let errors: u64 = phases.iter().map(|p| p.errors.values().sum::<u64>()).sum();
    if errors > 0 || !status.success() {
        bail!("{errors} failed requests, server exit {status}");
    }
    Ok(())
}

#[derive(Clone)]
enum Payload {
    /// Bodies, batch size, rounds before session ids repeat (0: never).
    AppStats(Arc<Vec<AppStatsBody>>, u32, u64),
    Boundary(Arc<Vec<&'static [u8]>>),
}

impl Payload {
    fn token(&self) -> &'static str {
        match self {
            Payload::AppStats(..) => PROXY_TOKEN,
            Payload::Boundary(_) => AGENT_TOKEN,
        }
    }

    fn body(&self, req: u64) -> reqwest::Body {
        match self {
            Payload::AppStats(pool, _, cycles) => {
                let round = req / pool.len() as u64;
                let session = if *cycles == 0 { round } else { round % cycles };
                pool[(req % pool.len() as u64) as usize]
                    .render(session, round)
                    .into()
            }
            Payload::Boundary(pool) => pool[req as usize % pool.len()].into(),
        }
    }

    /// Items per request, for the per-item rate.
    fn items(&self) -> u64 {
        match self {
            Payload::AppStats(_, batch, _) => u64::from(*batch),
            Payload::Boundary(_) => 1,
        }
    }
}

struct PhaseSpec {
    name: &'static str,
    url: String,
    concurrency: u32,
    seconds: u64,
    payload: Payload,
    client: reqwest::Client,
    /// Request numbers, shared so that rounds advance together.
    next: std::sync::atomic::AtomicU64,
}

struct PhaseResult {
    name: &'static str,
    concurrency: u32,
    items_per_request: u64,
    elapsed: Duration,
    ok: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct WorkerResult {
    ok: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

impl PhaseSpec {
    async fn run(self) -> PhaseResult {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(1);
        let deadline = measure_from + Duration::from_secs(self.seconds);
        let spec = Arc::new(self);
        let workers: Vec<_> = (0..spec.concurrency)
            .map(|_| {
                let spec = spec.clone();
                tokio::spawn(async move { spec.worker(measure_from, deadline).await })
            })
            .collect();
        let mut total = WorkerResult::default();
        for w in workers {
            let r = w.await.unwrap_or_else(|e| {
                let mut r = WorkerResult::default();
                r.errors.insert(format!("worker panicked: {e}"), 1);
                r
            });
            total.ok += r.ok;
            total.latencies_us.extend(r.latencies_us);
            for (k, v) in r.errors {
                *total.errors.entry(k).or_default() += v;
            }
        }
        // Requests still in flight at the deadline finish after it; they are
        // counted, so the window runs until the last one is back.
        let elapsed = Instant::now().saturating_duration_since(measure_from);
        total.latencies_us.sort_unstable();
        PhaseResult {
            name: spec.name,
            concurrency: spec.concurrency,
            items_per_request: spec.payload.items(),
            elapsed,
            ok: total.ok,
            latencies_us: total.latencies_us,
            errors: total.errors,
        }
    }

    async fn worker(&self, measure_from: Instant, deadline: Instant) -> WorkerResult {
        let mut r = WorkerResult::default();
        let token = format!("Bearer {}", self.payload.token());
        loop {
            let sent = Instant::now();
            if sent >= deadline {
                break;
            }
            let req_no = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let res = self
                .client
                .post(&self.url)
                .header("authorization", &token)
                .header("content-type", "application/json")
                .body(self.payload.body(req_no))
                .send()
                .await;
            let outcome = match res {
                Ok(res) if res.status().is_success() => {
                    let _ = res.bytes().await;
                    Ok(())
                }
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    let text: String = text.chars().take(160).collect();
                    Err(format!("HTTP {status}: {text}"))
                }
                Err(e) => Err(format!("transport: {e}")),
            };
            if sent < measure_from {
                continue; // warm-up
            }
            match outcome {
                Ok(()) => {
                    r.ok += 1;
                    let us = sent.elapsed().as_micros();
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                Err(e) => *r.errors.entry(e).or_default() += 1,
            }
        }
        r
    }
}

impl PhaseResult {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[i]))
    }

    fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rps = self.ok as f64 / secs;
        let errors: u64 = self.errors.values().sum();
        println!(
            "{}: {} ok requests in {:.2} s at concurrency {}: {:.0} requests/s, {:.0} items/s ({} per request); \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} errors",
            self.name,
            self.ok,
            secs,
            self.concurrency,
            rps,
            rps * self.items_per_request as f64,
            self.items_per_request,
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.percentile(1.0).as_secs_f64() * 1e3,
            errors,
        );
        for (e, n) in &self.errors {
            println!("  {n} x {e}");
        }
    }
}
