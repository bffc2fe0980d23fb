//! The load driver: boundary logs and app stats to several replicas
//! round-robin, counting only what a replica acknowledged with 204.
// Shared by several test binaries, each using part of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::{AGENT, APP_STATS, BOUNDARY_LOGS, PROXY, session_batch};

/// Workspaces, owned by `USERS` users; 5 is coprime to 3 replicas, so every
/// replica sees every workspace within a few requests.
pub const WORKSPACES: usize = 5;
pub const USERS: usize = 2;
/// Sessions per app stats request.
pub const BATCH: usize = 8;

#[derive(Debug, Default)]
pub struct Acked {
    pub allowed: u64,
    pub denied: u64,
    pub boundary_posts: u64,
    pub app_posts: u64,
    /// Highest acknowledged request count per session: what the store keeps.
    pub sessions: HashMap<Uuid, u64>,
    /// The same, counting only replicas that are not retiring.
    pub surviving: HashMap<Uuid, u64>,
    /// (when, allowed, denied) of each boundary log the retiring replica acknowledged.
    pub retiring_boundary: Vec<(Instant, u64, u64)>,
    /// What each replica (by index) acknowledged: what its metrics must show.
    pub by_replica: HashMap<usize, ReplicaAcked>,
}

/// What one replica acknowledged with 204.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcked {
    pub allowed: u64,
    pub denied: u64,
    pub boundary_posts: u64,
    pub app_posts: u64,
    /// App stat reports in those posts.
    pub app_reports: u64,
}

pub struct Driver {
    pub replicas: Vec<SocketAddr>,
    pub workspaces: Vec<Uuid>,
    pub users: Vec<Uuid>,
    /// Replica index that may be going away: its failures are not errors.
    pub retiring: Option<usize>,
    pub retiring_signalled: AtomicBool,
    next: AtomicU64,
    pub acked: Mutex<Acked>,
    client: reqwest::Client,
}

enum Outcome {
    Acked,
    /// Not acknowledged by a retiring replica: not counted.
    Dropped,
}

impl Driver {
    pub fn new(replicas: Vec<SocketAddr>, retiring: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            replicas,
            workspaces: (0..WORKSPACES).map(|_| Uuid::new_v4()).collect(),
            users: (0..USERS).map(|_| Uuid::new_v4()).collect(),
            retiring,
            retiring_signalled: AtomicBool::new(false),
            next: AtomicU64::new(0),
            acked: Mutex::new(Acked::default()),
            client: crate::common::client(),
        })
    }

    fn owner(&self, w: usize) -> Uuid {
        self.users[w % USERS]
    }

    async fn post(&self, replica: usize, path: &str, token: &str, body: &serde_json::Value) -> Outcome {
        let url = format!("http://{}{path}", self.replicas[replica]);
        let result = self.client.post(url).bearer_auth(token).json(body).send().await;
        let retiring = self.retiring == Some(replica) && self.retiring_signalled.load(Ordering::SeqCst);
        match result {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => Outcome::Acked,
            _ if retiring => Outcome::Dropped,
            Ok(r) => {
                let status = r.status();
                panic!(
                    "replica {replica} answered {status} on {path}: {}",
                    r.text().await.unwrap_or_default()
                )
            }
            Err(e) => panic!("replica {replica} failed on {path}: {e}"),
        }
    }

    /// One boundary log to replica `i % n`, for workspace `i % WORKSPACES`.
    async fn boundary_once(&self) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let replica = (i % self.replicas.len() as u64) as usize;
        let w = (i % WORKSPACES as u64) as usize;
        let (allowed, denied) = (i % 7 + 1, i % 3);
        self.boundary(replica, self.workspaces[w], self.owner(w), allowed, denied)
            .await;
    }

    /// Posts one boundary log (pre-counted decisions) to `replica`; true and
    /// counted if it was acknowledged.
    pub async fn boundary(
        &self,
        replica: usize,
        workspace: Uuid,
        owner: Uuid,
        allowed: u64,
        denied: u64,
    ) -> bool {
        let body = serde_json::json!({
            "workspace_id": workspace,
            "owner_id": owner,
            "allowed": allowed,
            "denied": denied,
        });
        let Outcome::Acked = self.post(replica, BOUNDARY_LOGS, AGENT, &body).await else {
            return false;
        };
        let mut a = self.acked.lock();
        a.allowed += allowed;
        a.denied += denied;
        a.boundary_posts += 1;
        if self.retiring == Some(replica) {
            a.retiring_boundary.push((Instant::now(), allowed, denied));
        }
        let r = a.by_replica.entry(replica).or_default();
        r.allowed += allowed;
        r.denied += denied;
        r.boundary_posts += 1;
        true
    }

    /// A batch of long sessions: reported open, then closed, to one replica;
    /// the close is then replayed verbatim to the next replica.
    pub async fn app_stats_once(&self) {
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
            let (target, requests) = (*target, *requests);
            if let Outcome::Acked = self.post(target, APP_STATS, PROXY, body).await {
                let mut a = self.acked.lock();
                a.app_posts += 1;
                let r = a.by_replica.entry(target).or_default();
                r.app_posts += 1;
                r.app_reports += batch.sessions.len() as u64;
                let surviving = self.retiring != Some(target);
                for &s in &batch.sessions {
                    let kept = a.sessions.entry(s).or_default();
                    *kept = (*kept).max(requests);
                    if surviving {
                        let kept = a.surviving.entry(s).or_default();
                        *kept = (*kept).max(requests);
                    }
                }
            }
        }
    }

    /// Runs `boundary` and `app` concurrent loops until `until`.
    pub async fn run(self: &Arc<Self>, until: Instant, boundary: usize, app: usize) {
        let mut tasks = Vec::new();
        for _ in 0..boundary {
            let d = self.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    d.boundary_once().await;
                }
            }));
        }
        for _ in 0..app {
            let d = self.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
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
