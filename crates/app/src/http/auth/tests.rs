use super::*;
use axum::http::{HeaderValue, StatusCode};
use tally_domain::authz::Role;

const PROXY_ID: &str = "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11";

fn tokens() -> Tokens {
    Tokens::parse(&format!("proxy=ptok,reader=rtok,proxy={PROXY_ID}:psecret")).unwrap()
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
    // Coder's proxy token form is also a whole bearer token.
    let whole = format!("{PROXY_ID}:psecret");
    assert_eq!(
        authenticate(&t, &headers(&[("coder-session-token", &whole)])),
        Ok(Subject::WorkspaceProxy)
    );
}

#[test]
fn coders_external_proxy_token_is_accepted_for_the_proxy_role() {
    let t = tokens();
    let other = uuid::Uuid::new_v4().to_string();
    for value in [
        // The named token, with its id (any UUID spelling).
        format!("{PROXY_ID}:psecret"),
        format!("{}:psecret", PROXY_ID.to_uppercase()),
        format!(" {PROXY_ID}:psecret "),
        // The token without an id, with any id.
        format!("{other}:ptok"),
        format!("{PROXY_ID}:ptok"),
    ] {
        assert_eq!(
            authenticate(&t, &headers(&[("coder-external-proxy-token", &value)])),
            Ok(Subject::WorkspaceProxy),
            "{value}"
        );
    }
}

#[test]
fn a_wrong_or_malformed_external_proxy_token_is_401() {
    let t = tokens();
    let other = uuid::Uuid::new_v4().to_string();
    for value in [
        // The named secret with another id.
        format!("{other}:psecret"),
        // Not a proxy token.
        format!("{PROXY_ID}:rtok"),
        format!("{PROXY_ID}:nope"),
        // Malformed: no id, not a UUID, no secret, nothing.
        "ptok".to_owned(),
        "not-a-uuid:ptok".to_owned(),
        format!("{PROXY_ID}:"),
        PROXY_ID.to_owned(),
        ":ptok".to_owned(),
        String::new(),
    ] {
        let err = authenticate(&t, &headers(&[("coder-external-proxy-token", &value)])).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(err.message, INVALID_PROXY_TOKEN, "{value}");
        assert!(!format!("{err:?}").contains("secret:"), "{err:?}");
    }
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
        // The proxy header is for proxy tokens only.
        headers(&[("coder-external-proxy-token", &format!("{PROXY_ID}:rtok"))]),
    ] {
        let err = authenticate(&t, &h).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{h:?}");
        assert!(!err.message.contains("ptok"));
        assert!(!err.detail.unwrap_or_default().contains("ptok"));
    }
}

#[test]
fn the_first_header_present_is_the_one_checked() {
    let t = tokens();
    let proxy = format!("{PROXY_ID}:psecret");
    // Authorization first, then the proxy header, then the session token.
    let both = headers(&[
        ("authorization", "Bearer rtok"),
        ("coder-external-proxy-token", &proxy),
    ]);
    assert_eq!(authenticate(&t, &both), Ok(Subject::User(Role::Auditor)));
    let both = headers(&[
        ("coder-external-proxy-token", &proxy),
        ("coder-session-token", "rtok"),
    ]);
    assert_eq!(authenticate(&t, &both), Ok(Subject::WorkspaceProxy));
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
