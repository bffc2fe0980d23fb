//! Authentication: an API token (`Authorization: Bearer` or Coder's
//! `Coder-Session-Token` header) is mapped to a subject of the domain.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use tally_domain::authz::authorize;
use tally_domain::authz::{Action, Resource, Subject};

use super::AppState;
use super::error::ApiError;
use crate::config::Tokens;

pub const CODER_SESSION_TOKEN: &str = "coder-session-token";

/// The authenticated subject of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Subject);

impl Caller {
    /// 403 unless the access rules allow `action` on `resource`.
    pub fn require(&self, action: Action, resource: Resource) -> Result<(), ApiError> {
        authorize(self.0, action, resource).map_err(|f| ApiError::forbidden(f.to_string()))
    }
}

/// The token a request presents, if any. An `Authorization` header with
/// another scheme counts as a wrong token, not a missing one.
pub fn presented_token(headers: &HeaderMap) -> Result<Option<&[u8]>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let scheme_len = "bearer ".len();
        if bytes.len() > scheme_len && bytes[..scheme_len].eq_ignore_ascii_case(b"bearer ") {
            return Ok(Some(bytes[scheme_len..].trim_ascii()));
        }
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(headers
        .get(CODER_SESSION_TOKEN)
        .map(|v| v.as_bytes().trim_ascii()))
}

pub fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Subject, ApiError> {
    match presented_token(headers)? {
        None => Err(ApiError::unauthorized("missing API token")),
        Some(token) => tokens
            .authenticate(token)
            .ok_or_else(|| ApiError::unauthorized("invalid API token")),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(&state.tokens, &parts.headers).map(Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use tally_domain::authz::Role;

    fn tokens() -> Tokens {
        Tokens::parse("proxy=ptok,reader=rtok").unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_coder_session_token_are_accepted() {
        let t = tokens();
        assert_eq!(
            authenticate(&t, &headers(&[("authorization", "Bearer ptok")])),
            Ok(Subject::WorkspaceProxy)
        );
        assert_eq!(
            authenticate(&t, &headers(&[("authorization", "bearer  rtok ")])),
            Ok(Subject::User(Role::Auditor))
        );
        assert_eq!(
            authenticate(&t, &headers(&[("coder-session-token", "ptok")])),
            Ok(Subject::WorkspaceProxy)
        );
    }

    #[test]
    fn missing_wrong_or_malformed_tokens_are_401() {
        let t = tokens();
        for h in [
            headers(&[]),
            headers(&[("authorization", "Bearer nope")]),
            headers(&[("authorization", "Basic cHRvaw==")]),
            headers(&[("authorization", "ptok")]),
            headers(&[("coder-session-token", "")]),
        ] {
            let err = authenticate(&t, &h).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{h:?}");
            assert!(!err.message.contains("ptok"));
        }
    }

    #[test]
    fn require_maps_the_access_rules_to_403() {
        let proxy = Caller(Subject::WorkspaceProxy);
        proxy
            .require(Action::Create, Resource::WorkspaceAppStats)
            .unwrap();
        let err = proxy.require(Action::Create, Resource::BoundaryLog).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }
}
