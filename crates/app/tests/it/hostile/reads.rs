//! Bad parameters on the read endpoints.

use reqwest::{Method, StatusCode};
use time::{Duration, OffsetDateTime, Time};

use super::app_stats::POISON_WS;
use super::harness::Case;
use super::valid::url_time;
use crate::common::*;

const INSIGHTS: &str = "/api/v2/insights/apps";
const SNAPSHOTS: &str = "/api/v2/telemetry/snapshots";
const FROM: &str = "2026-11-25T10:00:00Z";
const TO: &str = "2026-11-25T11:00:00Z";
const RANGE_READS: [&str; 3] = [
    "/api/v2/insights/app-usage",
    "/api/v2/insights/active-users",
    "/api/v2/insights/user-activity",
];

fn get(name: &str, path: String, field: &str) -> Case {
    Case::get(name.to_owned(), &path, READER, field)
}

pub fn cases(now: OffsetDateTime) -> Vec<Case> {
    let mut cases = range_read_cases(now);

    // App insights: a range of two RFC 3339 times, from before to.
    for (query, field) in [
        (String::new(), "from"),
        (format!("to={TO}"), "from"),
        (format!("from={FROM}"), "to"),
        (format!("from=&to={TO}"), "from"),
        (format!("from=yesterday&to={TO}"), "from"),
        (format!("from=2026-11-25&to={TO}"), "from"),
        (format!("from=1764064800&to={TO}"), "from"),
        (format!("from={FROM}&to=2026-13-01T00:00:00Z"), "to"),
        (format!("from=%FF&to={TO}"), "from"),
        // An unescaped + of an offset arrives as a space.
        (format!("from=2026-11-25T10:00:00+01:00&to={TO}"), "from"),
        // Valid RFC 3339 but past year 9999 in UTC.
        (format!("from={FROM}&to=9999-12-31T23:59:59-23:59"), "to"),
        (format!("from=9999-12-31T23:59:59-23:59&to={TO}"), "from"),
        // A store rounds up to whole microseconds: this would pass year 9999.
        (format!("from={FROM}&to=9999-12-31T23:59:59.9999995Z"), "to"),
        // Inverted and empty ranges.
        (format!("from={TO}&to={FROM}"), "to"),
        (format!("from={FROM}&to={FROM}"), "to"),
        (format!("from={FROM}&to=2026-11-25T11:00:00%2B02:00"), "to"),
        // Repeated and unknown parameters.
        (format!("from={FROM}&from={FROM}&to={TO}"), "from"),
        (
            format!("from={FROM}&to={TO}&workspace_id={POISON_WS}"),
            "workspace_id",
        ),
        (format!("form={FROM}&to={TO}"), "form"),
    ] {
        cases.push(get(
            &format!("insights ?{query}"),
            format!("{INSIGHTS}?{query}"),
            field,
        ));
    }

    // Snapshots: an optional limit from 1 to 1000.
    for query in [
        "limit=0",
        "limit=-1",
        "limit=1001",
        "limit=18446744073709551616",
        "limit=1e3",
        "limit=5.5",
        "limit=",
        "limit=ten",
        "limit=%FF",
        "limit=5&limit=6",
    ] {
        let case = get(
            &format!("snapshots ?{query}"),
            format!("{SNAPSHOTS}?{query}"),
            "limit",
        );
        cases.push(case.mentions("limit"));
    }
    for (query, field) in [
        ("limt=5", "limt"),
        ("limit=5&since=2026-11-25T10:00:00Z", "since"),
    ] {
        cases.push(
            get(
                &format!("snapshots ?{query}"),
                format!("{SNAPSHOTS}?{query}"),
                field,
            )
            .mentions(field),
        );
    }

    // Last used: a workspace UUID in the path, no parameters.
    for id in [
        "not-a-uuid",
        "1234",
        "%FF",
        "4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7b8-0",
        "4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7bz",
        "%00",
    ] {
        let path = format!("/api/v2/workspaces/{id}/last-used");
        cases.push(get(&format!("last used {id}"), path, "workspace_id"));
    }
    let path = format!("/api/v2/workspaces/{POISON_WS}/last-used?at={FROM}");
    cases.push(get("last used ?at", path, "at").mentions("no query parameters"));

    let empty = "/api/v2/workspaces//last-used".to_owned();
    cases.push(get("last used with an empty id", empty, "workspace_id"));

    // A path that matches no route, and writes to read routes.
    let path = "/api/v2/workspaces/last-used".to_owned();
    cases.push(
        get("last used without id", path, "")
            .no_field()
            .status(StatusCode::NOT_FOUND),
    );
    for (method, path) in [(Method::POST, SNAPSHOTS), (Method::DELETE, INSIGHTS)] {
        let case = get(&format!("{method} {path}"), path.to_owned(), "")
            .method(method)
            .no_field();
        cases.push(case.status(StatusCode::METHOD_NOT_ALLOWED));
    }
    cases
}

/// The range reads over the rollup, at `now` (the server's clock): Coder's
/// range rules, and a range at most the usage retention (365 days here)
/// plus a day long.
fn range_read_cases(now: OffsetDateTime) -> Vec<Case> {
    let today = now.replace_time(Time::MIDNIGHT);
    let days = |n: i64| url_time(today - Duration::days(n));
    let week_ago = days(7);
    let end = url_time(today);
    let mut cases = Vec::new();
    for path in RANGE_READS {
        let mut table: Vec<(String, &str, &str)> = vec![
            // Longer than the retention plus a day.
            (
                format!("start_time={}&end_time={end}", days(367)),
                "start_time",
                "366 days",
            ),
            (
                format!("start_time={}&end_time={end}", days(3650)),
                "start_time",
                "retention",
            ),
            (
                format!("start_time=0001-01-02T00:00:00Z&end_time={end}"),
                "start_time",
                "366 days",
            ),
            (
                format!("start_time=0000-01-01T00:00:00Z&end_time={end}"),
                "start_time",
                "366 days",
            ),
            (
                format!("start_time=0001-01-01T00:00:00Z&end_time={end}"),
                "start_time",
                "zero",
            ),
            (
                format!("start_time={week_ago}&end_time=9999-12-31T00:00:00Z"),
                "end_time",
                "future",
            ),
            (
                "start_time=9999-12-30T00:00:00Z&end_time=9999-12-31T00:00:00Z".to_owned(),
                "start_time",
                "future",
            ),
            // Offsets at the ends of the range, and one of 45 minutes, off midnight.
            (
                format!("start_time=2026-11-02T01:00:00%2B14:00&end_time={end}"),
                "start_time",
                "00:00:00",
            ),
            (
                format!("start_time=2026-11-02T00:45:00%2B05:45&end_time={end}"),
                "start_time",
                "00:00:00",
            ),
            (
                "start_time=2026-11-02T00:00:00-12:00&end_time=2026-11-03T00:30:00-12:00".to_owned(),
                "end_time",
                ":00:00",
            ),
            // Malformed times.
            (
                format!("start_time=2026-11-02T00:00:00&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            // An unescaped + of an offset arrives as a space.
            (
                format!("start_time=2026-11-02T00:00:00+05:45&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            (
                format!("start_time=2026-11-02T24:00:00Z&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            (
                format!("start_time=2026-02-30T00:00:00Z&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            (
                format!("start_time=2026-11-02T00:00:00%2B24:00&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            (
                format!("start_time=2026-11-01T23:59:60Z&end_time={end}"),
                "start_time",
                "second",
            ),
            (format!("start_time=%FF&end_time={end}"), "start_time", "RFC 3339"),
            (
                format!("start_time=1764028800&end_time={end}"),
                "start_time",
                "RFC 3339",
            ),
            (format!("start_time={week_ago}&end_time="), "end_time", "RFC 3339"),
        ];
        if path.ends_with("user-activity") {
            for limit in [
                "0",
                "1001",
                "-1",
                "18446744073709551616",
                "99999999999999999999999",
                "1e3",
                "0x10",
                "5.0",
                "%FF",
            ] {
                table.push((
                    format!("start_time={week_ago}&end_time={end}&limit={limit}"),
                    "limit",
                    "1 to 1000",
                ));
            }
            table.push((
                format!("start_time={week_ago}&end_time={end}&interval=day"),
                "interval",
                "interval",
            ));
        } else {
            // Week intervals over ranges whose last week is short.
            for n in [1, 2, 5, 8, 12] {
                let start = days(n);
                table.push((
                    format!("start_time={start}&end_time={end}&interval=week"),
                    "interval",
                    "6 days",
                ));
            }
            table.push((
                format!("start_time={week_ago}&end_time={end}&interval=Day"),
                "interval",
                "day week",
            ));
            table.push((
                format!("start_time={week_ago}&end_time={end}&limit=5"),
                "limit",
                "limit",
            ));
        }
        for (query, field, words) in table {
            let case = get(&format!("{path} ?{query}"), format!("{path}?{query}"), field);
            cases.push(case.mentions(words));
        }
    }
    cases
}
