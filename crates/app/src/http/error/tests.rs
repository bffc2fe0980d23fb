//! API errors: codersdk-shaped bodies, and the headers that tell a client what
//! to do next (Retry-After, the auth scheme).

use super::*;

mod cause;

async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
    let response = e.into_response();
    let status = response.status();
    let bytes = crate::http::tests::body_bytes(response).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn bodies_are_coders_response_shape() {
    let (status, body) = body_of(ApiError::bad_field("stats[3].requests", "must not be negative")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        serde_json::json!({
            "message": "Invalid request body.",
            "validations": [{"field": "stats[3].requests", "detail": "must not be negative"}],
        })
    );
    let (status, body) = body_of(ApiError::forbidden("workspace-proxy may not read app stats")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        serde_json::json!({"message": "Forbidden.", "detail": "workspace-proxy may not read app stats"})
    );
    let (_, body) = body_of(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Retry later.")).await;
    assert_eq!(body, serde_json::json!({"message": "Retry later."}));
}

#[tokio::test]
async fn refusals_to_retry_later_say_when() {
    let header = |e: ApiError| {
        e.into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let busy = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Busy.");
    assert_eq!(header(busy.clone()).as_deref(), Some("5"));
    assert_eq!(
        header(busy.clone().with_retry_after(Duration::from_millis(30_200))).as_deref(),
        Some("31")
    );
    assert_eq!(
        header(busy.with_retry_after(Duration::from_millis(200))).as_deref(),
        Some("1")
    );
    assert_eq!(
        header(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Slow down.")).as_deref(),
        Some("5")
    );
    assert_eq!(
        header(ApiError::from(StoreError::unavailable("down"))).as_deref(),
        Some("5")
    );
    assert_eq!(header(ApiError::forbidden("no")), None);
    assert_eq!(header(ApiError::bad_param("limit", "too big")), None);
}

#[tokio::test]
async fn unauthorized_answers_name_the_scheme() {
    let response = ApiError::unauthorized("Invalid API token.", "no such token").into_response();
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
}
