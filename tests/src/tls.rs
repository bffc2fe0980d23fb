//! Certificates made in the test (rcgen): a CA, server certificates it
//! signs, and an HTTPS listener for axum that presents one.
//!
//! ```no_run
//! # async fn demo() {
//! use tally_tests::tls::TestCa;
//! let ca = TestCa::new("tally test CA");
//! let cert = ca.issue(&["localhost", "127.0.0.1"]);
//! let listener = cert.https_listener().await;
//! // clients trust `ca.path()` (a PEM file); `listener` goes to axum::serve.
//! # drop(listener);
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A certificate authority of the test's own; its certificate is written to
/// a PEM file in a temporary directory that lives as long as the value.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named `name` (its common name), with a fresh key.
    ///
    /// # Panics
    /// When the certificate cannot be made or written (a broken test machine).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        Self {
            cert,
            key,
            path,
            _dir: Some(dir),
        }
    }

    /// The same CA with its PEM file at `path` instead, which the caller
    /// removes; the temporary directory goes.
    pub fn moved_to(mut self, path: PathBuf) -> std::io::Result<Self> {
        std::fs::write(&path, self.cert.pem())?;
        self.path = path;
        self._dir = None;
        Ok(self)
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A PEM file holding the CA certificate (for `sslrootcert`, a CA option).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A server certificate signed by this CA for `names`, each a DNS name or
    /// an IP address (subject alternative names; the first is also the
    /// common name).
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A server certificate and its private key, both PEM (the key PKCS#8).
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ServerCert {
    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Arc::new(config)
    }

    /// A listener on a free loopback port that speaks TLS with this
    /// certificate; give it to `axum::serve`.
    pub async fn https_listener(&self) -> HttpsListener {
        HttpsListener {
            tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tls: TlsAcceptor::from(self.server_config()),
            failed_handshakes: Arc::default(),
        }
    }
}

/// An axum listener whose connections are TLS. A handshake that fails (the
/// client does not trust the certificate) drops that connection only.
pub struct HttpsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
    failed_handshakes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl HttpsListener {
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }

    /// Counts the connections whose TLS handshake failed (the client
    /// refused the certificate); read it after the listener moved to axum.
    pub fn failed_handshakes(&self) -> Arc<AtomicUsize> {
        self.failed_handshakes.clone()
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            match self.tls.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
