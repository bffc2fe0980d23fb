//! A throwaway PostgreSQL cluster for one test process.
//!
//! The cluster lives in a temporary directory (data, unix socket, log) and
//! listens on a free loopback port. Rust statics are never dropped, so the
//! server is started under a small watchdog shell that stops it and removes
//! the directory as soon as the test process is gone.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when no server binaries are found.
pub(super) const INSTALL_HINT: &str = "install the PostgreSQL server (`apt-get install postgresql`) \
     or point TALLY_TEST_DATABASE_URL at a server whose user may create databases";

/// Settings for a server whose data does not matter.
const TEST_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "200"),
    ("shared_buffers", "256MB"),
    ("max_wal_size", "4GB"),
    ("checkpoint_timeout", "1h"),
    ("autovacuum", "off"),
    ("listen_addresses", "127.0.0.1"),
];

/// A running cluster. Never dropped (it lives in a static); the watchdog
/// stops it when the process exits.
#[derive(Debug)]
pub(super) struct Cluster {
    pub port: u16,
    /// Holds the data directory, socket and log (read by the harness's test).
    #[cfg_attr(not(test), allow(dead_code))]
    pub dir: PathBuf,
    _watchdog: Child,
}

impl Cluster {
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts a cluster, retrying on a port that was taken in between.
    pub fn start() -> Result<Cluster, String> {
        let bin = find_bin_dir()?;
        let mut last = String::new();
        for _ in 0..3 {
            match start_once(&bin) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// A directory holding both `initdb` and `postgres`: `TALLY_TEST_PG_BIN`,
/// then PATH, then the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("TALLY_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "TALLY_TEST_PG_BIN={} holds no initdb and postgres: {INSTALL_HINT}",
                dir.display()
            ))
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates
        .into_iter()
        .find(|d| has_both(d))
        .ok_or_else(|| {
            format!(
                "no PostgreSQL server binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
            )
        })
}

/// The unprivileged account to run the server as when we are root
/// (initdb and postgres refuse to run as root).
fn server_account() -> Result<Option<(String, u32, u32)>, String> {
    if fs::metadata("/proc/self").map(|m| m.uid() != 0).unwrap_or(true) {
        return Ok(None);
    }
    for user in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(Some((user.to_owned(), uid, gid)));
        }
    }
    Err(
        "running as root and neither a `postgres` nor a `nobody` account exists to run the test server as"
            .into(),
    )
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn start_once(bin: &Path) -> Result<Cluster, String> {
    let account = server_account()?;
    // /tmp rather than TMPDIR: the server account must be able to reach the
    // directory, and the socket path must stay under ~100 bytes.
    let parent = match Path::new("/tmp") {
        p if p.is_dir() => p.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix("tally-pg-")
        .tempdir_in(parent)
        .map_err(|e| format!("cannot create a temporary directory for the test server: {e}"))?
        .keep();
    let cleanup = |msg: String| {
        let _ = fs::remove_dir_all(&dir);
        msg
    };
    let data = dir.join("data");
    let log = dir.join("server.log");
    if let Some((_, uid, gid)) = &account {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| {
            cleanup(format!(
                "cannot hand {} to the server account: {e}",
                dir.display()
            ))
        })?;
    }
    // As root, run the server binaries through setpriv (it execs, so the
    // pid we signal is the server's own).
    let as_account = |program: &Path| -> Command {
        match &account {
            Some((_, uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    };

    let out = as_account(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| cleanup(format!("cannot run {}: {e}", bin.join("initdb").display())))?;
    if !out.status.success() {
        return Err(cleanup(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    let port = free_port().map_err(cleanup)?;
    let mut server = vec![
        "exec".to_owned(),
        match &account {
            Some((_, uid, gid)) => format!("setpriv --reuid={uid} --regid={gid} --clear-groups --"),
            None => String::new(),
        },
        shell_quote(&bin.join("postgres")),
        "-D".into(),
        shell_quote(&data),
        "-p".into(),
        port.to_string(),
        "-k".into(),
        shell_quote(&dir),
    ];
    for (k, v) in TEST_SETTINGS {
        server.push(format!("-c {k}={v}"));
    }
    // The watchdog: polls the test process and stops the server (fast
    // shutdown) once it is gone, then removes the directory. If the server
    // dies by itself the directory stays for the test process to read the log.
    let script = format!(
        r#"
({server}) >>{log} 2>&1 </dev/null &
pg=$!
while kill -0 {parent} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 1; done
kill -INT $pg 2>/dev/null
wait $pg
kill -0 {parent} 2>/dev/null || rm -rf {dir}
"#,
        server = server.join(" "),
        log = shell_quote(&log),
        parent = std::process::id(),
        dir = shell_quote(&dir),
    );
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("TZ", "UTC")
        .spawn()
        .map_err(|e| cleanup(format!("cannot start the server's watchdog shell: {e}")))?;

    // Ready when postmaster.pid says so (PostgreSQL 10 and later).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pidfile = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        if pidfile.lines().nth(7).map(str::trim) == Some("ready") {
            return Ok(Cluster {
                port,
                dir: dir.clone(),
                _watchdog: watchdog,
            });
        }
        if let Ok(Some(status)) = watchdog.try_wait() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            return Err(cleanup(format!(
                "the test server exited ({status}) while starting; its log:\n{text}"
            )));
        }
        if Instant::now() > deadline {
            // The watchdog stays and stops the server when this process exits.
            let text = fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "the test server was not ready after 60 s; its log:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
