//! The outage test's load driver: boundary logs and app stats to several
//! replicas round-robin. Counts what was acknowledged (204) and what was
//! refused (503, retried like the proxy does), separately for the outage.
//! Any other answer, or no answer, fails the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::{AGENT, APP_STATS, BOUNDARY_LOGS, PROXY, session_batch};

pub const WORKSPACES: usize = 5;
pub const USERS: usize = 2;
/// Sessions per app stats request.
const BATCH: usize = 8;
/// How long a refused app stats request is retried before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Requests acknowledged and refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub boundary_acked: u64,
    pub boundary_refused: u64,
    pub app_acked: u64,
    pub app_refused: u64,
}

#[derive(Debug, Default)]
pub struct Acked {
    pub allowed: u64,
    pub denied: u64,
    /// Highest acknowledged request count per session: what the store keeps.
    pub sessions: HashMap<Uuid, u64>,
    pub total: Tally,
    /// What happened while the database was down.
    pub outage: Tally,
}

pub struct Driver {
    pub replicas: Vec<SocketAddr>,
    pub workspaces: Vec<Uuid>,
    pub users: Vec<Uuid>,
    /// Set by the test while the database is stopped.
    pub outage: AtomicBool,
    /// Set by the test to end the load.
    pub stop: AtomicBool,
    next: AtomicU64,
    pub acked: Mutex<Acked>,
    client: reqwest::Client,
}

enum Outcome {
    Acked,
    /// 503: not taken, the client should retry later.
    Refused,
}

impl Driver {
    pub fn new(replicas: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            replicas,
            workspaces: (0..WORKSPACES).map(|_| Uuid::new_v4()).collect(),
            users: (0..USERS).map(|_| Uuid::new_v4()).collect(),
            outage: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            acked: Mutex::new(Acked::default()),
            client: crate::common::client(),
        })
    }

    fn owner(&self, w: usize) -> Uuid {
        self.users[w % USERS]
    }

    /// Counts the outcome in the totals and, if the database is down, in the
    /// outage's figures.
    fn count(&self, f: impl Fn(&mut Tally)) {
        let outage = self.outage.load(Ordering::SeqCst);
        let mut a = self.acked.lock();
        f(&mut a.total);
        if outage {
            f(&mut a.outage);
        }
    }

    async fn post(&self, replica: usize, path: &str, token: &str, body: &serde_json::Value) -> Outcome {
        let url = format!("http://{}{path}", self.replicas[replica]);
        let response = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("replica {replica} failed on {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status {
            StatusCode::NO_CONTENT => Outcome::Acked,
            StatusCode::SERVICE_UNAVAILABLE => {
                let body: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("a 503 without a JSON error: {text:?}"));
                assert!(
                    body.to_string().contains("retry later"),
                    "a 503 that does not say to retry: {body}"
                );
                Outcome::Refused
            }
            _ => panic!("replica {replica} answered {status} on {path}: {text}"),
        }
    }

    /// One boundary log to replica `i % n`, for workspace `i % WORKSPACES`.
    /// A refused one is dropped (the agent does not resend).
    async fn boundary_once(&self) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let replica = (i % self.replicas.len() as u64) as usize;
        let w = (i % WORKSPACES as u64) as usize;
        let (allowed, denied) = (i % 7 + 1, i % 3);
        let body = serde_json::json!({
            "workspace_id": self.workspaces[w],
            "owner_id": self.owner(w),
            "allowed": allowed,
            "denied": denied,
        });
        match self.post(replica, BOUNDARY_LOGS, AGENT, &body).await {
            Outcome::Acked => {
                self.count(|t| t.boundary_acked += 1);
                let mut a = self.acked.lock();
                a.allowed += allowed;
                a.denied += denied;
            }
            Outcome::Refused => self.count(|t| t.boundary_refused += 1),
        }
    }

    /// Posts until acknowledged, as the proxy keeps a refused request and
    /// sends it again.
    async fn post_until_acked(&self, replica: usize, body: &serde_json::Value) {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            match self.post(replica, APP_STATS, PROXY, body).await {
                Outcome::Acked => {
                    self.count(|t| t.app_acked += 1);
                    return;
                }
                Outcome::Refused => self.count(|t| t.app_refused += 1),
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} refused app stats for {RETRY_FOR:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A batch of long sessions: reported open, then closed, to one replica;
    /// the close is then replayed verbatim to the next replica.
    async fn app_stats_once(&self) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.replicas.len();
        let replica = (i % n as u64) as usize;
        let batch = session_batch(
            (0..BATCH).map(|k| {
                let w = (i as usize + k) % WORKSPACES;
                (self.workspaces[w], self.owner(w))
            }),
            replica,
            n,
        );
        for (target, body, requests) in &batch.posts {
            self.post_until_acked(*target, body).await;
            let mut a = self.acked.lock();
            for &s in &batch.sessions {
                let kept = a.sessions.entry(s).or_default();
                *kept = (*kept).max(*requests);
            }
        }
    }

    /// Posts batches of new sessions to `replica` until it refuses one
    /// (503), at most `max_posts` of them, and returns the refused body,
    /// which the caller posts again once the replica can take it (as the
    /// proxy keeps a refused request). `None`: never refused.
    pub async fn fill_until_refused(&self, replica: usize, max_posts: usize) -> Option<serde_json::Value> {
        for _ in 0..max_posts {
            let batch = session_batch(
                (0..BATCH).map(|k| (self.workspaces[k % WORKSPACES], self.owner(k % WORKSPACES))),
                replica,
                self.replicas.len(),
            );
            let (_, body, requests) = &batch.posts[1];
            match self.post(replica, APP_STATS, PROXY, body).await {
                Outcome::Acked => {
                    self.count(|t| t.app_acked += 1);
                    let mut a = self.acked.lock();
                    for &s in &batch.sessions {
                        a.sessions.insert(s, *requests);
                    }
                }
                Outcome::Refused => {
                    self.count(|t| t.app_refused += 1);
                    return Some(body.clone());
                }
            }
        }
        None
    }

    /// Posts a body refused by [`Driver::fill_until_refused`] until it is
    /// acknowledged, and counts its sessions.
    pub async fn resend(&self, replica: usize, body: &serde_json::Value) {
        self.post_until_acked(replica, body).await;
        let mut a = self.acked.lock();
        for stat in body["stats"].as_array().into_iter().flatten() {
            let session: Uuid = stat["session_id"].as_str().unwrap().parse().unwrap();
            let requests = stat["requests"].as_u64().unwrap();
            let kept = a.sessions.entry(session).or_default();
            *kept = (*kept).max(requests);
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    /// Starts `boundary` and `app` concurrent loops, which run until told to
    /// stop; the task ends when they all have.
    pub fn start(self: &Arc<Self>, boundary: usize, app: usize) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(boundary, app))
    }

    async fn run(self: Arc<Self>, boundary: usize, app: usize) {
        let mut tasks = Vec::new();
        for _ in 0..boundary {
            let d = self.clone();
            tasks.push(tokio::spawn(async move {
                while d.running() {
                    d.boundary_once().await;
                }
            }));
        }
        for _ in 0..app {
            let d = self.clone();
            tasks.push(tokio::spawn(async move {
                while d.running() {
                    d.app_stats_once().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}
