//! What Coder's own clients see of a real `tally serve`: a workspace proxy
//! authenticates with `Coder-External-Proxy-Token: <proxy id>:<secret>`,
//! and every error body is a `codersdk.Response` (`message`, `detail`,
//! `validations` of `field` and `detail`), nothing else.

use reqwest::StatusCode;

use crate::common::*;

/// Checks `body` is exactly a `codersdk.Response` a Go client reads whole:
/// a message, maybe a detail, maybe validations; no other key.
fn coder_response(body: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    for (key, value) in object {
        match key.as_str() {
            "message" | "detail" => assert!(value.as_str().is_some_and(|s| !s.is_empty()), "{body}"),
            "validations" => {
                for v in value.as_array().unwrap() {
                    let v = v.as_object().unwrap();
                    assert_eq!(v.len(), 2, "{body}");
                    assert!(v["field"].is_string() && v["detail"].is_string(), "{body}");
                }
            }
            other => panic!("{other} is not a field of codersdk.Response: {body}"),
        }
    }
    assert!(object.contains_key("message"), "{body}");
    object
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_workspace_proxy_authenticates_with_coders_external_proxy_token() {
    // A proxy token as `coder wsproxy create` prints it names the proxy.
    let proxy_id = uuid::Uuid::new_v4();
    let secret = "Z3".repeat(32);
    let named = format!("{proxy_id}:{secret}");
    let tokens = format!("{TOKENS},proxy={named}");
    let server = Server::start(&["--tokens", &tokens]);
    let client = client();
    let empty = serde_json::json!({"stats": []});
    let post = |value: String| {
        client
            .post(server.url(APP_STATS))
            .header("Coder-External-Proxy-Token", value)
            .json(&empty)
    };

    assert_eq!(send(post(named.clone())).await.0, StatusCode::NO_CONTENT);
    // A proxy token without an id is taken with any proxy id.
    let (status, _) = send(post(format!("{}:{PROXY}", uuid::Uuid::new_v4()))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    for (value, detail) in [
        (format!("{}:{secret}", uuid::Uuid::new_v4()), "no proxy token"),
        (format!("{proxy_id}:{AGENT}"), "no proxy token"),
        (secret.clone(), "expected `<proxy id>:<secret>`"),
    ] {
        let (status, body) = send(post(value.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}: {body}");
        let response = coder_response(&body);
        assert_eq!(response["message"], "Invalid external proxy token.", "{body}");
        assert!(response["detail"].as_str().unwrap().contains(detail), "{body}");
    }
    // The proxy's header is for app stats; the agent's endpoint refuses it.
    let (status, body) = send(
        client
            .post(server.url(BOUNDARY_LOGS))
            .header("Coder-External-Proxy-Token", &named)
            .json(&serde_json::json!({
                "workspace_id": uuid::Uuid::new_v4(), "owner_id": uuid::Uuid::new_v4(), "allowed": 1
            })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!server.logs().contains(&secret), "the secret reached the log");
}

#[tokio::test]
async fn every_error_is_a_codersdk_response() {
    let server = Server::start(&["--body-limit", "1KiB"]);
    let client = client();
    let bad_report = serde_json::json!({"stats": [{"requests": "many"}]});
    let cases = [
        (
            client.post(server.url(APP_STATS)).json(&bad_report),
            StatusCode::UNAUTHORIZED,
            "Missing API token.",
            None,
        ),
        (
            client
                .post(server.url(APP_STATS))
                .bearer_auth(PROXY)
                .json(&bad_report),
            StatusCode::BAD_REQUEST,
            "Invalid request body.",
            Some("stats[0].requests"),
        ),
        (
            client
                .post(server.url(APP_STATS))
                .bearer_auth(PROXY)
                .header("content-type", "application/json")
                .body(vec![b' '; 2048]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large.",
            Some("body"),
        ),
        (
            client
                .post(server.url(APP_STATS))
                .bearer_auth(PROXY)
                .header("content-type", "text/plain")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Request body must be UTF-8 JSON.",
            Some("Content-Type"),
        ),
        (
            client
                .get(server.url("/api/v2/telemetry/snapshots?limit=0"))
                .bearer_auth(ADMIN),
            StatusCode::BAD_REQUEST,
            "Invalid request parameters.",
            Some("limit"),
        ),
        (
            client
                .get(server.url("/api/v2/telemetry/snapshots"))
                .bearer_auth(PROXY),
            StatusCode::FORBIDDEN,
            "Forbidden.",
            None,
        ),
        (
            client.get(server.url("/api/v2/nothing")).bearer_auth(ADMIN),
            StatusCode::NOT_FOUND,
            "Route not found.",
            None,
        ),
        (
            client.get(server.url(APP_STATS)).bearer_auth(PROXY),
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed.",
            None,
        ),
    ];
    for (request, want, message, field) in cases {
        let (status, body) = send(request).await;
        assert_eq!(status, want, "{body}");
        let response = coder_response(&body);
        assert_eq!(response["message"], message, "{body}");
        match field {
            Some(field) => {
                let validations = response["validations"].as_array().unwrap();
                assert_eq!(validations.len(), 1, "{body}");
                assert_eq!(validations[0]["field"], field, "{body}");
                assert!(!response.contains_key("detail"), "{body}");
            }
            None => {
                assert!(!response.contains_key("validations"), "{body}");
                assert!(response["detail"].is_string(), "{body}");
            }
        }
    }
}

#[tokio::test]
async fn serve_takes_its_settings_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, "body_limit = \"1KiB\"\n").unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let (status, body) = send(
        client()
            .post(server.url(APP_STATS))
            .bearer_auth(PROXY)
            .header("content-type", "application/json")
            .body(vec![b' '; 2048]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["validations"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{body}"
    );
}
