//! Samples a running `tally serve` every second: its RSS from
//! `/proc/PID/status`, and from `/metrics` the bytes its memory cap counts
//! as held and the app stat reports it refused.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since sampling started.
    pub t: u64,
    pub rss_kib: u64,
    /// `tally_app_stats_buffered_bytes` (0 if the scrape failed).
    pub buffered_bytes: u64,
    /// `tally_app_stats_reports_refused_total`.
    pub refused: u64,
    /// `tally_store_memory_bytes` (the in-memory store's rows; 0 on PostgreSQL).
    pub store_bytes: u64,
}

/// Samples on a thread until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(pid: u32, addr: String, token: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let tick = Instant::now();
                if let Some(rss_kib) = rss_kib(pid) {
                    let (buffered_bytes, refused, store_bytes) = scrape(&addr, token).unwrap_or_default();
                    samples.push(Sample {
                        t: started.elapsed().as_secs(),
                        rss_kib,
                        buffered_bytes,
                        refused,
                        store_bytes,
                    });
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
            samples
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (buffered bytes, reports refused, in-memory store bytes) from one scrape
/// of `/metrics`.
pub fn scrape(addr: &str, token: &str) -> Option<(u64, u64, u64)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    };
    Some((
        value("tally_app_stats_buffered_bytes"),
        value("tally_app_stats_reports_refused_total"),
        value("tally_store_memory_bytes"),
    ))
}

pub fn write_csv(path: &std::path::Path, samples: &[Sample]) -> std::io::Result<()> {
    let lines: String = samples
        .iter()
        .map(|s| {
            format!(
                "{},{},{},{},{}\n",
                s.t, s.rss_kib, s.buffered_bytes, s.refused, s.store_bytes
            )
        })
        .collect();
    std::fs::write(
        path,
        format!("seconds,rss_kib,buffered_bytes,refused_reports,store_bytes\n{lines}"),
    )
}

/// Bytes of RSS growth per byte of growth the cap's accounting counted as
/// it fills, from the first sample holding anything to the first holding
/// each fraction of the most held, as (fraction, ratio).
pub fn rss_per_counted_byte(samples: &[Sample], fractions: &[f64]) -> Vec<(f64, f64)> {
    let Some(base) = samples.iter().find(|s| s.buffered_bytes > 0) else {
        return Vec::new();
    };
    let most = samples.iter().map(|s| s.buffered_bytes).max().unwrap_or(0);
    fractions
        .iter()
        .filter_map(|&f| {
            let s = samples
                .iter()
                .find(|s| s.buffered_bytes as f64 >= f * most as f64)?;
            let counted = s.buffered_bytes.saturating_sub(base.buffered_bytes);
            let grown = (s.rss_kib.saturating_sub(base.rss_kib) * 1024) as f64;
            (counted > 0).then(|| (f, grown / counted as f64))
        })
        .collect()
}
