//! The dashboard at `/`: a page, its script and style, and Chart.js, all
//! built into the binary (no files read at run time, nothing from another
//! host). The page reads the JSON API with the reader token the user types
//! in; serving it needs no token, as it holds no data.
//!
//! Both routes are in the API's route list and so in its OpenAPI document,
//! like `/healthz`: the document describes everything this server answers.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::openapi::responses::NotFound;

pub const DASHBOARD_PATH: &str = "/";
pub const ASSET_PATH: &str = "/dashboard/{name}";

const INDEX_HTML: &str = include_str!("dashboard/index.html");

/// Every asset the page loads, by the name in its URL. Chart.js is vendored
/// verbatim from its npm package (`vendor/chart.js/`, with its licence).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
    (
        "chart.umd.min.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/vendor/chart.js/chart.umd.min.js"),
    ),
    (
        "chart.js-LICENSE.md",
        "text/markdown; charset=utf-8",
        include_str!("dashboard/vendor/chart.js/LICENSE.md"),
    ),
];

/// Only this server's own scripts, styles and API: no inline script, no
/// other host, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard: app usage, active users, boundary snapshots and this
/// replica's health, read from this API with a reader token.
///
/// An HTML page; no token is needed to load it (the user types one in and
/// the page keeps it in the browser's session storage).
#[utoipa::path(
    get,
    path = DASHBOARD_PATH,
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard page.", body = String,
            content_type = "text/html; charset=utf-8"),
    ),
)]
pub async fn index() -> Response {
    asset_response("text/html; charset=utf-8", INDEX_HTML)
}

/// A script, style sheet or licence the dashboard page loads.
#[utoipa::path(
    get,
    path = ASSET_PATH,
    tag = "dashboard",
    params(
        ("name" = String, Path, description = "The asset's file name: `dashboard.js`, \
            `dashboard.css`, `chart.umd.min.js` (Chart.js) or `chart.js-LICENSE.md`.",
            example = "dashboard.js"),
    ),
    responses(
        (status = 200, description = "The asset.", body = String,
            content_type = "text/javascript; charset=utf-8"),
        (status = 404, response = NotFound),
    ),
)]
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, content_type, body)| asset_response(content_type, body))
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "Route not found.")
                .with_detail(format!("no dashboard asset named {name:?}"))
        })
}

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Built into the binary: a new build may change them, so revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads exactly the assets served, all from this server.
    #[test]
    fn the_page_loads_only_served_assets() {
        let mut loaded = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for (at, _) in INDEX_HTML.match_indices(attr) {
                let rest = &INDEX_HTML[at + attr.len()..];
                let url = &rest[..rest.find('"').unwrap()];
                // The empty icon (`data:,`) keeps the browser from asking for /favicon.ico.
                if !url.starts_with("data:") {
                    loaded.push(url.to_owned());
                }
            }
        }
        assert!(!loaded.is_empty());
        for url in &loaded {
            let name = url
                .strip_prefix("/dashboard/")
                .unwrap_or_else(|| panic!("{url} is not a dashboard asset"));
            assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{url} is not served");
        }
        assert!(
            !INDEX_HTML.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
        assert!(
            !INDEX_HTML.contains("style=\""),
            "no inline style (the CSP forbids it)"
        );
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_naming_it() {
        let error = asset(Path("../Cargo.toml".into())).await.unwrap_err();
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
