//! Malformed app stats: every request mixes a valid report (`stats[0]`) with
//! the offending one (`stats[1]`), so a half-applied request would show.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::harness::{Case, NOT_COUNTS, PAST_A_REPORTS_COUNT, RAW, splice};
use crate::common::*;

/// The workspace of every report sent in a refused request.
pub const POISON_WS: uuid::Uuid = uuid::Uuid::from_u128(0x0bad_0bad_0bad_4bad_8bad_0bad_0bad_0bad);

pub struct Reports {
    start: OffsetDateTime,
    end: OffsetDateTime,
    user: uuid::Uuid,
}

impl Reports {
    pub fn new(now: OffsetDateTime) -> Self {
        Self {
            start: now - time::Duration::minutes(30),
            end: now - time::Duration::minutes(20),
            user: uuid::Uuid::new_v4(),
        }
    }

    /// A valid report of the poison workspace.
    pub fn report(&self, slug: &str) -> Value {
        let session = uuid::Uuid::new_v4();
        go_report(
            self.user,
            POISON_WS,
            "path",
            slug,
            session,
            self.start,
            Some(self.end),
            1,
        )
    }

    fn body(&self, bad: Value, raw: &[u8]) -> Vec<u8> {
        splice(&json!({"stats": [self.report("must-not-appear"), bad]}), raw)
    }

    /// A valid report, then `bad`.
    pub fn body_of(&self, bad: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"stats": [self.report("must-not-appear"), bad]})).unwrap()
    }

    /// `stats[1].key` set to the raw JSON text `raw`.
    pub fn with(&self, key: &str, raw: impl AsRef<[u8]>) -> Vec<u8> {
        let mut bad = self.report("bad");
        bad[key] = json!(RAW);
        self.body(bad, raw.as_ref())
    }

    /// `stats[1]` without `key`.
    pub fn without(&self, key: &str) -> Vec<u8> {
        let mut bad = self.report("bad");
        bad.as_object_mut().unwrap().remove(key);
        self.body_of(bad)
    }

    /// `stats[1]` replaced by the raw JSON text `raw`.
    pub fn item(&self, raw: &str) -> Vec<u8> {
        self.body(json!(RAW), raw.as_bytes())
    }

    pub fn many(&self, n: usize) -> Vec<u8> {
        let stats: Vec<_> = (0..n).map(|_| self.report("must-not-appear")).collect();
        serde_json::to_vec(&json!({ "stats": stats })).unwrap()
    }
}

/// A report's fields in declaration order.
const FIELDS: [&str; 9] = [
    "user_id",
    "workspace_id",
    "agent_id",
    "access_method",
    "slug_or_port",
    "session_id",
    "session_started_at",
    "session_ended_at",
    "requests",
];

pub fn cases(now: OffsetDateTime) -> Vec<Case> {
    let r = Reports::new(now);
    let post = |name: &str, body: Vec<u8>, field: &str| {
        Case::post(format!("app stats: {name}"), APP_STATS, PROXY, body, field)
    };
    let at = |field: &str| format!("stats[1].{field}");
    let mut cases = Vec::new();

    // Wrong types, field by field.
    for (key, raw) in [
        ("requests", r#""many""#),
        ("requests", "true"),
        ("requests", "[1]"),
        ("requests", r#"{"n": 1}"#),
        ("user_id", "42"),
        ("workspace_id", "true"),
        ("agent_id", "[]"),
        ("access_method", "1"),
        ("slug_or_port", "5"),
        ("slug_or_port", r#"["code-server"]"#),
        ("session_id", "{}"),
        ("session_started_at", "1764000000"),
        ("session_ended_at", "false"),
    ] {
        cases.push(post(&format!("{key} as {raw}"), r.with(key, raw), &at(key)));
    }
    for raw in [r#"{}"#, r#""all""#, "1", "true"] {
        let body = format!(r#"{{"stats": {raw}}}"#).into_bytes();
        cases.push(post(&format!("stats as {raw}"), body, "stats"));
    }
    // Items that are not objects (serde would take a struct from an array).
    let bad = r.report("bad");
    let in_order: Vec<_> = FIELDS.iter().map(|k| &bad[*k]).collect();
    let fields_in_order = serde_json::to_string(&in_order).unwrap();
    for raw in [r#""report""#, "42", "null", "[]", fields_in_order.as_str()] {
        cases.push(post(&format!("item as {raw}"), r.item(raw), "stats[1]"));
    }

    // Missing fields, and nulls where a value is required (a missing or
    // null end time is an open session: see valid.rs).
    for key in FIELDS.into_iter().filter(|k| *k != "session_ended_at") {
        cases.push(post(&format!("missing {key}"), r.without(key), &at(key)));
        cases.push(post(&format!("{key} null"), r.with(key, "null"), &at(key)));
    }
    cases.push(post("missing stats", b"{}".to_vec(), "stats"));
    cases.push(post("stats misspelt", br#"{"stat": []}"#.to_vec(), "stats"));

    // Invalid UUIDs.
    for (key, raw) in [
        ("user_id", r#""1234""#),
        ("workspace_id", r#""""#),
        ("agent_id", r#""zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz""#),
        ("session_id", r#""4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7b8-0""#),
        ("session_id", r#""00000000-0000-0000-0000-000000000000""#),
    ] {
        cases.push(post(&format!("{key} {raw}"), r.with(key, raw), &at(key)));
    }

    // Invalid or unstorable timestamps.
    for (key, raw) in [
        ("session_started_at", r#""2026-13-45T99:00:00Z""#),
        ("session_started_at", r#""yesterday""#),
        ("session_started_at", r#""""#),
        ("session_started_at", r#""2026-11-25""#),
        ("session_started_at", r#""2026-11-25T10:00:00""#),
        ("session_started_at", r#""0001-01-01T00:00:00Z""#),
        ("session_started_at", r#""1969-12-31T23:59:59Z""#),
        ("session_started_at", r#""2300-01-01T00:00:00Z""#),
        ("session_ended_at", r#""nope""#),
        ("session_ended_at", r#""2300-01-01T00:00:00Z""#),
        ("session_ended_at", r#""9999-12-31T23:59:59-23:59""#),
    ] {
        cases.push(post(&format!("{key} {raw}"), r.with(key, raw), &at(key)));
    }
    let before_start = format!("\"{}\"", rfc3339(now - time::Duration::hours(2)));
    cases.push(post(
        "end before start",
        r.with("session_ended_at", before_start),
        &at("session_ended_at"),
    ));
    // Times the server's clock rules out: the server takes nothing more
    // than `--clock-skew` (10 minutes here, an hour by default) ahead of
    // it, and no start older than `--retention-usage` (365 days). The
    // exact edges are the domain's and the route's unit tests.
    for (name, start, end, field) in [
        (
            "start past the clock skew",
            now + time::Duration::minutes(20),
            None,
            "session_started_at",
        ),
        (
            "end past the clock skew",
            now - time::Duration::minutes(5),
            Some(now + time::Duration::minutes(20)),
            "session_ended_at",
        ),
        (
            "start older than the retention",
            now - time::Duration::days(366),
            Some(now - time::Duration::days(366) + time::Duration::minutes(5)),
            "session_started_at",
        ),
        (
            "a session from 1970 to 2262",
            datetime!(1970-01-01 00:00 UTC),
            Some(datetime!(2262-04-11 23:47:16 UTC)),
            "session_started_at",
        ),
    ] {
        let mut bad = r.report("bad");
        bad["session_started_at"] = rfc3339(start).into();
        bad["session_ended_at"] = end
            .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339)
            .into();
        let mentions = if field == "session_ended_at" || start > now {
            "10m"
        } else {
            "365d"
        };
        cases.push(post(name, r.body_of(bad), &at(field)).mentions(mentions));
    }

    // Negative and overflowing counts; 2^32 is past what one report may
    // carry so that rolled-up sums fit the store's signed 64-bit columns. A
    // whole number in another notation (`1e3`, `12.0`) is a count, as JSON
    // Schema's integer has it; 2^32 written so is still too large.
    for raw in NOT_COUNTS.into_iter().chain(["4.294967296e9"]) {
        cases.push(post(
            &format!("requests {raw}"),
            r.with("requests", raw),
            &at("requests"),
        ));
    }
    for raw in PAST_A_REPORTS_COUNT {
        cases.push(
            post(
                &format!("requests {raw}"),
                r.with("requests", raw),
                &at("requests"),
            )
            .mentions("4294967295"),
        );
    }

    // Access methods and slugs.
    for raw in [r#""carrier-pigeon""#, r#""PATH""#, r#""""#] {
        cases.push(post(
            &format!("access_method {raw}"),
            r.with("access_method", raw),
            &at("access_method"),
        ));
    }
    let long = format!("\"{}\"", "x".repeat(1025));
    cases.push(
        post(
            "slug of 1025 bytes",
            r.with("slug_or_port", long),
            &at("slug_or_port"),
        )
        .mentions("1024"),
    );
    cases.push(post(
        "slug with NUL",
        r.with("slug_or_port", r#""code\u0000server""#),
        &at("slug_or_port"),
    ));

    // Invalid UTF-8: in a string, as an escape, between tokens, in a key.
    cases.push(post(
        "invalid UTF-8 in a string",
        r.with("slug_or_port", b"\"code\xff\xfe\""),
        &at("slug_or_port"),
    ));
    cases.push(post(
        "lone surrogate escape",
        r.with("slug_or_port", r#""\ud800""#),
        &at("slug_or_port"),
    ));
    cases.push(post(
        "invalid UTF-8 between tokens",
        r.with("requests", b"1 \xff"),
        "stats[1]",
    ));
    cases.push(post(
        "invalid UTF-8 in a key",
        b"{\"stats\": [], \"\xff\": 1}".to_vec(),
        "body",
    ));
    // In an unknown field serde skips: found by the fuzzer.
    cases.push(post(
        "invalid UTF-8 in an ignored field",
        [b"{\"x\": \"\xff\", ".as_slice(), &r.many(1)[1..]].concat(),
        "body",
    ));
    cases.push(post(
        "lone surrogate in an ignored field",
        [br#"{"x": "\ud800", "#.as_slice(), &r.many(1)[1..]].concat(),
        "body",
    ));
    cases.push(post(
        "a byte order mark",
        [b"\xef\xbb\xbf".as_slice(), &r.many(1)].concat(),
        "body",
    ));

    // Not JSON, not an object, truncated, trailing data, repeated keys.
    for raw in [
        "",
        "  \n",
        "[]",
        r#"[{"stats": []}]"#,
        r#""stats""#,
        "42",
        "null",
        "true",
        "stats=[]",
    ] {
        cases.push(post(&format!("body {raw:?}"), raw.as_bytes().to_vec(), "body"));
    }
    let whole = r.with("requests", "7");
    let cut = whole.windows(11).rposition(|w| w == b"\"requests\":").unwrap() + 11;
    cases.push(post("truncated at a value", whole[..cut].to_vec(), &at("requests")).mentions("truncated"));
    cases.push(post("truncated in a string", whole[..cut - 5].to_vec(), "stats[1]").mentions("truncated"));
    cases.push(
        post(
            "truncated after the list",
            whole[..whole.len() - 1].to_vec(),
            "body",
        )
        .mentions("truncated"),
    );
    cases.push(post(
        "trailing data",
        br#"{"stats": []} {"stats": []}"#.to_vec(),
        "body",
    ));
    cases.push(post(
        "repeated stats",
        br#"{"stats": [], "stats": []}"#.to_vec(),
        "stats",
    ));
    let twice = r.with("requests", r#"1, "requests": 2"#);
    cases.push(post("repeated requests", twice, &at("requests")));
    // Past serde_json's recursion limit (128) in a known field. (In an
    // unknown field any depth is skipped without recursion: see valid.rs.)
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    cases.push(post(
        "deep nesting in a field",
        r.with("user_id", deep),
        &at("user_id"),
    ));

    // Sizes: the collector's per-request limit (a cap of 100 reports at
    // their worst case) and the body limit (64 KiB).
    let status = StatusCode::PAYLOAD_TOO_LARGE;
    cases.push(
        post("101 reports", r.many(101), "stats")
            .status(status)
            .mentions("at most 100"),
    );
    cases.push(
        post("body over the limit", r.many(400), "body")
            .status(status)
            .mentions("65536"),
    );

    // Content type and coding.
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=utf-16"),
    ] {
        cases.push(
            post(&format!("content type {ct:?}"), r.many(1), "Content-Type")
                .content_type(ct)
                .status(unsupported),
        );
    }
    let gzip = post("gzip", r.many(1), "Content-Encoding").header("content-encoding", "gzip");
    cases.push(gzip.status(unsupported));

    // Other methods on the route.
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let case = post(&format!("{method}"), r.many(1), "")
            .method(method)
            .no_field();
        cases.push(case.status(StatusCode::METHOD_NOT_ALLOWED));
    }
    cases
}
