//! The API's OpenAPI 3.1 document, generated from the route list the router
//! is built from ([`super::routes`]), so a route and its description are
//! declared together: a handler's `#[utoipa::path]` says its method, path,
//! parameters, bodies, statuses and who may call it.
//!
//! Served at `GET /api/v2/openapi.json`, without a token.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::ErrorBody;

pub const OPENAPI_PATH: &str = "/api/v2/openapi.json";

/// The security schemes, one per header a token may come in
/// (`super::auth::presented`).
pub const BEARER: &str = "bearer";
pub const SESSION_TOKEN: &str = "coder_session_token";
pub const PROXY_TOKEN: &str = "coder_external_proxy_token";

/// The operation extension naming the token roles (as written in
/// `--tokens`) that may call an operation; any other role's token is
/// refused with 403. Absent on operations that need no token.
pub const ROLES_EXTENSION: &str = "x-tally-roles";

/// The whole document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: LazyLock<Document> = LazyLock::new(|| {
        let (_, document) = super::routes().split_for_parts();
        finish(document)
    });
    &DOCUMENT
}

/// This API's OpenAPI document (OpenAPI 3.1, JSON).
///
/// What this server answers: every route, its parameters, bodies,
/// statuses and security schemes.
#[utoipa::path(
    get,
    path = OPENAPI_PATH,
    tag = "meta",
    responses(
        (status = 200, description = "The document.", content_type = "application/json",
            body = Object),
    ),
)]
pub async fn openapi_json() -> impl IntoResponse {
    static JSON: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string(document()).expect("the OpenAPI document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tally",
        description = "Usage telemetry for a fleet of cloud development workspaces. Workspace \
            proxies report app sessions, workspace agents report network-boundary decisions; \
            readers get insights, last-used times, telemetry snapshots and metrics.\n\n\
            Every error body is Coder's `codersdk.Response`. Every path also answers \
            `404 Route not found.` for a path no route matches and `405 Method not allowed.` \
            (with `Allow`) for a method its route does not take, each with that body; no \
            token is needed for either. HEAD is answered wherever GET is.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(
        schemas(ErrorBody),
        responses(
            responses::Unauthorized,
            responses::Forbidden,
            responses::NotFound,
            responses::MethodNotAllowed,
            responses::RequestTimeout,
            responses::UnsupportedMediaType,
            responses::StoreUnavailable,
            responses::StoreFailed,
        ),
    ),
    tags(
        (name = "ingest", description = "What workspace proxies and agents report."),
        (name = "read", description = "What readers (auditor, admin tokens) may read."),
        (name = "meta", description = "Health and this document; no token."),
        (name = "dashboard", description = "The dashboard page and its assets; no token (the \
            page asks for a reader token and reads the `read` routes with it)."),
    ),
    modifiers(&Components),
)]
struct ApiDoc;

/// The document the route list starts from: info, tags, the error schema,
/// the security schemes and the shared error responses.
pub fn base() -> Document {
    ApiDoc::openapi()
}

/// The shared error answers, as `#/components/responses/NAME`: an
/// operation names those it can give, `(status = 401, response = Unauthorized)`,
/// or, for a read of the store, all of [`responses::StoreReadFailures`].
pub mod responses {
    use super::ErrorBody;

    /// No token (`Missing API token.`), a wrong one (`Invalid API token.`,
    /// `Invalid external proxy token.`) or an `Authorization` header of
    /// another scheme (`Invalid Authorization header.`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    pub struct Unauthorized(pub ErrorBody);

    /// `Forbidden.`: the token's role may not do this; `detail` names the rule.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct Forbidden(pub ErrorBody);

    /// `Route not found.`: no route has this path; `detail` names it.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct NotFound(pub ErrorBody);

    /// `Method not allowed.`: the route does not take this method; `detail`
    /// names method and path, `Allow` the methods it takes.
    #[derive(Debug, utoipa::ToResponse)]
    #[response(headers(("Allow" = String, description = "The methods the route takes.")))]
    pub struct MethodNotAllowed(pub ErrorBody);

    /// `Request timed out.`: the request (its body, too) was not done within
    /// the server's `--request-timeout`.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct RequestTimeout(pub ErrorBody);

    /// `Request body must be UTF-8 JSON.`: another `Content-Type`, charset
    /// or `Content-Encoding` (validation field `Content-Type` or
    /// `Content-Encoding`).
    #[derive(Debug, utoipa::ToResponse)]
    pub struct UnsupportedMediaType(pub ErrorBody);

    /// The store is unavailable; retry later.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct StoreUnavailable(pub ErrorBody);

    /// The store failed.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct StoreFailed(pub ErrorBody);

    /// The 400 of every insights range read (app usage, active users, user
    /// activity), which list it beside [`StoreReadFailures`].
    #[derive(Debug, utoipa::IntoResponses)]
    #[response(
        status = 400,
        description = "`Invalid request parameters.`: the validation names \
        the parameter (`start_time`, `end_time`, the route's `interval` or `limit`, an unknown \
        one). A range longer than the usage retention plus one day is refused naming \
        `start_time`, with the limit in its detail."
    )]
    pub struct RangeReadRefused(pub ErrorBody);

    /// The failures of every route that reads the store for a caller: no
    /// or a wrong token, a role that may not read, a store that failed or
    /// is unavailable. `responses(... , StoreReadFailures)` lists all four.
    #[derive(Debug, utoipa::IntoResponses)]
    pub enum StoreReadFailures {
        #[response(status = 401)]
        Unauthorized(#[ref_response] Unauthorized),
        #[response(status = 403)]
        Forbidden(#[ref_response] Forbidden),
        #[response(status = 500)]
        StoreFailed(#[ref_response] StoreFailed),
        #[response(status = 503)]
        StoreUnavailable(#[ref_response] StoreUnavailable),
    }
}

struct Components;

impl Modify for Components {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`: any configured token, compared whole.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Coder-Session-Token",
                "Any configured token, compared whole (Coder's session header).",
            ))),
        );
        components.add_security_scheme(
            PROXY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Coder-External-Proxy-Token",
                "`<proxy id>:<secret>` of a proxy token (what Coder's workspace proxy sends); the \
                 proxy role only.",
            ))),
        );
    }
}

/// What every operation gets from the layers around all routes rather than
/// from its handler: a 408 from the request deadline.
fn finish(mut doc: Document) -> Document {
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.responses.responses.insert(
                "408".to_owned(),
                Ref::from_response_name(<responses::RequestTimeout as ToResponse>::response().0).into(),
            );
        }
    }
    doc
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests;
