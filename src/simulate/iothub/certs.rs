//! Certificates for the emulator, made at start with rcgen: a CA, a server
//! certificate for loopback names and addresses, and device certificates for
//! X.509 identities.

use crate::simulate::EmulatorError;
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::net::IpAddr;

/// The emulator's CA (kept to issue device certificates).
pub(crate) struct Authority {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) key_der: Vec<u8>,
}

impl Authority {
    /// A fresh CA.
    pub(crate) fn new() -> Result<Authority, EmulatorError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "iomt-edge IoT Hub emulator CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|error| EmulatorError::CertificateStep { what: "cannot generate the CA key", error })?;
        let cert = p.self_signed(&key).map_err(|error| EmulatorError::CertificateStep { what: "cannot sign the CA", error })?;
        Ok(Authority { cert, key })
    }

    /// The CA certificate, PEM (what clients trust).
    pub(crate) fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub(crate) fn ca_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    fn issue(&self, cn: &str, dns: Vec<String>, ips: &[IpAddr], server: bool) -> Result<Issued, EmulatorError> {
        let mut p = CertificateParams::new(dns)?;
        for ip in ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_der: cert.der().to_vec(), key_der: key.serialize_der() })
    }

    /// A server certificate for `names` (DNS) and `ips`.
    pub(crate) fn server(&self, names: &[String], ips: &[IpAddr]) -> Result<Issued, EmulatorError> {
        self.issue("iomt-edge emulator", names.to_vec(), ips, true)
    }

    /// A device (client) certificate whose CN is the device id.
    pub(crate) fn device(&self, device_id: &str) -> Result<Issued, EmulatorError> {
        self.issue(device_id, Vec::new(), &[], false)
    }
}
