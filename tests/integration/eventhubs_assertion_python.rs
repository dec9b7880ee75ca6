//! The Entra ID certificate assertion verifies with an independent
//! implementation: Python `cryptography` checks the PS256 signature
//! (RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt: RFC 7518 §3.5) against
//! the certificate's public key, and recomputes `x5t#S256` from the
//! certificate ("Microsoft identity platform certificate credentials").
//! Skipped with a note when python3 or its `cryptography` package is missing.

use iomt_edge::sinks::eventhubs::entra;
use std::process::Command;

const PY: &str = r#"
import sys, base64, hashlib, json
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
jws, cert_path = sys.argv[1], sys.argv[2]
cert = x509.load_pem_x509_certificate(open(cert_path, 'rb').read())
h, c, s = jws.split('.')
d = lambda x: base64.urlsafe_b64decode(x + '=' * (-len(x) % 4))
cert.public_key().verify(d(s), (h + '.' + c).encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
header = json.loads(d(h))
der = cert.public_bytes(serialization.Encoding.DER)
assert header['alg'] == 'PS256', header
assert header['x5t#S256'] == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b'=').decode(), header
print(json.loads(d(c))['aud'])
"#;

/// The test venv's Python (scripts/test.sh sets IOMT_TEST_PYTHON), else python3.
fn python() -> String {
    std::env::var("IOMT_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_python_cryptography() -> bool {
    Command::new(python()).args(["-c", "import cryptography"]).output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn assertion_signature_verifies_with_python_cryptography() {
    if !has_python_cryptography() {
        let why = format!("{} has no `cryptography` (scripts/requirements-test.txt): no independent check", python());
        crate::support::skip(&crate::support::this_test(), why);
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eventhubs");
    let cert = std::fs::read(dir.join("test-assertion-cert.pem")).unwrap();
    let key = std::fs::read(dir.join("test-assertion-key.pem")).unwrap();
    let ep = entra::token_endpoint(entra::DEFAULT_AUTHORITY_HOST, "contoso.onmicrosoft.com").unwrap();
    let jws = entra::client_assertion("11111111-2222-3333-4444-555555555555", &ep, "jti-1", 1_700_000_000, &cert, &key).unwrap();
    let run = |jws: &str| Command::new(python()).arg("-c").arg(PY).arg(jws).arg(dir.join("test-assertion-cert.pem")).output().unwrap();
    let out = run(&jws);
    assert!(out.status.success(), "verification failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ep);
    // A changed claim no longer verifies (the verifier is not a rubber stamp).
    let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
    let other = entra::assertion_claims("11111111-2222-3333-4444-555555555555", &ep, "jti-2", 1_700_000_000);
    parts[1] = entra::assertion_signing_input(&serde_json::json!({}), &other).split('.').nth(1).unwrap().to_string();
    assert!(!run(&parts.join(".")).status.success());
}
