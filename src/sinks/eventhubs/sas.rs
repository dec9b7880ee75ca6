//! Event Hubs shared access signatures.
//!
//! `SharedAccessSignature sr={enc(uri)}&sig={enc(b64(HMAC-SHA256(key, enc(uri) + "\n" + se)))}&se={se}&skn={keyName}`
//!
//! Sources: Azure REST docs "Generate SAS token" (Event Hubs; the NodeJS,
//! Java, Python samples) and Azure docs "Authenticate access to Event Hubs
//! resources using shared access signatures". Unlike IoT Hub's device keys
//! (`crate::sinks::iothub::sas`, which base64-DECODES the key), Event Hubs and
//! Service Bus use the key string's UTF-8 bytes as the HMAC key. `enc` is
//! percent-encoding of everything but `A-Z a-z 0-9 - _ . ~` (what the docs'
//! `encodeURIComponent` / `quote_plus` give for a URL and a base64 string).
//! The resource URI is `https://{ns}.servicebus.windows.net/{hub}`; the
//! service matches it as a prefix of the request URL.
//!
//! Hand-written: eight lines over `hmac`/`sha2`/`base64`/`urlencoding`, the
//! crates the IoT Hub signer already uses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// The resource URI a token for one event hub is signed for:
/// `https://{namespace_host}[:port]/{hub}` (no trailing slash, as in the docs'
/// samples).
pub(crate) fn resource_uri(namespace_host: &str, port: Option<u16>, hub: &str) -> String {
    match port {
        Some(p) => format!("https://{namespace_host}:{p}/{hub}"),
        None => format!("https://{namespace_host}/{hub}"),
    }
}

/// The signature, base64 and NOT yet URL-encoded, over
/// `{encoded_resource}\n{expiry}` with `key`'s UTF-8 bytes as HMAC-SHA256 key.
pub(crate) fn signature(key: &str, encoded_resource: &str, expiry_unix_s: u64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{encoded_resource}\n{expiry_unix_s}").as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// A complete `Authorization` header value for `resource_uri`, valid until
/// `expiry_unix_s` (Unix seconds), signed with policy `key_name`'s `key`.
pub fn token(resource_uri: &str, key_name: &str, key: &str, expiry_unix_s: u64) -> String {
    let sr = urlencoding::encode(resource_uri);
    let sig = signature(key, &sr, expiry_unix_s);
    format!("SharedAccessSignature sr={sr}&sig={}&se={expiry_unix_s}&skn={}", urlencoding::encode(&sig), urlencoding::encode(key_name))
}

/// A token in use and when to replace it (all times Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SasToken {
    /// The header value.
    pub(crate) value: String,
    /// `se`.
    pub(crate) expires_at: u64,
    /// Make a new token at or after this time.
    pub(crate) renew_at: u64,
}

/// Default lifetime of a token: one hour (the IoT Hub C and C# SDKs' choice;
/// the docs' samples use a week, which leaves a leaked token valid too long).
#[cfg(test)]
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// When to renew a token of `ttl` issued at `now`: at 80 % of its life, and for
/// tokens longer than 10 min at least 2 min before expiry (as
/// `crate::sinks::iothub::session::renew_after`; the Python IoT SDK renews
/// 120 s early, the C SDK at 80 %).
pub(crate) fn renew_at(now_unix_s: u64, ttl: Duration) -> u64 {
    let ttl_s = ttl.as_secs();
    let eighty = ttl_s.saturating_mul(4) / 5;
    let early = if ttl_s > 600 { eighty.min(ttl_s - 120) } else { eighty };
    now_unix_s.saturating_add(early)
}

/// Issues a token for `resource_uri` at `now` with lifetime `ttl`.
pub(crate) fn issue(resource_uri: &str, key_name: &str, key: &str, now_unix_s: u64, ttl: Duration) -> SasToken {
    let expires_at = now_unix_s.saturating_add(ttl.as_secs().max(1));
    SasToken { value: token(resource_uri, key_name, key, expires_at), expires_at, renew_at: renew_at(now_unix_s, ttl) }
}

impl SasToken {
    /// True when the token must be replaced before the next request at `now`.
    pub(crate) fn needs_renewal(&self, now_unix_s: u64) -> bool {
        now_unix_s >= self.renew_at || now_unix_s >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3r0W9jqQ7l1rM5Qm0yHc0lW3JbV5C5dX2nZ6rUeTfJo=";

    /// Expected value computed once, independently, with the algorithm of the
    /// docs' Python sample ("Generate SAS token"), the sig encoded like the
    /// NodeJS sample's `encodeURIComponent` (`safe=''`):
    ///
    /// ```text
    /// python3 -c "
    /// import hmac,hashlib,base64,urllib.parse
    /// uri=urllib.parse.quote_plus('https://contoso-ns.servicebus.windows.net/vitals')
    /// key='3r0W9jqQ7l1rM5Qm0yHc0lW3JbV5C5dX2nZ6rUeTfJo='
    /// se='1700000000'
    /// sig=base64.b64encode(hmac.HMAC(key.encode('utf-8'),(uri+'\n'+se).encode('utf-8'),hashlib.sha256).digest()).decode()
    /// print('SharedAccessSignature sr={}&sig={}&se={}&skn={}'.format(uri,urllib.parse.quote(sig,safe=''),se,'send-only'))"
    /// ```
    #[test]
    fn matches_the_documented_algorithm_with_the_key_as_utf8_bytes() {
        let uri = resource_uri("contoso-ns.servicebus.windows.net", None, "vitals");
        assert_eq!(uri, "https://contoso-ns.servicebus.windows.net/vitals");
        assert_eq!(
            token(&uri, "send-only", KEY, 1_700_000_000),
            "SharedAccessSignature sr=https%3A%2F%2Fcontoso-ns.servicebus.windows.net%2Fvitals\
             &sig=FV47dy6sLOq6bPduhm%2BWz9DKGwpeaBIftH0CBmjmrR4%3D&se=1700000000&skn=send-only"
        );
    }

    #[test]
    fn the_key_is_not_base64_decoded() {
        // The IoT Hub signer decodes the key first; its signature must differ.
        let sr = urlencoding::encode("https://contoso-ns.servicebus.windows.net/vitals").into_owned();
        let iothub_style = crate::sinks::iothub::sas::signature(KEY, &sr, 1_700_000_000).unwrap();
        assert_ne!(signature(KEY, &sr, 1_700_000_000), iothub_style);
        assert_eq!(signature(KEY, &sr, 1_700_000_000), "FV47dy6sLOq6bPduhm+Wz9DKGwpeaBIftH0CBmjmrR4=");
    }

    #[test]
    fn emulator_port_is_part_of_the_signed_uri() {
        assert_eq!(resource_uri("127.0.0.1", Some(8443), "vitals"), "https://127.0.0.1:8443/vitals");
    }

    #[test]
    fn renewal_comes_well_before_expiry() {
        let t = issue("https://a/b", "k", KEY, 1_000, DEFAULT_TTL);
        assert_eq!(t.expires_at, 4_600);
        assert_eq!(t.renew_at, 1_000 + 2_880); // 80 % of an hour (earlier than 2 min before)
        assert!(!t.needs_renewal(3_879));
        assert!(t.needs_renewal(3_880));
        // A day-long token: 2 min early would be later than 80 %, so 80 % wins.
        assert_eq!(renew_at(0, Duration::from_secs(86_400)), 69_120);
        // 15 min: 80 % is 720 s, 2 min early is 780 s: 720.
        assert_eq!(renew_at(0, Duration::from_secs(900)), 720);
        // A short token (tests, emulator): 80 %.
        assert_eq!(renew_at(10, Duration::from_secs(5)), 14);
        // Zero TTL still gives a token that is immediately due for renewal.
        let z = issue("https://a/b", "k", KEY, 50, Duration::ZERO);
        assert!(z.needs_renewal(50) && z.expires_at == 51);
    }
}
