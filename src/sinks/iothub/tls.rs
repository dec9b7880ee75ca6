//! TLS client settings: system roots plus an optional extra CA file (IoT Edge
//! parent, local emulator), and an optional X.509 client certificate.
//!
//! rumqttc 0.24 is built on rustls 0.22, so this uses its re-exported rustls.

use rumqttc::tokio_rustls::rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS settings could not be built; each names the file at fault.
/// The text carries its cause, so `{e}` and `{e:#}` read the same.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error("cannot read certificate file {}: {cause}", path.display())]
    ReadCertificates { path: PathBuf, cause: std::io::Error },
    /// A certificate file is not PEM.
    #[error("{} is not a PEM certificate file: {cause}", path.display())]
    NotPemCertificates { path: PathBuf, cause: std::io::Error },
    /// A PEM file without a certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// A key file could not be read.
    #[error("cannot read key file {}: {cause}", path.display())]
    ReadKey { path: PathBuf, cause: std::io::Error },
    /// A key file is not PEM.
    #[error("{} is not a PEM key file: {cause}", path.display())]
    NotPemKey { path: PathBuf, cause: std::io::Error },
    /// A PEM file without a private key.
    #[error("{} holds no private key", path.display())]
    NoKey { path: PathBuf },
    /// A CA certificate rustls refuses.
    #[error("{} holds a certificate rustls cannot use: {cause}", path.display())]
    UnusableCa { path: PathBuf, cause: rustls::Error },
    /// Nothing to trust: no system store and no CA file.
    #[error("no trusted CA certificates (system store empty and no ca_file)")]
    NoTrustedCa,
    /// The client certificate and key are not a pair.
    #[error("the client certificate and key do not match: {cause}")]
    CertificateKeyMismatch { cause: rustls::Error },
}

/// Reads every certificate of a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|cause| TlsError::ReadCertificates { path: path.into(), cause })?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|cause| TlsError::NotPemCertificates { path: path.into(), cause })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    crate::config::secret::warn_if_world_readable(path);
    let pem = std::fs::read(path).map_err(|cause| TlsError::ReadKey { path: path.into(), cause })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|cause| TlsError::NotPemKey { path: path.into(), cause })?
        .ok_or_else(|| TlsError::NoKey { path: path.into() })
}

/// Builds the client TLS configuration.
///
/// `system_roots` adds the operating system's trust store; `extra_ca` a PEM
/// file; `client_auth` a (certificate chain, key) pair for X.509 identities.
pub fn client_config(
    system_roots: bool,
    extra_ca: Option<&Path>,
    client_auth: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
    }
    if let Some(ca) = extra_ca {
        for c in read_certs(ca)? {
            roots.add(c).map_err(|cause| TlsError::UnusableCa { path: ca.into(), cause })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustedCa);
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match client_auth {
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(|cause| TlsError::CertificateKeyMismatch { cause })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
