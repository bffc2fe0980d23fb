//! Malformed boundary logs, from an agent of the poison workspace.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::app_stats::POISON_WS;
use super::harness::{Case, NOT_COUNTS, PAST_A_REPORTS_COUNT, RAW, splice};
use crate::common::*;

fn counts() -> Value {
    json!({"workspace_id": POISON_WS, "owner_id": uuid::Uuid::new_v4(), "allowed": 1000, "denied": 100})
}

fn logs() -> Value {
    json!({"workspace_id": POISON_WS, "owner_id": uuid::Uuid::new_v4(), "logs": [
        {"decision": "allow", "http_method": "GET"}, {"decision": "deny"}
    ]})
}

/// `body` with the value at `pointer` replaced by the raw JSON text `raw`.
fn with(mut body: Value, pointer: &str, raw: impl AsRef<[u8]>) -> Vec<u8> {
    *body.pointer_mut(pointer).unwrap() = json!(RAW);
    splice(&body, raw.as_ref())
}

/// `body` with an unknown field `x`, for [`with`] to fill.
fn with_extra(mut body: Value) -> Value {
    body["x"] = Value::Null;
    body
}

fn without(mut body: Value, key: &str) -> Vec<u8> {
    body.as_object_mut().unwrap().remove(key);
    body.to_string().into_bytes()
}

pub fn cases() -> Vec<Case> {
    let post = |name: &str, body: Vec<u8>, field: &str| {
        Case::post(
            format!("boundary logs: {name}"),
            BOUNDARY_LOGS,
            AGENT,
            body,
            field,
        )
    };
    let mut cases = Vec::new();

    // Wrong types.
    for (key, raw) in [
        ("workspace_id", "42"),
        ("owner_id", "true"),
        ("allowed", r#""3""#),
        ("denied", "true"),
        ("allowed", "[1]"),
    ] {
        cases.push(post(
            &format!("{key} as {raw}"),
            with(counts(), &format!("/{key}"), raw),
            key,
        ));
    }
    for raw in ["{}", r#""allow""#, "3"] {
        cases.push(post(
            &format!("logs as {raw}"),
            with(logs(), "/logs", raw),
            "logs",
        ));
    }
    for raw in [r#""allow""#, "null", "[]", r#"["allow"]"#, "1"] {
        cases.push(post(
            &format!("log item {raw}"),
            with(logs(), "/logs/1", raw),
            "logs[1]",
        ));
    }
    for raw in ["1", "true", "null", "{}", r#"["allow"]"#] {
        let body = with(logs(), "/logs/1/decision", raw);
        cases.push(post(&format!("decision {raw}"), body, "logs[1].decision"));
    }

    // Missing fields and nulls.
    for key in ["workspace_id", "owner_id"] {
        cases.push(post(&format!("missing {key}"), without(counts(), key), key));
        cases.push(post(
            &format!("{key} null"),
            with(counts(), &format!("/{key}"), "null"),
            key,
        ));
    }
    let neither = json!({"workspace_id": POISON_WS, "owner_id": uuid::Uuid::new_v4()});
    cases.push(post(
        "no counts and no logs",
        neither.to_string().into_bytes(),
        "allowed",
    ));
    let nulls = json!({"workspace_id": POISON_WS, "owner_id": uuid::Uuid::new_v4(), "allowed": null, "denied": null, "logs": null});
    cases.push(post("all counts null", nulls.to_string().into_bytes(), "allowed"));
    let no_decision = with(logs(), "/logs/1", r#"{"http_method": "GET"}"#);
    cases.push(post("log without decision", no_decision, "logs[1].decision"));
    cases.push(post(
        "counts and logs",
        with(logs(), "/workspace_id", format!(r#""{POISON_WS}", "allowed": 1"#)),
        "logs",
    ));

    // Invalid UUIDs.
    for (key, raw) in [
        ("workspace_id", r#""1234""#),
        ("owner_id", r#""""#),
        ("workspace_id", r#""00000000-0000-0000-0000-000000000000""#),
        ("owner_id", r#""00000000-0000-0000-0000-000000000000""#),
        ("owner_id", r#""zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz""#),
    ] {
        cases.push(post(
            &format!("{key} {raw}"),
            with(counts(), &format!("/{key}"), raw),
            key,
        ));
    }

    // Negative and overflowing counts.
    for key in ["allowed", "denied"] {
        for raw in NOT_COUNTS {
            cases.push(post(
                &format!("{key} {raw}"),
                with(counts(), &format!("/{key}"), raw),
                key,
            ));
        }
        for raw in PAST_A_REPORTS_COUNT {
            let body = with(counts(), &format!("/{key}"), raw);
            cases.push(post(&format!("{key} {raw}"), body, key).mentions("4294967295"));
        }
    }

    // Unknown decisions.
    for raw in [r#""shrug""#, r#""ALLOW""#, r#""""#] {
        let body = with(logs(), "/logs/1/decision", raw);
        cases.push(post(&format!("decision {raw}"), body, "logs[1].decision"));
    }

    // Invalid UTF-8.
    let bad_utf8 = with(counts(), "/workspace_id", b"\"0bad\xff\"");
    cases.push(post("invalid UTF-8 in a string", bad_utf8, "workspace_id"));
    cases.push(post(
        "lone surrogate escape",
        with(logs(), "/logs/1/decision", r#""\udfff""#),
        "logs[1].decision",
    ));
    cases.push(post(
        "invalid UTF-8 between tokens",
        with(counts(), "/denied", b"1 \xff"),
        "body",
    ));
    // In an unknown field serde skips: found by the fuzzer.
    cases.push(post(
        "invalid UTF-8 in an ignored field",
        with(with_extra(counts()), "/x", b"\"\xff\""),
        "body",
    ));
    cases.push(post(
        "lone surrogate in an ignored field",
        with(with_extra(counts()), "/x", br#""\udfff""#),
        "body",
    ));

    // Not JSON, not an object, truncated, trailing data, repeated keys.
    for raw in ["", "[]", r#"[{"allowed": 1}]"#, "null", "7", "allowed=1"] {
        cases.push(post(&format!("body {raw:?}"), raw.as_bytes().to_vec(), "body"));
    }
    // Keys are written in order: the cut falls in the workspace id.
    let whole = counts().to_string().into_bytes();
    cases.push(post("truncated", whole[..whole.len() - 3].to_vec(), "workspace_id").mentions("truncated"));
    cases.push(
        post(
            "truncated after the object",
            whole[..whole.len() - 1].to_vec(),
            "body",
        )
        .mentions("truncated"),
    );
    let trailing = [whole.as_slice(), b"]"].concat();
    cases.push(post("trailing data", trailing, "body"));
    cases.push(post(
        "repeated allowed",
        with(counts(), "/allowed", r#"1, "allowed": 2"#),
        "allowed",
    ));
    let twice = with(
        counts(),
        "/workspace_id",
        format!(r#""{POISON_WS}", "workspace_id": "{POISON_WS}""#),
    );
    cases.push(post("repeated workspace_id", twice, "workspace_id"));

    // Sizes: no element limit of its own, the body limit bounds a list.
    let mut huge = logs();
    huge["logs"] = Value::Array(vec![json!({"decision": "allow"}); 5000]);
    let huge = huge.to_string().into_bytes();
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    cases.push(
        post("logs over the body limit", huge, "body")
            .status(too_large)
            .mentions("65536"),
    );

    // Content type and coding.
    let unsupported = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    for ct in [None, Some("text/plain"), Some("multipart/form-data")] {
        let case = post(
            &format!("content type {ct:?}"),
            counts().to_string().into_bytes(),
            "Content-Type",
        );
        cases.push(case.content_type(ct).status(unsupported));
    }
    let gzip = post("gzip", counts().to_string().into_bytes(), "Content-Encoding");
    cases.push(gzip.header("content-encoding", "gzip").status(unsupported));

    for method in [Method::GET, Method::PATCH] {
        let case = post(&format!("{method}"), counts().to_string().into_bytes(), "").method(method);
        cases.push(case.no_field().status(StatusCode::METHOD_NOT_ALLOWED));
    }
    cases
}
