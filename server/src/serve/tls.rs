//! TLS: the rustls server configuration (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`),
//! loaded from PEM files or made at start for development, and the [`Handshake`] that
//! tells which HTTP the client chose.

use super::accept::{Handshake, Protocol};
use crate::config::TlsSource;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why TLS cannot be set up; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the key {key} does not match the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// A development certificate for `localhost`, `127.0.0.1` and `::1`, as PEM, with
/// the SHA-256 fingerprint of its DER form (`AB:CD:...`).
pub fn self_signed() -> Result<(TlsSource, String), TlsError> {
    let names = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    let certified = rcgen::generate_simple_self_signed(names)?;
    let fingerprint = fingerprint(certified.cert.der());
    Ok((
        TlsSource::Pem {
            cert: certified.cert.pem(),
            key: certified.signing_key.serialize_pem(),
        },
        fingerprint,
    ))
}

/// SHA-256 of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The rustls configuration for `source`: TLS 1.2 and 1.3 (rustls' defaults), ALPN
/// `h2` then `http/1.1`.
pub fn server_config(source: &TlsSource) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certs, key, cert_path, key_path) = match source {
        TlsSource::Files { cert, key } => {
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            (
                parse_certs(&cert_pem, cert)?,
                parse_key(&key_pem, key)?,
                cert.clone(),
                key.clone(),
            )
        }
        TlsSource::Pem { cert, key } => {
            let mem = PathBuf::from("<self-signed>");
            (
                parse_certs(cert.as_bytes(), &mem)?,
                parse_key(key.as_bytes(), &mem)?,
                mem.clone(),
                mem,
            )
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|reason| TlsError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|reason| TlsError::Mismatch {
            cert: cert_path,
            key: key_path,
            reason,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoKey {
        path: path.to_owned(),
    })
}

/// TLS, then the HTTP the client chose by ALPN (HTTP/1.1 when it chose none).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl Tls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Tls {
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl Handshake for Tls {
    type Io = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<(Self::Io, Protocol)> {
        let tls = self.acceptor.accept(tcp).await?;
        let protocol = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Ok((tls, protocol))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_loads_and_files_name_themselves_in_errors() {
        let (source, fp) = self_signed().unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        let config = server_config(&source).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let dir = std::env::temp_dir().join(format!("sse-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = server_config(&TlsSource::Files {
            cert: missing.clone(),
            key: missing.clone(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let err = server_config(&TlsSource::Files {
            cert: garbage.clone(),
            key: garbage.clone(),
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

        // A key from another certificate.
        let (TlsSource::Pem { cert, .. }, _) = self_signed().unwrap() else {
            unreachable!()
        };
        let (TlsSource::Pem { key, .. }, _) = self_signed().unwrap() else {
            unreachable!()
        };
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let err = server_config(&TlsSource::Files { cert: c, key: k }).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
