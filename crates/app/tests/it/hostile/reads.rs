//! Bad parameters on the read endpoints.

use reqwest::{Method, StatusCode};

use super::app_stats::POISON_WS;
use super::harness::Case;
use crate::common::*;

const INSIGHTS: &str = "/api/v2/insights/apps";
const SNAPSHOTS: &str = "/api/v2/telemetry/snapshots";
const FROM: &str = "2026-11-25T10:00:00Z";
const TO: &str = "2026-11-25T11:00:00Z";

pub fn cases() -> Vec<Case> {
    let get = |name: &str, path: String, field: &str| Case::get(name.to_owned(), &path, READER, field);
    let mut cases = Vec::new();

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
