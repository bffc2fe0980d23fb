//! Configuration: where settings come from (flags, `TALLY_` environment,
//! the `--config` file, defaults: `layers.rs`, `file.rs`), `tally config`
//! (`show.rs`), and the checks done after parsing: API tokens, URLs.
//!
//! A [`ConfigError`] ends the program at once with one line and exit code 2.

mod file;
mod layers;
mod show;
mod tokens;

pub use layers::{Effective, LoadError, Loaded, Origin, Setting, load};
pub use show::render;
pub use tokens::{Tokens, role_subject};

/// A configuration problem: the program cannot start. The message never
/// contains secrets.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

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
