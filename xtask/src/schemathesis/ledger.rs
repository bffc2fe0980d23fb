//! What the hooks wrote: every request sent to the server, with its status,
//! read into what the accepted and the refused requests carried.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

const APP_STATS: &str = "/api/v2/workspaceproxies/me/app-stats";
const BOUNDARY_LOGS: &str = "/api/v2/workspaceagents/me/boundary-logs";

/// The ids of app stat reports, by column.
#[derive(Debug, Default)]
pub struct AppIds {
    pub workspaces: BTreeSet<Uuid>,
    pub users: BTreeSet<Uuid>,
    pub agents: BTreeSet<Uuid>,
}

impl AppIds {
    fn add(&mut self, report: &Value) {
        let id = |key: &str| {
            report
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        self.workspaces.extend(id("workspace_id"));
        self.users.extend(id("user_id"));
        self.agents.extend(id("agent_id"));
    }
}

#[derive(Debug, Default)]
pub struct BoundaryIds {
    pub workspaces: BTreeSet<Uuid>,
    pub owners: BTreeSet<Uuid>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub requests: u64,
    pub accepted: u64,
    /// Requests each kind of sender made: schemathesis' own cases, and the
    /// hooks' probes without a token or with a wrong role's.
    pub by_source: std::collections::BTreeMap<String, u64>,
    pub app_accepted: AppIds,
    /// Workspaces of accepted reports, with when their session started if
    /// it is still open (the rollup holds an open session back while it is
    /// younger than the rollup window: it may still turn out short).
    pub app_accepted_open: Vec<(Uuid, Option<time::OffsetDateTime>)>,
    pub app_accepted_closed: BTreeSet<Uuid>,
    pub app_refused: AppIds,
    /// Reports in accepted app stats requests.
    pub reports_accepted: u64,
    pub boundary_accepted: BoundaryIds,
    pub boundary_refused: BoundaryIds,
    pub allowed_accepted: u64,
    pub denied_accepted: u64,
    /// Accepted ingest requests whose body this audit cannot read: each is
    /// a finding (the server took what no client should send).
    pub unreadable_accepted: Vec<String>,
}

impl Ledger {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("no ledger at {} (did the hooks load?)", path.display()))?;
        let mut ledger = Self::default();
        for line in text.lines() {
            let entry: Value = serde_json::from_str(line).context("a ledger line")?;
            ledger.add(&entry);
        }
        Ok(ledger)
    }

    fn add(&mut self, entry: &Value) {
        self.requests += 1;
        let status = entry["status"].as_u64().unwrap_or(0);
        let accepted = (200..300).contains(&status);
        self.accepted += u64::from(accepted);
        let source = entry["source"].as_str().unwrap_or("?");
        let source = source.split(':').next().unwrap_or(source).to_owned();
        *self.by_source.entry(source).or_default() += 1;
        if entry["method"] != "POST" {
            return;
        }
        let url = entry["url"].as_str().unwrap_or_default();
        let path = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.find('/').map(|at| &rest[at..]));
        let path = path.unwrap_or_default().split('?').next().unwrap_or_default();
        let body: Option<Value> = entry["body"].as_str().and_then(|b| serde_json::from_str(b).ok());
        match path {
            APP_STATS => {
                let reports = body
                    .as_ref()
                    .and_then(|b| b.get("stats"))
                    .and_then(Value::as_array);
                let objects = || reports.into_iter().flatten().filter(|r| r.is_object());
                if accepted {
                    match body.as_ref().map(|b| &b["stats"]) {
                        Some(Value::Array(_) | Value::Null) => {}
                        _ => self
                            .unreadable_accepted
                            .push(format!("{status} to {}", entry["body"])),
                    }
                    self.reports_accepted += reports.map_or(0, |r| r.len() as u64);
                    for report in objects() {
                        self.app_accepted.add(report);
                        self.add_accepted_session(report);
                    }
                } else {
                    objects().for_each(|r| self.app_refused.add(r));
                }
            }
            BOUNDARY_LOGS => {
                let Some(body) = body else {
                    if accepted {
                        self.unreadable_accepted
                            .push(format!("{status} to {}", entry["body"]));
                    }
                    return;
                };
                let id = |key: &str| {
                    body.get(key)
                        .and_then(Value::as_str)
                        .and_then(|s| Uuid::parse_str(s).ok())
                };
                let (workspace, owner) = (id("workspace_id"), id("owner_id"));
                if !accepted {
                    self.boundary_refused.workspaces.extend(workspace);
                    self.boundary_refused.owners.extend(owner);
                    return;
                }
                let (allowed, denied) = decisions(&body);
                self.allowed_accepted += allowed;
                self.denied_accepted += denied;
                if allowed + denied > 0 {
                    self.boundary_accepted.workspaces.extend(workspace);
                    self.boundary_accepted.owners.extend(owner);
                }
            }
            _ => {}
        }
    }

    fn add_accepted_session(&mut self, report: &Value) {
        let Some(workspace) = report["workspace_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return;
        };
        let time = |key: &str| {
            report[key].as_str().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        match time("session_ended_at") {
            Some(end) if end.year() != 1 => {
                self.app_accepted_closed.insert(workspace);
            }
            _ => self
                .app_accepted_open
                .push((workspace, time("session_started_at"))),
        }
    }

    /// Workspaces whose accepted reports must be in the store by a flush at
    /// `now`: a closed session, or an open one older than `window`.
    pub fn settled_workspaces(&self, now: time::OffsetDateTime, window: time::Duration) -> BTreeSet<Uuid> {
        let mut settled = self.app_accepted_closed.clone();
        settled.extend(
            self.app_accepted_open
                .iter()
                .filter(|(_, start)| start.is_some_and(|s| s < now - window))
                .map(|(ws, _)| *ws),
        );
        settled
    }

    pub fn summary(&self) -> String {
        let sources: Vec<String> = self.by_source.iter().map(|(s, n)| format!("{s} {n}")).collect();
        format!(
            "ledger: {} requests ({}), {} accepted; {} app stat reports accepted in {} workspaces, \
             {} workspaces only refused; boundary {} allowed + {} denied accepted",
            self.requests,
            sources.join(", "),
            self.accepted,
            self.reports_accepted,
            self.app_accepted.workspaces.len(),
            self.app_refused
                .workspaces
                .difference(&self.app_accepted.workspaces)
                .count(),
            self.allowed_accepted,
            self.denied_accepted,
        )
    }
}

/// The (allowed, denied) an accepted boundary request counts, by the
/// server's rule: its `logs`, else its counts (a missing one is 0).
fn decisions(body: &Value) -> (u64, u64) {
    match &body["logs"] {
        Value::Array(logs) => logs
            .iter()
            .fold((0, 0), |(a, d), log| match log["decision"].as_str() {
                Some("allow" | "allowed") => (a + 1, d),
                Some("deny" | "denied") => (a, d + 1),
                _ => (a, d),
            }),
        _ => {
            let count = |key: &str| body[key].as_f64().map_or(0, |n| n as u64);
            (count("allowed"), count("denied"))
        }
    }
}
