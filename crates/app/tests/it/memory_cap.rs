//! The in-memory store within `--max-memory`: its share fills, its writes
//! are refused like a database that is down, the collector holds and then
//! answers 503, nothing answered 204 is lost, and retention makes room.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::common::scrape::{scrape, settled};
use crate::common::*;

const REFUSED: &str = "tally_store_memory_writes_refused_total";
/// Reports per request.
const BATCH: usize = 50;

/// `n` closed sessions of one user, workspace and app, all started at `start`.
fn sessions(
    user: Uuid,
    workspace: Uuid,
    start: OffsetDateTime,
    length: time::Duration,
    n: usize,
) -> (Vec<Uuid>, serde_json::Value) {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let stats: Vec<_> = ids
        .iter()
        .map(|&s| {
            go_report(
                user,
                workspace,
                "path",
                "code-server",
                s,
                start,
                Some(start + length),
                2,
            )
        })
        .collect();
    (ids, serde_json::json!({ "stats": stats }))
}

#[tokio::test]
async fn a_full_memory_store_holds_ingest_in_the_collector_until_retention_makes_room() {
    // A quarter of the cap (256 KiB) is the store's: a few hundred rows.
    // Raw rows are kept 2 hours; retention runs 5 s after start, then every 30 s.
    let server = Server::start(&[
        "--max-memory",
        "1MiB",
        "--rollup-window",
        "2s",
        "--retention-app-stats",
        "2h",
        "--purge-interval",
        "30s",
        ROLLUP_TICK[0],
        ROLLUP_TICK[1],
    ]);
    let client = client();
    let old =
        |i: usize| OffsetDateTime::now_utc() - time::Duration::hours(3) + time::Duration::seconds(i as i64);
    let ten_minutes = time::Duration::minutes(10);
    let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());

    // A row past retention, to see the first round happen: the next one is
    // 30 s later, time enough to fill the store.
    let (_, canary) = sessions(user, workspace, old(0), ten_minutes, 1);
    let (status, body) = post_json(&client, &server, APP_STATS, PROXY, &canary).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    eventually(Duration::from_secs(20), "the first retention round", || async {
        server.logs().contains("expired data purged").then_some(())
    })
    .await;
    let m = scrape(&client, server.addr).await;
    assert_eq!(m.count("tally_store_memory_limit_bytes", &[]), 256 << 10);

    // Sessions of three hours ago, each a row of its own, fill the store.
    let mut batches = 0;
    while scrape(&client, server.addr).await.count(REFUSED, &[]) == 0 {
        batches += 1;
        assert!(batches < 100, "the store never filled");
        let (_, body) = sessions(user, workspace, old(batches), ten_minutes, BATCH);
        let (status, answer) = post_json(&client, &server, APP_STATS, PROXY, &body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // New short sessions, a group per request: the collector holds them
    // (its writes are refused) until its own cap answers 503.
    let mut taken: Vec<(Uuid, usize)> = Vec::new();
    let refusal = loop {
        assert!(taken.len() < 500, "the collector never filled");
        let owner = Uuid::new_v4();
        let start = OffsetDateTime::now_utc() - time::Duration::milliseconds(1500);
        let (_, body) = sessions(owner, Uuid::new_v4(), start, time::Duration::seconds(1), BATCH);
        let response = client
            .post(server.url(APP_STATS))
            .bearer_auth(PROXY)
            .json(&body)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::NO_CONTENT => taken.push((owner, BATCH)),
            StatusCode::SERVICE_UNAVAILABLE => break response,
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    };
    assert_eq!(
        refusal.headers()["retry-after"],
        "1",
        "one report interval, rounded up"
    );
    let body: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(
        body["message"], "Too many app stats buffered; retry later.",
        "{body}"
    );
    assert!(!taken.is_empty(), "some new sessions were taken before the cap");
    let m = scrape(&client, server.addr).await;
    assert!(
        m.count(tally::metrics::BACKLOG_ROWS, &[]) > 0,
        "the collector holds rows"
    );
    assert!(
        server.logs().contains("in-memory store full"),
        "{}",
        server.logs()
    );

    // The next round deletes the old rows: the backlog goes in, and new
    // sessions are taken again.
    eventually(
        Duration::from_secs(60),
        "retention to make room and the backlog to drain",
        || async {
            let m = scrape(&client, server.addr).await;
            (m.count(tally::metrics::BACKLOG_ROWS, &[]) == 0).then_some(())
        },
    )
    .await;
    let owner = Uuid::new_v4();
    let (_, body) = sessions(
        owner,
        Uuid::new_v4(),
        OffsetDateTime::now_utc() - time::Duration::seconds(1),
        time::Duration::seconds(1),
        BATCH,
    );
    let status = eventually(Duration::from_secs(20), "a new request taken", || async {
        let (status, _) = post_json(&client, &server, APP_STATS, PROXY, &body).await;
        (status == StatusCode::NO_CONTENT).then_some(status)
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    taken.push((owner, BATCH));
    let m = settled(&client, server.addr).await;
    assert_eq!(m.count(tally::metrics::DROPPED, &[]), 0);
    assert!(
        server.logs().contains("in-memory store takes writes again"),
        "{}",
        server.logs()
    );

    // Every new session answered 204 is stored: each request's group is one
    // rolled-up row standing for its sessions.
    // The last request's group is rolled up at the next flush.
    let owners: HashSet<Uuid> = taken.iter().map(|(o, _)| *o).collect();
    let answered: usize = taken.iter().map(|(_, n)| n).sum();
    let now = OffsetDateTime::now_utc();
    let export = format!(
        "/api/v2/insights/app-stats/export?start_time={}&end_time={}",
        rfc3339(now - time::Duration::hours(1)).replace('+', "%2B"),
        rfc3339(now + time::Duration::hours(1)).replace('+', "%2B"),
    );
    let stored_sessions = || async {
        let (_, text) = get_text(&client, &server, &export, READER).await;
        let mut stored = 0;
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let user: Uuid = row["user_id"].as_str().unwrap().parse().unwrap();
            if owners.contains(&user) {
                stored += row["sessions"].as_u64().unwrap() as usize;
            }
        }
        stored
    };
    let what = format!("all {answered} sessions answered 204 stored");
    eventually(Duration::from_secs(10), &what, || async {
        (stored_sessions().await == answered).then_some(())
    })
    .await;
    assert_eq!(
        stored_sessions().await,
        answered,
        "sessions stored against sessions answered 204"
    );

    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
}
