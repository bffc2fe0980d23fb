//! Replicas writing overlapping app stat rows at the same time, each through
//! a store of its own (so each with its own memory of the keys it wrote), in
//! the patterns a fleet produces: sessions reported to two replicas, open
//! sessions rewritten every flush, sessions handed off to another replica,
//! stale replays. No write may fail (a deadlock between healthy replicas is
//! a bug), and the stored rows must be the merge of everything written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tally_adapters_postgres::PgStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::Report;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange};
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;
use uuid::Uuid;

use super::{T0, fixture};

const REPLICAS: usize = 3;
const ROUNDS: usize = 150;
/// New sessions per round reported to two replicas at once.
const SHARED: usize = 12;
/// New sessions per round and replica that only it reports.
const PRIVATE: usize = 6;
/// Open sessions per round and replica taken over from another replica.
const HANDOFFS: usize = 4;
/// Stale rows per round and replica sent again.
const REPLAYS: usize = 3;
/// Rounds a session stays open (rewritten each round by its replicas).
const LIFETIME: usize = 5;
const BATCH: usize = 16;

/// Sessions and which replica writes what in which round.
struct Plan {
    sessions: Vec<StatsReport>,
    /// `writes[round][replica]`: (session, version) pairs, one per session.
    writes: Vec<Vec<Vec<(usize, u64)>>>,
}

/// A new session of one of `users` in one of `workspaces`, not ended yet.
fn new_row(rng: &mut StdRng, users: &[Uuid], workspaces: &[Uuid]) -> StatsReport {
    let user = *users.choose(rng).unwrap();
    let workspace = *workspaces.choose(rng).unwrap();
    let start = T0 + Duration::seconds(rng.random_range(0..3600 * 24));
    StatsReport {
        user_id: user,
        workspace_id: workspace,
        agent_id: Uuid::from_u128(workspace.as_u128() ^ 0xa9e7),
        access_method: AccessMethod::Terminal,
        slug_or_port: String::new(),
        session_id: Uuid::from_u128(rng.random()),
        session_started_at: start,
        session_ended_at: Some(start),
        requests: 0,
        sessions: 1,
    }
}

impl Plan {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let users: Vec<Uuid> = (0..5).map(|_| Uuid::from_u128(rng.random())).collect();
        let workspaces: Vec<Uuid> = (0..6).map(|_| Uuid::from_u128(rng.random())).collect();
        let mut sessions: Vec<StatsReport> = vec![];
        // Per session: the round it started in.
        let mut born: Vec<usize> = vec![];
        // Per replica: the open sessions it writes every round.
        let mut open: Vec<Vec<usize>> = vec![vec![]; REPLICAS];
        let mut writes = vec![];
        for round in 0..ROUNDS {
            let v = round as u64 + 1;
            let mut this: Vec<BTreeMap<usize, u64>> = vec![BTreeMap::new(); REPLICAS];
            let put = |w: &mut BTreeMap<usize, u64>, s: usize, v: u64| {
                let e = w.entry(s).or_insert(v);
                *e = (*e).max(v);
            };
            for set in &mut open {
                set.retain(|&s| born[s] + LIFETIME > round);
            }
            // Handoffs first: the old owner sends one stale row this round.
            for to in 0..REPLICAS {
                for _ in 0..HANDOFFS {
                    let from = (to + rng.random_range(1..REPLICAS)) % REPLICAS;
                    let Some(&s) = open[from].choose(&mut rng) else {
                        continue;
                    };
                    open[from].retain(|&x| x != s);
                    if !open[to].contains(&s) {
                        open[to].push(s);
                    }
                    put(&mut this[from], s, v - 1);
                }
            }
            for (r, set) in open.iter().enumerate() {
                for &s in set {
                    put(&mut this[r], s, v);
                }
            }
            let mut new_session = |rng: &mut StdRng| {
                sessions.push(new_row(rng, &users, &workspaces));
                born.push(round);
                sessions.len() - 1
            };
            for _ in 0..SHARED {
                let s = new_session(&mut rng);
                let a = rng.random_range(0..REPLICAS);
                let b = (a + rng.random_range(1..REPLICAS)) % REPLICAS;
                for r in [a, b] {
                    put(&mut this[r], s, v);
                    open[r].push(s);
                }
            }
            for (r, w) in this.iter_mut().enumerate() {
                for _ in 0..PRIVATE {
                    let s = new_session(&mut rng);
                    put(w, s, v);
                    open[r].push(s);
                }
            }
            for w in this.iter_mut().filter(|_| round > 0) {
                for _ in 0..REPLAYS {
                    let s = rng.random_range(0..sessions.len());
                    if born[s] < round {
                        let old = rng.random_range(born[s] as u64 + 1..v);
                        put(w, s, old);
                    }
                }
            }
            writes.push(this.into_iter().map(|w| w.into_iter().collect()).collect());
        }
        Self { sessions, writes }
    }

    /// Session `s` as reported at `version`: later versions end later and
    /// count more requests.
    fn row(&self, s: usize, version: u64) -> StatsReport {
        let mut r = self.sessions[s].clone();
        r.session_ended_at = Some(r.session_started_at + Duration::seconds(version as i64 * 7));
        r.requests = version * 3 + (s as u64 % 5);
        r
    }

    fn write(&self, round: usize, replica: usize) -> AppStatsWrite {
        let rows: Vec<StatsReport> = self.writes[round][replica]
            .iter()
            .map(|&(s, v)| self.row(s, v))
            .collect();
        let mut last_used: HashMap<Uuid, OffsetDateTime> = HashMap::new();
        for r in &rows {
            let end = r.session_ended_at.unwrap();
            let e = last_used.entry(r.workspace_id).or_insert(end);
            *e = (*e).max(end);
        }
        AppStatsWrite {
            rows,
            batch_size: BATCH,
            last_used: last_used.into_iter().collect(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_the_same_sessions_never_deadlock_and_lose_nothing() {
    let f = fixture().await;
    let mut stores = vec![f.store.clone()];
    for _ in 1..REPLICAS {
        stores.push(PgStore::connect(&f.db.url).await.expect("connect"));
    }
    let plan = Arc::new(Plan::new(7));
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(replica, store)| {
            let (store, plan, barrier) = (store.clone(), plan.clone(), barrier.clone());
            tokio::spawn(async move {
                // Per round: the write, or the deadlock it failed with.
                let mut done = vec![];
                for round in 0..ROUNDS {
                    let write = plan.write(round, replica);
                    barrier.wait().await;
                    match store.write_app_stats(&write).await {
                        Ok(()) => done.push(Ok(write)),
                        Err(e) if Report(&e).to_string().contains("40P01") => {
                            done.push(Err(format!("round {round}, replica {replica}: {}", Report(&e))))
                        }
                        Err(e) => panic!("round {round}, replica {replica}: {}", Report(&e)),
                    }
                }
                done
            })
        })
        .collect();
    let mut deadlocks = vec![];
    let mut want: BTreeMap<(Uuid, Uuid, Uuid), StatsReport> = BTreeMap::new();
    let mut want_last_used: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    for t in tasks {
        for outcome in t.await.unwrap() {
            let write = match outcome {
                Ok(w) => w,
                Err(deadlock) => {
                    deadlocks.push(deadlock);
                    continue;
                }
            };
            for r in write.rows {
                want.entry(r.row_key())
                    .and_modify(|w| w.merge_forward(&r))
                    .or_insert(r);
            }
            for (ws, at) in write.last_used {
                let e = want_last_used.entry(ws).or_insert(at);
                *e = (*e).max(at);
            }
        }
    }
    assert!(
        deadlocks.is_empty(),
        "{} of {} writes deadlocked: {:#?}",
        deadlocks.len(),
        ROUNDS * REPLICAS,
        deadlocks
    );

    let everything = TimeRange::new(T0 - Duration::days(1), T0 + Duration::days(3)).unwrap();
    let mut got = f.store.app_stats(everything, 1_000_000).await.unwrap();
    got.sort_by_key(|r| r.row_key());
    let want: Vec<StatsReport> = want.into_values().collect();
    assert_eq!(got.len(), want.len(), "rows stored");
    assert!(got == want, "stored rows are not the merge of what was written");
    for (ws, at) in want_last_used {
        assert_eq!(f.store.workspace_last_used(ws).await.unwrap(), Some(at), "{ws}");
    }
}
