//! TLS for the snapshot sink: which CAs are trusted, a handshake check at
//! start-up, and what a TLS failure is called. (PostgreSQL's TLS is
//! configured by the database URL; see `tally_adapters_postgres::ConnectPlan`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::config::ConfigError;

/// A client configuration trusting the CAs of `ca_file` (PEM) alone, or the
/// public CAs built into the binary (Mozilla's list) without it.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, ConfigError> {
    let roots = match ca_file {
        Some(path) => {
            let what = format!("--telemetry-ca-file {}", path.display());
            let pem = std::fs::read(path).map_err(|e| ConfigError(format!("{what}: cannot read it: {e}")))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| ConfigError(format!("{what}: not a PEM certificate bundle ({e})")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError(format!("{what}: unusable certificate ({e})")))?;
            }
            if roots.is_empty() {
                return Err(ConfigError(format!("{what}: holds no PEM certificate")));
            }
            roots
        }
        None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The rustls error somewhere in `e`'s chain. Handshake errors travel inside
/// (nested) `std::io::Error`s, whose `source` skips the error they wrap.
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What a TLS failure with the sink is, in words an operator can act on.
pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the sink's certificate is not trusted ({e}): give the CA that signed it with --telemetry-ca-file"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("TLS: hostname mismatch: {e}"),
        rustls::Error::InvalidCertificate(_) => format!("TLS: the sink's certificate is invalid: {e}"),
        _ => format!("TLS: handshake failed ({e}): is it an https endpoint?"),
    }
}

/// How long the start-up check waits for the sink's TCP connection and for
/// its TLS handshake, each.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to an `https` URL's host and runs a TLS handshake, sending no
/// request: a certificate the configuration rejects is a configuration
/// error (exit 2). A sink that is not reachable yet is logged and let be:
/// snapshots wait in the outbox until it is.
pub async fn check_handshake(url: &url::Url, config: Arc<ClientConfig>) -> Result<(), ConfigError> {
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Ok(());
    };
    let name = match host {
        url::Host::Domain(d) => ServerName::try_from(d.to_owned()),
        url::Host::Ipv4(ip) => Ok(ServerName::from(std::net::IpAddr::V4(ip))),
        url::Host::Ipv6(ip) => Ok(ServerName::from(std::net::IpAddr::V6(ip))),
    }
    .map_err(|e| ConfigError(format!("--telemetry-url {url}: not a TLS server name ({e})")))?;
    let addr = (url.host_str().unwrap_or_default().trim_matches(['[', ']']), port);
    let tcp = match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return not_reachable_yet(url, &e.to_string()),
        Err(_) => return not_reachable_yet(url, "no answer within 5s"),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(CHECK_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match rustls_error(&e) {
            Some(tls) => Err(ConfigError(format!("--telemetry-url {url}: {}", describe(tls)))),
            None => not_reachable_yet(url, &e.to_string()),
        },
        Err(_) => not_reachable_yet(url, "no TLS handshake within 5s"),
    }
}

/// No error: snapshots wait in the outbox until the sink is reachable.
fn not_reachable_yet(url: &url::Url, why: &str) -> Result<(), ConfigError> {
    tracing::warn!(%url, error = why, "snapshot sink not reachable at start-up; its TLS is checked on the first delivery");
    Ok(())
}

#[cfg(test)]
mod tests;
