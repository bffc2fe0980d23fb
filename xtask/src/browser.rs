//! `cargo xtask browser`: the dashboard in headless Chromium. Starts a seeded
//! server (`tally simulate --serve`, a small fleet over three simulated
//! days), then runs `xtask/browser/dashboard.mjs` (playwright-core driving
//! Debian's `/usr/bin/chromium`) against it, which compares every panel
//! with the JSON API, tries a wrong token, watches the console and saves
//! screenshots. Never skips: a missing browser or package is a failure.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct BrowserArgs {
    /// Use the existing target/debug/tally instead of building it first.
    #[arg(long)]
    no_build: bool,
    /// The Chromium binary (Debian's `chromium` package).
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// Where the screenshots go.
    #[arg(long, default_value = "target/browser")]
    out: PathBuf,
}

/// The seeded fleet: small enough for a debug build in seconds, long enough
/// for three days of day intervals and a dozen telemetry periods.
const SIMULATION: &[&str] = &[
    "--replicas",
    "2",
    "--workspaces",
    "60",
    "--users",
    "40",
    "--apps",
    "6",
    "--sessions-per-user-hour",
    "2",
    "--duration",
    "48h",
    "--snapshot-interval",
    "4h",
    "--report-interval",
    "5m",
    "--tracker-flush-interval",
    "5m",
];

pub fn run(args: BrowserArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let package = root.join("xtask/browser");
    if !args.chromium.exists() {
        bail!(
            "{} does not exist: install Debian's chromium (apt-get install -y chromium)",
            args.chromium.display()
        );
    }
    if !package.join("node_modules/playwright-core").exists() {
        run_here(
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]),
            &package,
            "npm ci (playwright-core)",
        )?;
    }
    if !args.no_build {
        crate::cargo(&["build", "-p", "tally", "--bin", "tally"])?;
    }
    let binary = root.join("target/debug/tally");
    if !binary.exists() {
        bail!("{} does not exist: build it or drop --no-build", binary.display());
    }
    let out = root.join(&args.out);

    let mut server = Seeded::start(&binary)?;
    let started = Instant::now();
    let result = run_here(
        Command::new("node")
            .arg("dashboard.mjs")
            .env("TALLY_URL", &server.url)
            .env("TALLY_TOKEN", &server.token)
            .env("TALLY_SHOTS", &out)
            .env("CHROMIUM", &args.chromium),
        &package,
        "the browser test (xtask/browser/dashboard.mjs)",
    );
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
    let stopped = server.stop();
    result?;
    let status = stopped?;
    if !status.success() {
        bail!("tally simulate --serve exited with {status} after SIGTERM");
    }
    Ok(())
}

fn run_here(command: &mut Command, dir: &Path, what: &str) -> anyhow::Result<()> {
    let status = command
        .current_dir(dir)
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed with {status}");
    }
    Ok(())
}

/// `tally simulate --serve 127.0.0.1:0`: the URL and token it prints.
struct Seeded {
    child: Child,
    url: String,
    token: String,
}

impl Seeded {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("simulate")
            .args(SIMULATION)
            .args(["--serve", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<(String, String)>();
        // Reads to the end, so the pipe never fills.
        std::thread::spawn(move || {
            let mut url = None;
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("tally: {line}");
                if let Some(u) = line.strip_prefix("Dashboard: ") {
                    url = Some(u.to_owned());
                }
                if let (Some(t), Some(u)) = (line.strip_prefix("Reader token: "), url.clone())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((u, t.to_owned()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok((url, token)) => Ok(Self { child, url, token }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("tally simulate --serve printed no URL and token within 300 s (exit: {status})")
            }
        }
    }

    /// SIGTERM, then waits up to 60 s for the graceful shutdown.
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                bail!("tally simulate --serve did not exit within 60 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Seeded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
