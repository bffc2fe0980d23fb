//! A throwaway PostgreSQL cluster: the one shared by a test process, a
//! test's private one, or a TLS-only one.
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

/// Settings of a kept cluster: PostgreSQL's defaults, but for listening on
/// loopback only.
const KEPT_SETTINGS: &[(&str, &str)] = &[("listen_addresses", "127.0.0.1")];

/// A running cluster. The shared one is never dropped (it lives in a
/// static); the watchdog stops it when the process exits. A private one
/// ([`super::PrivateCluster`]) may also be stopped and started again.
#[derive(Debug)]
pub(super) struct Cluster {
    pub port: u16,
    /// Holds the data directory, socket and log.
    pub dir: PathBuf,
    bin: PathBuf,
    account: Option<(String, u32, u32)>,
    /// Settings after [`TEST_SETTINGS`], overriding them.
    extra: Vec<(String, String)>,
    /// A kept cluster ([`Cluster::start_kept`]): PostgreSQL's default
    /// settings, and its directory outlives the process.
    kept: bool,
    /// The shell running the server; `None` while the server is stopped.
    watchdog: Option<Child>,
}

/// How [`Cluster::stop`] ends the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT: roll back sessions, checkpoint, exit.
    Fast,
    /// SIGQUIT: every process exits at once, as in a crash; the next start
    /// recovers from the WAL.
    Immediate,
}

impl Cluster {
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts a cluster, retrying on a port that was taken in between.
    pub fn start() -> Result<Cluster, String> {
        Self::start_with(&[])
    }

    /// Like [`Cluster::start`], with settings overriding [`TEST_SETTINGS`].
    pub fn start_with(extra: &[(&str, &str)]) -> Result<Cluster, String> {
        Self::start_prepared(extra, |_| Ok(()))
    }

    /// A cluster that accepts TLS connections only: `ssl=on` with this
    /// certificate and key (PEM), and a `pg_hba.conf` of `hostssl` lines
    /// alone (no `local`, no `host`), so a plaintext client is refused.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Cluster, String> {
        Self::start_prepared(&[("ssl", "on")], |cluster| cluster.require_tls(cert_pem, key_pem))
    }

    /// Like [`Cluster::start_with`], running `prepare` between initdb and
    /// the first start.
    fn start_prepared(
        extra: &[(&str, &str)],
        prepare: impl Fn(&Cluster) -> Result<(), String>,
    ) -> Result<Cluster, String> {
        let bin = find_bin_dir()?;
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = init_once(&bin, extra.clone())?;
            if let Err(e) = prepare(&cluster) {
                let _ = fs::remove_dir_all(&cluster.dir);
                return Err(e);
            }
            match cluster.launch() {
                Ok(()) => return Ok(cluster),
                // Not ready in time: it runs on, its watchdog stops it at exit.
                Err(e) if cluster.is_running() => return Err(e),
                Err(e) => {
                    let _ = fs::remove_dir_all(&cluster.dir);
                    last = e;
                }
            }
        }
        Err(last)
    }

    pub fn is_running(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Starts the cluster kept in `dir` at PostgreSQL's default settings,
    /// creating it first (initdb) if `dir` holds none; the directory is never
    /// removed. Returns whether it was created now.
    pub fn start_kept(dir: &Path) -> Result<(Cluster, bool), String> {
        let bin = find_bin_dir()?;
        let created = !dir.join("data").join("PG_VERSION").is_file();
        let mut cluster = if created {
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            init_in(&bin, Vec::new(), dir.to_path_buf())?
        } else {
            Cluster {
                port: free_port()?,
                dir: dir.to_path_buf(),
                bin,
                account: server_account()?,
                extra: Vec::new(),
                kept: true,
                watchdog: None,
            }
        };
        cluster.kept = true;
        // A server left running by a process that died is stopped first.
        let _ = fs::remove_file(cluster.data().join("postmaster.pid"));
        cluster.launch()?;
        Ok((cluster, created))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Stops the server and waits until it is gone and the port is closed.
    /// The data directory stays for [`Cluster::restart`].
    pub fn stop(&mut self, how: Shutdown) -> Result<(), String> {
        let Some(mut watchdog) = self.watchdog.take() else {
            return Err("the test server is not running".into());
        };
        let pidfile = self.data().join("postmaster.pid");
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
            .filter(|p| p.parse::<u32>().is_ok())
            .ok_or_else(|| format!("no server pid in {}", pidfile.display()))?;
        let signal = match how {
            Shutdown::Fast => "-INT",
            Shutdown::Immediate => "-QUIT",
        };
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill {signal} {pid} failed ({sent})"));
        }
        // The watchdog exits once the server is gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        while watchdog.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the test server did not stop within 60 s; its log:\n{}",
                    fs::read_to_string(self.log()).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // An immediate shutdown may leave the pid file; the server is gone,
        // and a stale "ready" in it would fool the next start's wait.
        let _ = fs::remove_file(&pidfile);
        Ok(())
    }

    /// Starts the stopped server again on the same data and port, and waits
    /// until it accepts connections (after crash recovery, if any).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Err("the test server is already running".into());
        }
        self.launch()
    }

    /// Stops the server if it runs and removes its directory.
    pub fn remove(&mut self) {
        if self.is_running() {
            let _ = self.stop(Shutdown::Fast);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Installs the server certificate and key (`server.crt`, `server.key`:
    /// the default file names, in the data directory) and replaces
    /// `pg_hba.conf` with TLS-only lines.
    fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data();
        let hba = "# TLS only: no `local` or `host` lines, so plaintext is refused.\n\
                   hostssl all all 127.0.0.1/32 trust\n\
                   hostssl all all ::1/128 trust\n";
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
            ("pg_hba.conf", hba, 0o600),
        ] {
            let path = data.join(name);
            let written = fs::write(&path, text)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .and_then(|()| match &self.account {
                    // The server refuses a key file it does not own.
                    Some((_, uid, gid)) => std::os::unix::fs::chown(&path, Some(*uid), Some(*gid)),
                    None => Ok(()),
                });
            written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Starts the server under its watchdog and waits until it is ready.
    fn launch(&mut self) -> Result<(), String> {
        let (data, log, dir) = (self.data(), self.log(), self.dir.clone());
        let mut server = vec![
            "exec".to_owned(),
            match &self.account {
                Some((_, uid, gid)) => format!("setpriv --reuid={uid} --regid={gid} --clear-groups --"),
                None => String::new(),
            },
            shell_quote(&self.bin.join("postgres")),
            "-D".into(),
            shell_quote(&data),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            shell_quote(&dir),
        ];
        let extra = self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let settings = if self.kept { KEPT_SETTINGS } else { TEST_SETTINGS };
        for (k, v) in settings.iter().copied().chain(extra) {
            server.push(format!("-c {k}={v}"));
        }
        let remove = if self.kept { "true" } else { "rm -rf" };
        // The watchdog: polls the test process and stops the server (fast
        // shutdown) once it is gone, then removes the directory. If the server
        // stops by itself the directory stays for the test process to read
        // the log (or to start the server again).
        let script = format!(
            r#"
({server}) >>{log} 2>&1 </dev/null &
pg=$!
while kill -0 {parent} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 1; done
kill -INT $pg 2>/dev/null
wait $pg
kill -0 {parent} 2>/dev/null || {remove} {dir}
"#,
            server = server.join(" "),
            log = shell_quote(&log),
            parent = std::process::id(),
            dir = shell_quote(&dir),
            remove = remove,
        );
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("TZ", "UTC")
            .spawn()
            .map_err(|e| format!("cannot start the server's watchdog shell: {e}"))?;

        // Ready when postmaster.pid says so (PostgreSQL 10 and later).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pidfile = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pidfile.lines().nth(7).map(str::trim) == Some("ready") {
                self.watchdog = Some(watchdog);
                return Ok(());
            }
            if let Ok(Some(status)) = watchdog.try_wait() {
                let text = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "the test server exited ({status}) while starting; its log:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                // Kept: the watchdog stops the server when this process exits.
                self.watchdog = Some(watchdog);
                let text = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "the test server was not ready after 60 s; its log:\n{text}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// A new data directory (initdb) and a free port; not started yet.
fn init_once(bin: &Path, extra: Vec<(String, String)>) -> Result<Cluster, String> {
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
    init_in(bin, extra, dir)
}

/// initdb in `dir` (which exists), and a free port.
fn init_in(bin: &Path, extra: Vec<(String, String)>, dir: PathBuf) -> Result<Cluster, String> {
    let account = server_account()?;
    let cleanup = |msg: String| {
        let _ = fs::remove_dir_all(&dir);
        msg
    };
    let data = dir.join("data");
    if let Some((_, uid, gid)) = &account {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| {
            cleanup(format!(
                "cannot hand {} to the server account: {e}",
                dir.display()
            ))
        })?;
    }
    // As root, run initdb through setpriv (initdb refuses to run as root).
    let initdb = bin.join("initdb");
    let mut cmd = match &account {
        Some((_, uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(&initdb);
            c
        }
        None => Command::new(&initdb),
    };
    let out = cmd
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
        .map_err(|e| cleanup(format!("cannot run {}: {e}", initdb.display())))?;
    if !out.status.success() {
        return Err(cleanup(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let port = free_port().map_err(cleanup)?;
    Ok(Cluster {
        port,
        dir,
        bin: bin.to_path_buf(),
        account,
        extra,
        kept: false,
        watchdog: None,
    })
}
