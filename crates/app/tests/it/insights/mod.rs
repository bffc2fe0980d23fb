//! The insights read API of a real `tally serve`, on both stores: figures
//! against hand-computed expectations (distinct minutes, intervals at
//! midnight of the start time's offset, week intervals, the last interval
//! cut at `end_time`), every parameter error, the limit, the NDJSON export
//! and who may read.
//!
//! The fleet below lives in +02:00, starting at local midnight 14 days ago:
//!
//! | session | user | app | local time (day n = start + n days) | requests |
//! | --- | --- | --- | --- | --- |
//! | s1 | A | subdomain code-server | day 0 10:00 - 11:00 | 10 |
//! | s2 | A | subdomain code-server | day 0 10:30 - 11:30 (overlaps s1) | 5 |
//! | s6 | A | path jupyter | day 0 10:15 - 10:45 | 6 |
//! | s3 | B | subdomain code-server | day 0 23:50 - day 1 00:20 | 7 |
//! | s4 | A | terminal | day 1 09:00:30 - 09:05 | 3 |
//! | s5 | C | path jupyter | day 8 12:00 - 12:45 | 4 |

mod memory;
mod postgres;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::offset;
use time::{OffsetDateTime, Time, UtcOffset};
use uuid::Uuid;

use crate::common::*;

const APP_USAGE: &str = "/api/v2/insights/app-usage";
const ACTIVE_USERS: &str = "/api/v2/insights/active-users";
const USER_ACTIVITY: &str = "/api/v2/insights/user-activity";
const EXPORT: &str = "/api/v2/insights/app-stats/export";
const TZ: UtcOffset = offset!(+2);

struct Fleet {
    /// Local midnight (+02:00) 14 days before today's.
    day0: OffsetDateTime,
    today: OffsetDateTime,
    a: Uuid,
    b: Uuid,
    c: Uuid,
    /// The sessions in start order: (name, id, report).
    sessions: Vec<(&'static str, Uuid, Value)>,
}

fn enc(t: OffsetDateTime) -> String {
    url::form_urlencoded::byte_serialize(t.format(&Rfc3339).unwrap().as_bytes()).collect()
}

fn range_query(path: &str, from: OffsetDateTime, to: OffsetDateTime, extra: &str) -> String {
    format!("{path}?start_time={}&end_time={}{extra}", enc(from), enc(to))
}

impl Fleet {
    fn new() -> Self {
        let today = OffsetDateTime::now_utc()
            .to_offset(TZ)
            .replace_time(Time::MIDNIGHT);
        let day0 = today - time::Duration::days(14);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let ws = Uuid::new_v4();
        let at = |day: i64, h: u8, m: u8, s: u8| {
            day0 + time::Duration::days(day)
                + time::Duration::hours(h.into())
                + time::Duration::minutes(m.into())
                + time::Duration::seconds(s.into())
        };
        let mut sessions = Vec::new();
        let mut add = |name, user, method, slug, start, end, requests| {
            let id = Uuid::new_v4();
            sessions.push((
                name,
                id,
                go_report(user, ws, method, slug, id, start, Some(end), requests),
            ));
        };
        add(
            "s1",
            a,
            "subdomain",
            "code-server",
            at(0, 10, 0, 0),
            at(0, 11, 0, 0),
            10,
        );
        add("s6", a, "path", "jupyter", at(0, 10, 15, 0), at(0, 10, 45, 0), 6);
        add(
            "s2",
            a,
            "subdomain",
            "code-server",
            at(0, 10, 30, 0),
            at(0, 11, 30, 0),
            5,
        );
        add(
            "s3",
            b,
            "subdomain",
            "code-server",
            at(0, 23, 50, 0),
            at(1, 0, 20, 0),
            7,
        );
        add("s4", a, "terminal", "", at(1, 9, 0, 30), at(1, 9, 5, 0), 3);
        add("s5", c, "path", "jupyter", at(8, 12, 0, 0), at(8, 12, 45, 0), 4);
        Self {
            day0,
            today,
            a,
            b,
            c,
            sessions,
        }
    }

    fn day(&self, n: i64) -> OffsetDateTime {
        self.day0 + time::Duration::days(n)
    }
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

async fn ok(server: &Server, path: &str) -> Value {
    let (status, _, body) = get(server, path, Some(READER)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

fn entry(method: &str, slug: &str, usage_seconds: u64, sessions: u64, requests: u64, users: u64) -> Value {
    json!({"access_method": method, "slug_or_port": slug, "usage_seconds": usage_seconds,
           "sessions": sessions, "requests": requests, "unique_users": users})
}

fn same_instant(value: &Value, want: OffsetDateTime) {
    let got = OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(got, want, "{value}");
    assert_eq!(got.offset(), want.offset(), "{value} keeps the offset of {want}");
}

/// Posts the fleet's sessions and waits until a rollup tick has taken them in.
async fn load(server: &Server, fleet: &Fleet) {
    let stats: Vec<Value> = fleet.sessions.iter().map(|(_, _, r)| r.clone()).collect();
    let (status, body) = post_json(&client(), server, APP_STATS, PROXY, &json!({ "stats": stats })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let path = range_query(APP_USAGE, fleet.day0, fleet.today, "");
    eventually(Duration::from_secs(30), "every session in the rollup", || async {
        let body = ok(server, &path).await;
        let sessions: u64 = body["apps"]
            .as_array()?
            .iter()
            .map(|a| a["sessions"].as_u64().unwrap())
            .sum();
        (sessions == 6).then_some(())
    })
    .await;
}

/// Everything, against one server over a fresh store.
pub async fn check_all(extra: &[&str]) {
    let args: Vec<&str> = ROLLUP_TICK.iter().copied().chain(extra.iter().copied()).collect();
    let server = Server::start(&args);
    let fleet = Fleet::new();
    load(&server, &fleet).await;
    app_usage_totals_and_days(&server, &fleet).await;
    weeks_and_a_cut_last_week(&server, &fleet).await;
    a_cut_last_day(&server, &fleet).await;
    active_users_list_every_interval(&server, &fleet).await;
    user_activity_merges_apps_and_keeps_the_limit(&server, &fleet).await;
    the_old_route_counts_overlapping_minutes_once(&server, &fleet).await;
    export_streams_the_rows_as_ndjson(&server, &fleet).await;
    parameter_errors_name_the_parameter(&server, &fleet).await;
    only_readers_and_admins_may_read(&server, &fleet).await;
}

async fn app_usage_totals_and_days(server: &Server, f: &Fleet) {
    let code = |u, s, r, n| entry("subdomain", "code-server", u, s, r, n);
    let jupyter = |u, s, r, n| entry("path", "jupyter", u, s, r, n);
    let terminal = |u, s, r, n| entry("terminal", "", u, s, r, n);

    // Totals: A's two code-server sessions overlap for 30 minutes, counted
    // once (90 minutes, not 120); s4 starts at 09:00:30 and covers 09:00 to
    // 09:04. Most unique users first, then most usage.
    let body = ok(server, &range_query(APP_USAGE, f.day0, f.today, "")).await;
    assert_eq!(
        body["apps"],
        json!([
            code(5400 + 1800, 3, 22, 2),
            jupyter(1800 + 2700, 2, 10, 2),
            terminal(300, 1, 3, 1)
        ]),
        "{body}"
    );
    assert_eq!(body["intervals"], json!([]));
    assert_eq!(body["interval"], Value::Null);
    same_instant(&body["start_time"], f.day0);
    same_instant(&body["end_time"], f.today);

    // Days begin at midnight +02:00: s3 (23:50 to 00:20 local) gives 10
    // minutes to day 0 and 20 to day 1; its session and requests count on
    // day 0, where its UTC hour starts.
    let body = ok(server, &range_query(APP_USAGE, f.day0, f.today, "&interval=day")).await;
    assert_eq!(body["interval"], "day");
    let days = body["intervals"].as_array().unwrap();
    assert_eq!(days.len(), 14, "{body}");
    for (i, day) in days.iter().enumerate() {
        same_instant(&day["start_time"], f.day(i as i64));
        same_instant(&day["end_time"], f.day(i as i64 + 1));
        let want = match i {
            0 => json!([code(5400 + 600, 3, 22, 2), jupyter(1800, 1, 6, 1)]),
            1 => json!([code(1200, 0, 0, 1), terminal(300, 1, 3, 1)]),
            8 => json!([jupyter(2700, 1, 4, 1)]),
            _ => json!([]),
        };
        assert_eq!(day["apps"], want, "day {i}: {day}");
    }
}

async fn weeks_and_a_cut_last_week(server: &Server, f: &Fleet) {
    let body = ok(server, &range_query(APP_USAGE, f.day0, f.today, "&interval=week")).await;
    let weeks = body["intervals"].as_array().unwrap();
    assert_eq!(weeks.len(), 2, "{body}");
    same_instant(&weeks[0]["start_time"], f.day0);
    same_instant(&weeks[0]["end_time"], f.day(7));
    same_instant(&weeks[1]["end_time"], f.day(14));
    assert_eq!(
        weeks[0]["apps"],
        json!([
            entry("subdomain", "code-server", 7200, 3, 22, 2),
            entry("path", "jupyter", 1800, 1, 6, 1),
            entry("terminal", "", 300, 1, 3, 1)
        ])
    );
    assert_eq!(weeks[1]["apps"], json!([entry("path", "jupyter", 2700, 1, 4, 1)]));

    // 13 days: the second week has 6 days and ends at end_time.
    let body = ok(
        server,
        &range_query(ACTIVE_USERS, f.day0, f.day(13), "&interval=week"),
    )
    .await;
    let weeks = body["intervals"].as_array().unwrap();
    assert_eq!(weeks.len(), 2, "{body}");
    same_instant(&weeks[1]["start_time"], f.day(7));
    same_instant(&weeks[1]["end_time"], f.day(13));
    assert_eq!(weeks[0]["active_users"], 2);
    assert_eq!(weeks[1]["active_users"], 1);
}

/// An end time of today may be a whole hour: the last day ends there. The
/// offset is chosen so that its current hour is past midnight.
async fn a_cut_last_day(server: &Server, f: &Fleet) {
    let now = OffsetDateTime::now_utc();
    let tz = [offset!(+2), offset!(+5)]
        .into_iter()
        .find(|tz| now.to_offset(*tz).hour() >= 1)
        .unwrap();
    let local = now.to_offset(tz);
    let end = local.replace_time(Time::from_hms(local.hour(), 0, 0).unwrap());
    let midnight = local.replace_time(Time::MIDNIGHT);
    let start = midnight - time::Duration::days(2);
    let body = ok(server, &range_query(APP_USAGE, start, end, "&interval=day")).await;
    let days = body["intervals"].as_array().unwrap();
    assert_eq!(days.len(), 3, "{body}");
    same_instant(&days[2]["start_time"], midnight);
    same_instant(&days[2]["end_time"], end);
    // Nothing of the fleet is this recent.
    assert_eq!(body["apps"], json!([]), "{body}");
    let _ = f;
}

async fn active_users_list_every_interval(server: &Server, f: &Fleet) {
    let body = ok(
        server,
        &range_query(ACTIVE_USERS, f.day0, f.today, "&interval=day"),
    )
    .await;
    assert_eq!(body["active_users"], 3, "{body}");
    let per_day: Vec<u64> = body["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["active_users"].as_u64().unwrap())
        .collect();
    assert_eq!(per_day, [2, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    same_instant(&body["intervals"][13]["end_time"], f.today);

    let body = ok(server, &range_query(ACTIVE_USERS, f.day0, f.today, "")).await;
    assert_eq!(body["active_users"], 3);
    assert_eq!(body["intervals"], json!([]));

    // Day 1 alone: B (s3's last 20 minutes) and A (terminal).
    let body = ok(server, &range_query(ACTIVE_USERS, f.day(1), f.day(2), "")).await;
    assert_eq!(body["active_users"], 2, "{body}");

    // The longest range the usage retention (365 days) allows, a day
    // more: every interval listed, the fleet in its last days.
    let year = f.today - time::Duration::days(366);
    let body = ok(server, &range_query(ACTIVE_USERS, year, f.today, "&interval=day")).await;
    assert_eq!(body["active_users"], 3, "{body}");
    let per_day = body["intervals"].as_array().unwrap();
    assert_eq!(per_day.len(), 366);
    assert_eq!(
        per_day[366 - 14]["active_users"],
        2,
        "day 0: {}",
        per_day[366 - 14]
    );
    let body = ok(server, &range_query(USER_ACTIVITY, year, f.today, "")).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 3, "{body}");
}

async fn user_activity_merges_apps_and_keeps_the_limit(server: &Server, f: &Fleet) {
    let user = |id: Uuid, usage: u64, sessions: u64, requests: u64| json!({"user_id": id, "usage_seconds": usage, "sessions": sessions, "requests": requests});
    // A: code-server 10:00-11:30 with jupyter inside it (90 minutes once)
    // plus 5 terminal minutes.
    let all = json!([
        user(f.a, 5700, 4, 24),
        user(f.c, 2700, 1, 4),
        user(f.b, 1800, 1, 7)
    ]);
    let body = ok(server, &range_query(USER_ACTIVITY, f.day0, f.today, "")).await;
    assert_eq!(body["users"], all, "{body}");
    same_instant(&body["start_time"], f.day0);
    let body = ok(server, &range_query(USER_ACTIVITY, f.day0, f.today, "&limit=2")).await;
    assert_eq!(body["users"], json!([all[0], all[1]]));
    let body = ok(
        server,
        &range_query(USER_ACTIVITY, f.day0, f.today, "&limit=1000"),
    )
    .await;
    assert_eq!(body["users"], all);
    // Day 1: B's 20 minutes after midnight, A's terminal.
    let body = ok(server, &range_query(USER_ACTIVITY, f.day(1), f.day(2), "")).await;
    assert_eq!(
        body["users"],
        json!([user(f.b, 1200, 0, 0), user(f.a, 300, 1, 3)]),
        "{body}"
    );
}

async fn the_old_route_counts_overlapping_minutes_once(server: &Server, f: &Fleet) {
    // Day 0, 10:00 to 12:00 local: s1 and s2 of A overlap; 90 minutes.
    let from = f.day0 + time::Duration::hours(10);
    let path = format!(
        "/api/v2/insights/apps?from={}&to={}",
        enc(from),
        enc(from + time::Duration::hours(2))
    );
    let (status, body) = get_json(&client(), server, &path, READER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = app(&body, "subdomain", "code-server").unwrap();
    assert_eq!(code["session_seconds"], 5400.0, "{body}");
    assert_eq!(code["session_micros"], 5_400_000_000u64);
    assert_eq!(code["sessions"], 2);
    assert_eq!(code["requests"], 15);
    assert_eq!(code["unique_users"], 1);
    let jupyter = app(&body, "path", "jupyter").unwrap();
    assert_eq!(jupyter["session_seconds"], 1800.0, "{body}");

    // Its widest range reads the part the rollup keeps (the last 365 days
    // to the current hour's end): the whole fleet.
    let widest = "/api/v2/insights/apps?from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z";
    let (status, body) = get_json(&client(), server, widest, READER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = |method, slug| app(&body, method, slug).unwrap()["sessions"].clone();
    assert_eq!(sessions("subdomain", "code-server"), 3, "{body}");
    assert_eq!(sessions("path", "jupyter"), 2, "{body}");
    assert_eq!(sessions("terminal", ""), 1, "{body}");
    // Wholly before what the rollup keeps: nothing, whatever is stored.
    let (status, body) = get_json(
        &client(),
        server,
        "/api/v2/insights/apps?from=0001-01-01T00:00:00Z&to=2001-01-01T00:00:00Z",
        READER,
    )
    .await;
    assert_eq!((status, &body["apps"]), (StatusCode::OK, &json!([])), "{body}");
}

async fn export_streams_the_rows_as_ndjson(server: &Server, f: &Fleet) {
    // Day 0 holds s1, s6, s2 and s3 (by start); s4 starts on day 1.
    let (status, content_type, body) =
        get(server, &range_query(EXPORT, f.day0, f.day(1), ""), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    let text = match body {
        Value::String(text) => text,
        // A single line is a JSON document too.
        other => format!("{other}\n"),
    };
    assert!(text.ends_with('\n'), "{text:?}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let want: Vec<&(&str, Uuid, Value)> = f.sessions.iter().take(4).collect();
    assert_eq!(lines.len(), want.len(), "{text}");
    for (line, (name, id, report)) in lines.iter().zip(want) {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "access_method",
                "agent_id",
                "requests",
                "session_ended_at",
                "session_id",
                "session_started_at",
                "sessions",
                "slug_or_port",
                "user_id",
                "workspace_id"
            ],
            "{name}: {line}"
        );
        assert_eq!(line["session_id"], json!(id), "{name}");
        for field in [
            "user_id",
            "workspace_id",
            "agent_id",
            "access_method",
            "slug_or_port",
            "requests",
        ] {
            assert_eq!(line[field], report[field], "{name}: {field}");
        }
        for field in ["session_started_at", "session_ended_at"] {
            let parse = |v: &Value| OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap();
            assert_eq!(parse(&line[field]), parse(&report[field]), "{name}: {field}");
        }
        assert_eq!(line["sessions"], 1, "{name}");
    }

    // Any range, not only whole hours: from s6's start to just after s2's.
    let from = f.day0 + time::Duration::minutes(10 * 60 + 15);
    let (_, _, body) = get(
        server,
        &range_query(EXPORT, from, from + time::Duration::minutes(16), ""),
        Some(READER),
    )
    .await;
    let text = match body {
        Value::String(text) => text,
        other => format!("{other}\n"),
    };
    let ids: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["session_id"].clone())
        .collect();
    assert_eq!(ids, [json!(f.sessions[1].1), json!(f.sessions[2].1)], "{text}");

    // An empty stretch is an empty body.
    let (status, _, body) = get(server, &range_query(EXPORT, f.day(3), f.day(4), ""), Some(READER)).await;
    assert_eq!((status, body), (StatusCode::OK, Value::String(String::new())));
}

async fn refused(server: &Server, path: &str, field: &str) {
    let (status, _, body) = get(server, path, Some(READER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    assert_eq!(body["message"], "Invalid request parameters.", "{path}: {body}");
    assert_eq!(body["validations"][0]["field"], field, "{path}: {body}");
    assert!(
        body["validations"][0]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{path}: {body}"
    );
}

async fn parameter_errors_name_the_parameter(server: &Server, f: &Fleet) {
    let (start, end) = (f.day0, f.today);
    // Past the current hour's end whatever the hour (Coder's "future").
    let future = f.today + time::Duration::days(2);
    let ok_start = format!("start_time={}", enc(start));
    let ok_end = format!("end_time={}", enc(end));
    for path in [APP_USAGE, ACTIVE_USERS, USER_ACTIVITY] {
        let cases: Vec<(String, &str)> = vec![
            (ok_end.clone(), "start_time"),
            (ok_start.clone(), "end_time"),
            (format!("start_time=yesterday&{ok_end}"), "start_time"),
            // An unescaped + arrives as a space.
            (
                format!("start_time=2026-11-02T00:00:00+02:00&{ok_end}"),
                "start_time",
            ),
            (format!("start_time=0001-01-01T00:00:00Z&{ok_end}"), "start_time"),
            // Longer than the usage retention (365 days) plus a day.
            (
                format!("start_time={}&{ok_end}", enc(start - time::Duration::days(360))),
                "start_time",
            ),
            (format!("start_time=0001-01-02T00:00:00Z&{ok_end}"), "start_time"),
            (
                format!("start_time={}&{ok_end}", enc(start + time::Duration::hours(1))),
                "start_time",
            ),
            (
                format!(
                    "start_time={}&{ok_end}",
                    enc(start + time::Duration::seconds(1) / 2)
                ),
                "start_time",
            ),
            (format!("{ok_start}&end_time={}", enc(future)), "end_time"),
            (
                format!("start_time={}&end_time={}", enc(future), enc(future)),
                "start_time",
            ),
            (
                format!("{ok_start}&end_time={}", enc(f.day(3) + time::Duration::hours(5))),
                "end_time",
            ),
            (format!("{ok_start}&end_time={}", enc(start)), "end_time"),
            (
                format!("start_time={}&end_time={}", enc(f.day(3)), enc(f.day(2))),
                "end_time",
            ),
            (format!("{ok_start}&{ok_end}&colour=red"), "colour"),
            (
                format!("{ok_start}&{ok_end}&start_time={}", enc(start)),
                "start_time",
            ),
        ];
        for (query, field) in cases {
            refused(server, &format!("{path}?{query}"), field).await;
        }
    }
    // Today's end may be a whole hour, never a part of one.
    let local_now = OffsetDateTime::now_utc().to_offset(TZ);
    let part = local_now.replace_time(Time::from_hms(local_now.hour(), 30, 0).unwrap());
    refused(server, &range_query(APP_USAGE, start, part, ""), "end_time").await;
    for path in [APP_USAGE, ACTIVE_USERS] {
        refused(
            server,
            &range_query(path, start, end, "&interval=month"),
            "interval",
        )
        .await;
        // 10 days: the last week would have 3.
        refused(
            server,
            &range_query(path, start, f.day(10), "&interval=week"),
            "interval",
        )
        .await;
    }
    refused(
        server,
        &range_query(USER_ACTIVITY, start, end, "&interval=day"),
        "interval",
    )
    .await;
    for limit in ["0", "1001", "-1", "ten", ""] {
        refused(
            server,
            &range_query(USER_ACTIVITY, start, end, &format!("&limit={limit}")),
            "limit",
        )
        .await;
    }
    refused(server, &format!("{EXPORT}?{ok_end}"), "start_time").await;
    refused(server, &format!("{EXPORT}?{ok_start}"), "end_time").await;
    refused(server, &format!("{EXPORT}?start_time=now&{ok_end}"), "start_time").await;
    refused(server, &range_query(EXPORT, end, start, ""), "end_time").await;
    refused(server, &range_query(EXPORT, start, start, ""), "end_time").await;
    refused(
        server,
        &range_query(EXPORT, start, end, "&interval=day"),
        "interval",
    )
    .await;
}

async fn only_readers_and_admins_may_read(server: &Server, f: &Fleet) {
    for path in [APP_USAGE, ACTIVE_USERS, USER_ACTIVITY, EXPORT] {
        let path = range_query(path, f.day0, f.today, "");
        let (status, _, body) = get(server, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, _, body) = get(server, &path, Some("not-a-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        for token in [PROXY, AGENT, MEMBER] {
            let (status, _, body) = get(server, &path, Some(token)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} as {token}: {body}");
            assert_eq!(body["message"], "Forbidden.");
        }
        for token in [READER, ADMIN] {
            let (status, _, body) = get(server, &path, Some(token)).await;
            assert_eq!(status, StatusCode::OK, "{path} as {token}: {body}");
        }
    }
    let _ = (f.a, f.b, f.c);
}
