//! The emulator's check of Microsoft Entra ID certificate credentials: the
//! signed JWT a client sends as `client_assertion` (with
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`)
//! in the client credentials grant.
//!
//! Written from the documents, not shared with the sink's assertion code
//! (src/sinks/eventhubs/entra.rs): the emulator is the oracle that checks the
//! sink, so a mistake there must not be repeated here and passed as correct.
//!
//! What is checked, following Microsoft identity platform docs "Microsoft
//! identity platform application authentication certificate credentials"
//! ("Assertion format"), RFC 7515 (JWS compact serialisation), RFC 7519
//! (JWT claims) and RFC 7523 §3 (JWT client authentication):
//! - the form: three base64url (no padding) parts `header.claims.signature`,
//!   header and claims JSON objects;
//! - the header: `alg` `RS256` (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518
//!   §3.3) or `PS256` (RSASSA-PSS with SHA-256, MGF1 SHA-256 and a 32-byte
//!   salt, RFC 7518 §3.5); `typ` `JWT` when present; `x5t` (base64url SHA-1
//!   of the certificate's DER) and/or `x5t#S256` (base64url SHA-256 of it),
//!   at least one, each naming the same registered certificate;
//! - the signature over `header "." claims` with that certificate's public key;
//! - the claims: `aud` = the token endpoint URL the client posted to
//!   (`https://{host}/{tenant}/oauth2/v2.0/token`; a string, or an array
//!   holding it, RFC 7519 §4.1.3), `iss` = `sub` = the client id, `exp`,
//!   `nbf`, `iat` (numbers of Unix seconds), `jti` (a non-empty string); the
//!   time `now` within `nbf - skew ..= exp + skew` and `iat <= now + skew`;
//! - a `jti` accepted once is refused again until its assertion expired
//!   (RFC 7523 §3 lets the server keep the used `jti` values for that long).
//!
//! Refusals answer as Entra ID's token endpoint does: HTTP 400/401 with
//! `error`, `error_codes` and `error_description` "AADSTS<code>: …" (OAuth 2.0
//! client credentials flow docs, "Error response"). The codes are from
//! "Microsoft Entra authentication and authorization error codes" and the
//! Azure SDK's "Troubleshoot service principal authentication"
//! (ClientCertificateCredential / ClientAssertionCredential tables):
//! 700027 (signature, or a certificate not registered on the application),
//! 700024 (not within its valid time range), 700023 (audience), 700021
//! (issuer/subject is not the `client_id`), 50027 (invalid JWT), 90014 (a
//! required field is missing). Entra ID documents no code for a replayed
//! `jti` (it is known to accept a reused assertion within its lifetime); the
//! emulator is stricter, so a sender that reuses one is caught here, and
//! answers AADSTS50013 ("InvalidAssertion").
//!
//! Pure: no clock, no I/O; times are Unix seconds passed in. Signature
//! verification is rustls-webpki's (ring), the library rustls itself verifies
//! TLS certificates with; the certificate is parsed by it too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// `client_assertion_type` of a JWT bearer assertion (RFC 7523 §2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (the 5 minutes
/// Microsoft.IdentityModel's token validation allows by default).
pub(crate) const CLOCK_SKEW_S: u64 = 300;

/// Longest assertion looked at, in bytes (a 4096-bit RS256 JWT with the
/// documented header and claims is under 1 KiB).
pub(crate) const MAX_ASSERTION_BYTES: usize = 16 * 1024;

/// Most `jti` values remembered at once; past this, those expiring first are
/// forgotten (an assertion may carry any `exp`: "Microsoft Entra ID doesn't
/// place restrictions on the exp time currently").
pub(crate) const MAX_REMEMBERED_JTIS: usize = 100_000;

/// A refusal, as the token endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// HTTP status: 400 or 401.
    pub(crate) status: u16,
    /// OAuth 2.0 `error` (`invalid_client`, `invalid_request`).
    pub(crate) error: &'static str,
    /// The AADSTS code.
    pub(crate) code: u64,
    /// The words after `AADSTS<code>: `.
    pub(crate) text: String,
}

fn refuse(status: u16, error: &'static str, code: u64, text: impl Into<String>) -> Refusal {
    Refusal { status, error, code, text: text.into() }
}

fn invalid_jwt(why: impl Into<String>) -> Refusal {
    refuse(400, "invalid_request", 50027, format!("Invalid JWT token. {}", why.into()))
}

fn missing(field: &str) -> Refusal {
    refuse(400, "invalid_request", 90014, format!("The required field '{field}' is missing from the credential."))
}

/// A certificate registered on the application (uploaded to its app
/// registration, in Entra ID terms).
#[derive(Clone)]
pub(crate) struct RegisteredCertificate {
    der: Vec<u8>,
    /// base64url SHA-1 of the DER (`x5t`).
    pub(crate) x5t: String,
    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub(crate) x5t_s256: String,
}

impl std::fmt::Debug for RegisteredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCertificate").field("x5t", &self.x5t).field("x5t_s256", &self.x5t_s256).finish()
    }
}

impl RegisteredCertificate {
    /// From a certificate's DER; `Err` says why it cannot verify assertions.
    pub(crate) fn from_der(der: Vec<u8>) -> Result<RegisteredCertificate, String> {
        use sha1::Digest as _;
        let cd = rustls::pki_types::CertificateDer::from(der.as_slice());
        webpki::EndEntityCert::try_from(&cd).map_err(|e| format!("not an X.509 certificate webpki can read ({e:?})"))?;
        let x5t = B64URL.encode(sha1::Sha1::digest(&der));
        let x5t_s256 = B64URL.encode(sha2::Sha256::digest(&der));
        Ok(RegisteredCertificate { der, x5t, x5t_s256 })
    }

    /// Every certificate in a PEM text (`-----BEGIN CERTIFICATE-----` blocks;
    /// anything else, such as a private key, is skipped). `Err` when there is
    /// none or one cannot be read.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Vec<RegisteredCertificate>, String> {
        let mut r = pem;
        let mut out = Vec::new();
        for c in rustls_pemfile::certs(&mut r) {
            let c = c.map_err(|e| format!("damaged PEM text: {e}"))?;
            out.push(RegisteredCertificate::from_der(c.as_ref().to_vec())?);
        }
        if out.is_empty() {
            return Err("no `-----BEGIN CERTIFICATE-----` block".into());
        }
        Ok(out)
    }

    /// Checks `signature` over `input` with this certificate's RSA public key.
    fn verifies(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        let cd = rustls::pki_types::CertificateDer::from(self.der.as_slice());
        let Ok(cert) = webpki::EndEntityCert::try_from(&cd) else { return false };
        let a = match alg {
            Alg::Rs256 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            Alg::Ps256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        };
        cert.verify_signature(a, input, signature).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Ps256,
}

/// What an accepted assertion said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) jti: String,
    /// `exp`, Unix seconds.
    pub(crate) exp: u64,
    /// `x5t#S256` of the certificate that signed it.
    pub(crate) certificate: String,
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    B64URL.decode(part).map_err(|_| invalid_jwt(format!("The {what} is not base64url without padding.")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid_jwt(format!("The {what} is not a JSON object."))),
    }
}

/// A numeric date claim (RFC 7519 §2: seconds, possibly fractional); its
/// whole seconds, clamped to 0.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<u64, Refusal> {
    let v = claims.get(name).ok_or_else(|| missing(name))?;
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() => Ok(f.max(0.0).min(u64::MAX as f64) as u64),
        _ => Err(invalid_jwt(format!("The '{name}' claim is not a number of seconds."))),
    }
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    match claims.get(name) {
        None => Err(missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid_jwt(format!("The '{name}' claim is not a string."))),
    }
}

/// Checks a client assertion for `client_id` (the form's `client_id`) posted
/// to a token endpoint whose URLs are `audiences`, at `now` (Unix seconds),
/// against the `registered` certificates. Does not look at `jti` reuse
/// ([`ReplayGuard`] does). Never panics, whatever `assertion` holds.
pub(crate) fn verify(
    assertion: &str,
    client_id: &str,
    audiences: &[String],
    registered: &[RegisteredCertificate],
    now: u64,
) -> Result<Accepted, Refusal> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(invalid_jwt(format!("The assertion is longer than {MAX_ASSERTION_BYTES} bytes.")));
    }
    let mut parts = assertion.split('.');
    let (h, c, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) if !h.is_empty() && !c.is_empty() && !s.is_empty() => (h, c, s),
        _ => return Err(invalid_jwt("A JWS has three non-empty dot-separated parts (header.claims.signature).")),
    };
    let header = json_object(&decode_part(h, "header")?, "header")?;
    let claims = json_object(&decode_part(c, "claims part")?, "claims part")?;
    let signature = decode_part(s, "signature")?;

    // Header.
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Alg::Rs256,
        Some("PS256") => Alg::Ps256,
        Some(other) => return Err(invalid_jwt(format!("The signing algorithm '{other}' is not supported; use PS256 or RS256."))),
        None => return Err(missing("alg")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(invalid_jwt("The header's 'typ' is not 'JWT'.")),
    }
    let x5t = header.get("x5t").map(|v| v.as_str().ok_or_else(|| invalid_jwt("'x5t' is not a string."))).transpose()?;
    let x5t_s256 = header.get("x5t#S256").map(|v| v.as_str().ok_or_else(|| invalid_jwt("'x5t#S256' is not a string."))).transpose()?;
    if x5t.is_none() && x5t_s256.is_none() {
        return Err(refuse(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation. [Reason - The header names no key: it needs 'x5t#S256' or 'x5t'.]",
        ));
    }
    let cert = registered.iter().find(|r| x5t.is_none_or(|t| t == r.x5t) && x5t_s256.is_none_or(|t| t == r.x5t_s256)).ok_or_else(|| {
        let named = x5t_s256.or(x5t).unwrap_or_default();
        let shown: String = named.chars().take(64).collect();
        refuse(
            401,
            "invalid_client",
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. \
                     [Reason - The key was not found., Thumbprint of key used by client: '{shown}']"
            ),
        )
    })?;

    // Signature, over the parts exactly as sent (RFC 7515 §5.2).
    let input_len = h.len() + 1 + c.len();
    if !cert.verifies(alg, &assertion.as_bytes()[..input_len], &signature) {
        return Err(refuse(401, "invalid_client", 700027, "Client assertion failed signature validation."));
    }

    // Claims.
    let aud_ok = match claims.get("aud") {
        None => return Err(missing("aud")),
        Some(Value::String(a)) => audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        Some(_) => return Err(invalid_jwt("The 'aud' claim is not a string.")),
    };
    if !aud_ok {
        let expected = audiences.first().map(String::as_str).unwrap_or("");
        return Err(refuse(
            401,
            "invalid_client",
            700023,
            format!("Client assertion audience claim does not match Realm issuer. Expected '{expected}'."),
        ));
    }
    let iss = string_claim(&claims, "iss")?;
    let sub = string_claim(&claims, "sub")?;
    if iss != client_id || sub != client_id {
        return Err(refuse(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter ('iss' and 'sub' must both be the client id).",
        ));
    }
    let exp = numeric_date(&claims, "exp")?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    let jti = string_claim(&claims, "jti")?;
    if jti.is_empty() {
        return Err(missing("jti"));
    }
    if now > exp.saturating_add(CLOCK_SKEW_S) || now.saturating_add(CLOCK_SKEW_S) < nbf || iat > now.saturating_add(CLOCK_SKEW_S) {
        return Err(refuse(
            401,
            "invalid_client",
            700024,
            format!("Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}, issued at {iat}."),
        ));
    }
    Ok(Accepted { jti: jti.to_string(), exp, certificate: cert.x5t_s256.clone() })
}

/// The `jti` values accepted and not yet expired (plus the skew), so a
/// replayed assertion is refused.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    seen: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Admits `a` at `now` once; `Err` when its `jti` was admitted before and
    /// that assertion has not expired yet.
    pub(crate) fn admit(&mut self, a: &Accepted, now: u64) -> Result<(), Refusal> {
        self.seen.retain(|_, exp| exp.saturating_add(CLOCK_SKEW_S) >= now);
        if self.seen.contains_key(&a.jti) {
            return Err(refuse(
                401,
                "invalid_client",
                50013,
                "Assertion is invalid: this client assertion's 'jti' was already used; make a new assertion (a fresh 'jti') for each request.",
            ));
        }
        if self.seen.len() >= MAX_REMEMBERED_JTIS {
            let mut by_exp: Vec<(u64, String)> = self.seen.iter().map(|(j, e)| (*e, j.clone())).collect();
            by_exp.sort();
            for (_, j) in by_exp.into_iter().take(MAX_REMEMBERED_JTIS / 10) {
                self.seen.remove(&j);
            }
        }
        self.seen.insert(a.jti.clone(), a.exp);
        Ok(())
    }

    /// How many `jti` values are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustls::SignatureScheme;
    use serde_json::json;

    const CERT: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-cert.pem");
    const KEY: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-key.pem");
    const OTHER_CERT: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-other-cert.pem");
    const OTHER_KEY: &[u8] = include_bytes!("../../../tests/data/eventhubs/test-assertion-other-key.pem");
    /// Computed with Python `hashlib` over `openssl x509 -outform DER` of CERT.
    const CERT_X5T: &str = "gBBFCIeDd48C6fHZChbRLFYzRUk";
    const CERT_X5T_S256: &str = "Z4SY119XuSj3xegwab2rQ3omLOhw0r8TS_NUe_psQd0";
    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
    const AUD: &str = "https://127.0.0.1:8443/emulator-tenant/oauth2/v2.0/token";
    const NOW: u64 = 1_800_000_000;

    /// A JWS signed here, with rustls's ring signer directly (not the sink's code).
    fn sign(header: &Value, claims: &Value, key_pem: &[u8], scheme: SignatureScheme) -> String {
        let mut r = key_pem;
        let key = rustls_pemfile::private_key(&mut r).unwrap().unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap().choose_scheme(&[scheme]).unwrap();
        let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
        let sig = signer.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", B64URL.encode(sig))
    }

    fn claims(jti: &str) -> Value {
        json!({"aud": AUD, "iss": CLIENT, "sub": CLIENT, "jti": jti, "nbf": NOW, "iat": NOW, "exp": NOW + 600})
    }

    fn ps256_header() -> Value {
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": CERT_X5T_S256})
    }

    fn registered() -> Vec<RegisteredCertificate> {
        RegisteredCertificate::from_pem(CERT).unwrap()
    }

    fn check(jws: &str, now: u64) -> Result<Accepted, Refusal> {
        verify(jws, CLIENT, &[AUD.to_string()], &registered(), now)
    }

    fn code(r: Result<Accepted, Refusal>) -> u64 {
        r.expect_err("refused").code
    }

    #[test]
    fn thumbprints_match_an_independent_computation() {
        let r = registered();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].x5t.as_str(), r[0].x5t_s256.as_str()), (CERT_X5T, CERT_X5T_S256));
        // A PEM file holding a key and no certificate is refused.
        assert!(RegisteredCertificate::from_pem(KEY).is_err());
        assert!(RegisteredCertificate::from_pem(b"").is_err());
        let mut both = CERT.to_vec();
        both.extend_from_slice(OTHER_CERT);
        assert_eq!(RegisteredCertificate::from_pem(&both).unwrap().len(), 2);
    }

    #[test]
    fn documented_assertions_are_accepted_ps256_and_rs256_with_either_thumbprint() {
        let a = check(&sign(&ps256_header(), &claims("j1"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW).unwrap();
        assert_eq!(a, Accepted { jti: "j1".into(), exp: NOW + 600, certificate: CERT_X5T_S256.into() });
        let rs = json!({"alg": "RS256", "typ": "JWT", "x5t": CERT_X5T});
        assert!(check(&sign(&rs, &claims("j2"), KEY, SignatureScheme::RSA_PKCS1_SHA256), NOW).is_ok());
        let both = json!({"alg": "PS256", "typ": "JWT", "x5t": CERT_X5T, "x5t#S256": CERT_X5T_S256});
        assert!(check(&sign(&both, &claims("j3"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW).is_ok());
        // `aud` as an array holding the token endpoint (RFC 7519 §4.1.3).
        let mut c = claims("j4");
        c["aud"] = json!(["https://other", AUD]);
        assert!(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW).is_ok());
        // Within the clock skew on both ends.
        let jws = sign(&ps256_header(), &claims("j5"), KEY, SignatureScheme::RSA_PSS_SHA256);
        assert!(check(&jws, NOW - CLOCK_SKEW_S).is_ok());
        assert!(check(&jws, NOW + 600 + CLOCK_SKEW_S).is_ok());
    }

    #[test]
    fn a_wrong_key_or_an_unregistered_certificate_is_refused_700027() {
        // Names the registered certificate, signed with another key.
        let r = check(&sign(&ps256_header(), &claims("j"), OTHER_KEY, SignatureScheme::RSA_PSS_SHA256), NOW).unwrap_err();
        assert_eq!((r.status, r.error, r.code), (401, "invalid_client", 700027));
        assert!(r.text.contains("signature validation"), "{}", r.text);
        // The other certificate's own, correct, assertion: not registered.
        let other = RegisteredCertificate::from_pem(OTHER_CERT).unwrap().remove(0);
        let h = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": other.x5t_s256});
        let r = check(&sign(&h, &claims("j"), OTHER_KEY, SignatureScheme::RSA_PSS_SHA256), NOW).unwrap_err();
        assert_eq!(r.code, 700027);
        assert!(r.text.contains("not registered"), "{}", r.text);
        // ... and accepted once it is registered.
        let both = [registered(), vec![other]].concat();
        assert!(verify(&sign(&h, &claims("j"), OTHER_KEY, SignatureScheme::RSA_PSS_SHA256), CLIENT, &[AUD.into()], &both, NOW).is_ok());
    }

    #[test]
    fn a_wrong_thumbprint_is_refused_700027() {
        for h in [
            json!({"alg": "PS256", "typ": "JWT", "x5t#S256": CERT_X5T}),
            json!({"alg": "PS256", "typ": "JWT", "x5t": CERT_X5T_S256}),
            json!({"alg": "PS256", "typ": "JWT", "x5t": "AAAA", "x5t#S256": CERT_X5T_S256}),
            json!({"alg": "PS256", "typ": "JWT"}),
        ] {
            assert_eq!(code(check(&sign(&h, &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 700027, "{h}");
        }
    }

    #[test]
    fn a_changed_claim_or_algorithm_breaks_the_signature() {
        let jws = sign(&ps256_header(), &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256);
        let mut parts: Vec<String> = jws.split('.').map(String::from).collect();
        let mut c = claims("j");
        c["exp"] = json!(NOW + 6000);
        parts[1] = B64URL.encode(c.to_string());
        assert_eq!(code(check(&parts.join("."), NOW)), 700027);
        // A PS256 signature presented as RS256.
        let mut parts: Vec<String> = jws.split('.').map(String::from).collect();
        parts[0] = B64URL.encode(json!({"alg": "RS256", "typ": "JWT", "x5t#S256": CERT_X5T_S256}).to_string());
        assert_eq!(code(check(&parts.join("."), NOW)), 700027);
    }

    #[test]
    fn a_wrong_audience_is_refused_700023() {
        for aud in [json!("https://login.microsoftonline.com/emulator-tenant/oauth2/v2.0/token"), json!(format!("{AUD}/")), json!(["x"])] {
            let mut c = claims("j");
            c["aud"] = aud.clone();
            assert_eq!(code(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 700023, "{aud}");
        }
    }

    #[test]
    fn an_issuer_or_subject_other_than_the_client_id_is_refused_700021() {
        for field in ["iss", "sub"] {
            let mut c = claims("j");
            c[field] = json!("someone-else");
            assert_eq!(code(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 700021, "{field}");
        }
        let jws = sign(&ps256_header(), &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256);
        assert_eq!(code(verify(&jws, "another-app", &[AUD.into()], &registered(), NOW)), 700021);
    }

    #[test]
    fn expired_or_not_yet_valid_assertions_are_refused_700024() {
        let jws = sign(&ps256_header(), &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256);
        let r = check(&jws, NOW + 600 + CLOCK_SKEW_S + 1).unwrap_err();
        assert_eq!((r.status, r.error, r.code), (401, "invalid_client", 700024));
        assert_eq!(code(check(&jws, NOW - CLOCK_SKEW_S - 1)), 700024, "nbf in the future");
        let mut c = claims("j");
        c["iat"] = json!(NOW + CLOCK_SKEW_S + 1);
        assert_eq!(code(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 700024, "issued in the future");
    }

    #[test]
    fn a_replayed_jti_is_refused_until_its_assertion_expired() {
        let mut guard = ReplayGuard::default();
        let a = check(&sign(&ps256_header(), &claims("once"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW).unwrap();
        assert_eq!(guard.admit(&a, NOW), Ok(()));
        // The same assertion again, or another one with the same jti.
        let again = check(&sign(&ps256_header(), &claims("once"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW + 1).unwrap();
        let r = guard.admit(&again, NOW + 1).unwrap_err();
        assert_eq!((r.status, r.error, r.code), (401, "invalid_client", 50013));
        let fresh = check(&sign(&ps256_header(), &claims("twice"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW + 1).unwrap();
        assert_eq!(guard.admit(&fresh, NOW + 1), Ok(()));
        // Forgotten once it could no longer be accepted anyway.
        assert_eq!(guard.admit(&a, NOW + 600 + CLOCK_SKEW_S + 1), Ok(()));
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn malformed_assertions_are_refused_without_panicking() {
        let good = sign(&ps256_header(), &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256);
        let (h, rest) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            "..".into(),
            format!("{h}.{rest}="),
            format!("{h}=.{rest}"),
            format!("{}.{rest}", B64URL.encode("[1]")),
            format!("{}.{rest}", B64URL.encode("not json")),
            "x".repeat(MAX_ASSERTION_BYTES + 1),
        ] {
            let r = check(&bad, NOW).unwrap_err();
            assert_eq!((r.status, r.code), (400, 50027), "{bad:.80}");
        }
        for alg in ["none", "HS256", "ES256", "RS512"] {
            let h = json!({"alg": alg, "typ": "JWT", "x5t#S256": CERT_X5T_S256});
            assert_eq!(code(check(&sign(&h, &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 50027, "{alg}");
        }
        let h = json!({"alg": "PS256", "typ": "JOSE+JSON", "x5t#S256": CERT_X5T_S256});
        assert_eq!(code(check(&sign(&h, &claims("j"), KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 50027);
        for field in ["jti", "exp", "nbf", "iat", "iss", "sub", "aud"] {
            let mut c = claims("j");
            c.as_object_mut().unwrap().remove(field);
            assert_eq!(code(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 90014, "{field}");
        }
        let mut c = claims("j");
        c["exp"] = json!("soon");
        assert_eq!(code(check(&sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256), NOW)), 50027);
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_refused_without_panicking(s in ".{0,600}") {
            prop_assert!(check(&s, NOW).is_err());
        }

        #[test]
        fn arbitrary_three_part_jws_is_refused_without_panicking(
            h in proptest::collection::vec(any::<u8>(), 0..200),
            c in proptest::collection::vec(any::<u8>(), 0..200),
            s in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let jws = format!("{}.{}.{}", B64URL.encode(h), B64URL.encode(c), B64URL.encode(s));
            prop_assert!(check(&jws, NOW).is_err());
        }

        #[test]
        fn a_signed_assertion_with_arbitrary_claims_never_panics(
            aud in prop_oneof![Just(json!(AUD)), any::<i64>().prop_map(|n| json!(n)), ".{0,20}".prop_map(|s| json!(s))],
            exp in prop_oneof![any::<u64>().prop_map(|n| json!(n)), any::<f64>().prop_map(|f| json!(f)), Just(json!(null))],
            jti in prop_oneof![".{0,10}".prop_map(|s| json!(s)), Just(json!([]))],
        ) {
            let c = json!({"aud": aud, "iss": CLIENT, "sub": CLIENT, "jti": jti, "nbf": NOW, "iat": NOW, "exp": exp});
            let jws = sign(&ps256_header(), &c, KEY, SignatureScheme::RSA_PSS_SHA256);
            let _ = check(&jws, NOW);
        }
    }
}
