//! Keeping patient data out of logs: patient ids and device addresses are
//! replaced by short keyed hashes at info level and above.
//!
//! The hash is stable for a gateway (so two log lines about one device can be
//! matched) but cannot be reversed without the gateway's id.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

static SALT: OnceLock<String> = OnceLock::new();

/// Sets the salt (the gateway id) once at start-up.
pub(crate) fn init(salt: &str) {
    let _ = SALT.set(salt.to_string());
}

fn hash(kind: &str, s: &str) -> String {
    let salt = SALT.get().map(String::as_str).unwrap_or("iomt-edge");
    let d = Sha256::digest(format!("{salt}\u{0}{kind}\u{0}{s}").as_bytes());
    hex::encode(&d[..4])
}

/// `patient#1a2b3c4d`
pub(crate) fn patient(id: &str) -> String {
    format!("patient#{}", hash("patient", id))
}

/// `addr#1a2b3c4d` for a device address (BLE MAC, serial number).
pub(crate) fn address(addr: &str) -> String {
    format!("addr#{}", hash("address", addr))
}

/// A device id for logs: kept when it is a configured alias, hashed when it
/// looks like an address (it was derived from a MAC).
pub(crate) fn device(id: &str) -> String {
    let looks_like_mac = id.len() >= 17 && id.chars().filter(|c| *c == ':' || *c == '_' || *c == '-').count() >= 5;
    if looks_like_mac {
        address(id)
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_addresses_and_patients() {
        let a = device("AA:BB:CC:DD:EE:FF");
        assert!(a.starts_with("addr#") && !a.contains("AA:BB"));
        assert_eq!(device("strap-1"), "strap-1");
        let p = patient("PatientMary");
        assert!(!p.contains("Mary"));
        assert_eq!(p, patient("PatientMary"));
    }
}
