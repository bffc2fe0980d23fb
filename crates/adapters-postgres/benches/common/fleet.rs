//! The insights benchmarks' fleet: one user per workspace, in three regions
//! whose working day starts at 01:00, 08:00 and 14:00 UTC. On a weekday a
//! user works with probability 0.7, on a weekend day 0.08. A working day has
//! two code-server sessions (2.5 to 4 hours and 2 to 3.5 hours), four web
//! terminals (2 to 40 minutes), 25 rolled-up rows of 1 to 7 short sessions
//! to one port (each within one minute), and with probability 0.5 one
//! session of another app (10 to 90 minutes). And how a day of it is loaded.

use rand::Rng;
use rand::rngs::StdRng;
use tally_adapters_postgres::PgStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::usage::minutes::hour_start;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

/// The first day, a Monday.
pub const DAY0: OffsetDateTime = datetime!(2026-01-05 00:00 UTC);

pub fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// (user, workspace, agent) of each user.
pub struct Fleet {
    pub users: Vec<(Uuid, Uuid, Uuid)>,
}

impl Fleet {
    pub fn new(users: usize, rng: &mut StdRng) -> Self {
        Fleet {
            users: (0..users).map(|_| (uuid(rng), uuid(rng), uuid(rng))).collect(),
        }
    }
}

const OTHER_APPS: [&str; 4] = ["jupyter", "filebrowser", "grafana", "rstudio"];
const PORTS: [&str; 3] = ["8080", "3000", "5173"];

fn session(
    who: (Uuid, Uuid, Uuid),
    method: AccessMethod,
    slug: &str,
    start: OffsetDateTime,
    len: time::Duration,
    requests: u64,
    rng: &mut StdRng,
) -> StatsReport {
    StatsReport {
        user_id: who.0,
        workspace_id: who.1,
        agent_id: who.2,
        access_method: method,
        slug_or_port: slug.to_owned(),
        session_id: uuid(rng),
        session_started_at: start,
        session_ended_at: Some(start + len),
        requests,
        sessions: 1,
    }
}

/// Every row of day `d`, in start order (as they would arrive).
pub fn day_rows(fleet: &Fleet, d: i64, rng: &mut StdRng) -> Vec<StatsReport> {
    let day = DAY0 + time::Duration::days(d);
    let weekday = d % 7 < 5;
    let mins = |m: i64| time::Duration::minutes(m);
    let mut rows = Vec::new();
    for (u, &who) in fleet.users.iter().enumerate() {
        if !rng.random_bool(if weekday { 0.7 } else { 0.08 }) {
            continue;
        }
        let begin = day + time::Duration::hours([1, 8, 14][u % 3]);
        let morning = begin + mins(rng.random_range(0..60));
        rows.push(session(
            who,
            AccessMethod::Subdomain,
            "code-server",
            morning,
            mins(rng.random_range(150..240)),
            rng.random_range(100..5000),
            rng,
        ));
        let afternoon = begin + mins(270 + rng.random_range(0..30));
        rows.push(session(
            who,
            AccessMethod::Subdomain,
            "code-server",
            afternoon,
            mins(rng.random_range(120..210)),
            rng.random_range(100..5000),
            rng,
        ));
        for _ in 0..4 {
            let at = begin + mins(rng.random_range(0..540));
            rows.push(session(
                who,
                AccessMethod::Terminal,
                "",
                at,
                mins(rng.random_range(2..40)),
                rng.random_range(10..500),
                rng,
            ));
        }
        let port = PORTS[rng.random_range(0..PORTS.len())];
        for _ in 0..25 {
            let at = begin + mins(rng.random_range(0..540));
            let folded = rng.random_range(1..8);
            rows.push(session(
                who,
                AccessMethod::Subdomain,
                port,
                at,
                time::Duration::seconds(rng.random_range(1..59)),
                rng.random_range(1..50),
                rng,
            ));
            // A rolled-up record of short sessions.
            rows.last_mut().unwrap().sessions = folded;
        }
        if rng.random_bool(0.5) {
            let app = OTHER_APPS[rng.random_range(0..OTHER_APPS.len())];
            let at = begin + mins(rng.random_range(0..480));
            rows.push(session(
                who,
                AccessMethod::Path,
                app,
                at,
                mins(rng.random_range(10..90)),
                rng.random_range(50..2000),
                rng,
            ));
        }
    }
    rows.sort_by_key(|r| r.session_started_at);
    rows
}

/// The hourly rows of `rows` in COPY's text format.
fn hourly_copy(rows: &[StatsReport]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    for ((user, method, slug, hour), u) in tally_domain::usage::rollup::contributions(rows) {
        let at = hour_start(hour);
        writeln!(
            out,
            "{}\t{user}\t{}\t{slug}\t{}\t{}\t{}",
            at.format(&time::format_description::well_known::Rfc3339).unwrap(),
            method.as_str(),
            u.minutes,
            u.sessions,
            u.requests
        )
        .unwrap();
    }
    out
}

/// One day's raw rows by binary COPY and their hourly rows merged into
/// the rollup (minutes OR'ed, counts added: a start hour's counts come from
/// one day only), their days marked for the packed rows, in one transaction.
pub async fn copy_day(store: &PgStore, rows: &[StatsReport]) {
    let mut tx = store.pool().begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY workspace_app_stats {} FROM STDIN (FORMAT binary)",
            super::COPY_COLUMNS
        ))
        .await
        .unwrap();
    copy.send(super::binary_copy(rows)).await.unwrap();
    copy.finish().await.unwrap();
    sqlx::query("CREATE TEMPORARY TABLE stage (LIKE app_usage_hours) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut copy = tx
        .copy_in_raw(
            "COPY stage (hour, user_id, access_method, slug_or_port, minutes, sessions, requests) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(hourly_copy(rows)).await.unwrap();
    copy.finish().await.unwrap();
    for sql in [
        "INSERT INTO app_usage_hours AS u SELECT * FROM stage ON CONFLICT (hour, user_id, access_method, slug_or_port) \
         DO UPDATE SET minutes = u.minutes | excluded.minutes, sessions = u.sessions + excluded.sessions, \
         requests = u.requests + excluded.requests",
        "INSERT INTO app_usage_packed_dirty (day) SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM stage",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}
