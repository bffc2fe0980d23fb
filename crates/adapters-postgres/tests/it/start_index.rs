//! The BRIN on the raw rows' start under retention: purged rows' pages are
//! reused by new ones, and a read of a range of starts must still match only
//! the page ranges that hold such rows. (A BRIN range's summary only widens:
//! once a range held both a purged row and a new one it matched every start
//! in between, and the purge's search and the tick's read of one hour came
//! to read most of the table. Each purge round now summarizes again the
//! ranges the rounds before it deleted from.)

use tally_domain::ports::{TimeRange, UsageStore as _};
use tally_domain::usage::RetentionPolicy;
use time::{Duration, OffsetDateTime};

use tally_adapters_postgres::PgStore;
use tally_tests::pg::PrivateCluster;

use super::T0;

const DAYS: i64 = 20;
const ROWS_PER_DAY: i64 = 4_000;
const PAGES_PER_RANGE: i64 = 32;

fn day(d: i64) -> OffsetDateTime {
    T0 + Duration::days(d)
}

#[tokio::test]
async fn reads_by_start_stay_narrow_after_purges_and_reuse() {
    // A cluster of its own: a deleted row drops out of a summary only once
    // no transaction older than its delete is left, and other tests'
    // transactions on a shared cluster would hold it in.
    let cluster = PrivateCluster::started().await;
    let db = cluster.fresh_database().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let pool = store.pool();
    let def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'workspace_app_stats_started_brin'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        def.ends_with("USING brin (session_started_at) WITH (pages_per_range='32', autosummarize='on')"),
        "{def}"
    );

    // A day's rows at a time, their starts spread over the day (every 21.6
    // s); retention of 5 days runs after each day, and VACUUM, so that the
    // next day's rows fill the pages the purge freed.
    let policy = RetentionPolicy {
        app_stats: Duration::days(5),
        ..RetentionPolicy::default()
    };
    for d in 0..DAYS {
        sqlx::query(
            "INSERT INTO workspace_app_stats (user_id, agent_id, session_id, workspace_id, access_method, \
                 slug_or_port, session_started_at, session_ended_at, requests) \
             SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'path', \
                 'code-server', $1 + i * interval '21.6 s', $1 + i * interval '21.6 s' + interval '10 min', i \
             FROM generate_series(0, $2 - 1) i",
        )
        .bind(day(d))
        .bind(ROWS_PER_DAY)
        .execute(pool)
        .await
        .unwrap();
        loop {
            let round = store.purge_expired(day(d + 1), &policy).await.unwrap();
            if round.app_stats_rows == 0 {
                break;
            }
        }
        sqlx::query("VACUUM ANALYZE workspace_app_stats")
            .execute(pool)
            .await
            .unwrap();
    }

    // The purge kept exactly the last 5 days, and the pages were reused.
    let (rows, oldest, pages): (i64, OffsetDateTime, i64) = sqlx::query_as(
        "SELECT count(*), min(session_started_at), pg_relation_size('workspace_app_stats') / 8192 \
         FROM workspace_app_stats",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((rows, oldest), (5 * ROWS_PER_DAY, day(DAYS - 5)));
    let held_pages: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT (ctid::text::point)[0]) FROM workspace_app_stats")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        pages < held_pages * 2,
        "the heap ({pages} pages) reuses the space purged rows held ({held_pages} hold rows)"
    );

    // One hour of a day in the middle, as the export reads it (the tick's
    // read has the same bound): the rows.
    let from = day(DAYS - 3) + Duration::hours(9);
    let hour = TimeRange::new(from, from + Duration::HOUR).unwrap();
    let read = store.app_stats_started_in(hour).await.unwrap();
    assert_eq!(read.len(), 167);
    assert!(
        read.iter()
            .all(|r| (hour.from..hour.to).contains(&r.session_started_at))
    );

    // What the index matches for that hour and for the next round's cut
    // (the oldest 4 hours held): the page ranges that hold such rows, and at
    // most the one range at the end that is not summarized yet. Sequential
    // scans are off so that the plan shows what the index matches, whatever
    // the planner would choose on a table this small.
    let next_cut = day(DAYS - 5) + Duration::hours(4);
    for (what, from, to) in [
        ("an hour", Some(hour.from), hour.to),
        ("the next cut", None, next_cut),
    ] {
        let ranges: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT (ctid::text::point)[0]::int8 / $3) FROM workspace_app_stats \
             WHERE session_started_at >= coalesce($1, '-infinity') AND session_started_at < $2",
        )
        .bind(from)
        .bind(to)
        .bind(PAGES_PER_RANGE)
        .fetch_one(pool)
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT count(requests) FROM workspace_app_stats \
             WHERE session_started_at >= coalesce($1, '-infinity') AND session_started_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let read = heap_blocks(&plan);
        assert!(
            read <= (ranges + 1) * PAGES_PER_RANGE,
            "{what}: the index matched {read} heap blocks for rows in {ranges} ranges of a {pages}-page heap:\n{}",
            plan.join("\n")
        );
    }
}

/// Heap blocks the plan's bitmap heap scans read (exact and lossy).
fn heap_blocks(plan: &[String]) -> i64 {
    let number = |line: &str, key: &str| -> i64 {
        line.split(key)
            .nth(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let lines: Vec<&String> = plan.iter().filter(|l| l.contains("Heap Blocks:")).collect();
    assert!(!lines.is_empty(), "no bitmap heap scan:\n{}", plan.join("\n"));
    lines
        .iter()
        .map(|l| number(l, "exact=") + number(l, "lossy="))
        .sum()
}
