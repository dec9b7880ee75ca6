//! Microsoft Entra ID tokens for Event Hubs: the OAuth 2.0 client credentials
//! request, its answer, when to refresh, the certificate assertion's header
//! and claims, and when to re-read a bearer token file.
//!
//! Sources: Microsoft identity platform docs "OAuth 2.0 client credentials
//! flow" (`POST {authority}/{tenant}/oauth2/v2.0/token`, form fields
//! `client_id`, `scope`, `client_secret` or `client_assertion_type` +
//! `client_assertion`, `grant_type=client_credentials`; answer
//! `{"token_type":"Bearer","expires_in":…,"access_token":…}`, errors
//! `{"error","error_description","error_codes",…}`), "Microsoft identity
//! platform certificate credentials" (assertion header `alg` PS256, `typ` JWT,
//! `x5t#S256`; claims `aud` = the token endpoint, `exp`, `iss` = `sub` =
//! client id, `jti`, `nbf`, `iat`), "National clouds" (authority hosts such
//! as `https://login.microsoftonline.us`, `https://login.chinacloudapi.cn`),
//! and "Authorize access to Event Hubs with Microsoft Entra ID" (scope
//! `https://eventhubs.azure.net/.default`, role "Azure Event Hubs Data
//! Sender").
//!
//! Pure: no HTTP, no clock, no file access; times are passed in as Unix
//! seconds. Hand-written because the Azure Rust identity crate pulls its own
//! HTTP stack and runtime assumptions; the flow itself is one form POST.
//!
//! The certificate assertion is signed PS256 (RFC 7518 §3.5: RSASSA-PSS with
//! SHA-256, MGF1 with SHA-256, a 32-byte salt) through rustls's ring provider,
//! whose `RSA_PSS_SHA256` TLS scheme is that same algorithm; no extra crate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

/// The token scope for Event Hubs data-plane access.
pub(crate) const EVENTHUBS_SCOPE: &str = "https://eventhubs.azure.net/.default";
/// The public cloud's authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// `client_assertion_type` for a certificate (JWT bearer) assertion.
pub(crate) const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion stays valid (the docs: "5-10 minutes after nbf").
pub(crate) const ASSERTION_LIFETIME_S: u64 = 600;

/// A problem with the Entra ID settings or answers. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    #[error("the authority host must be an https:// URL without a path, like https://login.microsoftonline.com: {0}")]
    BadAuthorityHost(&'static str),
    #[error("the tenant must be a directory (tenant) id or a domain name such as contoso.onmicrosoft.com")]
    BadTenant,
    #[error("the client id is empty")]
    NoClientId,
    #[error("the client certificate: {0}")]
    BadCertificate(&'static str),
    #[error("the client certificate's private key: {0}")]
    BadPrivateKey(&'static str),
    #[error("the token endpoint answered HTTP {status} with something that is not a token answer: {detail}")]
    Malformed { status: u16, detail: String },
    #[error("Microsoft Entra ID refused the token request ({error}{codes}): {description}; {hint}")]
    Refused { error: String, codes: String, description: String, hint: &'static str },
}

/// `{authority_host}/{tenant}/oauth2/v2.0/token`, after checking both parts.
pub fn token_endpoint(authority_host: &str, tenant: &str) -> Result<String, EntraError> {
    let host = authority_host.trim().trim_end_matches('/');
    let rest = host.strip_prefix("https://").ok_or(EntraError::BadAuthorityHost("it does not start with https://"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(EntraError::BadAuthorityHost("it must be a scheme and host only"));
    }
    let tenant = tenant.trim();
    if tenant.is_empty() || tenant.len() > 256 || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(EntraError::BadTenant);
    }
    Ok(format!("{host}/{tenant}/oauth2/v2.0/token"))
}

/// How the application proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum ClientCredential {
    /// A client secret.
    Secret(String),
    /// A signed JWT assertion (certificate credential).
    Assertion(String),
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            ClientCredential::Assertion(_) => f.write_str("Assertion(<redacted>)"),
        }
    }
}

/// The form fields of the client credentials token request, in order.
pub(crate) fn token_request_fields(client_id: &str, credential: &ClientCredential, scope: &str) -> Result<Vec<(&'static str, String)>, EntraError> {
    if client_id.trim().is_empty() {
        return Err(EntraError::NoClientId);
    }
    let mut f = vec![("grant_type", "client_credentials".to_string()), ("client_id", client_id.trim().to_string()), ("scope", scope.to_string())];
    match credential {
        ClientCredential::Secret(s) => f.push(("client_secret", s.clone())),
        ClientCredential::Assertion(a) => {
            f.push(("client_assertion_type", JWT_BEARER_ASSERTION_TYPE.to_string()));
            f.push(("client_assertion", a.clone()));
        }
    }
    Ok(f)
}

/// `application/x-www-form-urlencoded` body of `fields` (every byte but
/// `A-Z a-z 0-9 - _ . ~` percent-encoded).
pub(crate) fn form_body(fields: &[(&str, String)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", urlencoding::encode(k), urlencoding::encode(v))).collect::<Vec<_>>().join("&")
}

/// An access token and its timing (Unix seconds). `Debug` redacts the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken {
    pub(crate) value: String,
    pub(crate) expires_at: u64,
    /// Fetch a new one at or after this time.
    pub(crate) refresh_at: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// When to refresh a token obtained at `now` that lives `lifetime_s`: 5 min
/// before expiry (Azure.Identity's default refresh offset), or at the
/// server's `refresh_in` if earlier; a token living 10 min or less at 80 %.
pub(crate) fn refresh_at(now: u64, lifetime_s: u64, refresh_in: Option<u64>) -> u64 {
    let by_offset = if lifetime_s > 600 { lifetime_s - 300 } else { lifetime_s.saturating_mul(4) / 5 };
    let after = refresh_in.map_or(by_offset, |r| r.min(by_offset));
    now.saturating_add(after)
}

/// Parses the token endpoint's answer (`status` and JSON `body`) received at `now`.
///
/// `expires_in` is accepted as a number or a numeric string (older endpoints
/// send strings). Errors: [`EntraError::Refused`] with a hint for the common
/// AADSTS codes, [`EntraError::Malformed`] for anything else.
pub(crate) fn parse_token_response(status: u16, body: &[u8], now: u64) -> Result<AccessToken, EntraError> {
    let malformed = |why: &str| EntraError::Malformed { status, detail: why.to_string() };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed("the body is not JSON"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        let description = v.get("error_description").and_then(|d| d.as_str()).unwrap_or("").lines().next().unwrap_or("");
        let description: String = description.chars().filter(|c| !c.is_control()).take(300).collect();
        let codes: Vec<u64> =
            v.get("error_codes").and_then(|c| c.as_array()).map(|a| a.iter().filter_map(|x| x.as_u64()).collect()).unwrap_or_default();
        let codes_text = codes.iter().map(|c| format!(", AADSTS{c}")).collect::<String>();
        return Err(EntraError::Refused { error: err.chars().take(64).collect(), codes: codes_text, description, hint: hint_for(err, &codes) });
    }
    if !(200..300).contains(&status) {
        return Err(malformed("an error status without an `error` field"));
    }
    let token = v.get("access_token").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).ok_or_else(|| malformed("no access_token"))?;
    if let Some(tt) = v.get("token_type").and_then(|t| t.as_str()) {
        if !tt.eq_ignore_ascii_case("bearer") {
            return Err(malformed("token_type is not Bearer"));
        }
    }
    let num = |k: &str| -> Option<u64> {
        let x = v.get(k)?;
        x.as_u64().or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let lifetime = num("expires_in").ok_or_else(|| malformed("no numeric expires_in"))?;
    Ok(AccessToken { value: token.to_string(), expires_at: now.saturating_add(lifetime), refresh_at: refresh_at(now, lifetime, num("refresh_in")) })
}

/// A plain-words hint for an Entra error (codes from the docs' "Microsoft
/// Entra authentication and authorization error codes").
fn hint_for(error: &str, codes: &[u64]) -> &'static str {
    let has = |c: u64| codes.contains(&c);
    if has(7_000_215) || has(7_000_222) {
        "the client secret is wrong or expired: create a new one and update the secret file"
    } else if has(700_016) {
        "no application with this client id in this tenant: check client_id and tenant"
    } else if has(90_002) || has(900_023) {
        "the tenant does not exist: check the tenant id and the authority host (sovereign clouds have their own)"
    } else if has(700_027) || has(700_024) {
        "the certificate assertion was refused: check that the certificate is uploaded to the app registration, and the gateway's clock"
    } else if error == "invalid_scope" {
        "the scope must be https://eventhubs.azure.net/.default"
    } else if error == "invalid_client" || error == "unauthorized_client" {
        "check the client id and its secret or certificate"
    } else {
        "check tenant, client id and credential"
    }
}

/// What a token cache should do at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenDecision {
    /// The cached token is good; no request.
    Use,
    /// Fetch a new token; the cached one may still be used meanwhile.
    RefreshKeepUsing,
    /// No usable token: fetch before sending.
    Fetch,
    /// No usable token and the last attempt failed: do not ask again before this time.
    WaitUntil(u64),
}

/// The cache's state (pure; the caller owns the clock and the HTTP client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenCache {
    pub(crate) token: Option<AccessToken>,
    /// Failures since the last success.
    pub(crate) failures: u32,
    /// When the last failed attempt happened.
    pub(crate) last_failure_at: Option<u64>,
}

/// The wait between token requests that failed.
const RETRY: crate::backoff::Backoff = crate::backoff::Backoff::new(std::time::Duration::from_secs(2), std::time::Duration::from_secs(300));

impl TokenCache {
    /// Delay in seconds after `n` failures: 2 s doubling to 5 min, without
    /// jitter (a token is asked for rarely; the sends have their own).
    pub(crate) fn retry_delay_s(n: u32) -> u64 {
        RETRY.delay(n.saturating_sub(1)).as_secs()
    }

    /// What to do at `now`. A token expiring within 30 s is not used (a
    /// request in flight could outlive it).
    pub(crate) fn decide(&self, now: u64) -> TokenDecision {
        let retry_at = self.last_failure_at.map(|t| t.saturating_add(Self::retry_delay_s(self.failures)));
        let may_ask = !matches!(retry_at, Some(r) if now < r);
        match &self.token {
            Some(t) if now.saturating_add(30) < t.expires_at => {
                if now >= t.refresh_at && may_ask {
                    TokenDecision::RefreshKeepUsing
                } else {
                    TokenDecision::Use
                }
            }
            _ if may_ask => TokenDecision::Fetch,
            _ => TokenDecision::WaitUntil(retry_at.unwrap_or(now)),
        }
    }

    /// Records a new token.
    pub(crate) fn succeeded(&mut self, token: AccessToken) {
        self.token = Some(token);
        self.failures = 0;
        self.last_failure_at = None;
    }

    /// Records a failed request at `now` (the old token is kept while valid).
    pub(crate) fn failed(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure_at = Some(now);
    }
}

/// `x5t#S256` of a certificate: base64url (no padding) of the SHA-256 of its DER.
pub(crate) fn x5t_s256(cert_der: &[u8]) -> String {
    B64URL.encode(Sha256::digest(cert_der))
}

/// The certificate assertion's header: `{"alg":"PS256","typ":"JWT","x5t#S256":…}`.
pub(crate) fn assertion_header(cert_der: &[u8]) -> serde_json::Value {
    serde_json::json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": x5t_s256(cert_der) })
}

/// The certificate assertion's claims: `aud` = the token endpoint, `iss` =
/// `sub` = client id, `jti` (unique per assertion, e.g. a UUID), `nbf` = `iat`
/// = now, `exp` = now + [`ASSERTION_LIFETIME_S`].
pub fn assertion_claims(client_id: &str, token_endpoint: &str, jti: &str, now: u64) -> serde_json::Value {
    serde_json::json!({
        "aud": token_endpoint,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": now,
        "iat": now,
        "exp": now.saturating_add(ASSERTION_LIFETIME_S),
    })
}

/// The JWS signing input `b64url(header) "." b64url(claims)` (RFC 7515 §5.1);
/// the assertion is this, `.`, and b64url of its PS256 signature.
pub fn assertion_signing_input(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()))
}

/// The DER of the first certificate in a PEM file's text.
pub(crate) fn certificate_der(cert_pem: &[u8]) -> Result<Vec<u8>, EntraError> {
    let mut r = cert_pem;
    let first = rustls_pemfile::certs(&mut r).next();
    match first {
        Some(Ok(c)) => Ok(c.as_ref().to_vec()),
        Some(Err(_)) => Err(EntraError::BadCertificate("the PEM text is damaged")),
        None => Err(EntraError::BadCertificate("no `BEGIN CERTIFICATE` block found")),
    }
}

/// Signs `signing_input` PS256 with the RSA private key in `key_pem`
/// (PKCS#8 or PKCS#1 PEM) and returns the complete JWS
/// `{signing_input}.{b64url(signature)}`. PSS signatures are randomised, so
/// two calls give different (equally valid) results.
pub(crate) fn sign_assertion(signing_input: &str, key_pem: &[u8]) -> Result<String, EntraError> {
    use rustls::SignatureScheme;
    let mut r = key_pem;
    let key = match rustls_pemfile::private_key(&mut r) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(EntraError::BadPrivateKey("no `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY` block found")),
        Err(_) => return Err(EntraError::BadPrivateKey("the PEM text is damaged")),
    };
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| EntraError::BadPrivateKey("not a key rustls can use"))?;
    let signer =
        signing_key.choose_scheme(&[SignatureScheme::RSA_PSS_SHA256]).ok_or(EntraError::BadPrivateKey("not an RSA key (PS256 needs RSA)"))?;
    let sig = signer.sign(signing_input.as_bytes()).map_err(|_| EntraError::BadPrivateKey("signing failed"))?;
    Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
}

/// The complete certificate assertion for the token request: header with the
/// certificate's `x5t#S256`, claims for `client_id` and `token_endpoint`,
/// signed with `key_pem`. `jti` must be unique per assertion (e.g. a UUID v4).
pub fn client_assertion(client_id: &str, token_endpoint: &str, jti: &str, now: u64, cert_pem: &[u8], key_pem: &[u8]) -> Result<String, EntraError> {
    let der = certificate_der(cert_pem)?;
    let input = assertion_signing_input(&assertion_header(&der), &assertion_claims(client_id, token_endpoint, jti, now));
    sign_assertion(&input, key_pem)
}

/// The `exp` claim of a JWT access token (Unix seconds), read without
/// checking the signature (the service checks it; the gateway only needs to
/// know when to look for a new one). `None` for anything that is not a JWT
/// with a numeric `exp`.
pub(crate) fn jwt_expiry(token: &str) -> Option<u64> {
    let mut parts = token.trim().split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    let payload = B64URL.decode(p.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<serde_json::Value>(&payload).ok()?.get("exp")?.as_u64()
}

/// The token in a bearer token file: the file's text trimmed, a leading
/// `Bearer ` removed. `None` when empty or not one printable ASCII word.
pub(crate) fn bearer_from_file_text(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("Bearer ").or_else(|| t.strip_prefix("bearer ")).unwrap_or(t).trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())).then(|| t.to_string())
}

/// What identifies a version of the token file (from `metadata()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub(crate) len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) mtime_ns: i128,
}

/// Whether to re-read the bearer token file at `now`: when it changed
/// (length or mtime), when nothing was read yet, or when the token read last
/// is expired or expires within 60 s (a helper that rewrites the file within
/// the same mtime tick, or a file system with coarse mtimes, is then still
/// picked up).
pub(crate) fn should_reread_token_file(last: Option<FileStamp>, current: FileStamp, token_expires_at: Option<u64>, now: u64) -> bool {
    match last {
        None => true,
        Some(l) if l != current => true,
        Some(_) => token_expires_at.is_some_and(|e| now.saturating_add(60) >= e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_endpoint_for_public_and_sovereign_clouds() {
        assert_eq!(
            token_endpoint(DEFAULT_AUTHORITY_HOST, "contoso.onmicrosoft.com").unwrap(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            token_endpoint("https://login.microsoftonline.us/", "72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert!(matches!(token_endpoint("http://login.microsoftonline.com", "t"), Err(EntraError::BadAuthorityHost(_))));
        assert!(matches!(token_endpoint("https://login.microsoftonline.com/t", "t"), Err(EntraError::BadAuthorityHost(_))));
        assert_eq!(token_endpoint(DEFAULT_AUTHORITY_HOST, "a/b"), Err(EntraError::BadTenant));
        assert_eq!(token_endpoint(DEFAULT_AUTHORITY_HOST, ""), Err(EntraError::BadTenant));
    }

    #[test]
    fn request_form_for_a_secret_and_for_a_certificate() {
        let f = token_request_fields("app-1", &ClientCredential::Secret("s3cr+t/=&".into()), EVENTHUBS_SCOPE).unwrap();
        assert_eq!(
            form_body(&f),
            "grant_type=client_credentials&client_id=app-1&scope=https%3A%2F%2Feventhubs.azure.net%2F.default&client_secret=s3cr%2Bt%2F%3D%26"
        );
        let f = token_request_fields("app-1", &ClientCredential::Assertion("h.c.s".into()), EVENTHUBS_SCOPE).unwrap();
        let keys: Vec<&str> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["grant_type", "client_id", "scope", "client_assertion_type", "client_assertion"]);
        assert_eq!(f[3].1, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        assert_eq!(token_request_fields(" ", &ClientCredential::Secret("x".into()), EVENTHUBS_SCOPE), Err(EntraError::NoClientId));
        assert_eq!(format!("{:?}", ClientCredential::Secret("s3cr+t".into())), "Secret(<redacted>)");
    }

    #[test]
    fn token_answer_is_parsed_and_refreshed_five_minutes_early() {
        let t = parse_token_response(200, br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.x.y"}"#, 1_000)
            .unwrap();
        assert_eq!((t.value.as_str(), t.expires_at, t.refresh_at), ("eyJ0.x.y", 4_599, 4_299));
        assert!(!format!("{t:?}").contains("eyJ0"));
        // Numeric strings (v1 endpoint) and refresh_in.
        let t = parse_token_response(200, br#"{"token_type":"Bearer","expires_in":"86399","refresh_in":43199,"access_token":"a"}"#, 0).unwrap();
        assert_eq!((t.expires_at, t.refresh_at), (86_399, 43_199));
        // Short-lived (emulator): 80 %.
        assert_eq!(refresh_at(0, 100, None), 80);
    }

    #[test]
    fn refusals_carry_the_code_and_a_hint_but_no_secret() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215],"trace_id":"t"}"#;
        let e = parse_token_response(401, body, 0).unwrap_err();
        let EntraError::Refused { ref codes, ref description, hint, .. } = e else { panic!("{e:?}") };
        assert_eq!(codes, ", AADSTS7000215");
        assert_eq!(description, "AADSTS7000215: Invalid client secret provided.");
        assert!(hint.contains("secret"));
        assert!(e.to_string().contains("invalid_client"));
        assert!(matches!(parse_token_response(502, b"<html>", 0), Err(EntraError::Malformed { status: 502, .. })));
        assert!(matches!(parse_token_response(200, br#"{"token_type":"Bearer","access_token":"a"}"#, 0), Err(EntraError::Malformed { .. })));
        assert!(matches!(
            parse_token_response(200, br#"{"token_type":"pop","expires_in":1,"access_token":"a"}"#, 0),
            Err(EntraError::Malformed { .. })
        ));
        assert!(matches!(parse_token_response(500, br#"{"access_token":"a","expires_in":5}"#, 0), Err(EntraError::Malformed { .. })));
    }

    #[test]
    fn cache_uses_refreshes_and_backs_off() {
        let mut c = TokenCache::default();
        assert_eq!(c.decide(0), TokenDecision::Fetch);
        c.failed(0);
        assert_eq!(c.decide(1), TokenDecision::WaitUntil(2));
        assert_eq!(c.decide(2), TokenDecision::Fetch);
        c.failed(2);
        assert_eq!(c.decide(3), TokenDecision::WaitUntil(6));
        c.succeeded(AccessToken { value: "a".into(), expires_at: 3_600, refresh_at: 3_300 });
        assert_eq!(c.decide(100), TokenDecision::Use);
        assert_eq!(c.decide(3_300), TokenDecision::RefreshKeepUsing);
        c.failed(3_300);
        // Refresh failed: keep using the old token, ask again after the delay.
        assert_eq!(c.decide(3_301), TokenDecision::Use);
        assert_eq!(c.decide(3_302), TokenDecision::RefreshKeepUsing);
        // Within 30 s of expiry the old token is no longer used.
        c.failed(3_570);
        assert_eq!(c.decide(3_571), TokenDecision::WaitUntil(3_574));
        assert_eq!(TokenCache::retry_delay_s(40), 300);
    }

    #[test]
    fn certificate_assertion_parts() {
        // Docs vector ("certificate credentials", x5t): SHA-1 thumbprint
        // 84E05C1D98BCE3A5421D225B140B36E86A3D5534 is hOBcHZi846VCHSJbFAs26Go9VTQ
        // in base64url: the same encoding x5t#S256 uses.
        let sha1 = hex::decode("84E05C1D98BCE3A5421D225B140B36E86A3D5534").unwrap();
        assert_eq!(B64URL.encode(sha1), "hOBcHZi846VCHSJbFAs26Go9VTQ");
        // python3 -c "import base64,hashlib;print(base64.urlsafe_b64encode(hashlib.sha256(b'not a real certificate').digest()).rstrip(b'=').decode())"
        assert_eq!(x5t_s256(b"not a real certificate"), "ie7mtsdUFQjXU6Q-Kq-SZ-gfHI5DAhRnaXQsk9KTB3w");
        let h = assertion_header(b"not a real certificate");
        assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("PS256"), Some("JWT")));
        let ep = token_endpoint(DEFAULT_AUTHORITY_HOST, "t1").unwrap();
        let c = assertion_claims("app-1", &ep, "5b1c…-jti", 1_000);
        assert_eq!(c["aud"], ep.as_str());
        assert_eq!((c["iss"].as_str(), c["sub"].as_str()), (Some("app-1"), Some("app-1")));
        assert_eq!((c["nbf"].as_u64(), c["exp"].as_u64()), (Some(1_000), Some(1_600)));
        let input = assertion_signing_input(&h, &c);
        let (a, b) = input.split_once('.').unwrap();
        let back: serde_json::Value = serde_json::from_slice(&B64URL.decode(b).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(!a.contains('=') && !a.contains('+') && !a.contains('/'));
    }

    const TEST_CERT: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-cert.pem");
    const TEST_KEY: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-key.pem");

    #[test]
    fn a_signed_assertion_has_three_parts_and_names_the_certificate() {
        let ep = token_endpoint(DEFAULT_AUTHORITY_HOST, "t1").unwrap();
        let a = client_assertion("app-1", &ep, "jti-1", 1_000, TEST_CERT, TEST_KEY).unwrap();
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["x5t#S256"], x5t_s256(&certificate_der(TEST_CERT).unwrap()).as_str());
        // RSA-2048: a 256-byte signature.
        assert_eq!(B64URL.decode(parts[2]).unwrap().len(), 256);
        // The signature itself is checked by an independent verifier in
        // tests/integration/eventhubs_assertion_python.rs.
    }

    #[test]
    fn bad_certificates_and_keys_are_named_errors() {
        assert!(matches!(certificate_der(b"nothing"), Err(EntraError::BadCertificate(_))));
        assert!(matches!(sign_assertion("a.b", b"nothing"), Err(EntraError::BadPrivateKey(_))));
        assert!(matches!(sign_assertion("a.b", TEST_CERT), Err(EntraError::BadPrivateKey(_))));
        // An EC key cannot sign PS256.
        let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(sign_assertion("a.b", ec.as_bytes()), Err(EntraError::BadPrivateKey(m)) if m.contains("RSA")));
    }

    #[test]
    fn bearer_file_token_and_reread_decision() {
        // python3: b64url('{"typ":"JWT","alg":"RS256"}') + '.' + b64url('{"aud":"https://eventhubs.azure.net","exp":1700003600}') + '.c2ln'
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2V2ZW50aHVicy5henVyZS5uZXQiLCJleHAiOjE3MDAwMDM2MDB9.c2ln";
        assert_eq!(jwt_expiry(jwt), Some(1_700_003_600));
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(bearer_from_file_text(&format!("Bearer {jwt}\n")).as_deref(), Some(jwt));
        assert_eq!(bearer_from_file_text("  \n"), None);
        assert_eq!(bearer_from_file_text("two words"), None);
        let s1 = FileStamp { len: 10, mtime_ns: 5 };
        let s2 = FileStamp { len: 10, mtime_ns: 6 };
        assert!(should_reread_token_file(None, s1, None, 0));
        assert!(!should_reread_token_file(Some(s1), s1, Some(1_000), 0));
        assert!(should_reread_token_file(Some(s1), s2, Some(1_000), 0));
        assert!(should_reread_token_file(Some(s1), FileStamp { len: 11, mtime_ns: 5 }, Some(1_000), 0));
        assert!(should_reread_token_file(Some(s1), s1, Some(1_000), 940));
        assert!(!should_reread_token_file(Some(s1), s1, None, 1_000_000));
    }

    proptest! {
        #[test]
        fn arbitrary_token_answers_never_panic(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..400), now in any::<u64>()) {
            if let Ok(t) = parse_token_response(status, &body, now) {
                prop_assert!(t.refresh_at <= t.expires_at);
            }
        }

        #[test]
        fn arbitrary_json_token_answers_never_panic(status in 0u16..1000, exp in any::<i64>(), r in any::<i64>(), err in proptest::option::of(".{0,20}"), now in any::<u64>()) {
            let mut v = serde_json::json!({"token_type":"Bearer","access_token":"a","expires_in":exp,"refresh_in":r});
            if let Some(e) = err { v["error"] = e.into(); }
            if let Ok(t) = parse_token_response(status, v.to_string().as_bytes(), now) {
                prop_assert!(t.refresh_at <= t.expires_at);
            }
        }

        #[test]
        fn arbitrary_files_never_panic(s in ".{0,300}") {
            let _ = jwt_expiry(&s);
            let _ = bearer_from_file_text(&s);
        }
    }
}
