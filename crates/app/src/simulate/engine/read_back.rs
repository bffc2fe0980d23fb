//! After the run: read back what the store holds, for the report and check.

use std::collections::{HashMap, HashSet};

use tally_domain::appstats::StatsReport;
use tally_domain::authz::{Authorized, Role, Subject};
use tally_domain::ports::{InsightsStore, TelemetryStore, TimeRange, UsageStore};
use tally_domain::usage::Intervals;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{READ_LIMIT, SharedStore, Sim};
use crate::simulate::fleet::{DurationClass, Workload};
use crate::simulate::ground_truth::{self, Truth, check_intervals};
use crate::simulate::outcome::{LastUsed, Outcome};
use crate::simulate::timeline::Timeline;

impl Sim<'_> {
    pub(super) async fn read_back(
        self,
        timeline: &Timeline,
        workload: &Workload,
        last_sent: &[u64],
        store: SharedStore,
        wall: std::time::Duration,
    ) -> anyhow::Result<Outcome> {
        let reader = Authorized::new(store, Subject::User(Role::Admin));
        let last_end = *timeline.period_ends().last().expect("at least one period");
        let everything = TimeRange::new(timeline.start - Duration::days(1), last_end + Duration::days(1))
            .map_err(anyhow::Error::msg)?;
        // Only this run's rows: a database may hold earlier runs. A rolled-up
        // row carries the id of one of the sessions rolled into it.
        let ours: HashSet<Uuid> = workload.sessions.iter().map(|s| s.id).collect();
        let rows = reader.app_stats(everything, READ_LIMIT).await?;
        let rows: Vec<&StatsReport> = rows.iter().filter(|r| ours.contains(&r.session_id)).collect();
        let run = TimeRange::new(timeline.start, last_end).map_err(anyhow::Error::msg)?;
        let top_apps = reader
            .app_usage_by_interval(&Intervals::covering(run).map_err(anyhow::Error::msg)?)
            .await?;
        let truth = Truth::from_sessions(
            self.fleet,
            &workload.sessions,
            last_sent,
            timeline.end,
            self.rollup_window,
        );
        let intervals = check_intervals(timeline).map_err(anyhow::Error::msg)?;
        let insights = ground_truth::check(&reader, &truth, &rows, &intervals).await?;
        let stored_snapshots = reader.list_snapshots(timeline.period_count() + 16).await?;

        // Every workspace with a session must have been marked used, at a
        // time between its first session's start and the end of traffic.
        let mut first_start: HashMap<u32, OffsetDateTime> = HashMap::new();
        for s in &workload.sessions {
            first_start.entry(s.workspace).or_insert(s.start);
        }
        let mut last_used = LastUsed {
            expected: first_start.len(),
            ..LastUsed::default()
        };
        for (&w, &from) in &first_start {
            let id = self.fleet.workspaces[w as usize].id;
            match reader.workspace_last_used(id).await? {
                Some(at) if at >= from && at <= timeline.end => last_used.set += 1,
                other => {
                    if last_used.wrong.len() < 5 {
                        last_used.wrong.push(format!(
                            "workspace {id}: last used {other:?}, first session at {from}"
                        ));
                    }
                }
            }
        }

        let mut mix = [0usize; 3];
        for s in &workload.sessions {
            mix[match DurationClass::of(s.duration) {
                DurationClass::Short => 0,
                DurationClass::Medium => 1,
                DurationClass::Long => 2,
            }] += 1;
        }
        let stats: Vec<_> = self.replicas.iter().map(|r| r.collector.stats()).collect();
        let unflushed_left = self
            .replicas
            .iter()
            .any(|r| r.tracker.pending() != Default::default());
        let period_ends = timeline.period_ends();
        Ok(Outcome {
            timeline: *timeline,
            fleet: self.config.fleet.clone(),
            sessions: workload.sessions.len(),
            session_mix: mix,
            reports_sent: self.reports_sent,
            requests_sent: last_sent.iter().sum(),
            requests_stored: rows.iter().map(|r| r.requests).sum(),
            rows_in_store: rows.len() as u64,
            rows_reported: stats.iter().map(|s| s.rows_reported).sum(),
            dropped: stats.iter().map(|s| s.dropped).sum(),
            boundary_batches: self.boundary_batches,
            tracked: self.tracked,
            unflushed_left,
            expected: self.expected,
            published: self
                .sink
                .take()
                .into_iter()
                .filter(|s| period_ends.contains(&s.period_end))
                .collect(),
            stored_snapshots: stored_snapshots
                .into_iter()
                .filter(|s| period_ends.contains(&s.period_end))
                .collect(),
            winners: period_ends
                .iter()
                .map(|e| (*e, self.winners.get(e).copied().unwrap_or(0)))
                .collect(),
            top_apps,
            insights,
            last_used,
            faults: self.faults,
            wall,
        })
    }
}
