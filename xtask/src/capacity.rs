//! `cargo xtask capacity`: what one replica takes at default settings, driven
//! by wrk (Debian's package, not a load tool of ours), beside the limit
//! measured in the same run: a do-nothing handler on the same HTTP stack
//! (`crates/app/examples/null_server.rs`).
//!
//! Phases, each a wrk run with `capacity/ingest.lua`, against `tally serve`
//! at default settings (but tokens) on a fresh PostgreSQL from the test
//! harness (or `--store memory`): app stats of new sessions paced at
//! `--rate` reports/s for `--seconds`, sampling the server's RSS every
//! second (the sustained run); app stats as fast as wrk goes; boundary logs
//! as fast as wrk goes; then both endpoints as fast as wrk goes against the
//! null server. Prints Markdown tables.
//!
//! `--outage` stops the database (a private cluster) before the sustained
//! run: the collector holds every report until its cap (`--max-memory`)
//! refuses with 503. The run prints RSS when refusals began, the peak, and
//! RSS growth per byte the cap's accounting counted as it filled; then the database is
//! started again, every report taken must be written (the rows' sessions
//! are counted), and RSS is read after 60 s idle.

mod outage;
mod probe;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::server::Server;

const PROXY_TOKEN: &str = "capacity-proxy";
const AGENT_TOKEN: &str = "capacity-agent";
const READER_TOKEN: &str = "capacity-reader";
const SCRIPT: &str = include_str!("capacity/ingest.lua");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Postgres,
    Memory,
}

#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    /// Seconds of new-session app stats against tally.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Seconds of each unpaced phase (tally and the null handler).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    short_seconds: u64,
    /// Reports/s of the sustained app stats run (wrk paces its requests).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Reports per app stats request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Users (and workspaces, agents) the new sessions spread over: at the
    /// default about 3000 groups a minute share the sessions; a number above
    /// the run's sessions (1000000000) puts each in a group of its own, the
    /// costliest shape per session for the memory cap.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// wrk threads (the server runs on the same cores).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    #[arg(long, value_enum, default_value_t = Store::Postgres)]
    store: Store,
    /// Stop the database before the sustained run and start it again after
    /// (PostgreSQL only): fills the memory cap, then checks that everything
    /// taken is written.
    #[arg(long)]
    outage: bool,
    /// The tally binary to measure (default: build target/release/tally).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The null server to measure beside it (default: build
    /// target/release/examples/null_server).
    #[arg(long)]
    null_binary: Option<PathBuf>,
    /// Skip the null server (its columns read 0): for runs about memory.
    #[arg(long)]
    no_null: bool,
    /// Extra argument for `tally serve` (repeat for several); the figures
    /// are only "at default settings" without any.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Write the RSS samples (seconds, KiB) to this file.
    #[arg(long)]
    rss_csv: Option<PathBuf>,
}

/// One wrk run's figures.
#[derive(Debug, Default)]
struct Wrk {
    requests_per_second: f64,
    statuses: Vec<(u16, u64)>,
    p99_us: u64,
    errors: String,
}

impl Wrk {
    fn count(&self, status: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers neither 2xx nor 503.
    fn other(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(s) && *s != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn run(args: CapacityArgs) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk not found: apt-get install wrk");
    }
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            crate::cargo(&["build", "--release", "-p", "tally"])?;
            target.join("release").join("tally")
        }
    };
    let null_built = match &args.null_binary {
        Some(b) => b.clone(),
        None if args.no_null => binary.clone(),
        None => {
            crate::cargo(&["build", "--release", "-p", "tally", "--example", "null_server"])?;
            target.join("release").join("examples").join("null_server")
        }
    };
    // A copy, so that a build during the run cannot change what is measured.
    let null_binary = std::env::temp_dir().join(format!("tally-null-server-{}", std::process::id()));
    std::fs::copy(&null_built, &null_binary)?;
    let script = std::env::temp_dir().join(format!("tally-capacity-{}.lua", std::process::id()));
    std::fs::write(&script, SCRIPT)?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut cluster = match (args.store, args.outage) {
        (Store::Postgres, true) => {
            Some(tally_tests::pg::PrivateCluster::new().map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        (Store::Memory, true) => bail!("--outage needs --store postgres"),
        _ => None,
    };
    let db = match (args.store, &cluster) {
        (Store::Postgres, Some(c)) => Some(rt.block_on(c.fresh_database())),
        (Store::Postgres, None) => Some(rt.block_on(tally_tests::pg::try_fresh_database())?),
        (Store::Memory, _) => None,
    };
    let mut serve_args = vec![
        "--tokens".to_owned(),
        format!("proxy={PROXY_TOKEN},agent={AGENT_TOKEN},reader={READER_TOKEN}"),
    ];
    serve_args.extend(args.server_args.iter().cloned());
    let mut tally = Server::start(&binary, db.as_ref().map(|d| d.url.as_str()), &serve_args)?;
    println!(
        "tally {} at {} (store {:?}{}), wrk -t{} -c{}, batch {}, users {}",
        binary.display(),
        tally.addr,
        args.store,
        if args.outage { ", outage" } else { "" },
        args.threads,
        args.connections,
        args.batch,
        args.users
    );

    if let Some(cluster) = cluster.as_mut() {
        // Connected and migrated; now the database goes away.
        std::thread::sleep(Duration::from_secs(3));
        outage::stop(cluster)?;
        println!("database stopped");
    }
    let sampler = probe::Sampler::start(tally.pid(), tally.addr.clone(), READER_TOKEN);
    let sustained = wrk(
        &args,
        &script,
        &tally.addr,
        "app-stats",
        PROXY_TOKEN,
        args.seconds,
        args.rate,
    )?;
    // After an outage the sampler goes on while the backlog drains: its
    // write holds copies of what it writes.
    let healed = match (cluster.as_mut(), &db) {
        (Some(cluster), Some(db)) => {
            let taken = sustained.count(204) * u64::from(args.batch);
            let healed = outage::heal(&rt, cluster, &db.url, taken)?;
            Some((taken, healed))
        }
        _ => None,
    };
    let all_samples = sampler.stop();
    let heal_from = all_samples
        .iter()
        .position(|s| s.t > args.seconds)
        .unwrap_or(all_samples.len());
    let (samples, draining) = all_samples.split_at(heal_from);
    let healed = healed.map(|(taken, healed)| {
        // What stays held once everything is written: a minute idle.
        std::thread::sleep(Duration::from_secs(60));
        let drain_peak = draining.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        (
            taken,
            healed,
            probe::rss_kib(tally.pid()).unwrap_or(0),
            drain_peak,
        )
    });
    let rss: Vec<(u64, u64)> = samples.iter().map(|s| (s.t, s.rss_kib)).collect();
    let idle_from = rss.last().map_or(0, |s| s.0);
    let app = wrk(
        &args,
        &script,
        &tally.addr,
        "app-stats",
        PROXY_TOKEN,
        args.short_seconds,
        0,
    )?;
    let boundary = wrk(
        &args,
        &script,
        &tally.addr,
        "boundary-logs",
        AGENT_TOKEN,
        args.short_seconds,
        0,
    )?;
    // What stays held once the load stops: a minute idle.
    std::thread::sleep(Duration::from_secs(60));
    let rss_idle = probe::rss_kib(tally.pid()).unwrap_or(0);
    let status = tally.stop()?;
    if let Some(path) = &args.rss_csv {
        probe::write_csv(path, &all_samples)?;
    }

    let (null_app, null_boundary) = if args.no_null {
        (Wrk::default(), Wrk::default())
    } else {
        let mut cmd = Command::new(&null_binary);
        cmd.arg("127.0.0.1:0");
        let mut null = Server::spawn(cmd, &null_binary)?;
        let app = wrk(
            &args,
            &script,
            &null.addr,
            "app-stats",
            PROXY_TOKEN,
            args.short_seconds,
            0,
        )?;
        let boundary = wrk(
            &args,
            &script,
            &null.addr,
            "boundary-logs",
            AGENT_TOKEN,
            args.short_seconds,
            0,
        )?;
        null.stop()?;
        (app, boundary)
    };
    drop(db);
    drop(cluster);
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&null_binary);

    let batch = f64::from(args.batch);
    println!();
    println!(
        "sustained: app stats of new sessions paced at {} reports/s for {} s: {:.0} requests/s = {:.0} reports/s, {} x 503, {} other non-2xx, p99 {:.1} ms",
        args.rate,
        args.seconds,
        sustained.requests_per_second,
        sustained.requests_per_second * batch,
        sustained.count(503),
        sustained.other(),
        sustained.p99_us as f64 / 1000.0
    );
    let max = rss.iter().map(|s| s.1).max().unwrap_or(0);
    // 0: the run was shorter.
    let at = |t: u64| rss.iter().find(|s| s.0 >= t).map_or(0, |s| s.1 / 1024);
    println!(
        "tally RSS (MiB) at 0 s {}, 30 s {}, 60 s {}, 120 s {}, 180 s {}, 240 s {}, end ({idle_from} s) {}; max {}; after the unpaced runs and 60 s idle {}",
        at(0),
        at(30),
        at(60),
        at(120),
        at(180),
        at(240),
        rss.last().map_or(0, |s| s.1 / 1024),
        max / 1024,
        rss_idle / 1024
    );
    print_fill(samples, healed.as_ref());
    if let Some(most) = all_samples.iter().map(|s| s.store_bytes).max().filter(|&b| b > 0) {
        println!("in-memory store: most held as it counts {} MiB", most >> 20);
    }
    println!();
    println!(
        "| endpoint | tally requests/s | tally reports/s | null handler requests/s | tally / null | 503s | other non-2xx | tally p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, t, n, per) in [
        ("app stats (new sessions)", &app, &null_app, batch),
        ("boundary logs", &boundary, &null_boundary, 1.0),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {:.1} ms |",
            t.requests_per_second,
            t.requests_per_second * per,
            n.requests_per_second,
            t.requests_per_second / n.requests_per_second,
            t.count(503),
            t.other(),
            t.p99_us as f64 / 1000.0,
        );
    }
    println!();
    println!("tally exit {status}; {} WARN/ERROR lines", tally.bad_lines());
    for line in tally.last_bad_lines() {
        println!("  {line}");
    }
    for (name, w) in [
        ("sustained", &sustained),
        ("app", &app),
        ("boundary", &boundary),
        ("null app", &null_app),
        ("null boundary", &null_boundary),
    ] {
        if !w.errors.is_empty() {
            println!("wrk {name}: {}", w.errors.trim());
        }
    }
    Ok(())
}

fn wrk(
    args: &CapacityArgs,
    script: &Path,
    addr: &str,
    endpoint: &str,
    token: &str,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}"))
        .args([
            "--",
            endpoint,
            token,
            &args.batch.to_string(),
            &rate.to_string(),
            &args.threads.to_string(),
            &args.users.to_string(),
        ])
        .output()
        .context("could not run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    let mut w = Wrk::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            w.requests_per_second = rate.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("statuses") {
            for pair in rest.split_whitespace() {
                if let Some((code, n)) = pair.split_once('=') {
                    w.statuses.push((code.parse()?, n.parse()?));
                }
            }
        } else if let Some(rest) = line.strip_prefix("latency") {
            for pair in rest.split_whitespace() {
                if let Some(v) = pair.strip_prefix("p99_us=") {
                    w.p99_us = v.parse()?;
                }
            }
        } else if line.starts_with("Socket errors") {
            w.errors = line.to_owned();
        }
    }
    println!("wrk {endpoint} at {addr}, {seconds} s, rate {rate}:\n{text}");
    Ok(w)
}

/// The cap's fill: RSS when refusals began, the peak, RSS growth per byte
/// counted;
/// and after an outage, what was written and RSS after a minute idle.
fn print_fill(samples: &[probe::Sample], healed: Option<&(u64, outage::Healed, u64, u64)>) {
    let mib = |kib: u64| kib / 1024;
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let held = samples.iter().map(|s| s.buffered_bytes).max().unwrap_or(0);
    match samples.iter().find(|s| s.refused > 0) {
        Some(first) => println!(
            "refusals began at {} s: RSS {} MiB, held as counted {} MiB; peak RSS {} MiB; most held as counted {} MiB; peak RSS - most held {} MiB",
            first.t,
            mib(first.rss_kib),
            first.buffered_bytes >> 20,
            mib(peak),
            held >> 20,
            (peak * 1024).saturating_sub(held) >> 20,
        ),
        None => println!(
            "no refusals; peak RSS {} MiB; most held as counted {} MiB",
            mib(peak),
            held >> 20
        ),
    }
    let ratios = probe::rss_per_counted_byte(samples, &[0.25, 0.5, 0.75, 1.0]);
    let ratios: Vec<String> = ratios
        .iter()
        .map(|(f, r)| format!("{:.0} % full {r:.2}", f * 100.0))
        .collect();
    println!(
        "RSS growth per byte of growth counted (under 1: the cap counts more than RSS grew): {}",
        ratios.join(", ")
    );
    if let Some((taken, healed, idle, drain_peak)) = healed {
        println!(
            "healed: {} reports taken (204s x batch); written after {} s: {} rows standing for {} sessions ({}); peak RSS while draining {} MiB; RSS after 60 s idle {} MiB",
            taken,
            healed.drain_seconds,
            healed.rows,
            healed.sessions,
            if u64::try_from(healed.sessions).ok() == Some(*taken) {
                "nothing lost"
            } else {
                "MISMATCH"
            },
            mib(*drain_peak),
            mib(*idle),
        );
    }
}
