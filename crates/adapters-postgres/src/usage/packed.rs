//! Packed day rows (`app_usage_app_days`, `app_usage_fleet_days`): the tick
//! rebuilds every UTC day any of whose hourly rows changed (the roll-up
//! marks it in `app_usage_packed_dirty`), from all of that day's hourly
//! rows, with `tally_domain::usage::packed` (the same code the reads combine
//! them with). A whole day is rebuilt, not patched: the additive figures
//! are sums over users, and a day is about as many hourly rows as one read
//! of them would scan.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Row as _};
use tally_domain::usage::HourUsage;
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::packed::{AppDay, AppKey, FleetDay};
use time::{Duration, OffsetDateTime};

/// Numbers the users of the day's hourly rows that have no ordinal yet,
/// densely after the highest one (the usage lock makes this the only writer).
const NUMBER_USERS: &str = "INSERT INTO app_usage_users (user_id, ordinal)
SELECT user_id, (SELECT coalesce(max(ordinal), -1) FROM app_usage_users) + row_number() OVER (ORDER BY user_id)
FROM (
    SELECT DISTINCT h.user_id FROM app_usage_hours h
    WHERE h.hour >= $1 AND h.hour < $2
      AND NOT EXISTS (SELECT 1 FROM app_usage_users u WHERE u.user_id = h.user_id)
) n";

const DAY_ROWS: &str = "SELECT u.ordinal, h.access_method, h.slug_or_port,
       extract(hour FROM h.hour AT TIME ZONE 'UTC')::int4 AS h, h.minutes, h.sessions, h.requests
FROM app_usage_hours h JOIN app_usage_users u USING (user_id)
WHERE h.hour >= $1 AND h.hour < $2";

/// Rebuilds every UTC day marked for it (by a tick's changed hourly rows,
/// a purge, a migration); the caller holds the usage lock.
pub(super) async fn rebuild_marked(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let days: Vec<OffsetDateTime> = sqlx::query_scalar(
        "WITH taken AS (DELETE FROM app_usage_packed_dirty RETURNING day) \
         SELECT DISTINCT day FROM taken ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    for day in days {
        rebuild_day(conn, day).await?;
    }
    Ok(())
}

/// After the hourly rows before `cut` were purged: packed rows of the days
/// wholly before it go, and those of the day `cut` falls in are rebuilt
/// from the hours left (with every other marked day).
pub(super) async fn purged_before(conn: &mut PgConnection, cut: OffsetDateTime) -> Result<(), sqlx::Error> {
    let day = hour_start(hour_of(cut).div_euclid(24) * 24);
    for table in ["app_usage_app_days", "app_usage_fleet_days"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE day < $1"))
            .bind(day)
            .execute(&mut *conn)
            .await?;
    }
    if day < cut {
        mark(conn, day).await?;
    }
    rebuild_marked(conn).await
}

/// Marks a UTC day for the next rebuild.
async fn mark(conn: &mut PgConnection, day: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO app_usage_packed_dirty (day) VALUES (date_trunc('day', $1::timestamptz, 'UTC'))")
        .bind(day)
        .execute(conn)
        .await
        .map(drop)
}

fn usage_of(row: &sqlx::postgres::PgRow) -> Result<(u32, AppKey, usize, HourUsage), sqlx::Error> {
    let ordinal: i32 = row.try_get(0)?;
    let method: &str = row.try_get(1)?;
    let method = method
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    let h: i32 = row.try_get(3)?;
    let count = |i: usize| -> Result<u64, sqlx::Error> {
        let v: i64 = row.try_get(i)?;
        u64::try_from(v).map_err(|e| sqlx::Error::Decode(e.into()))
    };
    Ok((
        u32::try_from(ordinal).map_err(|e| sqlx::Error::Decode(e.into()))?,
        (method, row.try_get(2)?),
        usize::try_from(h).map_err(|e| sqlx::Error::Decode(e.into()))?,
        HourUsage {
            minutes: count(4)?,
            sessions: count(5)?,
            requests: count(6)?,
        },
    ))
}

/// Rebuilds the packed rows of the UTC day starting at `day`.
async fn rebuild_day(conn: &mut PgConnection, day: OffsetDateTime) -> Result<(), sqlx::Error> {
    let end = day + Duration::DAY;
    sqlx::query(NUMBER_USERS)
        .bind(day)
        .bind(end)
        .execute(&mut *conn)
        .await?;
    let rows = sqlx::query(DAY_ROWS)
        .bind(day)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
    let mut by_app: BTreeMap<AppKey, Vec<(u32, usize, HourUsage)>> = BTreeMap::new();
    let mut all = Vec::with_capacity(rows.len());
    for row in &rows {
        let (ordinal, app, h, usage) = usage_of(row)?;
        by_app.entry(app).or_default().push((ordinal, h, usage));
        all.push((ordinal, h, usage));
    }
    let (mut methods, mut slugs, mut figures, mut users) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((method, slug), cells) in by_app {
        let packed = AppDay::build(cells);
        if packed.is_empty() {
            continue;
        }
        let (f, u) = packed.encode();
        methods.push(method.as_str());
        slugs.push(slug);
        figures.push(f);
        users.push(u);
    }
    for table in ["app_usage_app_days", "app_usage_fleet_days"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE day = $1"))
            .bind(day)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO app_usage_app_days (day, access_method, slug_or_port, figures, users) \
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[])",
    )
    .bind(day)
    .bind(&methods)
    .bind(&slugs)
    .bind(&figures)
    .bind(&users)
    .execute(&mut *conn)
    .await?;
    let fleet = FleetDay::build(all);
    if !fleet.users.is_empty() {
        let (users, totals, detail) = fleet.encode();
        sqlx::query("INSERT INTO app_usage_fleet_days (day, users, totals, detail) VALUES ($1, $2, $3, $4)")
            .bind(day)
            .bind(users)
            .bind(totals)
            .bind(detail)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
