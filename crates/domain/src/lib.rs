//! The pure domain of tally: the rules that turn workspace app sessions and
//! network-boundary decisions into stored rows and per-period snapshots.
//!
//! Everything here is deterministic given its inputs: time comes from an
//! injected [`Clock`](clock::Clock), storage and delivery go through the
//! [`ports`] traits, and no module performs I/O. To embed the domain,
//! implement the ports you need (a store, a [`Reporter`](ports::Reporter),
//! a [`SnapshotSink`](ports::SnapshotSink)) and hand each service a clock.
//! The rules are stated in words in the repository's `docs/rules.md`; the
//! crate README lists the modules, and `examples/embed.rs` embeds the
//! domain with a store of its own.
//!
//! | module | what |
//! | --- | --- |
//! | [`appstats`] | the session report, its rollup, the collector, the store reporter |
//! | [`boundary`] | the per-replica boundary usage tracker |
//! | [`telemetry`] | periods, the snapshot step, the outbox publisher |
//! | [`authz`] | who may do what, as a layer around any store |
//! | [`ports`] | the store ports, `Reporter`, `SnapshotSink`, store layers |
//! | [`clock`], [`retry`], [`error`], [`schema`] | clocks, backoff, store errors, JSON Schemas |
//!
//! # Rolling up short sessions
//!
//! The [`Rollup`](appstats::rollup::Rollup) is driven by the `now` it is
//! given; here a [`ManualClock`](clock::ManualClock) supplies it. Closed
//! sessions no longer than the window become one record per group and
//! window; longer ones are reported as they are.
//!
//! ```
//! use tally_domain::appstats::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
//! use tally_domain::appstats::{AccessMethod, StatsReport};
//! use tally_domain::clock::{Clock, ManualClock};
//! use time::{Duration, macros::datetime};
//! use uuid::Uuid;
//!
//! let clock = ManualClock::new(datetime!(2026-12-01 10:00 UTC));
//! let start = clock.now();
//! let (user, workspace, agent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
//! // A closed session of one app, from `from` seconds after 10:00 for `seconds`.
//! let session = |from: i64, seconds: i64, requests: u64| StatsReport {
//!     user_id: user,
//!     workspace_id: workspace,
//!     agent_id: agent,
//!     access_method: AccessMethod::Path,
//!     slug_or_port: "code-server".into(),
//!     session_id: Uuid::new_v4(),
//!     session_started_at: start + Duration::seconds(from),
//!     session_ended_at: Some(start + Duration::seconds(from + seconds)),
//!     requests,
//!     sessions: 1,
//! };
//!
//! let mut rollup = Rollup::new(DEFAULT_ROLLUP_WINDOW);
//! rollup.collect(session(5, 10, 3));
//! rollup.collect(session(20, 15, 4));
//! let long = session(30, 300, 50);
//! rollup.collect(long.clone());
//!
//! clock.advance(Duration::minutes(6));
//! let mut rows = rollup.rollup(clock.now());
//! rows.sort_by_key(|row| row.requests);
//! assert_eq!(rows.len(), 2);
//! // The two short sessions: one record of the window 10:00 to 10:01.
//! let record = &rows[0];
//! assert_eq!(record.session_started_at, start);
//! assert_eq!(record.session_ended_at, Some(start + Duration::minutes(1)));
//! assert_eq!((record.requests, record.sessions), (7, 2));
//! // The five-minute session, on its own.
//! assert_eq!(rows[1], long);
//! // Nothing left to report, and two windows have passed: the group is gone.
//! assert_eq!(rollup.groups(), 0);
//! ```
//!
//! # Tracking boundary usage
//!
//! A [`BoundaryTracker`](boundary::tracker::BoundaryTracker) counts in
//! memory and flushes numbered deltas to a
//! [`BoundaryUsageStore`](ports::BoundaryUsageStore). A delta that failed
//! is sent again with its number, so the store counts it once.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! use tally_domain::boundary::tracker::{BoundaryTracker, TrackerFlush};
//! use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
//! use tally_domain::clock::{Clock, ManualClock};
//! use tally_domain::error::StoreError;
//! use tally_domain::ports::BoundaryUsageStore;
//! use time::{Duration, macros::datetime};
//! use uuid::Uuid;
//!
//! /// Keeps every applied delta; fails the next call when told to.
//! #[derive(Default)]
//! struct Deltas {
//!     applied: Mutex<Vec<BoundaryDelta>>,
//!     fail_next: AtomicBool,
//! }
//!
//! #[async_trait::async_trait]
//! impl BoundaryUsageStore for Deltas {
//!     async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
//!         if self.fail_next.swap(false, Ordering::SeqCst) {
//!             return Err(StoreError::unavailable("the store is down"));
//!         }
//!         let mut applied = self.applied.lock().unwrap();
//!         if applied.iter().any(|d| (d.replica_id, d.seq) == (delta.replica_id, delta.seq)) {
//!             return Ok(FlushOutcome::Duplicate);
//!         }
//!         applied.push(delta.clone());
//!         Ok(FlushOutcome::Applied)
//!     }
//!     // Totals and clean-up are not needed here.
//!     async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
//!         Ok(BoundaryUsageSummary::default())
//!     }
//!     async fn delete_boundary_usage_by_replica(&self, _replica: Uuid) -> Result<u64, StoreError> {
//!         Ok(0)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), StoreError> {
//! let clock = ManualClock::new(datetime!(2026-12-01 10:00 UTC));
//! let tracker = BoundaryTracker::new(Uuid::new_v4(), Arc::new(clock.clone()));
//! let store = Deltas::default();
//! let (workspace, owner) = (Uuid::new_v4(), Uuid::new_v4());
//!
//! tracker.track(workspace, owner, 10, 2);
//! tracker.track(workspace, owner, 5, 0);
//! clock.advance(Duration::seconds(10));
//! assert_eq!(tracker.flush(&store).await?, TrackerFlush::Flushed(FlushOutcome::Applied));
//! assert_eq!(tracker.flush(&store).await?, TrackerFlush::Nothing, "nothing new, nothing written");
//!
//! // A failed flush keeps its delta, and the next flush sends it first.
//! tracker.track(Uuid::new_v4(), owner, 1, 1);
//! store.fail_next.store(true, Ordering::SeqCst);
//! assert!(tracker.flush(&store).await.is_err());
//! assert_eq!(tracker.pending().allowed, 1);
//! tracker.flush(&store).await?;
//!
//! let applied = store.applied.lock().unwrap();
//! let counted: Vec<_> = applied.iter().map(|d| (d.seq, d.allowed, d.denied)).collect();
//! assert_eq!(counted, [(1, 15, 2), (2, 1, 1)]);
//! assert_eq!(applied[0].workspace_ids, [workspace], "distinct ids, once each");
//! assert_eq!(applied[0].tracked_to, clock.now(), "up to the flush");
//! # Ok(())
//! # }
//! ```
//!
//! # Collecting sessions with a reporter of your own
//!
//! The [`StatsCollector`](appstats::collector::StatsCollector) takes
//! reports from many tasks and flushes the rollup's rows to any
//! [`Reporter`](ports::Reporter): the store reporter in tally, here one that
//! keeps the rows. Closing it flushes once more, open sessions included.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
//! use tally_domain::appstats::{AccessMethod, StatsReport};
//! use tally_domain::clock::{Clock, ManualClock};
//! use tally_domain::error::StoreError;
//! use tally_domain::ports::Reporter;
//! use time::{Duration, macros::datetime};
//! use uuid::Uuid;
//!
//! /// Keeps every row it is given.
//! #[derive(Default)]
//! struct Rows(Mutex<Vec<StatsReport>>);
//!
//! #[async_trait::async_trait]
//! impl Reporter for Rows {
//!     async fn report(&self, rows: &[StatsReport]) -> Result<(), StoreError> {
//!         self.0.lock().unwrap().extend_from_slice(rows);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), StoreError> {
//! let clock = ManualClock::new(datetime!(2026-12-01 10:00:05 UTC));
//! let rows = Arc::new(Rows::default());
//! let collector = StatsCollector::new(CollectorConfig::default(), rows.clone(), Arc::new(clock.clone()));
//!
//! // A terminal session as a proxy reports it: open, then closed 20 s later.
//! let open = StatsReport {
//!     user_id: Uuid::new_v4(),
//!     workspace_id: Uuid::new_v4(),
//!     agent_id: Uuid::new_v4(),
//!     access_method: AccessMethod::Terminal,
//!     slug_or_port: String::new(),
//!     session_id: Uuid::new_v4(),
//!     session_started_at: clock.now(),
//!     session_ended_at: None,
//!     requests: 2,
//!     sessions: 1,
//! };
//! collector.collect(open.clone());
//! clock.advance(Duration::seconds(20));
//! collector.collect(StatsReport { session_ended_at: Some(clock.now()), requests: 9, ..open.clone() });
//! collector.flush().await?;
//! {
//!     let rows = rows.0.lock().unwrap();
//!     assert_eq!(rows.len(), 1, "one rolled-up record");
//!     assert_eq!((rows[0].requests, rows[0].session_id), (9, open.session_id));
//! }
//!
//! // Still open at close: reported, with the close time as its end.
//! let young = StatsReport { session_id: Uuid::new_v4(), session_started_at: clock.now(), ..open };
//! collector.collect(young.clone());
//! clock.advance(Duration::seconds(5));
//! collector.close().await?;
//! let rows = rows.0.lock().unwrap();
//! assert_eq!(rows[1].session_id, young.session_id);
//! assert_eq!(rows[1].session_ended_at, Some(clock.now()));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod appstats;
pub mod authz;
pub mod boundary;
pub mod clock;
pub mod error;
pub mod ports;
pub mod retry;
pub mod schema;
pub mod telemetry;
