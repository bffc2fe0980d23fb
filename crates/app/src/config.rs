//! Configuration checks done after parsing: API tokens, URLs.
//!
//! A [`ConfigError`] ends the program at once with one line and exit code 2.

use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};
use tally_domain::authz::{Role, Subject};

/// A configuration problem: the program cannot start. The message never
/// contains secrets.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The API tokens and the subjects they stand for.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<(Vec<u8>, Subject)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subjects: Vec<String> = self.entries.iter().map(|(_, s)| s.to_string()).collect();
        f.debug_struct("Tokens").field("subjects", &subjects).finish()
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
        let mut entries: Vec<(Vec<u8>, Subject)> = Vec::new();
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
            if let Some((_, other)) = entries.iter().find(|(t, _)| t == token.as_bytes()) {
                if *other != subject {
                    return Err(ConfigError(format!(
                        "--tokens entry {n} ({role}): the same token is already given to {other}"
                    )));
                }
                continue;
            }
            entries.push((token.as_bytes().to_vec(), subject));
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

    /// The subject of a presented token. Every configured token is compared,
    /// each in constant time, so timing says nothing about which one matched
    /// or how much of it did.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Subject> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (token, _)) in self.entries.iter().enumerate() {
            let eq = token.as_slice().ct_eq(presented);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| self.entries[index as usize].1)
    }
}

/// Checks a PostgreSQL URL without echoing it (it may hold a password).
pub fn check_database_url(raw: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(raw).map_err(|e| ConfigError(format!("--database-url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(ConfigError(format!(
            "--database-url must start with postgres:// or postgresql://, got scheme {:?}",
            url.scheme()
        )));
    }
    Ok(())
}

/// A database URL fit for logs: scheme, host, port and database only.
pub fn redact_database_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("localhost");
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", url.scheme(), url.path())
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Checks the telemetry sink URL: http or https with a host.
pub fn check_telemetry_url(raw: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(raw)
        .map_err(|e| ConfigError(format!("--telemetry-url {raw:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError(format!(
            "--telemetry-url must be an http:// or https:// URL with a host, got {raw:?}"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_token() {
        for (spec, needle) in [
            ("proxy", "expected ROLE=TOKEN"),
            ("root=s3cretvalue", "unknown role"),
            ("proxy=", "empty token"),
            ("proxy=s3cret value", "whitespace"),
            ("proxy=s3cretvalue,admin=s3cretvalue", "already given"),
        ] {
            let err = Tokens::parse(spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(!err.contains("s3cret"), "{spec}: {err}");
        }
        let debug = format!("{:?}", Tokens::parse("admin=s3cret").unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn database_urls_are_checked_and_redacted() {
        check_database_url("postgres://u:pw@localhost:5432/tally").unwrap();
        check_database_url("postgresql:///tally?host=/tmp").unwrap();
        let err = check_database_url("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(err.contains("postgres://") && !err.contains("pw"), "{err}");
        assert!(check_database_url("not a url").is_err());
        assert_eq!(
            redact_database_url("postgres://u:pw@db.example:5433/tally?sslmode=disable"),
            "postgres://db.example:5433/tally"
        );
    }

    #[test]
    fn telemetry_urls_are_http() {
        assert!(check_telemetry_url("http://127.0.0.1:9000/snapshots").is_ok());
        assert!(check_telemetry_url("ftp://x/").is_err());
        assert!(check_telemetry_url("nonsense").is_err());
    }
}
