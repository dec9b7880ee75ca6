//! A local Azure Event Hubs emulator (REST "Send batch events" over HTTPS)
//! with a Microsoft Entra ID token endpoint, for tests and for trying the
//! whole flow on one machine: device -> gateway -> event hub -> MedTech
//! preview.
//!
//! What it serves, on one loopback HTTPS port (TLS from a CA it makes and
//! writes to a file the gateway trusts through `ca_file`):
//! - `POST /{hub}/messages?api-version=…` with
//!   `Content-Type: application/vnd.microsoft.servicebus.json`: checks the
//!   `Authorization` (a SAS token signed with its key, or a bearer token its
//!   token endpoint issued), the size (413 above the tier limit) and the
//!   batch body, records each event and answers 201 with an empty body
//!   (Azure REST docs "Send batch events"). Errors are Service Bus XML
//!   (`<Error><Code>…</Code><Detail>…</Detail></Error>`).
//! - `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant with the
//!   client secret it prints, or with a certificate credential (a signed JWT
//!   `client_assertion`) for a certificate it was started with, checked by
//!   [`assertion`] (Microsoft identity platform docs "OAuth 2.0 client
//!   credentials flow", "Microsoft identity platform application
//!   authentication certificate credentials"); issues tokens of a
//!   configurable lifetime.
//! - `PUT /$emulator/faults` (JSON [`Faults`]) and `GET /$emulator/stats`:
//!   fault injection and counters, for tests and by hand.
//!
//! Events are recorded per partition key as NDJSON envelopes
//! (`{"Body","Properties","SystemProperties"}`, the shape MedTech wraps
//! events in), which `iomt-edge medtech preview --envelope FILE…` reads.
//!
//! Hand-written HTTP/1.1 (request line, headers, `Content-Length` bodies,
//! keep-alive): the project has an HTTP client but no server, and faults
//! such as a reset after the request was stored need control of the socket.
//! Its checks ([`checks`], [`assertion`]) are its own code, not the sink's.

pub(crate) mod assertion;
pub(crate) mod checks;

use crate::simulate::iothub::certs::Authority;
use crate::simulate::EmulatorError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// Longest request head (request line and headers).
const MAX_HEAD: usize = 32 * 1024;
/// Events kept in memory for [`Emulator::events`] (the oldest are dropped).
const MAX_KEPT_EVENTS: usize = 100_000;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen (loopback). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The event hub's name.
    pub hub: String,
    /// The SAS policy (key name) with Send.
    pub key_name: String,
    /// The tenant the token endpoint serves.
    pub tenant: String,
    /// The application (client) id it knows.
    pub client_id: String,
    /// Lifetime of the tokens its token endpoint issues.
    pub token_lifetime: Duration,
    /// PEM files of the certificates registered on the application: a client
    /// assertion signed with one of their keys gets a token. None: every
    /// client assertion is refused (AADSTS700027, no certificate registered).
    pub client_certificates: Vec<PathBuf>,
    /// Largest request body accepted (the tier's publication limit).
    pub max_request_bytes: usize,
    /// Where to record events (one NDJSON file per partition key), if anywhere.
    pub record_dir: Option<PathBuf>,
    /// Keys, secrets and certificates are kept here and reused by the next
    /// start, so a restarted emulator accepts what the running gateway has.
    pub state_dir: Option<PathBuf>,
    /// Faults from the start.
    pub faults: Faults,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: "vitals".into(),
            key_name: "send".into(),
            tenant: "emulator-tenant".into(),
            client_id: "iomt-edge-emulator-client".into(),
            token_lifetime: Duration::from_secs(3600),
            client_certificates: Vec::new(),
            max_request_bytes: 1024 * 1024,
            record_dir: None,
            state_dir: None,
            faults: Faults::default(),
        }
    }
}

/// Faults to inject. Counters (`unauthorized`, `server_busy`, `resets`,
/// `lost_answers`) apply to that many of the next batch requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer 401 (the credentials are fine).
    pub(crate) unauthorized: u32,
    /// Answer 503 ServerBusy (error 50002).
    pub(crate) server_busy: u32,
    /// Answer 413 for request bodies larger than this.
    pub(crate) too_large_above: Option<usize>,
    /// Wait this long before each batch answer (after storing the batch).
    pub(crate) delay_ms: u64,
    /// Close the connection after reading the request, before storing it.
    pub(crate) resets: u32,
    /// Store the batch, then close the connection without answering (the
    /// sender cannot know it arrived, so it sends it again).
    pub(crate) lost_answers: u32,
    /// Close every batch request's connection without answering for this
    /// long from when it is set (an outage).
    pub(crate) down_ms: u64,
}

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub(crate) partition_key: Option<String>,
    pub(crate) message_id: Option<String>,
    pub body: String,
    pub(crate) sequence_number: u64,
}

/// Counters, as `GET /$emulator/stats` returns them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub connections: u64,
    pub(crate) batch_requests: u64,
    pub(crate) accepted_batches: u64,
    pub(crate) events: u64,
    /// Accepted batches that held more than one event.
    pub(crate) multi_event_batches: u64,
    /// The most events one accepted batch held.
    pub max_batch_events: u64,
    pub(crate) tokens_issued: u64,
    /// Tokens issued for a certificate credential (client assertion).
    pub(crate) assertions_accepted: u64,
    /// Different `Authorization` values accepted (each renewal is a new one).
    pub(crate) distinct_tokens: u64,
    /// Answers other than 201 by status (`"401": 3`), faults by name, and
    /// token endpoint refusals by `token:{error}` and `token:AADSTS{code}`.
    pub(crate) refused: BTreeMap<String, u64>,
}

/// What persists across restarts when `state_dir` is set.
#[derive(Serialize, Deserialize)]
struct Identity {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
    sas_key: String,
    client_secret: String,
    token_secret: String,
}

struct Shared {
    cfg: EmulatorConfig,
    addr: SocketAddr,
    identity: Identity,
    /// The certificates of `cfg.client_certificates`.
    registered: Vec<assertion::RegisteredCertificate>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    faults: Faults,
    down_until: Option<std::time::Instant>,
    stats: Stats,
    events: Vec<Recorded>,
    next_sequence: u64,
    tokens_seen: std::collections::HashSet<u64>,
    /// The client assertions' `jti` values already used.
    replay: assertion::ReplayGuard,
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

impl Identity {
    fn fresh() -> Result<Identity, EmulatorError> {
        let ca = Authority::new()?;
        let ips = [std::net::IpAddr::from([127, 0, 0, 1]), std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        let server = ca.server(&["localhost".to_string()], &ips)?;
        Ok(Identity {
            ca_pem: ca.ca_pem(),
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            server_cert_der: server.cert_der,
            server_key_der: server.key_der,
            sas_key: random_key(),
            client_secret: random_key(),
            token_secret: random_key(),
        })
    }

    /// Loads `dir/emulator-identity.json`, or makes one and writes it there (mode 600).
    fn load_or_make(dir: Option<&Path>) -> Result<Identity, EmulatorError> {
        let Some(dir) = dir else { return Identity::fresh() };
        let path = dir.join("emulator-identity.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).map_err(|error| EmulatorError::DamagedIdentity { path, error });
        }
        let id = Identity::fresh()?;
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
        let mut f = f.write(true).create_new(true).open(&path).map_err(|error| EmulatorError::Write { path: path.clone(), error })?;
        f.write_all(serde_json::to_string(&id)?.as_bytes())?;
        Ok(id)
    }
}

impl Emulator {
    /// Starts listening.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if !cfg.bind.ip().is_loopback() {
            return Err(EmulatorError::NotLoopback);
        }
        let identity = Identity::load_or_make(cfg.state_dir.as_deref())?;
        let mut registered = Vec::new();
        for path in &cfg.client_certificates {
            let pem = std::fs::read(path).map_err(|e| EmulatorError::ClientCertificate { path: path.clone(), why: e.to_string() })?;
            registered.extend(
                assertion::RegisteredCertificate::from_pem(&pem).map_err(|why| EmulatorError::ClientCertificate { path: path.clone(), why })?,
            );
        }
        if let Some(d) = &cfg.record_dir {
            std::fs::create_dir_all(d).map_err(|error| EmulatorError::RecordFolder { path: d.clone(), error })?;
        }
        let tls = server_config(&identity)?;
        let listener = tokio::net::TcpListener::bind(cfg.bind).await.map_err(|error| EmulatorError::Listen { what: cfg.bind.to_string(), error })?;
        let addr = listener.local_addr()?;
        let state = State { faults: cfg.faults.clone(), ..Default::default() };
        let shared = Arc::new(Shared { cfg, addr, identity, registered, state: Mutex::new(state) });
        if shared.cfg.faults.down_ms > 0 {
            shared.lock().down_until = Some(std::time::Instant::now() + Duration::from_millis(shared.cfg.faults.down_ms));
        }
        let task = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        Ok(Emulator { shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://127.0.0.1:port`
    pub(crate) fn base_url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The namespace connection string with the event hub (`EntityPath`).
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}",
            self.shared.addr, self.shared.cfg.key_name, self.shared.identity.sas_key, self.shared.cfg.hub
        )
    }

    pub(crate) fn sas_key(&self) -> &str {
        &self.shared.identity.sas_key
    }

    pub(crate) fn client_secret(&self) -> &str {
        &self.shared.identity.client_secret
    }

    /// The token endpoint's URL (`https://127.0.0.1:port/{tenant}/oauth2/v2.0/token`),
    /// the `aud` a client assertion must carry.
    pub(crate) fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url(), self.shared.cfg.tenant)
    }

    /// `x5t#S256` thumbprints of the registered client certificates.
    pub(crate) fn client_certificate_thumbprints(&self) -> Vec<String> {
        self.shared.registered.iter().map(|r| r.x5t_s256.clone()).collect()
    }

    pub(crate) fn config(&self) -> &EmulatorConfig {
        &self.shared.cfg
    }

    /// The CA certificate (PEM) clients must trust.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.shared.identity.ca_pem
    }

    /// Writes the CA certificate to `dir/eventhubs-emulator-ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf, EmulatorError> {
        let p = dir.join("eventhubs-emulator-ca.pem");
        std::fs::write(&p, self.ca_pem())?;
        Ok(p)
    }

    /// Everything a client needs, as JSON (written by `simulate eventhubs`).
    pub(crate) fn description(&self, ca_file: &Path) -> Value {
        let c = &self.shared.cfg;
        json!({
            "url": self.base_url(),
            "port": self.addr().port(),
            "event_hub": c.hub,
            "connection_string": self.connection_string(),
            "key_name": c.key_name,
            "key": self.sas_key(),
            "namespace": self.addr().to_string(),
            "authority_host": self.base_url(),
            "tenant": c.tenant,
            "client_id": c.client_id,
            "client_secret": self.client_secret(),
            "token_endpoint": self.token_endpoint(),
            "client_certificates": c.client_certificates,
            "client_certificate_thumbprints": self.client_certificate_thumbprints(),
            "ca_file": ca_file,
            "record_dir": c.record_dir,
        })
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// The events recorded since start (the latest 100 000), in arrival order.
    pub fn events(&self) -> Vec<Recorded> {
        self.shared.lock().events.clone()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_faults(&self, f: Faults) {
        let mut st = self.lock();
        st.down_until = (f.down_ms > 0).then(|| std::time::Instant::now() + Duration::from_millis(f.down_ms));
        st.faults = f;
    }

    fn count_refusal(&self, what: &str) {
        *self.lock().stats.refused.entry(what.to_string()).or_default() += 1;
    }
}

fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, EmulatorError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_single_cert(
        vec![CertificateDer::from(id.server_cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.server_key_der.clone())),
    )?;
    Ok(Arc::new(cfg))
}

async fn accept_loop(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            shared.lock().stats.connections += 1;
            serve(stream, shared).await;
        });
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer; `None` body parts mean "close without answering".
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn empty(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: Vec::new() }
    }
    fn xml(status: u16, detail: &str) -> Answer {
        let body = format!("<Error><Code>{status}</Code><Detail>{} TrackingId:emulator</Detail></Error>", xml_escape(detail));
        Answer { status, headers: vec![("Content-Type", "application/xml; charset=utf-8".into())], body: body.into_bytes() }
    }
    fn json(status: u16, v: &Value) -> Answer {
        Answer { status, headers: vec![("Content-Type", "application/json; charset=utf-8".into())], body: v.to_string().into_bytes() }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What to do with the connection after a request.
enum Reply {
    Answer(Answer),
    /// Close without answering.
    Close,
}

/// Serves requests on one connection until it closes.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = match read_request(&mut s, &mut buf, shared.cfg.max_request_bytes).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(a) => {
                let _ = write_answer(&mut s, &a, true).await;
                return;
            }
        };
        let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handle(&req, &shared).await {
            Reply::Close => {
                let _ = s.shutdown().await;
                return;
            }
            Reply::Answer(a) => {
                if write_answer(&mut s, &a, close).await.is_err() || close {
                    return;
                }
            }
        }
    }
}

/// Reads one request; `Ok(None)` when the peer closed between requests,
/// `Err` with the answer for a malformed or oversized one.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, max_body: usize) -> Result<Option<Request>, Answer> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err(Answer::xml(431, "request head too large"));
        }
        match tokio::time::timeout(Duration::from_secs(120), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = match (first.next(), first.next(), first.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m.to_string(), t.to_string()),
        _ => return Err(Answer::xml(400, "malformed request line")),
    };
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| Answer::xml(400, "malformed header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut req = Request { method, path, query, headers, body: Vec::new() };
    if req.header("transfer-encoding").is_some() {
        return Err(Answer::xml(411, "send a Content-Length (chunked bodies are not supported)"));
    }
    let len: usize = match req.header("content-length") {
        Some(v) => v.parse().map_err(|_| Answer::xml(400, "bad Content-Length"))?,
        None => 0,
    };
    // Refuse what could never be accepted without reading it all (plus room for
    // the control endpoint's small bodies).
    if len > max_body.saturating_add(64 * 1024).max(4 * 1024 * 1024) {
        return Err(Answer::xml(413, &format!("The request body of {len} bytes exceeds the maximum allowed size")));
    }
    buf.drain(..head_end + 4);
    while buf.len() < len {
        match tokio::time::timeout(Duration::from_secs(120), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    req.body = buf.drain(..len).collect();
    Ok(Some(req))
}

async fn write_answer<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, a: &Answer, close: bool) -> std::io::Result<()> {
    let reason = match a.status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nServer: iomt-edge-eventhubs-emulator\r\n", a.status, a.body.len());
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(&a.body).await?;
    s.flush().await
}

async fn handle(req: &Request, shared: &Arc<Shared>) -> Reply {
    let cfg = &shared.cfg;
    if req.path == "/$emulator/faults" {
        return Reply::Answer(match req.method.as_str() {
            "PUT" | "POST" => match serde_json::from_slice::<Faults>(&req.body) {
                Ok(f) => {
                    shared.set_faults(f.clone());
                    Answer::json(200, &json!(f))
                }
                Err(e) => Answer::xml(400, &format!("faults: {e}")),
            },
            "GET" => Answer::json(200, &json!(shared.lock().faults)),
            _ => Answer::empty(405),
        });
    }
    if req.path == "/$emulator/stats" {
        return Reply::Answer(Answer::json(200, &json!(shared.lock().stats)));
    }
    if req.path == format!("/{}/oauth2/v2.0/token", cfg.tenant) {
        return Reply::Answer(token_endpoint(req, shared));
    }
    if req.path.ends_with("/oauth2/v2.0/token") {
        shared.count_refusal("token:unknown-tenant");
        return Reply::Answer(Answer::json(
            400,
            &json!({"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found.", "error_codes": [90002]}),
        ));
    }
    let hub_path = format!("/{}/messages", urlencoding::encode(&cfg.hub));
    if req.path != hub_path {
        shared.count_refusal("404");
        return Reply::Answer(Answer::xml(404, &format!("MessagingEntityNotFound: no entity at {}", req.path)));
    }
    if req.method != "POST" {
        return Reply::Answer(Answer::empty(405));
    }
    batch(req, shared).await
}

/// The client credentials grant.
fn token_endpoint(req: &Request, shared: &Arc<Shared>) -> Answer {
    let cfg = &shared.cfg;
    let refuse = |status: u16, error: &str, code: u64, text: &str| {
        shared.count_refusal(&format!("token:{error}"));
        shared.count_refusal(&format!("token:AADSTS{code}"));
        Answer::json(status, &json!({"error": error, "error_description": format!("AADSTS{code}: {text}"), "error_codes": [code]}))
    };
    if req.method != "POST" || !req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return refuse(400, "invalid_request", 900144, "The request body must be application/x-www-form-urlencoded.");
    }
    let mut form: BTreeMap<String, String> = BTreeMap::new();
    for pair in String::from_utf8_lossy(&req.body).split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| urlencoding::decode(&s.replace('+', " ")).map(|c| c.into_owned()).unwrap_or_default();
        form.insert(dec(k), dec(v));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
    }
    if form.get("client_id") != Some(&cfg.client_id) {
        return refuse(400, "unauthorized_client", 700016, "Application not found in the directory.");
    }
    if form.get("scope").map(String::as_str) != Some("https://eventhubs.azure.net/.default") {
        return refuse(400, "invalid_scope", 70011, "The provided scope is not valid.");
    }
    let now = now_unix();
    let by_certificate = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(_), Some(_)) => {
            return refuse(400, "invalid_request", 90014, "Send either client_secret or client_assertion, not both.");
        }
        (Some(s), None) if s == &shared.identity.client_secret => false,
        (Some(_), None) => return refuse(401, "invalid_client", 7000215, "Invalid client secret provided."),
        (None, Some(a)) => {
            if form.get("client_assertion_type").map(String::as_str) != Some(assertion::JWT_BEARER) {
                return refuse(
                    400,
                    "invalid_request",
                    90014,
                    &format!("The required field 'client_assertion_type' is missing or is not {}.", assertion::JWT_BEARER),
                );
            }
            if shared.registered.is_empty() {
                return refuse(
                    401,
                    "invalid_client",
                    700027,
                    "The certificate with identifier used to sign the client assertion is not registered on application. \
                     (No certificate is registered: start the emulator with --client-certificate FILE.)",
                );
            }
            let checked = assertion::verify(a, &cfg.client_id, &token_audiences(shared), &shared.registered, now)
                .and_then(|ok| shared.lock().replay.admit(&ok, now));
            if let Err(r) = checked {
                return refuse(r.status, r.error, r.code, &r.text);
            }
            true
        }
        (None, None) => return refuse(401, "invalid_client", 7000218, "The request body must contain client_secret or client_assertion."),
    };
    let lifetime = cfg.token_lifetime.as_secs().max(1);
    let issuer = format!("https://{}/{}/v2.0", shared.addr, cfg.tenant);
    let token = checks::issue_bearer(shared.identity.token_secret.as_bytes(), &issuer, &cfg.client_id, now, now + lifetime);
    {
        let mut st = shared.lock();
        st.stats.tokens_issued += 1;
        st.stats.assertions_accepted += u64::from(by_certificate);
    }
    Answer::json(200, &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}))
}

/// The token endpoint's URLs a client assertion's `aud` may name: this
/// listener's address and `localhost` with its port (RFC 7523 §3: the
/// token endpoint URL identifies the server).
fn token_audiences(shared: &Shared) -> Vec<String> {
    let tenant = &shared.cfg.tenant;
    let port = shared.addr.port();
    [shared.addr.to_string(), format!("localhost:{port}")].into_iter().map(|h| format!("https://{h}/{tenant}/oauth2/v2.0/token")).collect()
}

/// A batch send.
async fn batch(req: &Request, shared: &Arc<Shared>) -> Reply {
    let cfg = &shared.cfg;
    let faults = {
        let mut st = shared.lock();
        st.stats.batch_requests += 1;
        if st.down_until.is_some_and(|t| std::time::Instant::now() >= t) {
            st.down_until = None;
            st.faults.down_ms = 0;
        }
        st.faults.clone()
    };
    let down = shared.lock().down_until.is_some();
    if down {
        shared.count_refusal("down");
        return Reply::Close;
    }
    // Counted faults, one per request, in this order.
    let take = |pick: fn(&mut Faults) -> &mut u32| {
        let mut st = shared.lock();
        let n = pick(&mut st.faults);
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    };
    if take(|f| &mut f.resets) {
        shared.count_refusal("reset");
        return Reply::Close;
    }
    // Authentication.
    let host = req.header("host").unwrap_or("");
    let url = format!("https://{host}{}", req.path);
    let auth = req.header("authorization").unwrap_or("");
    let checked = if auth.starts_with("SharedAccessSignature ") {
        checks::check_sas(auth, &url, &cfg.key_name, &shared.identity.sas_key, now_unix()).map(|_| ())
    } else if auth.starts_with("Bearer ") {
        checks::check_bearer(auth, shared.identity.token_secret.as_bytes(), now_unix()).map(|_| ())
    } else {
        Err(("MissingToken", "the request has no Authorization header".to_string()))
    };
    if let Err((code, why)) = checked {
        shared.count_refusal(&format!("401:{code}"));
        return Reply::Answer(Answer::xml(401, &format!("{code}: {why}")));
    }
    {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        auth.hash(&mut h);
        let mut st = shared.lock();
        st.tokens_seen.insert(h.finish());
        st.stats.distinct_tokens = st.tokens_seen.len() as u64;
    }
    if take(|f| &mut f.unauthorized) {
        shared.count_refusal("401:injected");
        return Reply::Answer(Answer::xml(401, "InvalidSignature: injected by the emulator"));
    }
    if take(|f| &mut f.server_busy) {
        shared.count_refusal("503:ServerBusy");
        return Reply::Answer(Answer::xml(
            503,
            "The request was terminated because the namespace is being throttled. Error code : 50002. Sub error: 102. (injected)",
        ));
    }
    if !req.query.split('&').any(|p| p.starts_with("api-version=")) {
        shared.count_refusal("400");
        return Reply::Answer(Answer::xml(400, "the api-version query parameter is required (2014-01)"));
    }
    let ct = req.header("content-type").unwrap_or("");
    if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/vnd.microsoft.servicebus.json") {
        shared.count_refusal("415");
        return Reply::Answer(Answer::xml(
            415,
            &format!("this emulator serves batch sends only (application/vnd.microsoft.servicebus.json), not `{ct}`"),
        ));
    }
    let limit = faults.too_large_above.map_or(cfg.max_request_bytes, |l| l.min(cfg.max_request_bytes));
    if req.body.len() > limit {
        shared.count_refusal("413");
        return Reply::Answer(Answer::xml(413, &format!("The received message (size:{} bytes) exceeds the limit ({limit} bytes)", req.body.len())));
    }
    let events = match checks::check_batch(&req.body) {
        Ok(e) => e,
        Err(why) => {
            shared.count_refusal("400");
            return Reply::Answer(Answer::xml(400, &why));
        }
    };
    if events.iter().any(|e| e.partition_key != events[0].partition_key) {
        shared.count_refusal("400");
        return Reply::Answer(Answer::xml(
            400,
            "the events of one batch have different PartitionKeys (the AMQP producers refuse this; this emulator does too)",
        ));
    }
    if let Err(e) = record(shared, events) {
        shared.count_refusal("500");
        return Reply::Answer(Answer::xml(500, &format!("the emulator cannot record events: {e}")));
    }
    // A slow answer: the batch is stored, the 201 comes late (a sender
    // killed meanwhile sends it again under the same id).
    if faults.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    if take(|f| &mut f.lost_answers) {
        shared.count_refusal("lost-answer");
        return Reply::Close;
    }
    Reply::Answer(Answer::empty(201))
}

/// A file name for a partition key: safe characters kept, others `_`, and a
/// hash suffix when anything was changed (so two keys never share a file).
pub(crate) fn partition_file_name(key: Option<&str>) -> String {
    use sha2::Digest;
    let Some(key) = key else { return "_no_partition_key.ndjson".into() };
    let mut safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe == key {
        format!("{safe}.ndjson")
    } else {
        format!("{safe}-{}.ndjson", &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..8])
    }
}

fn record(shared: &Arc<Shared>, events: Vec<checks::Event>) -> std::io::Result<()> {
    let mut st = shared.lock();
    let enqueued = crate::model::time::format(&chrono::Utc::now());
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    let mut recorded = Vec::with_capacity(events.len());
    for e in events {
        st.next_sequence += 1;
        let seq = st.next_sequence;
        let body: Value = serde_json::from_str(&e.body).unwrap_or_else(|_| Value::String(e.body.clone()));
        let mut system = serde_json::Map::new();
        if let Some(k) = &e.partition_key {
            system.insert("x-opt-partition-key".into(), json!(k));
        }
        if let Some(m) = &e.message_id {
            system.insert("message-id".into(), json!(m));
        }
        system.insert("x-opt-sequence-number".into(), json!(seq));
        system.insert("x-opt-enqueued-time".into(), json!(enqueued));
        let line = json!({"Body": body, "Properties": e.user_properties, "SystemProperties": system});
        let file = partition_file_name(e.partition_key.as_deref());
        let l = lines.entry(file).or_default();
        l.push_str(&line.to_string());
        l.push('\n');
        recorded.push(Recorded { partition_key: e.partition_key, message_id: e.message_id, body: e.body, sequence_number: seq });
    }
    if let Some(dir) = &shared.cfg.record_dir {
        for (file, text) in &lines {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(file))?;
            f.write_all(text.as_bytes())?;
        }
    }
    st.stats.accepted_batches += 1;
    st.stats.events += recorded.len() as u64;
    st.stats.multi_event_batches += u64::from(recorded.len() > 1);
    st.stats.max_batch_events = st.stats.max_batch_events.max(recorded.len() as u64);
    st.events.extend(recorded);
    // The files are the record; memory keeps the latest events only.
    if st.events.len() > MAX_KEPT_EVENTS {
        let extra = st.events.len() - MAX_KEPT_EVENTS;
        st.events.drain(..extra);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_files_are_safe_and_distinct() {
        assert_eq!(partition_file_name(Some("oxi-1")), "oxi-1.ndjson");
        assert_eq!(partition_file_name(None), "_no_partition_key.ndjson");
        let a = partition_file_name(Some("a/b"));
        let b = partition_file_name(Some("a_b"));
        assert!(a.starts_with("a_b-") && a != b, "{a} {b}");
        assert!(!partition_file_name(Some("../x")).contains('/'));
        assert!(!partition_file_name(Some("..")).starts_with(".."));
    }
}
