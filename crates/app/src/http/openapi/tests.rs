//! The document against the router: the same routes, the same methods, and
//! the roles it names are the ones the access rules let through.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tally_adapters_memory::MemoryStore;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::SystemClock;
use tally_domain::ports::MockReporter;
use tower::ServiceExt as _;

use super::*;
use crate::http::{AppState, router};

/// Every role of `--tokens`, each with its token as a bearer would send it
/// (the proxy's is `PROXY_ID:SECRET`, as Coder prints it).
const ROLES: [(&str, &str); 5] = [
    ("proxy", "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11:p-secret"),
    ("agent", "a-secret"),
    ("reader", "r-secret"),
    ("admin", "ad-secret"),
    ("member", "m-secret"),
];
const PROXY_ID: &str = "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11";

fn app() -> Router {
    let tokens = ROLES
        .iter()
        .map(|(role, token)| format!("{role}={token}"))
        .collect::<Vec<_>>()
        .join(",");
    let collector = StatsCollector::new(
        CollectorConfig::default(),
        Arc::new(MockReporter::new()),
        Arc::new(SystemClock),
    );
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        collector,
        Arc::new(BoundaryTracker::new(uuid::Uuid::new_v4(), Arc::new(SystemClock))),
        crate::config::Tokens::parse(&tokens).unwrap(),
        1 << 20,
    )
    // The document's examples are of late November 2026 (an ingested
    // session must be younger than the usage retention): the clock reads just
    // after them.
    .with_clock(Arc::new(tally_domain::clock::ManualClock::new(
        time::macros::datetime!(2026-12-01 12:00 UTC),
    )));
    router(state, Duration::from_secs(30))
}

fn doc() -> Value {
    serde_json::to_value(document()).unwrap()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// (path template, method) of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: unexpected key {method}"
            );
            ops.insert((path.clone(), method.clone()));
        }
    }
    ops
}

/// The path templates the router holds, read from its `Debug` output
/// (`Router { path_router: PathRouter { .. Node { paths: {RouteId(0): "/a",
/// ..} } }, fallback_router: ..}`): axum has no other way to list them.
/// Fails loudly if that format changes.
fn routed_paths(app: &Router) -> BTreeSet<String> {
    let debug = format!("{app:?}");
    let routes = debug
        .split_once("path_router:")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(routes, _)| routes)
        .unwrap_or_else(|| panic!("no path_router in the router's Debug output: {debug}"));
    let mut paths = BTreeSet::new();
    let mut rest = routes;
    while let Some(at) = rest.find("RouteId(") {
        rest = &rest[at..];
        let Some(open) = rest.find("): \"") else { break };
        let tail = &rest[open + 4..];
        let close = tail.find('"').expect("a quoted path");
        paths.insert(tail[..close].to_owned());
        rest = &tail[close..];
    }
    assert!(
        paths.contains(crate::http::HEALTHZ_PATH),
        "could not read the routes from the router's Debug output: {debug}"
    );
    paths
}

/// A concrete path for a template: each `{param}` becomes its example.
fn concrete(doc: &Value, template: &str, method: Option<&str>) -> String {
    let mut path = template.to_owned();
    let item = &doc["paths"][template];
    let params = method
        .map(|m| item[m]["parameters"].clone())
        .or_else(|| {
            METHODS
                .iter()
                .map(|m| item[*m]["parameters"].clone())
                .find(|p| p.is_array())
        })
        .unwrap_or(Value::Null);
    for param in params.as_array().into_iter().flatten() {
        if param["in"] == "path" {
            let name = param["name"].as_str().unwrap();
            let example = param["example"]
                .as_str()
                .unwrap_or_else(|| panic!("{template}: path parameter {name} needs an example"));
            path = path.replace(&format!("{{{name}}}"), example);
        }
    }
    assert!(
        !path.contains('{'),
        "{template}: a path parameter has no description"
    );
    path
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = crate::http::tests::body_bytes(response).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Answered by the router's method fallback, i.e. no route takes it (a
/// HEAD answer has no body to tell).
fn method_refused(method: &str, status: StatusCode, body: &Value) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED && (method == "head" || body["message"] == "Method not allowed.")
}

#[tokio::test]
async fn every_route_is_described_and_every_description_is_routed() {
    let app = app();
    let doc = doc();
    let documented = documented(&doc);
    let described: BTreeSet<String> = documented.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        routed_paths(&app),
        described,
        "the router's paths and the document's differ: add routes only through http::routes()"
    );
    // Each method of each path: routed exactly when described (HEAD comes
    // with GET, as the document says).
    for path in &described {
        let uri = concrete(&doc, path, None);
        for method in METHODS {
            let request = Request::builder()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let (status, body) = send(&app, request).await;
            let routed = !method_refused(method, status, &body);
            let described = if method == "head" {
                documented.contains(&(path.clone(), "get".to_owned()))
            } else {
                documented.contains(&(path.clone(), method.to_owned()))
            };
            assert_eq!(
                routed, described,
                "{method} {uri}: routed {routed}, described {described} ({status} {body})"
            );
            assert!(
                !documented.contains(&(path.clone(), "head".to_owned())),
                "the document describes HEAD {path}: it comes with GET"
            );
        }
    }
}

/// An example request of an operation, from the document's own examples.
fn example_request(doc: &Value, path: &str, method: &str) -> Request<Body> {
    let op = &doc["paths"][path][method];
    let mut uri = concrete(doc, path, Some(method));
    let query: Vec<String> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query" && p["required"] == true)
        .map(|p| {
            let example = match &p["example"] {
                Value::String(s) => s.clone(),
                Value::Null => panic!("{method} {path}: query parameter {} needs an example", p["name"]),
                other => other.to_string(),
            };
            format!("{}={}", p["name"].as_str().unwrap(), example)
        })
        .collect();
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let builder = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri);
    match op["requestBody"]["content"]["application/json"]["example"].clone() {
        Value::Null => {
            assert!(
                op["requestBody"].is_null(),
                "{method} {path}: the request body needs an example"
            );
            builder.body(Body::empty()).unwrap()
        }
        example => builder
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&example).unwrap()))
            .unwrap(),
    }
}

fn with_header(mut request: Request<Body>, name: &'static str, value: String) -> Request<Body> {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

/// For every operation, each role's token is let through exactly when the
/// document names the role, no token is a 401 exactly when the operation
/// declares security, and a proxy's own header works exactly where the
/// document lists it.
#[tokio::test]
async fn the_roles_the_document_names_are_the_ones_let_through() {
    let app = app();
    let doc = doc();
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let label = format!("{method} {path}");
        let schemes: BTreeSet<String> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|alternative| alternative.as_object().unwrap().keys().cloned())
            .collect();
        let (status, body) = send(&app, example_request(&doc, &path, &method)).await;
        let roles = &op[ROLES_EXTENSION];
        if schemes.is_empty() {
            assert!(roles.is_null(), "{label}: roles without security");
            assert!(status.is_success(), "{label}: {status} {body} without a token");
            continue;
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{label}: {body} without a token"
        );
        assert!(
            schemes.contains(BEARER) && schemes.contains(SESSION_TOKEN),
            "{label}: every token header is taken for every role"
        );
        let roles: BTreeSet<&str> = roles
            .as_array()
            .unwrap_or_else(|| panic!("{label}: secured, so it names its roles"))
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        for (role, token) in ROLES {
            for header in ["authorization", "coder-session-token"] {
                let value = match header {
                    "authorization" => format!("Bearer {token}"),
                    _ => token.to_owned(),
                };
                let request = with_header(example_request(&doc, &path, &method), header, value);
                let (status, body) = send(&app, request).await;
                if roles.contains(role) {
                    assert!(
                        status.is_success(),
                        "{label} as {role} ({header}): {status} {body}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{label} as {role} ({header}): {body}"
                    );
                }
            }
        }
        let proxy_header = with_header(
            example_request(&doc, &path, &method),
            "coder-external-proxy-token",
            format!("{PROXY_ID}:p-secret"),
        );
        let (status, body) = send(&app, proxy_header).await;
        assert_eq!(
            status.is_success(),
            schemes.contains(PROXY_TOKEN),
            "{label} with Coder-External-Proxy-Token: {status} {body}"
        );
        assert_eq!(schemes.contains(PROXY_TOKEN), roles.contains("proxy"), "{label}");
    }
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let request = Request::get(OPENAPI_PATH).body(Body::empty()).unwrap();
    let response = app().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = crate::http::tests::body_bytes(response).await;
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, doc());
    assert_eq!(served["openapi"], "3.1.0");
}

/// Every `$ref` points at something the document has.
#[test]
fn every_reference_resolves() {
    fn walk(doc: &Value, node: &Value, refs: &mut usize) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').expect("a local reference");
                    assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
                    *refs += 1;
                }
                map.values().for_each(|v| walk(doc, v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v, refs)),
            _ => {}
        }
    }
    let doc = doc();
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(refs > 10, "{refs} references");
    for name in doc["components"]["securitySchemes"].as_object().unwrap().keys() {
        assert!([BEARER, SESSION_TOKEN, PROXY_TOKEN].contains(&name.as_str()));
    }
}

/// Every operation documents the 408 of the request deadline, and every
/// secured one the 401 and 403 of authentication and the access rules.
#[test]
fn shared_statuses_are_documented() {
    let doc = doc();
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("408"), "{method} {path}");
        if op["security"].is_array() {
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
        }
        if op["requestBody"].is_object() {
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
        }
    }
}
