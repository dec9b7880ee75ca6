//! `[gateway] id`: written out, or derived from this machine so that one image
//! serves fifty beds.
//!
//! ```toml
//! id = "ward3-bed12"                                # as written
//! id = { from = "hostname" }                        # this machine's host name
//! id = { from = "machine-id", prefix = "ward3-" }   # from /etc/machine-id
//! ```
//!
//! Hand-written (a serde visitor rather than an untagged enum) so that a wrong
//! table says which key is wrong, and so that a host name or machine id that
//! cannot name a gateway is refused at the `id` line with what to do instead.
//!
//! `from = "hostname"`: the kernel's host name (gethostname(2), what
//! `hostnamectl` sets), up to its first dot, in lowercase. The names an image
//! comes with (`raspberrypi`, `localhost`) are refused: fifty Pis would all
//! send as the same gateway.
//!
//! `from = "machine-id"`: `/etc/machine-id` is confidential (machine-id(5):
//! "should be considered confidential and must not be exposed in untrusted
//! environments"), so it is never sent as is. The id is the application-specific
//! id that systemd's `sd_id128_get_machine_app_specific()` derives from it
//! (sd_id128_get_machine(3): HMAC-SHA256 keyed with the machine id over the
//! application id, the first 16 bytes, marked as a version 4 UUID), in 32
//! lowercase hex digits, so it can be checked with
//! `systemd-id128 machine-id --app-specific=f8a9a8a570154526919296a492ea801f`.
//! An empty or `uninitialized` machine id (an image prepared for cloning,
//! before its first boot) is refused.

use hmac::{Hmac, Mac};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::Sha256;
use std::fmt;

/// The application id iomt-edge passes to the machine-id derivation
/// (`systemd-id128 machine-id --app-specific=` takes it as it is written here).
pub(crate) const APP_ID: [u8; 16] = [0xf8, 0xa9, 0xa8, 0xa5, 0x70, 0x15, 0x45, 0x26, 0x91, 0x92, 0x96, 0xa4, 0x92, 0xea, 0x80, 0x1f];

/// Where a derived id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdSource {
    Hostname,
    MachineId,
}

/// Host names an image or a container comes with: they name no bed.
const IMAGE_DEFAULT_HOSTNAMES: &[&str] = &["localhost", "raspberrypi", "(none)"];

/// The gateway id for `source`, with `prefix` in front, from the values read
/// off this machine (`None`: could not be read). `Err` is a sentence saying what
/// to do.
pub(crate) fn derive(source: IdSource, prefix: &str, hostname: Option<&str>, machine_id: Option<&str>) -> Result<String, String> {
    let core = match source {
        IdSource::Hostname => {
            let raw = hostname.ok_or("the host name of this machine cannot be read; write the id out (id = \"ward3-bed12\")")?;
            let short = raw.trim().split('.').next().unwrap_or("").to_ascii_lowercase();
            if short.is_empty() || IMAGE_DEFAULT_HOSTNAMES.contains(&short.as_str()) {
                return Err(format!(
                    "the host name is \"{short}\", the name the image comes with, which would give every gateway the same id; \
                     give this machine its own name (`sudo hostnamectl set-hostname ward3-bed12`) or use id = {{ from = \"machine-id\" }}"
                ));
            }
            short
        }
        IdSource::MachineId => {
            let raw = machine_id.unwrap_or("").trim();
            let bytes = parse_machine_id(raw).ok_or_else(|| {
                let what =
                    if raw.is_empty() || raw == "uninitialized" { "empty (not set up yet)".to_string() } else { "not 32 hex digits".to_string() };
                format!(
                    "/etc/machine-id is {what}; a machine gets its own at first boot (`sudo systemd-machine-id-setup` makes one now), \
                     or use id = {{ from = \"hostname\" }}"
                )
            })?;
            hex::encode(app_specific(&bytes))
        }
    };
    Ok(format!("{prefix}{core}"))
}

/// 32 hex digits (either case) as 16 bytes; the all-zero id is no id.
fn parse_machine_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let v = hex::decode(s).ok()?;
    let bytes: [u8; 16] = v.try_into().ok()?;
    (bytes != [0; 16]).then_some(bytes)
}

/// `sd_id128_get_machine_app_specific()`: HMAC-SHA256 keyed with the machine id
/// over [`APP_ID`], truncated to 16 bytes and marked as a version 4 (variant 1)
/// UUID (sd_id128_get_machine(3)).
pub(crate) fn app_specific(machine_id: &[u8; 16]) -> [u8; 16] {
    // An HMAC key of any length is accepted (RFC 2104), so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(machine_id) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(&APP_ID);
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out[6] = (out[6] & 0x0F) | 0x40;
    out[8] = (out[8] & 0x3F) | 0x80;
    out
}

/// This machine's host name (gethostname(2)).
fn read_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// `/etc/machine-id` (machine-id(5)); `None` when it cannot be read.
fn read_machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id").ok()
}

/// serde `deserialize_with` for `[gateway] id`: a string, or a table
/// `{ from = "hostname" | "machine-id", prefix = "..." }` resolved on this machine.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(IdVisitor)
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a gateway id such as \"ward3-bed12\", or { from = \"hostname\" } or { from = \"machine-id\" }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut from: Option<String> = None;
        let mut prefix = String::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "from" => from = Some(map.next_value()?),
                "prefix" => prefix = map.next_value()?,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in the gateway id; use id = {{ from = \"hostname\" }} or {{ from = \"machine-id\" }}, \
                         optionally with prefix = \"ward3-\""
                    )))
                }
            }
        }
        let source = match from.as_deref() {
            Some("hostname") => IdSource::Hostname,
            Some("machine-id") => IdSource::MachineId,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "the gateway id cannot come from \"{other}\"; use from = \"hostname\" or from = \"machine-id\""
                )))
            }
            None => return Err(de::Error::custom("a derived gateway id needs `from`: id = { from = \"hostname\" } or { from = \"machine-id\" }")),
        };
        derive(source, &prefix, read_hostname().as_deref(), read_machine_id().as_deref()).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_cut_at_the_first_dot_and_lowercased() {
        assert_eq!(derive(IdSource::Hostname, "", Some("Ward3-Bed12.icu.example.org\n"), None).unwrap(), "ward3-bed12");
        assert_eq!(derive(IdSource::Hostname, "gw-", Some("bed07"), None).unwrap(), "gw-bed07");
    }

    #[test]
    fn image_default_hostnames_are_refused_with_what_to_do() {
        for name in ["raspberrypi", "localhost", "localhost.localdomain", "RaspberryPi", ""] {
            let e = derive(IdSource::Hostname, "", Some(name), None).unwrap_err();
            assert!(e.contains("hostnamectl set-hostname"), "{name}: {e}");
        }
        assert!(derive(IdSource::Hostname, "", None, None).unwrap_err().contains("cannot be read"));
    }

    /// The figure `systemd-id128 machine-id --app-specific=f8a9a8a570154526919296a492ea801f`
    /// printed on a machine whose /etc/machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4
    /// (systemd 252); the suite also compares with systemd-id128 on the machine it runs on.
    #[test]
    fn machine_id_gives_systemds_app_specific_id() {
        let id = derive(IdSource::MachineId, "", None, Some("3d1219c7c4c5404aaa1f6d2a48adfda4\n")).unwrap();
        assert_eq!(id, EXPECTED_FOR_SAMPLE);
        let with_prefix = derive(IdSource::MachineId, "ward3-", None, Some("3D1219C7C4C5404AAA1F6D2A48ADFDA4")).unwrap();
        assert_eq!(with_prefix, format!("ward3-{EXPECTED_FOR_SAMPLE}"));
        // Not the machine id itself: that one is confidential.
        assert!(!id.contains("3d1219c7c4c5404aaa1f6d2a48adfda4"));
    }

    const EXPECTED_FOR_SAMPLE: &str = "d5acfab7d7854dcca69b06daddcca3a0";

    #[test]
    fn missing_or_uninitialized_machine_id_is_refused() {
        for raw in [None, Some(""), Some("uninitialized\n"), Some("00000000000000000000000000000000"), Some("3d1219c7")] {
            let e = derive(IdSource::MachineId, "", None, raw).unwrap_err();
            assert!(e.contains("systemd-machine-id-setup"), "{raw:?}: {e}");
        }
    }
}
