//! Telling a TLS failure from a database that is down.

use rustls::{CertificateError, Error as RustlsError};

/// A TLS problem connecting to PostgreSQL. Every one is a matter of
/// configuration (certificates, `sslmode`, the server's `pg_hba.conf`), so it
/// is never retried as if the database were unreachable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    #[error(
        "TLS: the server's certificate is not trusted ({0}): the CA that signed it must be in \
         sslrootcert (with sslrootcert=system: a public CA)"
    )]
    NotTrusted(String),
    #[error(
        "TLS: hostname mismatch: {0} (connect by a name the certificate carries; in this build \
         sslmode=verify-ca checks the name as well)"
    )]
    HostnameMismatch(String),
    #[error("TLS: the server's certificate is invalid: {0}")]
    BadCertificate(String),
    #[error(
        "TLS: the server requires TLS and refused a connection without it: use sslmode=require or \
         stronger (server: {0})"
    )]
    ServerRequiresTls(String),
    #[error("TLS: the server does not support TLS, but sslmode requires it")]
    ServerWithoutTls,
    #[error("TLS: handshake failed: {0}")]
    Handshake(String),
}

impl TlsFailure {
    /// The TLS failure `e` stands for, if it is one.
    pub fn of(e: &sqlx::Error) -> Option<Self> {
        match e {
            // sqlx's own wording when the server answers the TLS request with "no".
            sqlx::Error::Tls(inner) if inner.to_string() == "server does not support TLS" => {
                Some(Self::ServerWithoutTls)
            }
            sqlx::Error::Tls(inner) => Some(Self::Handshake(inner.to_string())),
            // The handshake runs inside socket I/O: rustls errors arrive wrapped.
            sqlx::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<RustlsError>())
                .map(Self::from_rustls),
            // pg_hba.conf has only `hostssl` lines for this client; the
            // message's last part says which encryption was tried.
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("28000") && db.message().ends_with("no encryption") =>
            {
                Some(Self::ServerRequiresTls(db.message().to_owned()))
            }
            _ => None,
        }
    }

    pub fn from_rustls(e: &RustlsError) -> Self {
        let detail = e.to_string();
        match e {
            RustlsError::InvalidCertificate(CertificateError::UnknownIssuer) => Self::NotTrusted(detail),
            RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Self::HostnameMismatch(detail),
            RustlsError::InvalidCertificate(_) => Self::BadCertificate(detail),
            _ => Self::Handshake(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: RustlsError) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn certificate_errors_are_told_apart() {
        let untrusted = TlsFailure::of(&io(CertificateError::UnknownIssuer.into())).unwrap();
        assert!(matches!(untrusted, TlsFailure::NotTrusted(_)), "{untrusted}");
        assert!(untrusted.to_string().contains("not trusted"), "{untrusted}");
        let mismatch = TlsFailure::of(&io(CertificateError::NotValidForName.into())).unwrap();
        assert!(matches!(mismatch, TlsFailure::HostnameMismatch(_)), "{mismatch}");
        let expired = TlsFailure::of(&io(CertificateError::Expired.into())).unwrap();
        assert!(matches!(expired, TlsFailure::BadCertificate(_)), "{expired}");
        let alert = TlsFailure::of(&io(RustlsError::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        )))
        .unwrap();
        assert!(matches!(alert, TlsFailure::Handshake(_)), "{alert}");
    }

    #[test]
    fn plain_connection_trouble_is_no_tls_failure() {
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(TlsFailure::of(&refused), None);
        assert_eq!(TlsFailure::of(&sqlx::Error::PoolTimedOut), None);
        assert_eq!(
            TlsFailure::of(&sqlx::Error::Tls("server does not support TLS".into())),
            Some(TlsFailure::ServerWithoutTls)
        );
    }
}
