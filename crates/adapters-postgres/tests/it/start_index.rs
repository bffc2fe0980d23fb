//! The index on the raw rows' session start under retention: purged rows'
//! pages are reused by new ones, and a read of one recent hour must still
//! touch only the pages that hold that hour's rows. (A BRIN's page-range
//! summary only widens, so once a range held both a purged row and a new
//! one it matched every hour in between: the tick's read of one hour came
//! to read most of the table.)

use tally_adapters_postgres::start_index_sql::STARTED_IN;
use tally_domain::ports::{InsightsStore as _, TimeRange, UsageStore as _};
use tally_domain::usage::RetentionPolicy;
use time::{Duration, OffsetDateTime};

use super::{T0, fixture};

const DAYS: i64 = 20;
const ROWS_PER_DAY: i64 = 2_000;

fn day(d: i64) -> OffsetDateTime {
    T0 + Duration::days(d)
}

#[tokio::test]
async fn an_hours_read_stays_narrow_after_purges_and_reuse() {
    let f = fixture().await;
    let pool = f.store.pool();
    let def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'workspace_app_stats' \
         AND indexname = 'workspace_app_stats_started_idx'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(def.ends_with("USING btree (session_started_at)"), "{def}");

    // A day's rows at a time, their starts spread over the day (every 43.2
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
                 'code-server', $1 + i * interval '43.2 s', $1 + i * interval '43.2 s' + interval '10 min', i \
             FROM generate_series(0, $2 - 1) i",
        )
        .bind(day(d))
        .bind(ROWS_PER_DAY)
        .execute(pool)
        .await
        .unwrap();
        loop {
            let round = f.store.purge_expired(day(d + 1), &policy).await.unwrap();
            if round.app_stats_rows == 0 {
                break;
            }
        }
        sqlx::query("VACUUM ANALYZE workspace_app_stats").execute(pool).await.unwrap();
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

    // One hour of the last day, as the export reads it (the tick's read has
    // the same bound): the rows, and the pages the plan touched.
    let from = day(DAYS - 1) + Duration::hours(9);
    let hour = TimeRange::new(from, from + Duration::HOUR).unwrap();
    let read = f.store.app_stats_started_in(hour).await.unwrap();
    assert_eq!(read.len(), 84);
    assert!(read.iter().all(|r| (hour.from..hour.to).contains(&r.session_started_at)));
    let hour_pages: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (ctid::text::point)[0]) FROM workspace_app_stats \
         WHERE session_started_at >= $1 AND session_started_at < $2",
    )
    .bind(hour.from)
    .bind(hour.to)
    .fetch_one(pool)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS) {STARTED_IN}"))
        .bind(hour.from)
        .bind(hour.to)
        .fetch_all(pool)
        .await
        .unwrap();
    let buffers = touched_buffers(&plan);
    // The hour's heap pages and a few index pages (root, leaves).
    assert!(
        buffers <= hour_pages + 4,
        "the hour's read touched {buffers} buffers for rows on {hour_pages} of {pages} pages:\n{}",
        plan.join("\n")
    );
}

/// Shared buffers (hit and read) of the plan's root node: the first
/// `Buffers:` line of `EXPLAIN (ANALYZE, BUFFERS)`, which counts its
/// children's.
fn touched_buffers(plan: &[String]) -> i64 {
    let line = plan
        .iter()
        .find(|l| l.contains("Buffers: shared"))
        .unwrap_or_else(|| panic!("no buffers in the plan:\n{}", plan.join("\n")));
    ["hit=", "read="]
        .iter()
        .filter_map(|key| line.split(key).nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<i64>()
                .unwrap()
        })
        .sum()
}
