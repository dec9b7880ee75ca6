//! TLS client settings: system roots plus an optional extra CA file (IoT Edge
//! parent, local emulator), and an optional X.509 client certificate.
//!
//! rumqttc 0.24 is built on rustls 0.22, so this uses its re-exported rustls.

use anyhow::Context;
use rumqttc::tokio_rustls::rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read certificate file {}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    crate::config::secret::warn_if_world_readable(path);
    let pem = std::fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{} is not a PEM key file", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}

/// Builds the client TLS configuration.
///
/// `system_roots` adds the operating system's trust store; `extra_ca` a PEM
/// file; `client_auth` a (certificate chain, key) pair for X.509 identities.
pub fn client_config(system_roots: bool, extra_ca: Option<&Path>, client_auth: Option<(&Path, &Path)>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
    }
    if let Some(ca) = extra_ca {
        for c in read_certs(ca)? {
            roots.add(c).with_context(|| format!("{} holds a certificate rustls cannot use", ca.display()))?;
        }
    }
    anyhow::ensure!(!roots.is_empty(), "no trusted CA certificates (system store empty and no ca_file)");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match client_auth {
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).context("the client certificate and key do not match")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
