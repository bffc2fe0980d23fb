//! `cargo xtask load`: drives a real `tally serve` over loopback at a fixed
//! concurrency and prints sustained throughput, p50/p99 latency and errors,
//! first for app stats (batches of Go-shaped reports), then boundary logs.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const PROXY_TOKEN: &str = "load-proxy";
const AGENT_TOKEN: &str = "load-agent";
const APP_STATS_PATH: &str = "/api/v2/workspaceproxies/me/app-stats";
const BOUNDARY_LOGS_PATH: &str = "/api/v2/workspaceagents/me/boundary-logs";
/// Distinct bodies per phase; app stat bodies also get fresh session ids
/// per request (see [`AppStatsBody::render`]).
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
    /// new session, which fills the server's `--max-buffered` cap within
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
    /// `--max-buffered` (1,000,000), so at 200,000 reports/s its default 30s,
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
    let root = workspace_root();
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

    let mut server = Server::start(&binary, args.database_url.as_deref(), &args)?;
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

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// One app stats body. `session_at` and `requests_at` are the offsets of
/// each report's session id and (space-padded) request count, rewritten per
/// request: the session id picks a session from the session space, and the
/// count grows with each round, so a session sent again is a newer report
/// of it (as a proxy re-reporting it), not a replay.
struct AppStatsBody {
    bytes: Vec<u8>,
    session_at: Vec<usize>,
    requests_at: Vec<(usize, u64)>,
}

const REQUESTS_WIDTH: usize = 10;

impl AppStatsBody {
    fn new(seed: u64, batch: u32, open_percent: u8, now: time::OffsetDateTime) -> Self {
        let fmt = &time::format_description::well_known::Rfc3339;
        let mut bytes = br#"{"stats":["#.to_vec();
        let mut session_at = Vec::with_capacity(batch as usize);
        let mut requests_at = Vec::with_capacity(batch as usize);
        let started = (now - time::Duration::seconds(30))
            .format(fmt)
            .unwrap_or_default();
        for i in 0..u64::from(batch) {
            let n = seed * u64::from(batch) + i;
            if i > 0 {
                bytes.push(b',');
            }
            let u = n.wrapping_mul(7919) % USERS;
            let method = ["path", "subdomain", "terminal"][(n % 3) as usize];
            // Mostly short closed sessions, some still open (Go's zero time).
            let ended = if n % 100 < u64::from(open_percent) {
                "0001-01-01T00:00:00Z".to_string()
            } else {
                let end = now - time::Duration::seconds(1 + (n % 25) as i64);
                end.format(fmt).unwrap_or_default()
            };
            let head = format!(
                r#"{{"user_id":"{}","workspace_id":"{}","agent_id":"{}","access_method":"{method}","slug_or_port":"app-{}","session_id":""#,
                uuid(1, u),
                uuid(2, u),
                uuid(3, u),
                n % 10,
            );
            bytes.extend_from_slice(head.as_bytes());
            session_at.push(bytes.len());
            bytes.extend_from_slice(uuid(4, n).as_bytes());
            let mid =
                format!(r#"","session_started_at":"{started}","session_ended_at":"{ended}","requests":"#);
            bytes.extend_from_slice(mid.as_bytes());
            requests_at.push((bytes.len(), n % 50));
            bytes.extend_from_slice(&[b' '; REQUESTS_WIDTH]);
            bytes.push(b'}');
        }
        bytes.extend_from_slice(b"]}");
        Self {
            bytes,
            session_at,
            requests_at,
        }
    }

    /// A copy for round `round`: `session` (< 2^48) in the first 12 hex
    /// digits of every session id (the pool seed stays in the last 12),
    /// and each request count raised by `round`.
    fn render(&self, session: u64, round: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        let hex = format!("{:012x}", session & 0xffff_ffff_ffff);
        for &at in &self.session_at {
            out[at..at + 8].copy_from_slice(&hex.as_bytes()[..8]);
            out[at + 9..at + 13].copy_from_slice(&hex.as_bytes()[8..]);
        }
        for &(at, base) in &self.requests_at {
            let count = format!("{:>REQUESTS_WIDTH$}", (base + round) % 1_000_000_000);
            out[at..at + REQUESTS_WIDTH].copy_from_slice(count.as_bytes());
        }
        out
    }
}

/// A version-4-shaped UUID from a kind and a number.
fn uuid(kind: u64, n: u64) -> String {
    format!("00000000-0000-4{kind:03x}-8000-{:012x}", n & 0xffff_ffff_ffff)
}

fn boundary_body(n: u64) -> &'static [u8] {
    let u = n.wrapping_mul(7919) % USERS;
    let body = format!(
        r#"{{"workspace_id":"{}","owner_id":"{}","allowed":{},"denied":{}}}"#,
        uuid(2, u),
        uuid(1, u),
        1 + n % 40,
        n % 5,
    );
    Box::leak(body.into_bytes().into_boxed_slice())
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

/// The `tally serve` child: its address, and its stderr drained by a thread
/// (a full pipe would stall the server) that keeps WARN/ERROR lines.
struct Server {
    child: Child,
    addr: String,
    log: Arc<ServerLog>,
}

/// WARN/ERROR lines: how many, and the first few.
#[derive(Default)]
struct ServerLog {
    bad: std::sync::Mutex<(u64, Vec<String>)>,
}

impl Server {
    fn start(binary: &std::path::Path, database_url: Option<&str>, args: &LoadArgs) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
            .arg(format!("proxy={PROXY_TOKEN},agent={AGENT_TOKEN}"))
            .args(["--report-interval", &args.report_interval])
            .args(&args.server_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(ServerLog::default());
        let (addr_tx, addr_rx) = mpsc::channel::<String>();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once("listening on ").map(|(_, r)| r)
                    && let Some(tx) = addr_tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_string());
                }
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    let mut bad = thread_log.bad.lock().unwrap_or_else(|e| e.into_inner());
                    bad.0 += 1;
                    if bad.1.len() < 5 {
                        bad.1.push(line);
                    }
                } else if addr_tx.is_some() {
                    // Before it listens, anything else may explain a failure.
                    eprintln!("tally: {line}");
                }
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("tally serve did not log `listening on ADDR` within 60 s (exit: {status})");
            }
        };
        if !addr.starts_with("127.0.0.1:") {
            let _ = child.kill();
            bail!("tally serve listens on {addr:?}, not a loopback address");
        }
        Ok(Self { child, addr, log })
    }

    /// SIGTERM, then waits up to 60 s for the graceful shutdown.
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !kill.success() {
            bail!("kill -TERM {pid} failed: {kill}");
        }
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                bail!("tally serve did not exit within 60 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn bad_lines(&self) -> u64 {
        self.log.bad.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn last_bad_lines(&self) -> Vec<String> {
        self.log.bad.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leave a server behind when the run fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_stats_body_is_json_with_fresh_session_ids() {
        let body = AppStatsBody::new(3, 100, 10, time::OffsetDateTime::now_utc());
        let a: serde_json::Value = serde_json::from_slice(&body.render(1, 1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&body.render(2, 7)).unwrap();
        let requests = |v: &serde_json::Value| v["stats"][5]["requests"].as_u64().unwrap();
        assert_eq!(requests(&b), requests(&a) + 6);
        let stats = a["stats"].as_array().unwrap();
        assert_eq!(stats.len(), 100);
        let open = stats
            .iter()
            .filter(|s| s["session_ended_at"] == "0001-01-01T00:00:00Z")
            .count();
        assert_eq!(open, 10);
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v["stats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_string())
                .collect()
        };
        let (ia, ib) = (ids(&a), ids(&b));
        assert!(ia.iter().all(|id| id.len() == 36 && uuid_shaped(id)));
        assert!(ia.iter().zip(&ib).all(|(x, y)| x != y));
        let mut unique = ia.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 100);
    }

    #[test]
    fn boundary_body_is_json_with_counts() {
        let v: serde_json::Value = serde_json::from_slice(boundary_body(7)).unwrap();
        assert_eq!(v["allowed"], 8);
        assert_eq!(v["denied"], 2);
        assert!(uuid_shaped(v["workspace_id"].as_str().unwrap()));
    }

    fn uuid_shaped(s: &str) -> bool {
        s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    }
}
