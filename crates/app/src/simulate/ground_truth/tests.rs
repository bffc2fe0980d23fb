//! The ground truth on hand-made sessions, and its check against a store
//! fed the rows those sessions become.

use std::sync::Arc;

use tally_adapters_memory::MemoryStore;
use tally_domain::appstats::StatsReport;
use tally_domain::authz::{Authorized, Role, Subject};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, Store};
use time::macros::datetime;

use super::*;
use crate::simulate::fleet::{FleetSpec, PlannedSession};

const END: OffsetDateTime = datetime!(2026-01-05 12:00 UTC);

fn fleet() -> Fleet {
    Fleet::generate(&FleetSpec {
        workspaces: 2,
        users: 2,
        apps: 2,
        replicas: 1,
        sessions_per_user_hour: 1.0,
        seed: 7,
    })
}

fn session(user: u32, app: u16, start: OffsetDateTime, seconds: i64) -> PlannedSession {
    PlannedSession {
        id: Uuid::new_v4(),
        user,
        workspace: user,
        app,
        replica: 0,
        start,
        duration: Duration::seconds(seconds),
        base_requests: 1,
        requests_per_sec: 0.0,
    }
}

fn hours(from: OffsetDateTime, to: OffsetDateTime) -> Intervals {
    Intervals::new(vec![from, to]).unwrap()
}

/// Two overlapping sessions count their minutes once; a closed session no
/// longer than the window covers its window's minute only; one still open
/// at the end counts up to the end.
#[test]
fn minutes_follow_what_the_collector_stores() {
    let f = fleet();
    let sessions = [
        session(0, 0, datetime!(2026-01-05 10:00 UTC), 3600),
        session(0, 0, datetime!(2026-01-05 10:30 UTC), 3600),
        // 10:59:30 to 11:00:20: rolled up into 10:59 only.
        session(1, 1, datetime!(2026-01-05 10:59:30 UTC), 50),
        // Open past the end: 11:58:30 to 12:00.
        session(1, 1, datetime!(2026-01-05 11:58:30 UTC), 3600),
    ];
    let truth = Truth::from_sessions(&f, &sessions, &[5, 7, 2, 3], END, Duration::MINUTE);
    let range = hours(datetime!(2026-01-05 10:00 UTC), END);
    let apps = truth.app_usage(&range);
    let figures = |app: usize| {
        let a = &f.apps[app];
        apps.iter()
            .find(|s| s.access_method == a.access_method && s.slug_or_port == a.slug_or_port)
            .unwrap()
            .total
    };
    assert_eq!(
        figures(0),
        UsageFigures {
            usage_seconds: 90 * 60,
            sessions: 2,
            requests: 12,
            unique_users: 1
        }
    );
    assert_eq!(
        figures(1),
        UsageFigures {
            usage_seconds: 3 * 60,
            sessions: 2,
            requests: 5,
            unique_users: 1
        }
    );
    // The 11:00 hour alone: app 0's last 30 minutes, app 1's open session;
    // the sessions of 10:00 and 10:30 count in their start hour.
    let eleven = truth.app_usage(&hours(datetime!(2026-01-05 11:00 UTC), END));
    assert_eq!(eleven.len(), 2);
    assert_eq!(
        truth
            .active_users(&hours(datetime!(2026-01-05 11:00 UTC), END))
            .total,
        2
    );
    let users = truth.user_activity(range.range());
    assert_eq!(users[0].usage_seconds, 90 * 60);
    assert_eq!(users[1].usage_seconds, 3 * 60);
}

/// A store holding exactly the sent figures passes; a lost row fails,
/// naming the figure.
#[tokio::test]
async fn the_check_passes_on_the_truth_and_names_what_differs() {
    let f = fleet();
    let sessions = [
        session(0, 0, datetime!(2026-01-05 10:00 UTC), 3600),
        session(0, 0, datetime!(2026-01-05 10:30 UTC), 3600),
        session(1, 1, datetime!(2026-01-05 11:10 UTC), 600),
    ];
    let truth = Truth::from_sessions(&f, &sessions, &[5, 7, 2], END, Duration::MINUTE);
    let row = |s: &PlannedSession, requests| {
        let ws = &f.workspaces[s.workspace as usize];
        let app = &f.apps[usize::from(s.app)];
        StatsReport {
            user_id: f.users[s.user as usize],
            workspace_id: ws.id,
            agent_id: ws.agent_id,
            access_method: app.access_method,
            slug_or_port: app.slug_or_port.clone(),
            session_id: s.id,
            session_started_at: s.start,
            session_ended_at: Some(s.end()),
            requests,
            sessions: 1,
        }
    };
    let rows = [row(&sessions[0], 5), row(&sessions[1], 7), row(&sessions[2], 2)];
    let intervals = hours(datetime!(2026-01-05 10:00 UTC), END);

    let check_with = |rows: Vec<StatsReport>| {
        let truth = &truth;
        let intervals = &intervals;
        async move {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let writer = Authorized::new(store.clone(), Subject::SystemRestricted);
            writer
                .write_app_stats(&AppStatsWrite {
                    rows: rows.clone(),
                    batch_size: 16,
                    last_used: Vec::new(),
                })
                .await
                .unwrap();
            writer.tick_usage_rollup().await.unwrap();
            let reader = Authorized::new(store, Subject::User(Role::Admin));
            let refs: Vec<&StatsReport> = rows.iter().collect();
            check(&reader, truth, &refs, intervals).await.unwrap()
        }
    };
    let good = check_with(rows.to_vec()).await;
    assert!(good.ok, "{good:#?}");
    assert!(good.line.starts_with("insights: OK"), "{}", good.line);

    let lost = check_with(rows[..2].to_vec()).await;
    assert!(!lost.ok);
    assert!(lost.line.starts_with("insights: FAILED"), "{}", lost.line);
    let all = lost.problems.join("\n");
    for figure in [
        "usage seconds per (user, app)",
        "app usage",
        "active users",
        "user activity",
    ] {
        assert!(all.contains(figure), "{figure} missing in\n{all}");
    }
}
