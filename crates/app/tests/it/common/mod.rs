//! Runs `tally serve` as a child process on an ephemeral loopback port.

pub mod db;
pub mod scrape;
pub mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const TOKENS: &str =
    "proxy=proxy-token,agent=agent-token,reader=reader-token,admin=admin-token,member=member-token";
pub const PROXY: &str = "proxy-token";
pub const AGENT: &str = "agent-token";
pub const READER: &str = "reader-token";
pub const ADMIN: &str = "admin-token";
pub const MEMBER: &str = "member-token";

/// For a server whose insights are read: they answer from the usage rollup,
/// so it ticks often (the default is 5 minutes).
pub const ROLLUP_TICK: [&str; 2] = ["--usage-rollup-interval", "200ms"];

pub const APP_STATS: &str = "/api/v2/workspaceproxies/me/app-stats";
pub const BOUNDARY_LOGS: &str = "/api/v2/workspaceagents/me/boundary-logs";

pub fn tally() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    // The caller's environment must not configure the server under test.
    for (key, _) in std::env::vars() {
        if key.starts_with("TALLY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `tally serve` with short intervals plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`Server::start`] with `env` set for the process too.
    ///
    /// The access log is off unless `extra` turns it on (`--access-log
    /// true`): a line per request costs the load tests about two thirds of
    /// the load they generate in a debug build (measured with the outage
    /// test: 2,700 against 7,000 to 9,500 boundary logs acknowledged in its
    /// outage), and their capped replica would no longer reach its cap.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tally.log");
        let mut cmd = tally();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--report-interval",
            "200ms",
            "--tracker-flush-interval",
            "200ms",
            "--publish-interval",
            "200ms",
        ])
        .args(extra)
        .env("TALLY_TOKENS", TOKENS)
        .env("TALLY_LOG", "info,tower_http=debug")
        .env("TALLY_ACCESS_LOG", "false")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
                        .unwrap_or(rest.len());
                    rest[..end].parse().ok()
                })
            {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tally serve exited with {status} before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "tally serve did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Waits for the process to end; returns its status and its log.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.logs());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tally serve did not exit within {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test keeps the server's log (its temporary directory
        // goes): a failure under load is explained from it, not rerun away.
        if std::thread::panicking() {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failed-server-logs");
            let kept = dir.join(format!(
                "{}-{}.log",
                OffsetDateTime::now_utc().unix_timestamp(),
                self.addr.port()
            ));
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::copy(&self.log, &kept).is_ok() {
                eprintln!("server {} log kept at {}", self.addr, kept.display());
            }
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The whole number in the environment variable `name` (a longer run's
/// setting, from `cargo xtask`), else `default`.
pub fn number_from_env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a whole number")),
        Err(_) => default,
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// A batch of new app sessions the load drivers send, with the posts that
/// report it: open (3 requests) then closed (7) to `replica`, and the close
/// replayed verbatim to the next replica, as a proxy retrying elsewhere would.
pub struct SessionBatch {
    pub sessions: Vec<uuid::Uuid>,
    /// (replica index, body, request count each session reaches with it).
    pub posts: [(usize, serde_json::Value, u64); 3],
}

/// [`SessionBatch`] of one session per (workspace, user) in `owners`. The
/// sessions started ten minutes ago, longer than the rollup window, so each
/// keeps its own row.
pub fn session_batch(
    owners: impl IntoIterator<Item = (uuid::Uuid, uuid::Uuid)>,
    replica: usize,
    replicas: usize,
) -> SessionBatch {
    const OPEN_REQUESTS: u64 = 3;
    const CLOSED_REQUESTS: u64 = 7;
    let now = OffsetDateTime::now_utc();
    let start = now - time::Duration::minutes(10);
    let sessions: Vec<_> = owners.into_iter().map(|o| (uuid::Uuid::new_v4(), o)).collect();
    let body = |end: Option<OffsetDateTime>, requests| {
        let stats: Vec<_> = sessions
            .iter()
            .map(|&(s, (ws, user))| go_report(user, ws, "subdomain", "code-server", s, start, end, requests))
            .collect();
        serde_json::json!({ "stats": stats })
    };
    let close = body(Some(now), CLOSED_REQUESTS);
    SessionBatch {
        posts: [
            (replica, body(None, OPEN_REQUESTS), OPEN_REQUESTS),
            (replica, close.clone(), CLOSED_REQUESTS),
            ((replica + 1) % replicas, close, CLOSED_REQUESTS),
        ],
        sessions: sessions.into_iter().map(|(s, _)| s).collect(),
    }
}

/// One report exactly as the Go proxy encodes it; `None` ends as Go's zero time.
#[allow(clippy::too_many_arguments)] // the report's own fields, in wire order
pub fn go_report(
    user: uuid::Uuid,
    workspace: uuid::Uuid,
    method: &str,
    slug: &str,
    session: uuid::Uuid,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    requests: u64,
) -> serde_json::Value {
    serde_json::json!({
        "user_id": user,
        "workspace_id": workspace,
        "agent_id": agent_of(workspace),
        "access_method": method,
        "slug_or_port": slug,
        "session_id": session,
        "session_started_at": rfc3339(start),
        "session_ended_at": end.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned()),
        "requests": requests,
    })
}

/// Each test workspace has one agent, derived from its id.
pub fn agent_of(workspace: uuid::Uuid) -> uuid::Uuid {
    uuid::Uuid::from_u128(workspace.as_u128() ^ 0xa5a5)
}

pub async fn post_json(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    json_answer(client.post(server.url(path)).bearer_auth(token).json(body)).await
}

pub async fn get_json(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    token: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    json_answer(client.get(server.url(path)).bearer_auth(token)).await
}

/// [`get_json`] for an answer that is not one JSON value (NDJSON, text).
pub async fn get_text(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    token: &str,
) -> (reqwest::StatusCode, String) {
    let response = client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The status and JSON body of the answer to `request` (`null` for a body
/// that is not JSON).
async fn json_answer(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// `tally serve` as one replica of a fleet on the PostgreSQL database at
/// `db`: 2-second periods, snapshots delivered to `sink`, then `extra`.
pub fn replica(db: &str, sink: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--database-url",
        db,
        "--snapshot-interval",
        "2s",
        "--telemetry-url",
        sink,
    ];
    args.extend(extra);
    Server::start(&args)
}

/// Polls `probe` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn insights_path(from: OffsetDateTime, to: OffsetDateTime) -> String {
    let enc = |t| url_encode(&rfc3339(t));
    format!("/api/v2/insights/apps?from={}&to={}", enc(from), enc(to))
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The app of `apps` with this method and slug.
pub fn app<'a>(apps: &'a serde_json::Value, method: &str, slug: &str) -> Option<&'a serde_json::Value> {
    apps["apps"]
        .as_array()?
        .iter()
        .find(|a| a["access_method"] == method && a["slug_or_port"] == slug)
}

/// A mix of sessions as a proxy reports them, relative to `now`.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub now: OffsetDateTime,
    pub t0: OffsetDateTime,
    pub ws1: uuid::Uuid,
    pub ws2: uuid::Uuid,
    pub user_a: uuid::Uuid,
    pub user_b: uuid::Uuid,
    /// Closed, five minutes long: reported on its own.
    pub long_closed: serde_json::Value,
    /// Open for nine minutes: reported on its own with a provisional end.
    pub old_open: serde_json::Value,
    /// Two closed 20 s sessions of one minute: rolled up into one row.
    pub short_closed: [serde_json::Value; 2],
    /// Opened just now: held back until it is a window old, or shutdown.
    pub young_open: serde_json::Value,
}

impl Scenario {
    pub fn new(now: OffsetDateTime) -> Self {
        let minute = time::Duration::minutes(1);
        let t0 = tally_domain::telemetry::truncate(now - time::Duration::minutes(10), minute)
            + time::Duration::seconds(5);
        let s = time::Duration::seconds;
        let [ws1, ws2, user_a, user_b, user_c] = std::array::from_fn(|_| uuid::Uuid::new_v4());
        let id = uuid::Uuid::new_v4;
        Self {
            now,
            t0,
            ws1,
            ws2,
            user_a,
            user_b,
            long_closed: go_report(
                user_a,
                ws1,
                "subdomain",
                "code-server",
                id(),
                t0,
                Some(t0 + s(300)),
                10,
            ),
            old_open: go_report(
                user_b,
                ws1,
                "subdomain",
                "code-server",
                id(),
                t0 + minute,
                None,
                4,
            ),
            short_closed: [
                go_report(user_a, ws1, "terminal", "", id(), t0, Some(t0 + s(20)), 2),
                go_report(user_a, ws1, "terminal", "", id(), t0 + s(10), Some(t0 + s(30)), 3),
            ],
            young_open: go_report(user_c, ws2, "path", "8080", id(), now - s(2), None, 1),
        }
    }

    pub fn all(&self) -> serde_json::Value {
        serde_json::json!({ "stats": [
            self.long_closed, self.old_open, self.short_closed[0], self.short_closed[1], self.young_open
        ]})
    }

    /// From a whole hour: sessions and requests count in the range that
    /// holds the start of their session's UTC hour (docs/insights.md).
    pub fn insights(&self) -> String {
        let hour = time::Duration::hours(1);
        insights_path(
            tally_domain::telemetry::truncate(self.now - hour, hour),
            self.now + hour,
        )
    }
}

/// Posts the scenario, replays it with an update of the open session, and
/// checks what the insights endpoint shows.
pub async fn post_and_read_back(client: &reqwest::Client, server: &Server, sc: &Scenario) {
    let (status, body) = post_json(client, server, APP_STATS, PROXY, &sc.all()).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");

    let want = |apps: &serde_json::Value, requests: u64| {
        let code = app(apps, "subdomain", "code-server")?;
        let term = app(apps, "terminal", "")?;
        let ok = code["unique_users"] == 2
            && code["sessions"] == 2
            && code["requests"] == requests
            && term["unique_users"] == 1
            // Two sessions in one rolled-up row: both count, and their
            // overlapping 20 s count their one minute once.
            && term["sessions"] == 2
            && term["requests"] == 5
            && term["session_seconds"] == 60.0
            && code["session_seconds"].as_f64()? > 300.0;
        ok.then_some(())
    };
    let path = sc.insights();
    eventually(
        Duration::from_secs(15),
        "the scenario in the insights",
        || async {
            let (status, apps) = get_json(client, server, &path, READER).await;
            assert_eq!(status, reqwest::StatusCode::OK, "{apps}");
            want(&apps, 14)
        },
    )
    .await;

    // The proxy re-sends the open session with more requests, and replays
    // the rest: only the update changes anything.
    let mut update = sc.old_open.clone();
    update["requests"] = 6.into();
    let replay =
        serde_json::json!({"stats": [sc.long_closed, update, sc.short_closed[0], sc.short_closed[1]]});
    let (status, _) = post_json(client, server, APP_STATS, PROXY, &replay).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let apps = eventually(Duration::from_secs(15), "the update in the insights", || async {
        let (_, apps) = get_json(client, server, &path, ADMIN).await;
        want(&apps, 16).map(|_| apps)
    })
    .await;
    // The young open session is held back, not yet written.
    assert!(app(&apps, "path", "8080").is_none(), "{apps}");

    let (status, last) = get_json(
        client,
        server,
        &format!("/api/v2/workspaces/{}/last-used", sc.ws1),
        READER,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let last_used = OffsetDateTime::parse(last["last_used_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(last_used >= sc.t0 + time::Duration::seconds(300), "{last}");
}

/// A `--max-memory` value whose collector cap holds exactly `reports`
/// reports at their worst case (each a new session in a group of its own,
/// weighed as `tally serve` weighs it: `Weights::RSS_BYTES`), on PostgreSQL.
pub fn memory_for_reports(reports: u64) -> String {
    (reports * worst_report_bytes()).to_string()
}

/// What the collector counts a report at before it is applied, in bytes.
pub fn worst_report_bytes() -> u64 {
    tally_domain::appstats::rollup::Weights::RSS_BYTES.new_group() as u64
}

/// [`memory_for_reports`] for a server on the in-memory store, which takes
/// `percent` of the cap first (`--memory-store-share`): the smallest
/// `--max-memory` leaving the collector that much.
pub fn memory_store_cap_for_reports(reports: u64, percent: u8) -> String {
    let collector = |max: u64| tally::serve::collector_cap(tally::serve::collector_share(max, Some(percent)));
    let want = reports * worst_report_bytes();
    // Start below where the share reaches `want`, then step up to it.
    let mut max = (want * 100 / (100 - u64::from(percent))).saturating_sub(100);
    while collector(max) < want as usize {
        max += 1;
    }
    assert_eq!(collector(max), want as usize);
    max.to_string()
}
