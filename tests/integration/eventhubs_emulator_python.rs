//! Fidelity of the Event Hubs emulator and of the sink's request body,
//! against independent implementations in a few lines of Python:
//!
//! - The emulator (`iomt-edge simulate eventhubs`, a separate process)
//!   accepts a batch sent by Python `urllib` with a SAS token made by Python
//!   `hmac` following Azure REST docs "Generate SAS token" (`quote_plus(uri)`,
//!   HMAC-SHA256 keyed with the key's UTF-8 bytes, base64), and refuses the
//!   same request signed with a wrong key, or with an expired `se`. It also
//!   issues a bearer token to a Python client-credentials request and accepts
//!   it, and refuses that token once it expired.
//! - Its token endpoint gives a token for a certificate credential (client
//!   assertion) that Python `cryptography` builds and signs by hand following
//!   Microsoft identity platform docs "certificate credentials" (header `alg`
//!   PS256 or RS256, `typ` JWT, `x5t#S256` or `x5t`; claims `aud` = the token
//!   endpoint, `iss` = `sub` = client id, `jti`, `nbf`, `iat`, `exp`; PSS with
//!   MGF1-SHA-256 and a 32-byte salt as RFC 7518 §3.5 says), and that token
//!   sends a batch; it refuses the same assertion signed with another key,
//!   replayed, expired, or for another audience, with the documented AADSTS
//!   codes. This one needs the test venv's `cryptography` (IOMT_TEST_PYTHON).
//! - The sink's batch body, parsed by Python's `json`, matches the REST
//!   "Send batch events" format field by field.
//!
//! Skipped with a note when python3 is not installed.

use iomt_edge::config::eventhubs::EventHubsSinkConfig;
use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use iomt_edge::sinks::eventhubs::EventHubsSink;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PY_SEND: &str = r#"
import sys, json, ssl, time, hmac, hashlib, base64, urllib.parse, urllib.request, urllib.error
desc = json.load(open(sys.argv[1]))
mode = sys.argv[2]
ctx = ssl.create_default_context(cafile=desc['ca_file'])
base = desc['url']
resource = base + '/' + desc['event_hub']

def sas(key, se):
    sr = urllib.parse.quote_plus(resource)
    sig = base64.b64encode(hmac.HMAC(key.encode('utf-8'), (sr + '\n' + str(se)).encode('utf-8'), hashlib.sha256).digest())
    return 'SharedAccessSignature sr={}&sig={}&se={}&skn={}'.format(sr, urllib.parse.quote(sig, safe=''), se, desc['key_name'])

def token():
    form = urllib.parse.urlencode({'grant_type': 'client_credentials', 'client_id': desc['client_id'],
        'client_secret': desc['client_secret'], 'scope': 'https://eventhubs.azure.net/.default'}).encode()
    req = urllib.request.Request(base + '/' + desc['tenant'] + '/oauth2/v2.0/token', data=form,
        headers={'Content-Type': 'application/x-www-form-urlencoded'})
    ans = json.load(urllib.request.urlopen(req, context=ctx))
    assert ans['token_type'] == 'Bearer' and int(ans['expires_in']) > 0, ans
    return 'Bearer ' + ans['access_token']

def send(auth):
    body = json.dumps([{'Body': json.dumps({'deviceId': 'py-1', 'messageId': 'py-m1'}),
        'BrokerProperties': {'MessageId': 'py-m1', 'PartitionKey': 'py-1'}, 'UserProperties': {'from': 'python'}}]).encode()
    req = urllib.request.Request(resource + '/messages?timeout=60&api-version=2014-01', data=body,
        headers={'Content-Type': 'application/vnd.microsoft.servicebus.json', 'Authorization': auth})
    try:
        return urllib.request.urlopen(req, context=ctx).status
    except urllib.error.HTTPError as e:
        return e.code

now = int(time.time())
if mode == 'sas':
    print(send(sas(desc['key'], now + 300)), send(sas(desc['key'] + 'x', now + 300)), send(sas(desc['key'], now - 1)))
elif mode == 'bearer':
    t = token()
    first = send(t)
    time.sleep(float(sys.argv[3]))
    s = t[7:]
    i = len(s) - 10
    forged = 'Bearer ' + s[:i] + ('A' if s[i] != 'A' else 'B') + s[i + 1:]
    print(first, send(t), send(forged))
"#;

const PY_BODY: &str = r#"
import sys, json
body = json.load(open(sys.argv[1]))
m = json.load(open(sys.argv[2]))
assert isinstance(body, list) and len(body) == 1, body
ev = body[0]
assert set(ev) == {'Body', 'BrokerProperties', 'UserProperties'}, sorted(ev)
assert isinstance(ev['Body'], str)
assert json.loads(ev['Body']) == m, 'Body is the message JSON as a string'
assert ev['BrokerProperties'] == {'MessageId': m['messageId'], 'PartitionKey': m['deviceId']}, ev['BrokerProperties']
assert ev['UserProperties'] == {'site': 'ward-3', 'source': 'iomt-edge'}, ev['UserProperties']
print('ok')
"#;

const PY_ASSERTION: &str = r#"
import sys, json, ssl, time, uuid, base64, hashlib, urllib.parse, urllib.request, urllib.error
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
desc = json.load(open(sys.argv[1]))
cert = x509.load_pem_x509_certificate(open(sys.argv[2], 'rb').read())
key = serialization.load_pem_private_key(open(sys.argv[3], 'rb').read(), password=None)
ctx = ssl.create_default_context(cafile=desc['ca_file'])
endpoint = desc['url'] + '/' + desc['tenant'] + '/oauth2/v2.0/token'
cid = desc['client_id']
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode()
der = cert.public_bytes(serialization.Encoding.DER)

def assertion(alg='PS256', signer=key, aud=endpoint, shift=0, jti=None):
    now = int(time.time()) + shift
    header = {'alg': alg, 'typ': 'JWT'}
    if alg == 'PS256':
        header['x5t#S256'] = b64(hashlib.sha256(der).digest())
    else:
        header['x5t'] = b64(hashlib.sha1(der).digest())
    claims = {'aud': aud, 'iss': cid, 'sub': cid, 'jti': jti or str(uuid.uuid4()), 'nbf': now, 'iat': now, 'exp': now + 600}
    signing_input = (b64(json.dumps(header).encode()) + '.' + b64(json.dumps(claims).encode())).encode()
    if alg == 'PS256':
        sig = signer.sign(signing_input, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    else:
        sig = signer.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + '.' + b64(sig)

def token(a):
    form = urllib.parse.urlencode({'grant_type': 'client_credentials', 'client_id': cid, 'scope': 'https://eventhubs.azure.net/.default',
        'client_assertion_type': 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', 'client_assertion': a}).encode()
    req = urllib.request.Request(endpoint, data=form, headers={'Content-Type': 'application/x-www-form-urlencoded'})
    try:
        ans = json.load(urllib.request.urlopen(req, context=ctx))
        assert ans['token_type'] == 'Bearer' and int(ans['expires_in']) > 0, ans
        return [200, ans['access_token']]
    except urllib.error.HTTPError as e:
        ans = json.load(e)
        assert ans['error_description'].startswith('AADSTS%d:' % ans['error_codes'][0]), ans
        return [e.code, ans['error'], ans['error_codes']]

def send(access_token):
    resource = desc['url'] + '/' + desc['event_hub']
    body = json.dumps([{'Body': json.dumps({'deviceId': 'py-cert', 'messageId': 'py-c1'}), 'BrokerProperties': {'MessageId': 'py-c1', 'PartitionKey': 'py-cert'}}]).encode()
    req = urllib.request.Request(resource + '/messages?api-version=2014-01', data=body,
        headers={'Content-Type': 'application/vnd.microsoft.servicebus.json', 'Authorization': 'Bearer ' + access_token})
    try:
        return urllib.request.urlopen(req, context=ctx).status
    except urllib.error.HTTPError as e:
        return e.code

out = {}
good = assertion()
t = token(good)
out['ps256'] = t[0]
out['send'] = send(t[1]) if t[0] == 200 else None
out['rs256'] = token(assertion('RS256'))[0]
out['replayed'] = token(good)
out['wrong_key'] = token(assertion(signer=rsa.generate_private_key(public_exponent=65537, key_size=2048)))
out['expired'] = token(assertion(shift=-1000))
out['wrong_audience'] = token(assertion(aud='https://login.microsoftonline.com/' + desc['tenant'] + '/oauth2/v2.0/token'))
print(json.dumps(out))
"#;

fn have_python() -> bool {
    let ok = Command::new("python3").arg("-c").arg("import ssl, hmac, urllib.request").output().is_ok_and(|o| o.status.success());
    if !ok {
        crate::support::skip(&crate::support::this_test(), "python3 cannot be run: no independent check");
    }
    ok
}

struct Emu(Child);
impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emulator(dir: &Path, extra: &[&str]) -> (Emu, std::path::PathBuf) {
    let child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["simulate", "eventhubs", "--port", "0", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let json = dir.join("emulator.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !json.exists() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Emu(child), json)
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn emulator_accepts_a_python_sas_token_and_refuses_a_wrong_key_or_an_expired_one() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_emu, json) = emulator(dir.path(), &[]);
    let got = python(&["-c", PY_SEND, json.to_str().unwrap(), "sas"]);
    assert_eq!(got, "201 401 401", "right key, wrong key, expired");
    let recorded = std::fs::read_to_string(dir.path().join("events/py-1.ndjson")).unwrap();
    assert_eq!(recorded.lines().count(), 1, "only the accepted batch is recorded");
    let ev: Value = serde_json::from_str(recorded.lines().next().unwrap()).unwrap();
    assert_eq!(ev["Body"]["messageId"], "py-m1");
    assert_eq!(ev["Properties"]["from"], "python");
}

#[test]
fn emulator_issues_bearer_tokens_to_python_and_refuses_them_once_expired() {
    if !have_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_emu, json) = emulator(dir.path(), &["--token-lifetime", "2s"]);
    let got = python(&["-c", PY_SEND, json.to_str().unwrap(), "bearer", "3"]);
    assert_eq!(got, "201 401 401", "fresh token, expired token, forged signature");
}

#[test]
fn the_sinks_batch_body_matches_the_rest_format_in_an_independent_json_reader() {
    if !have_python() {
        return;
    }
    let mut cfg = EventHubsSinkConfig::with_connection_string(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=a2V5;EntityPath=v",
    );
    cfg.user_properties.insert("site".into(), "ward-3".into());
    cfg.user_properties.insert("source".into(), "iomt-edge".into());
    let sink = EventHubsSink::start(&cfg).unwrap();
    let readings: Vec<Reading> = (0..3)
        .map(|i| {
            let mut r = Reading::new("oxi \"7\"\u{e9}", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 95.0 + i as f64);
            r.seq = 10 + i;
            r
        })
        .collect();
    let mut m = Message::from_batch("gw-1", "0a1b", &readings).unwrap();
    m.patient_id = Some("P-1".into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.json"), sink.request_body(&m)).unwrap();
    std::fs::write(dir.path().join("message.json"), m.to_json()).unwrap();
    let got = python(&["-c", PY_BODY, dir.path().join("body.json").to_str().unwrap(), dir.path().join("message.json").to_str().unwrap()]);
    assert_eq!(got, "ok");
}

/// The test venv's Python (scripts/test.sh sets IOMT_TEST_PYTHON), else python3.
fn venv_python() -> String {
    std::env::var("IOMT_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn emulator_gives_a_token_for_a_python_signed_certificate_assertion_and_refuses_a_wrong_key() {
    let py = venv_python();
    if !Command::new(&py).args(["-c", "import cryptography"]).output().is_ok_and(|o| o.status.success()) {
        let why = format!("{py} has no `cryptography` (scripts/requirements-test.txt): no independent client assertion");
        crate::support::skip(&crate::support::this_test(), why);
        return;
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eventhubs");
    let (cert, key) = (data.join("test-assertion-cert.pem"), data.join("test-assertion-key.pem"));
    let dir = tempfile::tempdir().unwrap();
    let (_emu, json) = emulator(dir.path(), &["--client-certificate", cert.to_str().unwrap()]);
    let out = Command::new(&py).arg("-c").arg(PY_ASSERTION).arg(&json).arg(&cert).arg(&key).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["ps256"], 200, "{got}");
    assert_eq!(got["send"], 201, "the token sends a batch: {got}");
    assert_eq!(got["rs256"], 200, "{got}");
    assert_eq!(got["replayed"], serde_json::json!([401, "invalid_client", [50013]]), "{got}");
    assert_eq!(got["wrong_key"], serde_json::json!([401, "invalid_client", [700027]]), "{got}");
    assert_eq!(got["expired"], serde_json::json!([401, "invalid_client", [700024]]), "{got}");
    assert_eq!(got["wrong_audience"], serde_json::json!([401, "invalid_client", [700023]]), "{got}");
    let recorded = std::fs::read_to_string(dir.path().join("events/py-cert.ndjson")).unwrap();
    assert_eq!(recorded.lines().count(), 1);
}
