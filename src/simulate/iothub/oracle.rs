//! What the emulated hub checks, written for the emulator alone: shared
//! access signatures (IoT Hub and DPS), DPS group-key derivation, and the
//! topics a device may publish to.
//!
//! Why not the sink's own `sas` and `topics` modules: an emulator that
//! verifies the gateway with the gateway's code would accept whatever that
//! code gets wrong. These functions follow the documents instead (Azure IoT
//! Hub, "Control access to IoT Hub with shared access signatures": the token
//! is `SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded
//! base64 HMAC-SHA256}&se={expiry, Unix s}[&skn={policy}]`, the string to
//! sign is the encoded resource, a newline and the expiry, the key is
//! base64; DPS, "Symmetric key attestation": a device key in a group is the
//! base64 HMAC-SHA256 of the registration id under the group key; "Communicate
//! with an IoT hub using the MQTT protocol" for the topics), and Microsoft's
//! azure-iot-device SDK talks to the emulator in `tests/integration/iothub_sdk_fidelity.rs`,
//! which keeps both honest.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A presented SAS token, split into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresentedToken {
    /// `sr` as sent (still URL-encoded): what was signed.
    pub(crate) signed_resource: String,
    /// `sr` decoded: the resource the token grants.
    pub(crate) resource: String,
    /// `sig` decoded from URL and base64 encoding: the 32-byte MAC.
    pub(crate) mac: Vec<u8>,
    /// `se`: expiry, Unix seconds.
    pub(crate) expires: u64,
    /// `skn`, decoded: the policy name (DPS group tokens: `registration`).
    pub(crate) policy: Option<String>,
}

/// Why a token was refused before its signature was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenRefused {
    #[error("not a SharedAccessSignature")]
    Scheme,
    #[error("field `{0}` missing or given twice")]
    Field(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
}

fn percent_decode(s: &str) -> Option<String> {
    urlencoding::decode(s).ok().map(|c| c.into_owned())
}

/// Splits a token into its fields. Each of `sr`, `sig` and `se` must occur
/// exactly once.
pub(crate) fn read_token(token: &str) -> Result<PresentedToken, TokenRefused> {
    let body = token.trim().strip_prefix("SharedAccessSignature").ok_or(TokenRefused::Scheme)?;
    let body = body.strip_prefix(' ').ok_or(TokenRefused::Scheme)?;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for part in body.split('&') {
        match part.find('=') {
            Some(i) => fields.push((&part[..i], &part[i + 1..])),
            None => return Err(TokenRefused::Malformed("field without `=`")),
        }
    }
    let one = |name: &'static str| -> Result<&str, TokenRefused> {
        let mut found = fields.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v);
        match (found.next(), found.next()) {
            (Some(v), None) => Ok(v),
            _ => Err(TokenRefused::Field(name)),
        }
    };
    let signed_resource = one("sr")?.to_string();
    let resource = percent_decode(&signed_resource).ok_or(TokenRefused::Malformed("sr"))?;
    let sig = percent_decode(one("sig")?).ok_or(TokenRefused::Malformed("sig"))?;
    let mac = STANDARD.decode(sig.as_bytes()).map_err(|_| TokenRefused::Malformed("sig"))?;
    let expires = one("se")?.parse::<u64>().map_err(|_| TokenRefused::Malformed("se"))?;
    let policy = match fields.iter().find(|(k, _)| *k == "skn") {
        Some((_, v)) => Some(percent_decode(v).ok_or(TokenRefused::Malformed("skn"))?),
        None => None,
    };
    Ok(PresentedToken { signed_resource, resource, mac, expires, policy })
}

fn mac_over(key: &[u8], message: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    m.update(message);
    Some(m)
}

/// Whether `t` was signed with `key_base64` (compared in constant time).
pub(crate) fn signed_with(t: &PresentedToken, key_base64: &str) -> bool {
    let Ok(key) = STANDARD.decode(key_base64.trim().as_bytes()) else { return false };
    let message = [t.signed_resource.as_bytes(), b"\n", t.expires.to_string().as_bytes()].concat();
    mac_over(&key, &message).is_some_and(|m| m.verify_slice(&t.mac).is_ok())
}

/// The device key DPS gives `registration_id` in a group with `group_key_base64`.
pub(crate) fn group_device_key(group_key_base64: &str, registration_id: &str) -> Option<String> {
    let key = STANDARD.decode(group_key_base64.trim().as_bytes()).ok()?;
    Some(STANDARD.encode(mac_over(&key, registration_id.as_bytes())?.finalize().into_bytes()))
}

/// The wall clock in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A property bag (`k=v&k2=v2`, keys and values URL-encoded, `$` also as
/// `%24`). `None` when an escape is broken or a key is empty.
pub(crate) fn property_bag(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = percent_decode(&k.replace('+', " "))?;
            (!k.is_empty()).then_some(())?;
            Some((k, percent_decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// A topic a device publishes to, as the hub reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    /// `devices/{device}[/modules/{module}]/messages/events/[{bag}]`.
    Telemetry { device_id: String, module_id: Option<String>, properties: Vec<(String, String)> },
    /// `$iothub/twin/GET/?$rid={rid}`.
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
    TwinReported { rid: String },
    /// `$iothub/methods/res/{status}/?$rid={rid}`.
    MethodResponse { status: u16, rid: String },
}

fn rid_of(q: &str) -> Option<String> {
    property_bag(q)?.into_iter().find_map(|(k, v)| (k == "$rid").then_some(v))
}

/// Reads a device's publish topic; `None`: the hub would close the connection.
pub(crate) fn read_topic(topic: &str) -> Option<Published> {
    let segments: Vec<&str> = topic.splitn(7, '/').collect();
    match segments.as_slice() {
        ["devices", d, "messages", "events"] => telemetry(d, None, ""),
        ["devices", d, "messages", "events", bag] => telemetry(d, None, bag),
        ["devices", d, "modules", m, "messages", "events"] => telemetry(d, Some(m), ""),
        ["devices", d, "modules", m, "messages", "events", bag] => telemetry(d, Some(m), bag),
        ["$iothub", "twin", "GET", q] => Some(Published::TwinGet { rid: rid_of(q.strip_prefix('?')?)? }),
        ["$iothub", "twin", "PATCH", "properties", "reported", q] => Some(Published::TwinReported { rid: rid_of(q.strip_prefix('?')?)? }),
        ["$iothub", "methods", "res", status, q] => {
            Some(Published::MethodResponse { status: status.parse().ok()?, rid: rid_of(q.strip_prefix('?')?)? })
        }
        _ => None,
    }
}

fn telemetry(device: &str, module: Option<&str>, bag: &str) -> Option<Published> {
    if device.is_empty() || module.is_some_and(str::is_empty) {
        return None;
    }
    Some(Published::Telemetry { device_id: device.to_string(), module_id: module.map(str::to_string), properties: property_bag(bag)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Microsoft's SAS documentation, as in the sink's tests,
    // checked here by the emulator's own code.
    const KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
    const TOKEN: &str =
        "SharedAccessSignature sr=pontifex.azure-devices.net%2Fdevices%2FFirstDevice&sig=CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc%3D&se=1593353305";

    #[test]
    fn a_documented_token_is_read_and_verified() {
        let t = read_token(TOKEN).unwrap();
        assert_eq!(t.resource, "pontifex.azure-devices.net/devices/FirstDevice");
        assert_eq!(t.expires, 1593353305);
        assert_eq!(t.policy, None);
        assert!(signed_with(&t, KEY));
        assert!(!signed_with(&t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        let later = TOKEN.replace("se=1593353305", "se=1593353306");
        assert!(!signed_with(&read_token(&later).unwrap(), KEY), "the expiry is signed");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(read_token("Bearer x"), Err(TokenRefused::Scheme));
        assert_eq!(read_token("SharedAccessSignature sig=a&se=1"), Err(TokenRefused::Field("sr")));
        assert_eq!(read_token(&format!("{TOKEN}&se=5")), Err(TokenRefused::Field("se")));
        assert_eq!(read_token("SharedAccessSignature sr=a&sig=%%%&se=1"), Err(TokenRefused::Malformed("sig")));
        assert_eq!(read_token("SharedAccessSignature sr=a&sig=YQ%3D%3D&se=soon"), Err(TokenRefused::Malformed("se")));
    }

    #[test]
    fn topics_are_read_as_the_hub_reads_them() {
        assert_eq!(
            read_topic("devices/bed-1/messages/events/%24.mid=m1&%24.ct=application%2Fjson"),
            Some(Published::Telemetry {
                device_id: "bed-1".into(),
                module_id: None,
                properties: vec![("$.mid".into(), "m1".into()), ("$.ct".into(), "application/json".into())]
            })
        );
        assert_eq!(
            read_topic("devices/gw/modules/edge/messages/events/"),
            Some(Published::Telemetry { device_id: "gw".into(), module_id: Some("edge".into()), properties: vec![] })
        );
        assert_eq!(read_topic("$iothub/twin/GET/?$rid=7"), Some(Published::TwinGet { rid: "7".into() }));
        assert_eq!(read_topic("$iothub/twin/PATCH/properties/reported/?$rid=8"), Some(Published::TwinReported { rid: "8".into() }));
        assert_eq!(read_topic("$iothub/methods/res/200/?$rid=9"), Some(Published::MethodResponse { status: 200, rid: "9".into() }));
        for bad in ["devices//messages/events/", "devices/a/messages/other/", "$iothub/twin/GET/", "$iothub/methods/res/ok/?$rid=1", "x"] {
            assert_eq!(read_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_group_key_derives_the_documented_device_key() {
        // Expected value from Python's hmac and base64 modules (the formula
        // of DPS's symmetric key attestation document).
        let group = "dGhpcyBpcyBhIGdyb3VwIGtleSBmb3IgdGVzdHM=";
        assert_eq!(group_device_key(group, "bed-7").as_deref(), Some("iB6cIBdExu/5ZEbfS+snq3L6aFMF45zRnQNiyQyP1ag="));
        assert_eq!(group_device_key("not base64!", "bed-7"), None);
    }
}
