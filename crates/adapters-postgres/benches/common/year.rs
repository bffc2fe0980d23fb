//! A populated year for the widest range a read takes (366 days), made from
//! the insights bench's kept data set without loading a year: its rollup
//! day rows of its whole weeks (84 days of the 90-day set: whole weeks so
//! that weekdays stay weekdays) repeated back to back over the 364 days before the day
//! it is built, ending yesterday, so that `tally serve` (which checks a
//! range against the real clock) reads the same database. The packed day
//! rows hold no date, so a repeated day is that day's rows as the tick
//! built them. Hourly rows are kept only for the last 7 days: a read takes
//! hourly rows only for hours its bounds cut, at its ends (the start of a
//! 366-day range lies before the data). Raw rows are left out: no read
//! takes them, and a `tally serve` over them would purge them meanwhile.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::{IntervalKind, Intervals, interval};
use time::{OffsetDateTime, UtcOffset};

use super::fleet::DAY0;
use super::{mib, percentiles};

/// The widest range the reads accept at the default usage retention.
const WIDEST_DAYS: i64 = 366;

/// The name of the year database built on `today` (UTC midnight).
pub fn name(today: OffsetDateTime) -> String {
    let d = today.date();
    format!(
        "insights_year_{}{:02}{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// Turns the freshly copied data set of `days` days in `pool` into the year
/// ending on the day before `today`.
pub async fn build(pool: &PgPool, days: i64, today: OffsetDateTime) {
    let block_days = days / 7 * 7;
    assert!(block_days > 0, "a year is made of whole weeks of the data set");
    let first = today - time::Duration::days(364);
    // The first block starts on the weekday of DAY0, on or before `first`.
    let base = (first - DAY0).whole_days().div_euclid(7) * 7;
    let block_end = DAY0 + time::Duration::days(block_days);
    let tail = today - time::Duration::days(7);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMPORARY TABLE shifts ON COMMIT DROP AS \
         SELECT make_interval(days => ($1 + $2 * k)::int) AS s FROM generate_series(0, $3) k",
    )
    .bind(base)
    .bind(block_days)
    .bind(371 / block_days + 1)
    .execute(&mut *tx)
    .await
    .unwrap();
    // Shifted copies first (ON COMMIT DROP), then the tables refilled from them.
    let shifted = [
        (
            "app_usage_app_days",
            "SELECT d.day + s.s AS day, d.access_method, d.slug_or_port, d.figures, d.users \
             FROM app_usage_app_days d, shifts s \
             WHERE d.day < $1 AND d.day + s.s >= $2 AND d.day + s.s < $3",
        ),
        (
            "app_usage_fleet_days",
            "SELECT d.day + s.s AS day, d.users, d.totals, d.detail FROM app_usage_fleet_days d, shifts s \
             WHERE d.day < $1 AND d.day + s.s >= $2 AND d.day + s.s < $3",
        ),
        (
            "app_usage_hours",
            "SELECT h.hour + s.s AS hour, h.user_id, h.access_method, h.slug_or_port, h.minutes, \
             h.sessions, h.requests FROM app_usage_hours h, shifts s \
             WHERE h.hour < $1 AND h.hour + s.s >= $2 AND h.hour + s.s < $3",
        ),
    ];
    for (table, select) in shifted {
        let t = Instant::now();
        let from = if table == "app_usage_hours" { tail } else { first };
        // Storage as the table's: masks stay uncompressed, as the tick writes them.
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE year_{table} (LIKE {table} INCLUDING STORAGE) ON COMMIT DROP"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(&format!("INSERT INTO year_{table} {select}"))
            .bind(block_end)
            .bind(from)
            .bind(today)
            .execute(&mut *tx)
            .await
            .unwrap();
        eprintln!("year: {table} shifted in {:.1} s", t.elapsed().as_secs_f64());
    }
    sqlx::query(
        "TRUNCATE workspace_app_stats, app_usage_hours, app_usage_app_days, \
         app_usage_fleet_days, app_usage_dirty_hours, app_usage_packed_dirty",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    for (table, _) in shifted {
        sqlx::query(&format!("INSERT INTO {table} SELECT * FROM year_{table}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query("VACUUM ANALYZE").execute(pool).await.unwrap();
}

/// Times the widest reads over the year in `store` (UTC and +05:30), beside
/// plain fetches of the packed rows they cover, and prints them.
pub async fn widest_reads(store: &PgStore, runs: usize) {
    let (days, last): (i64, OffsetDateTime) =
        sqlx::query_as("SELECT count(*), max(day) FROM app_usage_fleet_days")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let end = last + time::Duration::DAY;
    println!(
        "\na year of the fleet: {days} days of day rows up to {}; reads over {WIDEST_DAYS} days, {runs} runs each",
        last.date()
    );
    for t in super::sizes(store.pool()).await {
        println!("- {}: {} rows, {:.1} MiB", t.name, t.live_rows, mib(t.total));
    }
    println!("\n| offset | read | p50 / p99 ms |");
    println!("|---|---|---:|");
    for offset in [UtcOffset::UTC, UtcOffset::from_hms(5, 30, 0).unwrap()] {
        let to = end.to_offset(offset).date().midnight().assume_offset(offset);
        let from = to - time::Duration::days(WIDEST_DAYS);
        let range = TimeRange::new(from, to).unwrap();
        let totals = Intervals::single(range).unwrap();
        let per_day = interval::intervals(range, IntervalKind::Day).unwrap();
        let mut t: [Vec<Duration>; 6] = Default::default();
        for _ in 0..runs {
            let s = Instant::now();
            let fetched: Vec<(Vec<u8>, Vec<u8>)> =
                sqlx::query_as("SELECT figures, users FROM app_usage_app_days WHERE day >= $1 AND day < $2")
                    .bind(from - time::Duration::DAY)
                    .bind(to + time::Duration::DAY)
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            t[0].push(s.elapsed());
            assert!(!fetched.is_empty());
            let s = Instant::now();
            let fetched: Vec<(Vec<u8>, Vec<u8>)> =
                sqlx::query_as("SELECT users, totals FROM app_usage_fleet_days WHERE day >= $1 AND day < $2")
                    .bind(from - time::Duration::DAY)
                    .bind(to + time::Duration::DAY)
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            t[1].push(s.elapsed());
            assert!(!fetched.is_empty());
            let s = Instant::now();
            assert!(!store.app_usage_by_interval(&totals).await.unwrap().is_empty());
            t[2].push(s.elapsed());
            let s = Instant::now();
            assert!(!store.app_usage_by_interval(&per_day).await.unwrap().is_empty());
            t[3].push(s.elapsed());
            let s = Instant::now();
            store.active_users(&per_day).await.unwrap();
            t[4].push(s.elapsed());
            let s = Instant::now();
            assert!(!store.user_activity(range, 100).await.unwrap().is_empty());
            t[5].push(s.elapsed());
        }
        let names = [
            "limit: fetch of the app-day rows",
            "limit: fetch of the fleet-day rows",
            "app usage, totals",
            "app usage, interval=day",
            "active users, interval=day",
            "top-100 user activity",
        ];
        for (name, times) in names.iter().zip(t) {
            let (p50, p99) = percentiles(times);
            println!("| {offset} | {name} | {p50:.1} / {p99:.1} |");
        }
    }
}
