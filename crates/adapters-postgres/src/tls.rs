//! TLS to PostgreSQL: `sslmode` and `sslrootcert` resolved the way libpq
//! does, on top of what sqlx's [`PgConnectOptions`] does with them.
//!
//! sqlx parses both parameters but, unlike libpq, treats `allow` as
//! `disable`, does not verify under `require` when a root CA file is given,
//! verifies `verify-ca`/`verify-full` against its built-in public roots when
//! no CA is given, reads `sslrootcert=system` as a file name, and silently
//! ignores TLS parameters it does not know. [`ConnectPlan::from_url`] closes
//! those gaps; README.md lists what still differs.

mod failure;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tally_domain::error::StoreError;

pub use failure::TlsFailure;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(raw: &str) -> Result<Self, StoreError> {
        Ok(match raw {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(config(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    fn as_sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Allow => PgSslMode::Allow,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// The CAs the server certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// A PEM bundle (`sslrootcert=FILE`, or libpq's default
    /// `~/.postgresql/root.crt` when it exists).
    File(PathBuf),
    /// `sslrootcert=system`: the public CAs built into the binary.
    System,
    None,
}

/// URL parameters sqlx would drop with a warning although they ask for a
/// check or a behaviour tally cannot give: refused rather than ignored. The
/// second field is the one value that means "as without the parameter".
const UNSUPPORTED: &[(&str, Option<&str>)] = &[
    ("sslcrl", None),
    ("sslcrldir", None),
    ("sslpassword", None),
    ("sslnegotiation", Some("postgres")),
    ("sslcertmode", Some("allow")),
    ("requiressl", None),
];

/// How to connect: the options for the first attempt and, for
/// `sslmode=allow`, the TLS options to retry with when the server refuses a
/// connection without TLS.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    pub mode: SslMode,
    pub options: PgConnectOptions,
    pub tls_fallback: Option<PgConnectOptions>,
}

impl ConnectPlan {
    /// Resolves a `postgres://` URL, with libpq's environment variables
    /// (`PGSSLMODE`, `PGSSLROOTCERT`) and `HOME` for the default root file.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        Self::resolve(url, &|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn resolve(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        let mut url = url::Url::parse(raw).map_err(|e| config(format!("bad database URL: {e}")))?;
        let mut sslmode = None;
        let mut rootcert = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" | "ssl-mode" => sslmode = Some(value.into_owned()),
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => rootcert = Some(value.into_owned()),
                "sslcert" | "ssl-cert" | "sslkey" | "ssl-key" => {
                    readable(&key, Path::new(&*value))?;
                    kept.push((key.into_owned(), value.into_owned()));
                }
                "ssl_min_protocol_version" if !matches!(&*value, "TLSv1" | "TLSv1.1" | "TLSv1.2") => {
                    return Err(config(format!(
                        "ssl_min_protocol_version={value} is not supported (TLS 1.2 is always the minimum)"
                    )));
                }
                k if unsupported(k, &value) => {
                    return Err(config(format!(
                        "the database URL parameter {k} is not supported by tally's PostgreSQL client"
                    )));
                }
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        // sqlx reads its own copy of the TLS settings; hand it only ours.
        url.query_pairs_mut().clear().extend_pairs(&kept);
        if kept.is_empty() {
            url.set_query(None);
        }
        let options =
            PgConnectOptions::from_str(url.as_str()).map_err(|e| config(format!("bad database URL: {e}")))?;

        let rootcert = rootcert.or_else(|| env("PGSSLROOTCERT"));
        let roots = match rootcert.as_deref() {
            Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
            None => match env("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt")) {
                Some(default) if default.is_file() => Roots::File(default),
                _ => Roots::None,
            },
        };
        let mode = match sslmode.or_else(|| env("PGSSLMODE")) {
            Some(raw) => SslMode::parse(&raw)?,
            // With the public roots libpq defaults to, and insists on, full checks.
            None if roots == Roots::System => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if roots == Roots::System && mode != SslMode::VerifyFull {
            return Err(config(format!(
                "sslrootcert=system needs sslmode=verify-full (a weaker sslmode {} would trust any server)",
                mode_name(mode)
            )));
        }
        // libpq never uses TLS over a Unix socket.
        if options.get_socket().is_some() || options.get_host().starts_with('/') {
            return Ok(Self {
                mode,
                options: options.ssl_mode(PgSslMode::Disable),
                tls_fallback: None,
            });
        }
        // With a CA file, libpq verifies under `require` as under `verify-ca`.
        let tls_mode = match (mode, &roots) {
            (SslMode::Require | SslMode::Allow, Roots::File(_)) => SslMode::VerifyCa,
            (SslMode::Allow, _) => SslMode::Require,
            (m, _) => m,
        };
        if tls_mode.verifies() {
            match &roots {
                Roots::File(path) => check_bundle(path)?,
                Roots::System => {}
                Roots::None => {
                    return Err(config(format!(
                        "sslmode={} needs the CA that signed the server's certificate: give sslrootcert=FILE \
                         (or put it in ~/.postgresql/root.crt), use sslrootcert=system for a publicly trusted \
                         certificate, or use sslmode=require to encrypt without verifying",
                        mode_name(mode)
                    )));
                }
            }
        }
        let tls = match &roots {
            Roots::File(path) => options.clone().ssl_root_cert(path),
            // sqlx always trusts its built-in public roots; an empty bundle
            // adds nothing to them (and drops a PGSSLROOTCERT it read).
            Roots::System | Roots::None => options.clone().ssl_root_cert_from_pem(Vec::new()),
        }
        .ssl_mode(tls_mode.as_sqlx());
        Ok(if mode == SslMode::Allow {
            Self {
                mode,
                options: options.ssl_mode(PgSslMode::Disable),
                tls_fallback: Some(tls),
            }
        } else {
            Self {
                mode,
                options: tls,
                tls_fallback: None,
            }
        })
    }
}

fn unsupported(key: &str, value: &str) -> bool {
    UNSUPPORTED
        .iter()
        .any(|(k, harmless)| *k == key && *harmless != Some(value))
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

fn readable(param: &str, path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| config(format!("{param} {}: cannot read it: {e}", path.display())))
}

/// The CA bundle must hold at least one PEM certificate: a wrong file would
/// otherwise show only as an untrusted server.
fn check_bundle(path: &Path) -> Result<(), StoreError> {
    let what = format!("sslrootcert {}", path.display());
    let pem = std::fs::read(path).map_err(|e| config(format!("{what}: cannot read it: {e}")))?;
    let mut certs = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| config(format!("{what}: not a PEM certificate bundle ({e})")))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(config(format!("{what}: holds no PEM certificate")));
    }
    Ok(())
}

fn config(message: String) -> StoreError {
    StoreError::other(message)
}

#[cfg(test)]
mod tests;
