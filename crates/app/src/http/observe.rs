//! What every API request gets: an id (`x-request-id`: the client's, or a
//! new UUID when absent), echoed in the response; a span carrying it, so
//! every log line of the request names it; one access log line at INFO;
//! and its metrics (a count by method, route and status, a latency
//! histogram by method, route and status class).

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use super::AppState;
use crate::metrics as m;

pub const REQUEST_ID: &str = "x-request-id";
/// Longest request id taken from a client.
pub const MAX_REQUEST_ID_LEN: usize = 200;
/// The access log's target: `TALLY_LOG=info,tally::access=off` also hides it.
pub const ACCESS_LOG_TARGET: &str = "tally::access";

/// Wraps every route and the fallbacks of `router` (routes must be added
/// before). Outermost first: an unusable client id is dropped, an id set,
/// echoed, the span opened (its access line written when the response is
/// ready), the request counted and timed.
pub fn observe(router: Router<AppState>, access_log: bool) -> Router<AppState> {
    router
        .layer(middleware::from_fn(record))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(AccessLog { enabled: access_log })
                .on_body_chunk(())
                .on_eos(())
                // A 5xx is logged where it is produced, and in the access line.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(drop_unusable_request_id))
}

/// The route label: the route's pattern (`/api/v2/workspaces/{id}/last-used`),
/// or `unmatched`, so ids in paths never become label values.
fn route<B>(request: &axum::http::Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// The method label: a standard method, else `other`, so clients cannot
/// make label values at will.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A client's id is taken as it is when it is one printable token of
/// reasonable length: it goes into every log line of the request. Any
/// other is replaced by a new one.
pub fn usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    if request
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !usable_request_id(v))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// The request's span. At ERROR level so that it is enabled whatever the
/// log level: a warning of the request carries the id even at
/// `TALLY_LOG=warn`. The level of a span is not printed.
#[derive(Debug, Clone, Copy)]
struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> Span {
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::error_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            route = %route(request),
        )
    }
}

/// The access line, written inside the request's span (which gives the
/// id, method and route).
#[derive(Debug, Clone, Copy)]
struct AccessLog {
    enabled: bool,
}

impl<B> OnResponse<B> for AccessLog {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
        if self.enabled {
            tracing::info!(
                target: ACCESS_LOG_TARGET,
                status = response.status().as_u16(),
                duration_seconds = latency.as_secs_f64(),
                "request"
            );
        }
    }
}

async fn record(request: Request, next: Next) -> Response {
    let route = route(&request);
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    metrics::counter!(
        m::HTTP_REQUESTS,
        "method" => method,
        "route" => route.clone(),
        "status" => status.as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(
        m::HTTP_REQUEST_SECONDS,
        "method" => method,
        "route" => route,
        "status_class" => status_class(status),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
