//! Shared access signatures (IoT Hub and DPS) and DPS group-key derivation.
//!
//! Pure functions: `sig = b64(HMAC-SHA256(b64decode(key), enc(sr) + "\n" + se))`.
//! Checked against the reference test vectors in the tests below.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A SAS problem (never contains key material).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error("the key is not valid base64")]
    BadKey,
    #[error("the token is not a SharedAccessSignature")]
    NotSas,
    #[error("the token lacks `{0}`")]
    Missing(&'static str),
    #[error("the token's `se` is not a number")]
    BadExpiry,
}

/// HMAC-SHA256 with a base64 key, base64 output.
pub(crate) fn hmac_b64(key_b64: &str, data: &[u8]) -> Result<String, SasError> {
    let key = B64.decode(key_b64.trim()).map_err(|_| SasError::BadKey)?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SasError::BadKey)?;
    mac.update(data);
    Ok(B64.encode(mac.finalize().into_bytes()))
}

/// The signature (base64, not URL-encoded) over an already URL-encoded resource.
pub(crate) fn signature(key_b64: &str, encoded_resource: &str, expiry: u64) -> Result<String, SasError> {
    hmac_b64(key_b64, format!("{encoded_resource}\n{expiry}").as_bytes())
}

/// A complete token: `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`.
pub fn token(key_b64: &str, resource: &str, expiry: u64, key_name: Option<&str>) -> Result<String, SasError> {
    let sr = urlencoding::encode(resource).into_owned();
    let sig = signature(key_b64, &sr, expiry)?;
    let mut t = format!("SharedAccessSignature sr={sr}&sig={}&se={expiry}", urlencoding::encode(&sig));
    if let Some(n) = key_name {
        t.push_str("&skn=");
        t.push_str(&urlencoding::encode(n));
    }
    Ok(t)
}

/// DPS group enrollment: the device key is `b64(HMAC-SHA256(b64decode(groupKey), regId))`.
pub(crate) fn derive_device_key(group_key_b64: &str, registration_id: &str) -> Result<String, SasError> {
    hmac_b64(group_key_b64, registration_id.as_bytes())
}

/// A token taken apart (for the emulator's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedToken {
    /// `sr` exactly as received (still URL-encoded).
    pub(crate) sr_encoded: String,
    /// `sr` decoded.
    pub(crate) resource: String,
    /// `sig` decoded (base64).
    pub(crate) sig: String,
    /// Expiry, Unix seconds.
    pub(crate) expiry: u64,
    /// Policy name.
    pub(crate) skn: Option<String>,
}

/// Parses `SharedAccessSignature sr=..&sig=..&se=..`.
pub(crate) fn parse_token(t: &str) -> Result<ParsedToken, SasError> {
    let rest = t.trim().strip_prefix("SharedAccessSignature ").ok_or(SasError::NotSas)?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for kv in rest.split('&') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        match k {
            "sr" => sr = Some(v.to_string()),
            "sig" => sig = Some(v.to_string()),
            "se" => se = Some(v.to_string()),
            "skn" => skn = Some(v.to_string()),
            _ => {}
        }
    }
    let sr = sr.ok_or(SasError::Missing("sr"))?;
    let sig = sig.ok_or(SasError::Missing("sig"))?;
    let se = se.ok_or(SasError::Missing("se"))?;
    let decode = |s: &str| urlencoding::decode(s).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_string());
    Ok(ParsedToken {
        resource: decode(&sr),
        sig: decode(&sig),
        expiry: se.parse().map_err(|_| SasError::BadExpiry)?,
        skn: skn.map(|s| decode(&s)),
        sr_encoded: sr,
    })
}

/// Checks a parsed token's signature against a key, recomputing over `sr`
/// exactly as received. Constant-time comparison.
#[cfg(test)]
pub(crate) fn verify(tok: &ParsedToken, key_b64: &str) -> bool {
    let Ok(key) = B64.decode(key_b64.trim()) else { return false };
    let Ok(mut mac) = HmacSha256::new_from_slice(&key) else { return false };
    mac.update(format!("{}\n{}", tok.sr_encoded, tok.expiry).as_bytes());
    let Ok(sig) = B64.decode(&tok.sig) else { return false };
    mac.verify_slice(&sig).is_ok()
}

/// Current Unix time in seconds.
pub use crate::model::time::unix_s as now_unix;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iothub_sas_reference_vector() {
        let key = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
        let t = token(key, "pontifex.azure-devices.net/devices/FirstDevice", 1593353305, None).unwrap();
        assert_eq!(
            t,
            "SharedAccessSignature sr=pontifex.azure-devices.net%2Fdevices%2FFirstDevice&sig=CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc%3D&se=1593353305"
        );
        let p = parse_token(&t).unwrap();
        assert_eq!(p.resource, "pontifex.azure-devices.net/devices/FirstDevice");
        assert!(verify(&p, key));
        assert!(!verify(&p, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        let mut tampered = p.clone();
        tampered.expiry += 1;
        assert!(!verify(&tampered, key));
    }

    #[test]
    fn dps_group_key_reference_vector() {
        let k = derive_device_key(
            "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
        )
        .unwrap();
        assert_eq!(k, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(token("not base64!", "r", 1, None), Err(SasError::BadKey));
        assert_eq!(parse_token("Bearer x"), Err(SasError::NotSas));
        assert_eq!(parse_token("SharedAccessSignature sr=a&sig=b"), Err(SasError::Missing("se")));
        assert!(token("AAAA", "0ne/registrations/r", 5, Some("registration")).unwrap().ends_with("&skn=registration"));
    }
}
