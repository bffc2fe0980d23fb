//! Authentication: a credential in one of the headers Coder's clients send
//! is mapped to a subject of the domain.
//!
//! The first of these present is used: `Authorization: Bearer <token>`,
//! then a workspace proxy's `Coder-External-Proxy-Token: <proxy id>:<secret>`
//! (what Coder's proxy client sends; it stands for the proxy role only),
//! then `Coder-Session-Token: <token>`.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use tally_domain::authz::authorize;
use tally_domain::authz::{Action, Resource, Subject};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::config::Tokens;

pub const CODER_SESSION_TOKEN: &str = "coder-session-token";
pub const CODER_EXTERNAL_PROXY_TOKEN: &str = "coder-external-proxy-token";

const INVALID_PROXY_TOKEN: &str = "Invalid external proxy token.";

/// The authenticated subject of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Subject);

impl Caller {
    /// 403 unless the access rules allow `action` on `resource`.
    pub fn require(&self, action: Action, resource: Resource) -> Result<(), ApiError> {
        authorize(self.0, action, resource).map_err(|f| ApiError::forbidden(f.to_string()))
    }
}

/// What a request presents to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A bearer or session token, compared whole.
    Token(&'a [u8]),
    /// A workspace proxy's `<proxy id>:<secret>`.
    Proxy { id: Uuid, secret: &'a [u8] },
}

/// The credential a request presents, if any. An `Authorization` header with
/// another scheme, or a proxy token not of the form `<proxy id>:<secret>`,
/// counts as a wrong credential, not a missing one.
pub fn presented(headers: &HeaderMap) -> Result<Option<Credential<'_>>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let scheme_len = "bearer ".len();
        if bytes.len() > scheme_len && bytes[..scheme_len].eq_ignore_ascii_case(b"bearer ") {
            return Ok(Some(Credential::Token(bytes[scheme_len..].trim_ascii())));
        }
        return Err(ApiError::unauthorized(
            "Invalid Authorization header.",
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    if let Some(value) = headers.get(CODER_EXTERNAL_PROXY_TOKEN) {
        let malformed = || {
            ApiError::unauthorized(
                INVALID_PROXY_TOKEN,
                "expected `<proxy id>:<secret>`, the proxy id a UUID",
            )
        };
        let raw = value.as_bytes().trim_ascii();
        let colon = raw.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let id = std::str::from_utf8(&raw[..colon])
            .ok()
            .and_then(|id| Uuid::parse_str(id.trim()).ok())
            .ok_or_else(malformed)?;
        let secret = raw[colon + 1..].trim_ascii();
        if secret.is_empty() {
            return Err(malformed());
        }
        return Ok(Some(Credential::Proxy { id, secret }));
    }
    Ok(headers
        .get(CODER_SESSION_TOKEN)
        .map(|v| Credential::Token(v.as_bytes().trim_ascii())))
}

pub fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Subject, ApiError> {
    match presented(headers)? {
        None => Err(ApiError::unauthorized(
            "Missing API token.",
            "send `Authorization: Bearer <token>`, `Coder-Session-Token: <token>` or, from a \
             workspace proxy, `Coder-External-Proxy-Token: <proxy id>:<secret>`",
        )),
        Some(Credential::Token(token)) => tokens.authenticate(token).ok_or_else(|| {
            ApiError::unauthorized(
                "Invalid API token.",
                "the token is none of those configured (--tokens)",
            )
        }),
        Some(Credential::Proxy { id, secret }) => {
            if tokens.authenticate_proxy(id, secret) {
                Ok(Subject::WorkspaceProxy)
            } else {
                Err(ApiError::unauthorized(
                    INVALID_PROXY_TOKEN,
                    "no proxy token configured (--tokens) has this proxy id and secret",
                ))
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(&state.tokens, &parts.headers).map(Caller)
    }
}

#[cfg(test)]
mod tests;
