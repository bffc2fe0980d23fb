//! The store against the ledger: nothing a refused request carried is
//! stored, everything an accepted one carried is.
//!
//! Every id in an ingest body was fresh (the hooks give each request ids of
//! its own), so an id is either an accepted request's or a refused one's.
//! While the server runs (both stores): the metrics count exactly the
//! accepted reports and decisions, every workspace of an accepted report
//! gets a last-used time, and no workspace only refused requests named has
//! one. After SIGTERM (which flushes everything), on PostgreSQL: every id
//! in every table came from an accepted request, and the boundary counters
//! and snapshots add up to the accepted decisions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt as _};
use sqlx::Row as _;
use uuid::Uuid;

use super::ledger::Ledger;

const REPORTS_COLLECTED: &str = "tally_app_stats_reports_collected_total";
const BOUNDARY_TRACKED: &str = "tally_boundary_requests_tracked_total";

pub async fn live(base: &str, ledger: &Ledger, reader_token: &str) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut findings = Vec::new();
    for body in &ledger.unreadable_accepted {
        findings.push(format!(
            "an ingest request was accepted with a body no client sends: {body}"
        ));
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(reader_token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    for (name, label, expected) in [
        (REPORTS_COLLECTED, None, ledger.reports_accepted),
        (
            BOUNDARY_TRACKED,
            Some("decision=\"allowed\""),
            ledger.allowed_accepted,
        ),
        (
            BOUNDARY_TRACKED,
            Some("decision=\"denied\""),
            ledger.denied_accepted,
        ),
    ] {
        let shown = metric(&metrics, name, label);
        if shown.unwrap_or(0.0) != expected as f64 || (shown.is_none() && expected > 0) {
            findings.push(format!(
                "/metrics shows {name}{} = {shown:?}, the accepted requests sent {expected}",
                label.map(|l| format!("{{{l}}}")).unwrap_or_default()
            ));
        }
    }

    let last_used = |id: Uuid| {
        let client = client.clone();
        let url = format!("{base}/api/v2/workspaces/{id}/last-used");
        async move {
            let answer: serde_json::Value = client
                .get(url)
                .bearer_auth(reader_token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok((id, !answer["last_used_at"].is_null()))
        }
    };
    // Accepted reports reach the store at the next flush (1 s), except open
    // sessions younger than the rollup window (1 min by default, two to be
    // safe), which are held back until they age or the server stops: the
    // PostgreSQL audit after the shutdown flush sees those too.
    let accepted = &ledger.app_accepted.workspaces;
    let settled = ledger.settled_workspaces(time::OffsetDateTime::now_utc(), time::Duration::minutes(2));
    let until = Instant::now() + Duration::from_secs(30);
    let mut missing: BTreeSet<Uuid> = settled.clone();
    while !missing.is_empty() {
        let answers: Vec<_> = stream::iter(missing.iter().copied().map(last_used))
            .buffer_unordered(16)
            .collect()
            .await;
        for answer in answers {
            let (id, used) = answer?;
            if used {
                missing.remove(&id);
            }
        }
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !missing.is_empty() {
        findings.push(format!(
            "{} of {} workspaces of settled accepted reports have no last-used time after 30 s, e.g. {}",
            missing.len(),
            settled.len(),
            missing.first().unwrap()
        ));
    }
    let refused_only: Vec<Uuid> = ledger
        .app_refused
        .workspaces
        .difference(accepted)
        .copied()
        .collect();
    let answers: Vec<_> = stream::iter(refused_only.iter().copied().map(last_used))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut stored = Vec::new();
    for answer in answers {
        let (id, used) = answer?;
        if used {
            stored.push(id);
        }
    }
    if !stored.is_empty() {
        findings.push(format!(
            "{} workspaces that only refused requests named have a last-used time, e.g. {}",
            stored.len(),
            stored[0]
        ));
    }
    println!(
        "audit (live): metrics checked; {} of {} accepted workspaces checked stored (the others' sessions are open \
         and young), {} only-refused workspaces checked unstored",
        settled.len() - missing.len(),
        accepted.len(),
        refused_only.len()
    );
    Ok(findings)
}

/// A sample's value in Prometheus text: `name value` or `name{labels} value`
/// (with `label` among the labels).
fn metric(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, labels) = match series.split_once('{') {
            Some((m, labels)) => (m, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = metric == name && label.is_none_or(|l| labels.split(',').any(|p| p == l));
        wanted.then(|| value.parse().ok()).flatten()
    })
}

/// After the server's shutdown flush: every stored id is an accepted
/// request's, and the boundary figures add up.
pub async fn postgres(url: &str, ledger: &Ledger) -> anyhow::Result<Vec<String>> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .context("connecting to the run's database")?;
    let mut findings = Vec::new();
    let ids = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query(sql)
                .fetch_all(&pool)
                .await
                .with_context(|| sql.to_owned())?;
            anyhow::Ok(
                rows.iter()
                    .map(|r| r.get::<Uuid, _>(0))
                    .collect::<BTreeSet<Uuid>>(),
            )
        }
    };
    let checks: [(&str, &'static str, &BTreeSet<Uuid>); 6] = [
        (
            "app stat workspaces",
            "SELECT DISTINCT workspace_id FROM workspace_app_stats",
            &ledger.app_accepted.workspaces,
        ),
        (
            "app stat users",
            "SELECT DISTINCT user_id FROM workspace_app_stats",
            &ledger.app_accepted.users,
        ),
        (
            "app stat agents",
            "SELECT DISTINCT agent_id FROM workspace_app_stats",
            &ledger.app_accepted.agents,
        ),
        (
            "last-used workspaces",
            "SELECT id FROM workspaces",
            &ledger.app_accepted.workspaces,
        ),
        (
            "boundary workspaces",
            "SELECT workspace_id FROM boundary_usage_workspaces",
            &ledger.boundary_accepted.workspaces,
        ),
        (
            "boundary users",
            "SELECT user_id FROM boundary_usage_users",
            &ledger.boundary_accepted.owners,
        ),
    ];
    let mut rows = 0;
    for (what, sql, accepted) in checks {
        let stored = ids(sql).await?;
        rows += stored.len();
        let foreign: Vec<&Uuid> = stored.difference(accepted).collect();
        if !foreign.is_empty() {
            findings.push(format!(
                "{} stored {what} came from no accepted request, e.g. {}",
                foreign.len(),
                foreign[0]
            ));
        }
        // Distinct boundary ids are reset when a period closes; app stats stay.
        if what.starts_with("app") || what.starts_with("last") {
            let lost: Vec<&Uuid> = accepted.difference(&stored).collect();
            if !lost.is_empty() {
                findings.push(format!(
                    "{} accepted {what} are not stored, e.g. {}",
                    lost.len(),
                    lost[0]
                ));
            }
        }
    }
    let sums = sqlx::query(
        "SELECT ((SELECT COALESCE(SUM(allowed_requests), 0) FROM boundary_usage_replicas)
              + (SELECT COALESCE(SUM(allowed_requests), 0) FROM telemetry_snapshots))::bigint,
                ((SELECT COALESCE(SUM(denied_requests), 0) FROM boundary_usage_replicas)
              + (SELECT COALESCE(SUM(denied_requests), 0) FROM telemetry_snapshots))::bigint",
    )
    .fetch_one(&pool)
    .await?;
    let (allowed, denied): (i64, i64) = (sums.get(0), sums.get(1));
    let expected = (ledger.allowed_accepted as i64, ledger.denied_accepted as i64);
    if (allowed, denied) != expected {
        findings.push(format!(
            "the store counts {allowed} allowed and {denied} denied boundary requests, the accepted requests sent {} and {}",
            expected.0, expected.1
        ));
    }
    println!(
        "audit (postgres): {rows} stored ids checked against the ledger; boundary sums {allowed} + {denied}"
    );
    pool.close().await;
    Ok(findings)
}
