//! The `tally serve` child process: start, find its address, SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `tally serve` child: its address, and its stderr drained by a thread
/// (a full pipe would stall the server) that keeps WARN/ERROR lines.
pub struct Server {
    child: Child,
    pub addr: String,
    log: Arc<ServerLog>,
}

/// WARN/ERROR lines: how many, and the first few.
#[derive(Default)]
struct ServerLog {
    bad: std::sync::Mutex<(u64, Vec<String>)>,
}

impl Server {
    /// `tally serve --listen 127.0.0.1:0` with these further arguments
    /// (tokens, the store, intervals).
    pub fn start(
        binary: &std::path::Path,
        database_url: Option<&str>,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        Self::spawn(cmd, binary)
    }

    /// Starts `cmd`, a server that logs `listening on ADDR` on stderr.
    pub fn spawn(mut cmd: Command, binary: &std::path::Path) -> anyhow::Result<Self> {
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn bad_lines(&self) -> u64 {
        self.log.bad.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn last_bad_lines(&self) -> Vec<String> {
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
