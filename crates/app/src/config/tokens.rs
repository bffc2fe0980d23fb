//! API tokens (`--tokens`, `TALLY_TOKENS`): `ROLE=TOKEN[,ROLE=TOKEN...]`.
//!
//! A proxy token may be written in Coder's own form, `PROXY_ID:SECRET` (what
//! `coder wsproxy create` prints, the proxy id a UUID): it then names the
//! proxy, and the `Coder-External-Proxy-Token` header must carry that id. A
//! proxy token without an id is taken with any proxy id in that header.
//! Either way `Authorization: Bearer` and `Coder-Session-Token` present the
//! whole token as written.

use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};
use tally_domain::authz::{Role, Subject};
use uuid::Uuid;

use super::ConfigError;

/// One configured token.
struct Entry {
    /// The token as written, as a bearer token presents it.
    token: Vec<u8>,
    subject: Subject,
    /// A proxy token in Coder's form: the proxy id it names and its secret.
    proxy: Option<(Uuid, Vec<u8>)>,
}

/// The API tokens and the subjects they stand for.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<Entry>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subjects: Vec<String> = self.entries.iter().map(Entry::describe).collect();
        f.debug_struct("Tokens").field("subjects", &subjects).finish()
    }
}

impl Entry {
    /// The subject, and the proxy id a proxy token names; never the secret.
    fn describe(&self) -> String {
        match &self.proxy {
            Some((id, _)) => format!("{} {id}", self.subject),
            None => self.subject.to_string(),
        }
    }
}

/// The subject an API role name stands for.
pub fn role_subject(role: &str) -> Option<Subject> {
    Some(match role {
        "proxy" | "workspace-proxy" => Subject::WorkspaceProxy,
        "agent" | "workspace-agent" => Subject::WorkspaceAgent,
        "member" => Subject::User(Role::Member),
        "reader" | "auditor" => Subject::User(Role::Auditor),
        "admin" => Subject::User(Role::Admin),
        _ => return None,
    })
}

impl Tokens {
    /// Parses `ROLE=TOKEN[,ROLE=TOKEN...]`. Errors name the entry by position
    /// and role, never by token.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, part) in spec.split(',').enumerate() {
            let n = i + 1;
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((role, token)) = part.split_once('=') else {
                return Err(ConfigError(format!(
                    "--tokens entry {n}: expected ROLE=TOKEN (roles: proxy, agent, member, reader, admin)"
                )));
            };
            let role = role.trim().to_ascii_lowercase();
            let subject = role_subject(&role).ok_or_else(|| {
                ConfigError(format!(
                    "--tokens entry {n}: unknown role {role:?} (expected proxy, agent, member, reader or admin)"
                ))
            })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(ConfigError(format!("--tokens entry {n} ({role}): empty token")));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError(format!(
                    "--tokens entry {n} ({role}): token contains whitespace or control characters"
                )));
            }
            let proxy = match (subject, token.split_once(':')) {
                (Subject::WorkspaceProxy, Some((id, secret))) => match Uuid::parse_str(id) {
                    Ok(_) if secret.is_empty() => {
                        return Err(ConfigError(format!(
                            "--tokens entry {n} ({role}): PROXY_ID:SECRET with an empty secret"
                        )));
                    }
                    Ok(id) => Some((id, secret.as_bytes().to_vec())),
                    // Not Coder's form: a token that happens to hold a colon.
                    Err(_) => None,
                },
                _ => None,
            };
            if let Some(other) = entries.iter().find(|e| e.token == token.as_bytes()) {
                if other.subject != subject {
                    return Err(ConfigError(format!(
                        "--tokens entry {n} ({role}): the same token is already given to {}",
                        other.subject
                    )));
                }
                continue;
            }
            entries.push(Entry {
                token: token.as_bytes().to_vec(),
                subject,
                proxy,
            });
        }
        Ok(Self {
            entries: Arc::new(entries),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The configured subjects in order, each proxy token with the id it
    /// names; for logs and `tally config`.
    pub fn describe(&self) -> Vec<String> {
        self.entries.iter().map(Entry::describe).collect()
    }

    /// The subject of a presented token. Every configured token is compared,
    /// each in constant time, so timing says nothing about which one matched
    /// or how much of it did.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Subject> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = entry.token.as_slice().ct_eq(presented);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| self.entries[index as usize].subject)
    }

    /// Whether a proxy token matches Coder's `Coder-External-Proxy-Token`
    /// credential: one that names `id` with this secret, or one without an
    /// id that is this secret. Every proxy token is compared, in constant
    /// time.
    pub fn authenticate_proxy(&self, id: Uuid, secret: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for entry in self
            .entries
            .iter()
            .filter(|e| e.subject == Subject::WorkspaceProxy)
        {
            found |= match &entry.proxy {
                Some((named, own)) => own.as_slice().ct_eq(secret) & named.as_bytes().ct_eq(id.as_bytes()),
                None => entry.token.as_slice().ct_eq(secret),
            };
        }
        bool::from(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11";

    #[test]
    fn parses_roles_into_subjects() {
        let t = Tokens::parse("proxy=p1, agent=a1,reader=r1,admin=ad1,member=m1,auditor=r2").unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t.authenticate(b"p1"), Some(Subject::WorkspaceProxy));
        assert_eq!(t.authenticate(b"a1"), Some(Subject::WorkspaceAgent));
        assert_eq!(t.authenticate(b"r1"), Some(Subject::User(Role::Auditor)));
        assert_eq!(t.authenticate(b"r2"), Some(Subject::User(Role::Auditor)));
        assert_eq!(t.authenticate(b"ad1"), Some(Subject::User(Role::Admin)));
        assert_eq!(t.authenticate(b"m1"), Some(Subject::User(Role::Member)));
        assert_eq!(t.authenticate(b"p"), None);
        assert_eq!(t.authenticate(b"p1x"), None);
        assert_eq!(t.authenticate(b""), None);
    }

    #[test]
    fn empty_spec_means_no_tokens() {
        let t = Tokens::parse("").unwrap();
        assert!(t.is_empty());
        assert_eq!(t.authenticate(b""), None);
        assert!(!t.authenticate_proxy(Uuid::nil(), b""));
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_token() {
        for (spec, needle) in [
            ("proxy", "expected ROLE=TOKEN"),
            ("root=s3cretvalue", "unknown role"),
            ("proxy=", "empty token"),
            ("proxy=s3cret value", "whitespace"),
            ("proxy=s3cretvalue,admin=s3cretvalue", "already given"),
            (&format!("proxy={ID}:"), "empty secret"),
        ] {
            let err = Tokens::parse(spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(!err.contains("s3cret"), "{spec}: {err}");
        }
        let debug = format!("{:?}", Tokens::parse("admin=s3cret").unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_proxy_token_in_coders_form_names_its_proxy() {
        let t = Tokens::parse(&format!("proxy={ID}:s3cret,proxy=anyid")).unwrap();
        let id: Uuid = ID.parse().unwrap();
        let other = Uuid::new_v4();
        // The named token: only with its own id.
        assert!(t.authenticate_proxy(id, b"s3cret"));
        assert!(!t.authenticate_proxy(other, b"s3cret"));
        assert!(!t.authenticate_proxy(id, b"s3cre"));
        // The token without an id: with any id.
        assert!(t.authenticate_proxy(id, b"anyid"));
        assert!(t.authenticate_proxy(other, b"anyid"));
        // As a bearer token, each is the whole string as written.
        assert_eq!(
            t.authenticate(format!("{ID}:s3cret").as_bytes()),
            Some(Subject::WorkspaceProxy)
        );
        assert_eq!(t.authenticate(b"s3cret"), None);
        let debug = format!("{t:?}");
        assert!(debug.contains(ID) && !debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn only_proxy_tokens_answer_the_proxy_header() {
        let t = Tokens::parse(&format!("admin=adm,agent={ID}:agt")).unwrap();
        let id: Uuid = ID.parse().unwrap();
        assert!(!t.authenticate_proxy(id, b"adm"));
        assert!(!t.authenticate_proxy(id, b"agt"));
        // A colon in another role's token is just part of the token.
        assert_eq!(
            t.authenticate(format!("{ID}:agt").as_bytes()),
            Some(Subject::WorkspaceAgent)
        );
        // So is a colon after something that is not a UUID.
        let t = Tokens::parse("proxy=not-a-uuid:x").unwrap();
        assert_eq!(t.authenticate(b"not-a-uuid:x"), Some(Subject::WorkspaceProxy));
        assert!(!t.authenticate_proxy(Uuid::nil(), b"x"));
        assert!(t.describe() == ["workspace-proxy"]);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// One configured entry: role, the proxy id it names (an index into
    /// `IDS`), its secret.
    type Spec = (u8, Option<usize>, String);

    const IDS: [&str; 3] = [
        "5b0e5a2c-1f44-4c3f-9a57-0d7b1e2a9c11",
        "6c1f6b3d-2a55-4d40-8b68-1e8c2f3b0d22",
        "7d207c4e-3b66-4e51-9c79-2f9d3a4c1e33",
    ];

    fn role(r: u8) -> (&'static str, Subject) {
        match r % 3 {
            0 => ("proxy", Subject::WorkspaceProxy),
            1 => ("agent", Subject::WorkspaceAgent),
            _ => ("admin", Subject::User(Role::Admin)),
        }
    }

    /// The entry as `--tokens` takes it.
    fn written((r, id, secret): &Spec) -> String {
        let token = match id {
            Some(i) => format!("{}:{secret}", IDS[*i]),
            None => secret.clone(),
        };
        format!("{}={token}", role(*r).0)
    }

    fn entries() -> impl Strategy<Value = Vec<Spec>> {
        prop::collection::vec((0u8..3, prop::option::of(0usize..3), "[ab]{1,3}"), 0..6)
    }

    proptest! {
        /// Both ways of presenting a token agree with a plain model of the
        /// rules: a bearer token is a configured token as written; a proxy
        /// credential matches a proxy token naming that id with that secret,
        /// or a proxy token without an id that is that secret.
        #[test]
        fn matching_follows_the_written_rules(
            specs in entries(),
            id in 0usize..4,
            secret in "[ab]{1,3}",
            bearer in prop::option::of(0usize..6),
        ) {
            let spec = specs.iter().map(written).collect::<Vec<_>>().join(",");
            let Ok(tokens) = Tokens::parse(&spec) else {
                // Only one token given to two roles is refused.
                let clash = specs.iter().enumerate().any(|(i, a)| specs[..i].iter().any(|b| {
                    written(a).split_once('=').map(|x| x.1) == written(b).split_once('=').map(|x| x.1)
                        && role(a.0).1 != role(b.0).1
                }));
                prop_assert!(clash, "{spec}");
                return Ok(());
            };
            let presented_id: Uuid = IDS.get(id).map_or_else(Uuid::nil, |s| s.parse().unwrap());
            let model = specs.iter().any(|(r, named, own)| {
                role(*r).1 == Subject::WorkspaceProxy
                    && *own == secret
                    && named.is_none_or(|i| IDS[i].parse::<Uuid>().unwrap() == presented_id)
            });
            prop_assert_eq!(tokens.authenticate_proxy(presented_id, secret.as_bytes()), model, "{}", spec);

            let presented = match bearer.and_then(|i| specs.get(i)) {
                Some(s) => written(s).split_once('=').unwrap().1.to_owned(),
                None => secret.clone(),
            };
            let model = specs
                .iter()
                .find(|s| written(s).split_once('=').unwrap().1 == presented)
                .map(|s| role(s.0).1);
            prop_assert_eq!(tokens.authenticate(presented.as_bytes()), model, "{}", spec);
        }
    }
}
