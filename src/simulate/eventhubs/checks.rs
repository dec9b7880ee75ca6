//! The emulator's own checks of what a sender presents: SAS tokens, the
//! bearer tokens it issued, and batch bodies. Written from the documents, not
//! shared with the sink (src/sinks/eventhubs/), so that a mistake in the sink
//! is not repeated here and passed as correct.
//!
//! - SAS (Azure docs "Authenticate access to Event Hubs resources using shared
//!   access signatures", REST docs "Generate SAS token"): `SharedAccessSignature
//!   sr=<url-encoded resource>&sig=<url-encoded base64 HMAC-SHA256>&se=<unix expiry>&skn=<policy>`,
//!   signed over `<sr as sent>\n<se>` with the key string's UTF-8 bytes; the
//!   resource must be a prefix (at a `/`) of the URL requested.
//! - Bearer tokens: JWT-shaped (`header.claims.signature`, HS256 with the
//!   emulator's own secret), with `aud`, `appid` and `exp`.
//! - Batches (REST docs "Send batch events"): a non-empty JSON array of
//!   objects with a string `Body`, optional `BrokerProperties` (string
//!   `MessageId`, `PartitionKey`, ...) and `UserProperties` (string, number
//!   or boolean values), and nothing else.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The audience Event Hubs tokens are issued for.
pub(crate) const AUDIENCE: &str = "https://eventhubs.azure.net";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Equal without an early exit on the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a token was refused: `(code for the XML answer, words)`.
pub(crate) type Refusal = (&'static str, String);

/// Checks a `SharedAccessSignature …` header for a request to `request_url`
/// (`https://host[:port]/path`, no query) at `now` (Unix seconds).
pub(crate) fn check_sas(header: &str, request_url: &str, key_name: &str, key: &str, now: u64) -> Result<(), Refusal> {
    let rest = header.strip_prefix("SharedAccessSignature ").ok_or(("InvalidToken", "not a SharedAccessSignature".to_string()))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for part in rest.trim().split('&') {
        let (k, v) = part.split_once('=').ok_or(("InvalidToken", format!("token field without `=`: {}", part.len())))?;
        let slot = match k {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(("InvalidToken", format!("token field `{k}` given twice")));
        }
    }
    let (sr, sig, se, skn) = match (sr, sig, se, skn) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        _ => return Err(("InvalidToken", "the token needs sr, sig, se and skn".into())),
    };
    let decode =
        |v: &str| urlencoding::decode(&v.replace('+', " ")).map(|c| c.into_owned()).map_err(|_| ("InvalidToken", "bad %-encoding".to_string()));
    let expiry: u64 = se.parse().map_err(|_| ("InvalidToken", "se is not a number".to_string()))?;
    if expiry <= now {
        return Err(("ExpiredToken", format!("the token expired at {expiry} (now {now})")));
    }
    if decode(skn)? != key_name {
        return Err(("InvalidSignature", "no policy with this key name (skn)".into()));
    }
    let resource = decode(sr)?.to_ascii_lowercase();
    let url = request_url.to_ascii_lowercase();
    let resource = resource.trim_end_matches('/');
    let covers = url == resource || url.starts_with(&format!("{resource}/"));
    if resource.is_empty() || !covers {
        return Err(("InvalidAudience", format!("the token is for {resource}, not for {url}")));
    }
    let given = STANDARD.decode(decode(sig)?).map_err(|_| ("InvalidSignature", "sig is not base64".to_string()))?;
    let expected = hmac(key.as_bytes(), format!("{sr}\n{se}").as_bytes());
    if !same(&given, &expected) {
        return Err(("InvalidSignature", "the token has an invalid signature".into()));
    }
    Ok(())
}

/// Issues an access token for `client_id`, valid until `exp`.
pub(crate) fn issue_bearer(secret: &[u8], issuer: &str, client_id: &str, now: u64, exp: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"aud": AUDIENCE, "iss": issuer, "appid": client_id, "iat": now, "nbf": now, "exp": exp});
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{claims}");
    let sig = URL_SAFE_NO_PAD.encode(hmac(secret, input.as_bytes()));
    format!("{input}.{sig}")
}

/// Checks a `Bearer …` header against the tokens this emulator issues.
pub(crate) fn check_bearer(header: &str, secret: &[u8], now: u64) -> Result<String, Refusal> {
    let token = header.strip_prefix("Bearer ").ok_or(("InvalidToken", "not a Bearer token".to_string()))?.trim();
    let mut parts = token.split('.');
    let (h, c, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) => (h, c, s),
        _ => return Err(("InvalidToken", "a bearer token has three dot-separated parts".into())),
    };
    let given = URL_SAFE_NO_PAD.decode(s).map_err(|_| ("InvalidSignature", "the signature is not base64url".to_string()))?;
    if !same(&given, &hmac(secret, format!("{h}.{c}").as_bytes())) {
        return Err(("InvalidSignature", "the token was not issued by this emulator's token endpoint".into()));
    }
    let claims: Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(("InvalidToken", "the claims are not JSON".to_string()))?;
    if claims["aud"] != AUDIENCE {
        return Err(("InvalidAudience", format!("the token's audience is not {AUDIENCE}")));
    }
    let exp = claims["exp"].as_u64().ok_or(("InvalidToken", "no exp claim".to_string()))?;
    if exp <= now {
        return Err(("ExpiredToken", format!("the token expired at {exp} (now {now})")));
    }
    Ok(claims["appid"].as_str().unwrap_or("").to_string())
}

/// One event of a batch, as checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) body: String,
    pub(crate) message_id: Option<String>,
    pub(crate) partition_key: Option<String>,
    pub(crate) user_properties: Map<String, Value>,
}

/// Checks a batch body; `Err` is the 400 answer's detail.
pub(crate) fn check_batch(body: &[u8]) -> Result<Vec<Event>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the batch is not JSON: {e}"))?;
    let items = v.as_array().ok_or("a batch is a JSON array of events")?;
    if items.is_empty() {
        return Err("the batch holds no event".into());
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item.as_object().ok_or(format!("event {i} is not an object"))?;
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "Body" | "BrokerProperties" | "UserProperties")) {
            return Err(format!("event {i} has an unknown member `{k}` (Body, BrokerProperties, UserProperties)"));
        }
        let body = obj.get("Body").and_then(Value::as_str).ok_or(format!("event {i} needs a string `Body`"))?;
        let mut message_id = None;
        let mut partition_key = None;
        if let Some(b) = obj.get("BrokerProperties") {
            let b = b.as_object().ok_or(format!("event {i}: BrokerProperties is not an object"))?;
            for (k, v) in b {
                match k.as_str() {
                    "MessageId" => message_id = Some(v.as_str().ok_or(format!("event {i}: MessageId is not a string"))?.to_string()),
                    "PartitionKey" => {
                        let p = v.as_str().ok_or(format!("event {i}: PartitionKey is not a string"))?;
                        if p.is_empty() || p.chars().count() > 128 {
                            return Err(format!("event {i}: PartitionKey must be 1 to 128 characters"));
                        }
                        partition_key = Some(p.to_string());
                    }
                    "CorrelationId" | "Label" | "ContentType" | "TimeToLive" | "SessionId" | "To" | "ReplyTo" => {}
                    other => return Err(format!("event {i}: unknown broker property `{other}`")),
                }
            }
        }
        let user_properties = match obj.get("UserProperties") {
            None => Map::new(),
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean())) {
                    return Err(format!("event {i}: user property `{k}` is not a string, number or boolean"));
                }
                m.clone()
            }
            Some(_) => return Err(format!("event {i}: UserProperties is not an object")),
        };
        out.push(Event { body: body.to_string(), message_id, partition_key, user_properties });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed once with Python, following the docs' "Generate SAS token" sample:
    /// ```text
    /// python3 -c "import hmac,hashlib,base64,urllib.parse
    /// uri=urllib.parse.quote_plus('https://127.0.0.1:9/vitals')
    /// sig=urllib.parse.quote(base64.b64encode(hmac.new(b'k3y',(uri+'\n'+'2000000000').encode(),hashlib.sha256).digest()),safe='')
    /// print('SharedAccessSignature sr={}&sig={}&se=2000000000&skn=send'.format(uri,sig))"
    /// ```
    fn python_token() -> String {
        "SharedAccessSignature sr=https%3A%2F%2F127.0.0.1%3A9%2Fvitals&sig=dKqtZnwtVeqlnEN2cPtYZbzGu6RNJbJzUGqhSrRuT0E%3D&se=2000000000&skn=send"
            .to_string()
    }

    #[test]
    fn sas_checks_signature_expiry_name_and_resource() {
        let t = python_token();
        let url = "https://127.0.0.1:9/vitals/messages";
        assert_eq!(check_sas(&t, url, "send", "k3y", 1_999_999_999), Ok(()));
        assert_eq!(check_sas(&t, url, "send", "k3y!", 0).unwrap_err().0, "InvalidSignature");
        assert_eq!(check_sas(&t, url, "listen", "k3y", 0).unwrap_err().0, "InvalidSignature");
        assert_eq!(check_sas(&t, url, "send", "k3y", 2_000_000_000).unwrap_err().0, "ExpiredToken");
        assert_eq!(check_sas(&t, "https://127.0.0.1:9/vitals2/messages", "send", "k3y", 0).unwrap_err().0, "InvalidAudience");
        assert_eq!(check_sas(&t, "https://127.0.0.1:9/other/messages", "send", "k3y", 0).unwrap_err().0, "InvalidAudience");
        assert_eq!(check_sas(&t.replace("se=2000000000", "se=2000000001"), url, "send", "k3y", 0).unwrap_err().0, "InvalidSignature");
        assert!(check_sas("Bearer x", url, "send", "k3y", 0).is_err());
        assert!(check_sas("SharedAccessSignature sr=a", url, "send", "k3y", 0).is_err());
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let t = issue_bearer(b"s", "iss", "app", 100, 200);
        assert_eq!(check_bearer(&format!("Bearer {t}"), b"s", 150), Ok("app".to_string()));
        assert_eq!(check_bearer(&format!("Bearer {t}"), b"s", 200).unwrap_err().0, "ExpiredToken");
        assert_eq!(check_bearer(&format!("Bearer {t}"), b"other", 150).unwrap_err().0, "InvalidSignature");
        assert!(check_bearer("Bearer a.b", b"s", 0).is_err());
    }

    #[test]
    fn batches_are_checked_member_by_member() {
        let ok = br#"[{"Body":"{\"a\":1}","BrokerProperties":{"MessageId":"m1","PartitionKey":"dev"},"UserProperties":{"site":"w3","n":2}}]"#;
        let evs = check_batch(ok).unwrap();
        assert_eq!((evs[0].body.as_str(), evs[0].message_id.as_deref(), evs[0].partition_key.as_deref()), ("{\"a\":1}", Some("m1"), Some("dev")));
        for bad in [
            &b"{}"[..],
            b"[]",
            b"[1]",
            br#"[{"Body":{"a":1}}]"#,
            br#"[{"body":"x"}]"#,
            br#"[{"Body":"x","Extra":1}]"#,
            br#"[{"Body":"x","BrokerProperties":{"PartitionKey":""}}]"#,
            br#"[{"Body":"x","BrokerProperties":{"Bogus":"1"}}]"#,
            br#"[{"Body":"x","UserProperties":{"a":{"b":1}}}]"#,
            b"not json",
        ] {
            assert!(check_batch(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
