//! The PostgreSQL test harness: a throwaway server and a fresh database per test.
//!
//! If `TALLY_TEST_DATABASE_URL` is set, databases are created on that server
//! (its user needs `CREATEDB`). Otherwise the first call starts one cluster
//! per test process from the local PostgreSQL binaries (PATH, then
//! `/usr/lib/postgresql/*/bin`, or `TALLY_TEST_PG_BIN`), in a temporary
//! directory on a free loopback port, as an unprivileged account when running
//! as root; a watchdog stops it when the process exits. A missing PostgreSQL
//! is an error (a panic in [`fresh_database`]), never a skip.
//!
//! ```no_run
//! # async fn demo() {
//! let db = tally_tests::pg::fresh_database().await;
//! let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
//! # drop(pool);
//! // `db` drops the database when it goes out of scope.
//! # }
//! ```
//!
//! The shared server must stay up for every test of the process. A test that
//! stops the database (an outage, a crash) starts a [`PrivateCluster`] of its
//! own instead, the same way (local binaries, unprivileged account, free
//! port, watchdog), never on `TALLY_TEST_DATABASE_URL`, which the harness
//! cannot stop:
//!
//! ```no_run
//! # async fn demo() {
//! use tally_tests::pg::{PrivateCluster, Shutdown};
//! let mut cluster = PrivateCluster::new().unwrap(); // blocks: initdb, start
//! let db = cluster.fresh_database().await;
//! cluster.stop(Shutdown::Immediate).unwrap(); // as in a crash
//! // ... connections fail, new ones are refused ...
//! cluster.start().unwrap(); // same data and port, after crash recovery
//! # drop(db);
//! // Dropping the cluster stops it and removes its directory.
//! # }
//! ```
//!
//! A test of TLS uses the [`TlsCluster`] of its process, [`tls_server`]
//! (local binaries too): it accepts only TLS connections (`ssl=on`,
//! `hostssl` lines alone in `pg_hba.conf`), with a certificate for
//! `127.0.0.1` signed by a CA made at start-up. Its URLs ask for
//! `sslmode=verify-full` against that CA; [`with_params`] changes them:
//!
//! ```no_run
//! # async fn demo() {
//! use tally_tests::pg::{tls_server, with_params};
//! let server = tls_server().unwrap();
//! let db = server.fresh_database().await;
//! let plain = with_params(&db.url, &[("sslmode", "disable")]); // refused
//! # drop((db, plain));
//! # }
//! ```

//!
//! A benchmark whose data set takes long to load keeps it in a
//! [`KeptCluster`]: a directory of its choosing (under `target/`), at
//! PostgreSQL's default settings, started again as it was by later runs.

mod server;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, Executor, PgConnection};

use server::Cluster;
pub use server::Shutdown;

/// The variable naming an existing server to use instead of a throwaway one.
pub const DATABASE_URL_VAR: &str = "TALLY_TEST_DATABASE_URL";

/// Why the harness could not provide a database.
#[derive(Debug, Clone)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL test harness: {}", self.0)
    }
}

impl std::error::Error for HarnessError {}

/// One test's own database. Dropping it drops the database (best effort).
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    /// Its name on the server.
    pub name: String,
    admin_url: String,
    keep: bool,
}

impl TestDatabase {
    /// The URL of the server's maintenance database (superuser or CREATEDB).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Keeps the database after the test (for looking at it by hand).
    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&self.name));
        // Drop may run inside or outside a runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                let _ = conn.execute(sql.as_str()).await;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// The admin URL of the server every test of this process uses.
fn server() -> Result<String, HarnessError> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => {
                static CLUSTER: OnceLock<Cluster> = OnceLock::new();
                let cluster = Cluster::start()?;
                Ok(CLUSTER.get_or_init(|| cluster).admin_url())
            }
        })
        .clone()
        .map_err(HarnessError)
}

/// The URL of the server's maintenance database, starting the throwaway
/// server if needed.
pub fn server_url() -> Result<String, HarnessError> {
    server()
}

/// A new, empty database for one test.
///
/// # Panics
/// When no server can be had, with a message saying what to install.
pub async fn fresh_database() -> TestDatabase {
    match try_fresh_database().await {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`fresh_database`], returning the error instead of panicking.
pub async fn try_fresh_database() -> Result<TestDatabase, HarnessError> {
    // Starting a cluster blocks (initdb, waiting for ready): keep it off the
    // runtime's threads.
    let admin_url = tokio::task::spawn_blocking(server)
        .await
        .map_err(|e| HarnessError(format!("server start-up panicked: {e}")))??;
    create_database(admin_url).await
}

/// A new database on the server of `admin_url`.
async fn create_database(admin_url: String) -> Result<TestDatabase, HarnessError> {
    let name = unique_name();
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .map_err(|e| HarnessError(format!("cannot connect to {}: {e}", redact(&admin_url))))?;
    // FILE_COPY is much faster than PostgreSQL 15's default WAL_LOG for a
    // small template; older servers do not know the option.
    let quoted = quote_ident(&name);
    let created = match conn
        .execute(format!("CREATE DATABASE {quoted} STRATEGY = FILE_COPY").as_str())
        .await
    {
        Ok(_) => Ok(()),
        Err(_) => conn
            .execute(format!("CREATE DATABASE {quoted}").as_str())
            .await
            .map(|_| ()),
    };
    let _ = conn.close().await;
    created.map_err(|e| HarnessError(format!("cannot create database {name}: {e}")))?;
    let url = database_url(&admin_url, &name)?;
    Ok(TestDatabase {
        url,
        name,
        admin_url,
        keep: false,
    })
}

/// A cluster of one test's own, which it may stop and start again: for
/// outages and crashes, which would break the other tests on the shared
/// server. Started like the shared one (local binaries, unprivileged account
/// when root, free loopback port, watchdog), always from the local binaries:
/// `TALLY_TEST_DATABASE_URL` is not used.
///
/// Commits are synchronous here (the shared server skips that for speed), so
/// a commit the server acknowledged survives [`Shutdown::Immediate`]; `fsync`
/// stays off, which only matters if the machine itself crashes.
///
/// [`PrivateCluster::stop`] and [`PrivateCluster::start`] block until done;
/// call them from `spawn_blocking` in async tests if the runtime has work to
/// do meanwhile. Dropping the cluster stops the server and removes its
/// directory.
#[derive(Debug)]
pub struct PrivateCluster {
    cluster: Cluster,
}

impl PrivateCluster {
    /// Creates and starts a new cluster (initdb, start, wait until ready).
    pub fn new() -> Result<Self, HarnessError> {
        Cluster::start_with(&[("synchronous_commit", "on")])
            .map(|cluster| Self { cluster })
            .map_err(HarnessError)
    }

    /// [`PrivateCluster::new`] off the runtime's threads (initdb and the
    /// wait until ready block), for async tests.
    ///
    /// # Panics
    /// When the cluster cannot be started, with a message saying why.
    pub async fn started() -> Self {
        match tokio::task::spawn_blocking(Self::new).await.unwrap() {
            Ok(cluster) => cluster,
            Err(e) => panic!("{e}"),
        }
    }

    /// The URL of its maintenance database (superuser).
    pub fn admin_url(&self) -> String {
        self.cluster.admin_url()
    }

    /// The loopback port; the same across stops and starts.
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    pub fn is_running(&self) -> bool {
        self.cluster.is_running()
    }

    /// A new, empty database on this cluster, dropped with the returned
    /// value (best effort: not if the cluster is stopped then).
    ///
    /// # Panics
    /// When the database cannot be created (the cluster is stopped?).
    pub async fn fresh_database(&self) -> TestDatabase {
        match create_database(self.admin_url()).await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// Stops the server and waits until it is gone: connections break, new
    /// ones are refused. Data and port stay for [`PrivateCluster::start`].
    pub fn stop(&mut self, how: Shutdown) -> Result<(), HarnessError> {
        self.cluster.stop(how).map_err(HarnessError)
    }

    /// Starts the stopped server again (same data directory and port) and
    /// waits until it accepts connections, crash recovery included.
    pub fn start(&mut self) -> Result<(), HarnessError> {
        self.cluster.restart().map_err(HarnessError)
    }

    /// The server's log so far (start-ups, shutdowns, recovery, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cluster.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.cluster.remove();
    }
}

/// A cluster whose data directory is kept between runs (a benchmark's data
/// set, built once): at PostgreSQL's default settings (only listening is
/// limited to loopback), on a free port, stopped when the process exits or
/// the value is dropped, its directory left in place.
#[derive(Debug)]
pub struct KeptCluster {
    cluster: Cluster,
    created: bool,
}

impl KeptCluster {
    /// Starts the cluster kept in `dir`, creating it (initdb) when `dir` holds
    /// none. Blocks until it accepts connections.
    pub fn open(dir: &std::path::Path) -> Result<Self, HarnessError> {
        Cluster::start_kept(dir)
            .map(|(cluster, created)| Self { cluster, created })
            .map_err(HarnessError)
    }

    /// Whether [`KeptCluster::open`] created it (an empty cluster).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The URL of database `name` on it (superuser).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.cluster.port)
    }
}

impl Drop for KeptCluster {
    fn drop(&mut self) {
        if self.cluster.is_running() {
            let _ = self.cluster.stop(Shutdown::Fast);
        }
    }
}

/// A cluster that accepts TLS connections only, with a CA and a server
/// certificate made when it starts. The certificate names `127.0.0.1` and
/// nothing else, so connecting by `localhost` is a hostname mismatch. Its
/// URLs connect to `127.0.0.1` with `sslmode=verify-full` and `sslrootcert`
/// naming the CA's PEM file (in the cluster's directory).
#[derive(Debug)]
pub struct TlsCluster {
    cluster: Cluster,
    ca: crate::tls::TestCa,
}

impl TlsCluster {
    /// Creates and starts a new TLS-only cluster (blocks: initdb, start).
    pub fn new() -> Result<Self, HarnessError> {
        let ca = crate::tls::TestCa::new("tally test CA");
        let cert = ca.issue(&["127.0.0.1"]);
        let cluster = Cluster::start_tls(&cert.cert_pem, &cert.key_pem).map_err(HarnessError)?;
        // Into the cluster's directory, which its watchdog removes at exit
        // even when the cluster is never dropped.
        let ca = ca
            .moved_to(cluster.dir.join("ca.pem"))
            .map_err(|e| HarnessError(format!("cannot write the CA file: {e}")))?;
        Ok(Self { cluster, ca })
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> &crate::tls::TestCa {
        &self.ca
    }

    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The URL of its maintenance database (superuser), verified in full.
    pub fn admin_url(&self) -> String {
        with_params(
            &self.cluster.admin_url(),
            &[
                ("sslmode", "verify-full"),
                ("sslrootcert", &self.ca.path().display().to_string()),
            ],
        )
    }

    /// A new, empty database on this cluster, dropped with the returned value.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub async fn fresh_database(&self) -> TestDatabase {
        match create_database(self.admin_url()).await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cluster.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        self.cluster.remove();
    }
}

/// The TLS-only cluster every TLS test of this process shares, started on
/// first use (blocking: call it from `spawn_blocking` in async tests, or
/// before the runtime). Its watchdog stops it when the process exits.
pub fn tls_server() -> Result<&'static TlsCluster, HarnessError> {
    static SERVER: OnceLock<Result<TlsCluster, HarnessError>> = OnceLock::new();
    SERVER.get_or_init(TlsCluster::new).as_ref().map_err(Clone::clone)
}

/// `url` with each of `params` set (replacing any value it had) in its query.
///
/// # Panics
/// When `url` is not a URL.
pub fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .extend_pairs(params);
    url.to_string()
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("tally_test_{}_{n}_{nanos:x}", std::process::id())
}

fn database_url(admin_url: &str, name: &str) -> Result<String, HarnessError> {
    let mut url = url::Url::parse(admin_url)
        .map_err(|e| HarnessError(format!("{DATABASE_URL_VAR} is not a URL ({e})")))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_credentials_and_options() {
        let url = database_url("postgres://u:p@h:5433/postgres?sslmode=disable", "t1").unwrap();
        assert_eq!(url, "postgres://u:p@h:5433/t1?sslmode=disable");
        assert_eq!(redact("postgres://u:p@h/x"), "postgres://u:***@h/x");
    }

    /// Runs this test binary again as a child that starts a cluster and
    /// exits; the server must be gone and its directory removed soon after.
    #[test]
    fn the_server_stops_when_the_test_process_exits() {
        const CHILD: &str = "TALLY_PG_HARNESS_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let c = Cluster::start().unwrap();
            println!("CLUSTER {} {}", c.port, c.dir.display());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pg::tests::the_server_stops_when_the_test_process_exits",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CLUSTER "))
            .unwrap_or_else(|| panic!("the child started no cluster: {stdout}"));
        let (port, dir) = line.split_once(' ').unwrap();
        let port: u16 = port.parse().unwrap();
        let dir = std::path::PathBuf::from(dir);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !listening && !dir.exists() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server on port {port} still up or {} still there",
                dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    #[tokio::test]
    async fn fresh_databases_are_distinct_and_dropped() {
        let a = fresh_database().await;
        let b = fresh_database().await;
        assert_ne!(a.name, b.name);
        let mut conn = PgConnection::connect(&a.url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(one, 1);
        conn.close().await.unwrap();
        let (admin, name) = (a.admin_url().to_owned(), a.name.clone());
        drop(a);
        let mut conn = PgConnection::connect(&admin).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "the dropped test database is gone");
        drop(b);
    }

    /// The TLS cluster's own `pg_hba.conf` refuses plaintext; a client that
    /// verifies in full against its CA is let in, encrypted.
    #[tokio::test]
    async fn the_tls_cluster_accepts_verified_tls_only() {
        let server = tokio::task::spawn_blocking(tls_server).await.unwrap().unwrap();
        let db = server.fresh_database().await;
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(ssl);
        conn.close().await.unwrap();
        let plain = with_params(&db.url, &[("sslmode", "disable")]);
        let err = PgConnection::connect(&plain).await.unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("28000"), "{err}");
        assert!(err.to_string().contains("no encryption"), "{err}");
        let by_name = db.url.replace("127.0.0.1", "localhost");
        assert!(
            PgConnection::connect(&by_name).await.is_err(),
            "the certificate names 127.0.0.1 only"
        );
    }

    #[test]
    fn params_are_set_or_replaced() {
        assert_eq!(
            with_params(
                "postgres://h/db?sslmode=disable&x=1",
                &[("sslmode", "require"), ("y", "2")]
            ),
            "postgres://h/db?x=1&sslmode=require&y=2"
        );
    }

    /// A private cluster stops (connections fail, the shared server is not
    /// touched) and starts again on the same port with every committed row,
    /// after a crash-like stop as after a clean one.
    #[tokio::test]
    async fn a_private_cluster_stops_and_starts_again_keeping_committed_data() {
        let shared = fresh_database().await;
        let mut cluster = PrivateCluster::started().await;
        let port = cluster.port();
        let db = cluster.fresh_database().await;
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        conn.execute("CREATE TABLE t (n int)").await.unwrap();
        let mut n = 0;
        for how in [Shutdown::Immediate, Shutdown::Fast] {
            n += 1;
            sqlx::query("INSERT INTO t VALUES ($1)")
                .bind(n)
                .execute(&mut conn)
                .await
                .unwrap();
            let mut c = cluster;
            cluster = tokio::task::spawn_blocking(move || {
                c.stop(how).unwrap();
                c
            })
            .await
            .unwrap();
            assert!(!cluster.is_running());
            assert!(
                sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
                "the old connection is broken after {how:?}"
            );
            assert!(
                PgConnection::connect(&db.url).await.is_err(),
                "refused while stopped"
            );
            // The shared server is another one and stays up.
            let mut other = PgConnection::connect(&shared.url).await.unwrap();
            other.execute("SELECT 1").await.unwrap();
            other.close().await.unwrap();

            assert!(cluster.stop(how).is_err(), "stopping twice is an error");
            let mut c = cluster;
            cluster = tokio::task::spawn_blocking(move || {
                c.start().unwrap();
                c
            })
            .await
            .unwrap();
            assert_eq!(cluster.port(), port);
            conn = PgConnection::connect(&db.url).await.unwrap();
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(rows, n, "committed rows survive {how:?}");
        }
        assert!(cluster.start().is_err(), "starting a running cluster is an error");
        assert!(
            cluster.log().contains("database system is ready"),
            "{}",
            cluster.log()
        );
        conn.close().await.unwrap();
        drop(db);
        let dir = cluster.cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists(), "the private cluster's directory is removed");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
