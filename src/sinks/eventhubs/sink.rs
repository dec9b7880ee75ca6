//! The Event Hubs [`Sink`]: one HTTPS POST of the REST "Send batch events"
//! operation per message, over kept-alive connections.
//!
//! Hand-written around reqwest (already a dependency, rustls only) because
//! the Azure Rust Event Hubs crate is AMQP-only and pre-1.0 (docs/eventhubs.md).
//! The protocol decisions live in the pure modules next to this one; this file
//! does the I/O:
//!
//! - Each [`Message`] (one device's readings, see docs/message-format.md) is
//!   one event of a batch: `[{"Body":…,"BrokerProperties":{"MessageId","PartitionKey"},"UserProperties"},…]`
//!   ([`super::batch`]). A request carries up to `max_events_per_request`
//!   consecutive messages of one device (`send_many`; the service stores a
//!   batch whole or not at all), or one (`send`). The forwarder keeps one
//!   request in flight per device, so the partition key (device id) keeps
//!   each device's order.
//! - `send` returns `Ok` only on HTTP 201 ([`super::response`]); every other
//!   answer becomes the [`SinkError`] that tells the forwarder how to retry:
//!   401/403 `FatalAuth` (slow retry, the message names what to check),
//!   ServerBusy/429/5xx `Throttled` or `Retryable` (jittered backoff, at least
//!   4 s after ServerBusy, `Retry-After` honoured), 413 `TooLarge` (the
//!   forwarder sends half as many events per request, then splits a message
//!   alone and resends the halves).
//! - The `Authorization` header comes from a [`Credential`]: a SAS token
//!   renewed at 80 % of its lifetime (the key file is re-read then), an Entra
//!   ID token from the client credentials flow (refreshed 5 min before expiry,
//!   certificate assertions signed anew each time), or a bearer token file
//!   re-read when it changes.
//! - TLS is rustls with the system's roots plus `ca_file`; HTTP/1.1 with
//!   keep-alive, so requests reuse one connection (one per request in flight).

use super::batch;
use super::connection_string::EventHubsConnectionString;
use super::entra::{self, AccessToken, ClientCredential, FileStamp, TokenCache, TokenDecision};
use super::error::EventHubsError;
use super::response::{self, AuthKind, SendOutcome, TransportFailure};
use super::sas::{self, SasToken};
use crate::config::eventhubs::{EntraClientCredential, EventHubsIdentity, EventHubsSinkConfig, EventHubsTarget};
use crate::config::Secret;
use crate::logging::SharedEpisode;
use crate::model::Message;
use crate::sinks::{Sink, SinkError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most bytes of an error answer kept (service errors are short XML).
const ANSWER_MAX: usize = 16 * 1024;
/// Room for an event's envelope besides the escaped message: the property
/// names, the message id and the partition key (at most 128 characters each).
const EVENT_OVERHEAD: usize = 512;

/// Counters for status and the benchmark.
#[derive(Debug, Default)]
pub struct EventHubsCounters {
    /// Requests sent (whatever their answer).
    pub requests: AtomicU64,
    /// Request body bytes sent.
    pub request_bytes: AtomicU64,
    /// Events confirmed with 201.
    pub(crate) delivered_events: AtomicU64,
    /// Tokens obtained (SAS made, Entra fetched, token file read).
    pub(crate) tokens: AtomicU64,
}

/// Builds the Event Hubs sink for the runtime from its config table.
pub(crate) async fn build(cfg: &EventHubsSinkConfig) -> Result<Arc<dyn Sink>, EventHubsError> {
    Ok(Arc::new(EventHubsSink::start(cfg)?))
}

/// The Event Hubs sink.
pub struct EventHubsSink {
    http: reqwest::Client,
    url: String,
    credential: Credential,
    user_properties: BTreeMap<String, String>,
    max_request: usize,
    max_events: usize,
    max_in_flight: usize,
    request_timeout: Duration,
    window: Semaphore,
    counters: Arc<EventHubsCounters>,
}

impl EventHubsSink {
    /// Reads the identity once (a malformed connection string, a missing key
    /// file or certificate stops the start with a named error) and sets up
    /// the HTTPS client. `cfg` is validated ([`crate::config`]). No request
    /// is made here.
    pub fn start(cfg: &EventHubsSinkConfig) -> Result<EventHubsSink, EventHubsError> {
        let http = http_client(cfg.ca_file.as_deref(), cfg.request_timeout)?;
        let (host, port, hub, credential) = match &cfg.identity {
            EventHubsIdentity::SharedAccessKey { connection_string, event_hub } => {
                let cs = read_connection_string(connection_string)?;
                let hub = cs.hub_name(event_hub.as_deref()).map_err(EventHubsError::HubName)?.to_string();
                let resource = sas::resource_uri(&cs.namespace_host, cs.port, &hub);
                let cred = Credential::Sas(SasCredential {
                    source: connection_string.clone(),
                    resource,
                    ttl: cfg.token_ttl,
                    current: parking_lot::Mutex::new(None),
                    read_failed: SharedEpisode::default(),
                });
                (cs.namespace_host, cs.port, hub, cred)
            }
            EventHubsIdentity::TokenFile { target, token_file } => {
                let (host, port) = split_namespace(target);
                let cred = Credential::TokenFile(TokenFileCredential {
                    path: token_file.clone(),
                    state: parking_lot::Mutex::new(TokenFileState::default()),
                });
                (host, port, target.event_hub.clone(), cred)
            }
            EventHubsIdentity::Entra { target, tenant, client_id, authority_host, credential } => {
                let (host, port) = split_namespace(target);
                let cred = Credential::Entra(EntraCredential::new(tenant, client_id, authority_host, credential, http.clone())?);
                (host, port, target.event_hub.clone(), cred)
            }
        };
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let url = format!("https://{authority}{}", batch::send_path(&hub));
        let max_in_flight = cfg.max_in_flight.max(1);
        Ok(EventHubsSink {
            http,
            url,
            credential,
            user_properties: cfg.user_properties.clone(),
            max_request: cfg.max_request_bytes(),
            max_events: cfg.max_events_per_request.max(1),
            max_in_flight,
            request_timeout: cfg.request_timeout,
            window: Semaphore::new(max_in_flight),
            counters: Arc::default(),
        })
    }

    /// The URL batches are posted to.
    #[cfg(test)]
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Requests, bytes and tokens so far.
    pub fn counters(&self) -> Arc<EventHubsCounters> {
        self.counters.clone()
    }

    /// The request body for one message: a one-event batch.
    pub fn request_body(&self, message: &Message) -> Vec<u8> {
        self.request_body_many(std::slice::from_ref(message))
    }

    /// The request body for several messages: one event each, in order.
    pub(crate) fn request_body_many(&self, messages: &[Message]) -> Vec<u8> {
        let events: Vec<Vec<u8>> = messages.iter().map(|m| batch::event_json(m, &self.user_properties)).collect();
        let mut body = Vec::with_capacity(batch::body_len(events.iter().map(Vec::len)));
        body.push(b'[');
        for (i, ev) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(ev);
        }
        body.push(b']');
        body
    }

    /// Bytes of one event's envelope besides its escaped message.
    fn event_overhead(&self) -> usize {
        EVENT_OVERHEAD + self.user_properties.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>()
    }

    /// Posts one batch body of `events` events; `Ok` only on 201.
    async fn post(&self, body: Vec<u8>, events: u64) -> Result<(), SinkError> {
        if body.len() > self.max_request {
            return Err(SinkError::TooLarge(format!(
                "{} bytes as an Event Hubs batch request of {events} event(s); this namespace accepts {} (tier or max_request_bytes)",
                body.len(),
                self.max_request
            )));
        }
        let _permit = self.window.acquire().await.map_err(|_| SinkError::Retryable("the Event Hubs sink is closed".into()))?;
        let authorization = self.credential.authorization(&self.counters).await?;
        let len = body.len() as u64;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.request_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_TYPE, batch::CONTENT_TYPE)
            .timeout(self.request_timeout)
            .body(body)
            .send()
            .await;
        let mut answer = match sent {
            Ok(a) => a,
            Err(e) => return transport_outcome(&e).into_sink_result(),
        };
        let status = answer.status().as_u16();
        let retry_after = answer.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        // Read the whole answer (so the connection can be reused), keeping a bounded excerpt.
        let mut text = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(c)) => {
                    let room = ANSWER_MAX.saturating_sub(text.len());
                    text.extend_from_slice(&c[..c.len().min(room)]);
                }
                Ok(None) => break,
                // 201 arrived: the service stored the batch, even if the
                // rest of an (empty) answer is cut off.
                Err(_) if status == 201 => break,
                Err(e) => return transport_outcome(&e).into_sink_result(),
            }
        }
        let outcome = response::classify(status, retry_after.as_deref(), &text, chrono::Utc::now(), self.credential.kind());
        match &outcome {
            SendOutcome::Delivered => {
                self.counters.delivered_events.fetch_add(events, Ordering::Relaxed);
            }
            SendOutcome::Auth { .. } => self.credential.invalidate(),
            _ => {}
        }
        outcome.into_sink_result()
    }
}

#[async_trait]
impl Sink for EventHubsSink {
    fn name(&self) -> &'static str {
        "eventhubs"
    }

    /// The message body must fit in the request after JSON escaping inside
    /// `Body` (quotes double): two thirds of the request limit, less the
    /// envelope. `send` checks the real size and answers `TooLarge` beyond it.
    fn max_message_bytes(&self) -> usize {
        (self.max_request.saturating_sub(self.event_overhead()) * 2 / 3).max(1024)
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Up to `max_events_per_request` messages of one device in one batch
    /// request; each message is still one event.
    fn max_messages_per_request(&self) -> usize {
        self.max_events
    }

    /// The messages of one request together, with every event's envelope
    /// and the escaping of `Body` counted as in `max_message_bytes`.
    fn max_request_bytes(&self) -> usize {
        let envelopes = self.max_events.saturating_mul(self.event_overhead() + 1) + 2;
        (self.max_request.saturating_sub(envelopes) * 2 / 3).max(1024)
    }

    async fn send(&self, message: &Message) -> Result<(), SinkError> {
        self.post(self.request_body(message), 1).await
    }

    /// One batch request of one event per message: the service stores it
    /// whole or not at all, so 201 confirms every message and anything else
    /// none. Too large for the request limit: `TooLarge` before sending.
    async fn send_many(&self, messages: &[Message]) -> Result<(), SinkError> {
        self.post(self.request_body_many(messages), messages.len() as u64).await
    }
}

/// What a failed request means, with the innermost cause in words (for
/// example rustls's certificate complaint) after the classification's text.
fn transport_outcome(e: &reqwest::Error) -> SendOutcome {
    let mut inner: &dyn std::error::Error = e;
    let mut tls = false;
    while let Some(s) = inner.source() {
        tls |= s.is::<rustls::Error>();
        inner = s;
    }
    let kind = if e.is_timeout() {
        TransportFailure::Timeout
    } else if tls {
        TransportFailure::Tls
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Reset
    };
    match response::classify_transport(kind) {
        SendOutcome::Retry { detail } => {
            let cause = inner.to_string();
            let hint = if tls { " (is the server's CA trusted? set sink.eventhubs.ca_file)" } else { "" };
            SendOutcome::Retry { detail: format!("{detail}: {cause}{hint}") }
        }
        other => other,
    }
}

/// The HTTPS client: rustls with the system's trust store and `ca_file`,
/// HTTP/1.1, idle connections kept for reuse.
fn http_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, EventHubsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|error| EventHubsError::ReadFile { setting: "ca_file", path: ca.to_path_buf(), error })?;
        let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
        let certs =
            certs.map_err(|e| EventHubsError::BadFile(format!("sink.eventhubs.ca_file {} is not a PEM certificate file: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(EventHubsError::BadFile(format!("sink.eventhubs.ca_file {} holds no PEM certificate", ca.display())));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                EventHubsError::BadFile(format!("sink.eventhubs.ca_file {} holds a certificate rustls cannot use: {e}", ca.display()))
            })?;
        }
    }
    if roots.is_empty() {
        return Err(setting("no trusted CA certificates (the system store is empty and sink.eventhubs.ca_file is not set)"));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| EventHubsError::HttpClient(format!("rustls has no TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .user_agent(concat!("iomt-edge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EventHubsError::HttpClient(format!("cannot set up the HTTPS client: {}", crate::logging::error_chain(&e))))
}

use crate::model::time::unix_s as now_unix;

/// A setting error with a fixed text.
fn setting(text: &str) -> EventHubsError {
    EventHubsError::Setting(text.to_string())
}

/// The namespace's host (lower case) and port, if it names one.
fn split_namespace(target: &EventHubsTarget) -> (String, Option<u16>) {
    match target.namespace.rsplit_once(':') {
        Some((h, p)) => (h.to_ascii_lowercase(), p.parse::<u16>().ok()),
        None => (target.namespace.to_ascii_lowercase(), None),
    }
}

fn read_connection_string(source: &Secret) -> Result<EventHubsConnectionString, EventHubsError> {
    let raw = source
        .resolve()
        .map_err(|cause| EventHubsError::ReadSecret { what: "the Event Hubs connection string (sink.eventhubs.connection_string)", cause })?;
    EventHubsConnectionString::parse(&raw).map_err(EventHubsError::MalformedConnectionString)
}

/// Where the `Authorization` header comes from.
enum Credential {
    Sas(SasCredential),
    Entra(EntraCredential),
    TokenFile(TokenFileCredential),
}

impl Credential {
    fn kind(&self) -> AuthKind {
        match self {
            Credential::Sas(_) => AuthKind::SharedAccessKey,
            Credential::Entra(_) => AuthKind::EntraClientCredentials,
            Credential::TokenFile(_) => AuthKind::BearerTokenFile,
        }
    }

    async fn authorization(&self, counters: &EventHubsCounters) -> Result<String, SinkError> {
        match self {
            Credential::Sas(s) => s.authorization(now_unix(), counters),
            Credential::Entra(e) => e.authorization(now_unix(), counters).await,
            Credential::TokenFile(t) => t.authorization(now_unix(), counters),
        }
    }

    /// The service refused the token: make or fetch a new one next time.
    fn invalidate(&self) {
        match self {
            Credential::Sas(s) => *s.current.lock() = None,
            Credential::Entra(e) => e.invalidate.store(true, Ordering::Relaxed),
            Credential::TokenFile(t) => t.state.lock().stamp = None,
        }
    }
}

/// SAS tokens from the connection string's key.
struct SasCredential {
    source: Secret,
    /// `https://{ns}/{hub}`, fixed at start (a changed namespace needs a restart).
    resource: String,
    ttl: Duration,
    current: parking_lot::Mutex<Option<SasToken>>,
    read_failed: SharedEpisode,
}

impl SasCredential {
    /// The current token, or a new one when renewal is due. The key is read
    /// again for each new token, so a rotated key file is picked up.
    fn authorization(&self, now: u64, counters: &EventHubsCounters) -> Result<String, SinkError> {
        let mut cur = self.current.lock();
        if let Some(t) = cur.as_ref().filter(|t| !t.needs_renewal(now)) {
            return Ok(t.value.clone());
        }
        match read_connection_string(&self.source) {
            Ok(cs) => {
                self.read_failed.end();
                let t = sas::issue(&self.resource, &cs.key_name, &cs.key, now, self.ttl);
                counters.tokens.fetch_add(1, Ordering::Relaxed);
                let v = t.value.clone();
                *cur = Some(t);
                Ok(v)
            }
            Err(e) => {
                // Renewal due but the key cannot be read now: the old token
                // serves while it is valid.
                if let Some(t) = cur.as_ref().filter(|t| now < t.expires_at) {
                    if self.read_failed.occurred() {
                        tracing::warn!("{e:#}; using the current SAS token until it expires (logged once until the key can be read)");
                    }
                    return Ok(t.value.clone());
                }
                Err(SinkError::FatalAuth(format!("{e:#}")))
            }
        }
    }
}

/// Microsoft Entra ID client credentials (secret or certificate).
struct EntraCredential {
    http: reqwest::Client,
    endpoint: String,
    client_id: String,
    credential: EntraClientCredential,
    cache: tokio::sync::Mutex<TokenCache>,
    /// Set after a 401/403: fetch a new token before the next send.
    invalidate: AtomicBool,
    /// The last failure, returned while waiting to ask again.
    last_error: parking_lot::Mutex<Option<(bool, String)>>,
    refresh_failed: SharedEpisode,
}

impl EntraCredential {
    fn new(
        tenant: &str,
        client_id: &str,
        authority_host: &str,
        credential: &EntraClientCredential,
        http: reqwest::Client,
    ) -> Result<EntraCredential, EventHubsError> {
        let endpoint = entra::token_endpoint(authority_host, tenant).map_err(EventHubsError::Entra)?;
        match credential {
            EntraClientCredential::Certificate { cert_file: c, key_file: k } => {
                // Checked now so a wrong path stops the start; read again for each token.
                let cert =
                    std::fs::read(c).map_err(|error| EventHubsError::ReadFile { setting: "client_certificate_file", path: c.clone(), error })?;
                entra::certificate_der(&cert)
                    .map_err(|e| EventHubsError::BadFile(format!("sink.eventhubs.client_certificate_file {}: {e}", c.display())))?;
                crate::config::secret::warn_if_world_readable(k);
                let key = std::fs::read(k).map_err(|error| EventHubsError::ReadFile { setting: "client_key_file", path: k.clone(), error })?;
                entra::sign_assertion("check.check", &key)
                    .map_err(|e| EventHubsError::BadFile(format!("sink.eventhubs.client_key_file {}: {e}", k.display())))?;
            }
            EntraClientCredential::Secret(s) => {
                s.resolve()
                    .map_err(|cause| EventHubsError::ReadSecret { what: "the Entra ID client secret (sink.eventhubs.client_secret)", cause })?;
            }
        }
        Ok(EntraCredential {
            http,
            endpoint,
            client_id: client_id.to_string(),
            credential: credential.clone(),
            cache: tokio::sync::Mutex::new(TokenCache::default()),
            invalidate: AtomicBool::new(false),
            last_error: parking_lot::Mutex::new(None),
            refresh_failed: SharedEpisode::default(),
        })
    }

    async fn authorization(&self, now: u64, counters: &EventHubsCounters) -> Result<String, SinkError> {
        // One request for a token at a time; concurrent sends wait for it.
        let mut cache = self.cache.lock().await;
        if self.invalidate.swap(false, Ordering::Relaxed) {
            cache.token = None;
        }
        let bearer = |t: &AccessToken| format!("Bearer {}", t.value);
        match cache.decide(now) {
            TokenDecision::Use => cache.token.as_ref().map(bearer).ok_or_else(|| SinkError::Retryable("no Entra ID token".into())),
            TokenDecision::RefreshKeepUsing => {
                match self.fetch(now).await {
                    Ok(t) => {
                        counters.tokens.fetch_add(1, Ordering::Relaxed);
                        self.refresh_failed.end();
                        cache.succeeded(t);
                    }
                    Err((_, e)) => {
                        cache.failed(now);
                        if self.refresh_failed.occurred() {
                            tracing::warn!("cannot renew the Microsoft Entra ID token for Event Hubs ({e}); the current one is used until shortly before it expires");
                        }
                    }
                }
                cache.token.as_ref().map(bearer).ok_or_else(|| SinkError::Retryable("no Entra ID token".into()))
            }
            TokenDecision::Fetch => match self.fetch(now).await {
                Ok(t) => {
                    counters.tokens.fetch_add(1, Ordering::Relaxed);
                    *self.last_error.lock() = None;
                    let b = bearer(&t);
                    cache.succeeded(t);
                    Ok(b)
                }
                Err((fatal, e)) => {
                    cache.failed(now);
                    *self.last_error.lock() = Some((fatal, e.clone()));
                    Err(if fatal { SinkError::FatalAuth(e) } else { SinkError::Retryable(e) })
                }
            },
            TokenDecision::WaitUntil(at) => {
                let wait = at.saturating_sub(now);
                Err(match self.last_error.lock().clone() {
                    Some((true, e)) => SinkError::FatalAuth(e),
                    Some((false, e)) => SinkError::Retryable(format!("{e} (asking again in {wait} s)")),
                    None => SinkError::Retryable(format!("waiting {wait} s before asking Microsoft Entra ID for a token again")),
                })
            }
        }
    }

    /// One token request. Errors: `(fatal, text)`; fatal when the identity
    /// platform refused the credentials or they cannot be read.
    async fn fetch(&self, now: u64) -> Result<AccessToken, (bool, String)> {
        let credential = match &self.credential {
            EntraClientCredential::Secret(s) => {
                let secret =
                    s.resolve().map_err(|e| (true, format!("cannot read the Entra ID client secret (sink.eventhubs.client_secret): {e}")))?;
                ClientCredential::Secret(secret)
            }
            EntraClientCredential::Certificate { cert_file: cert, key_file: key } => {
                let cert_pem =
                    std::fs::read(cert).map_err(|e| (true, format!("cannot read sink.eventhubs.client_certificate_file {}: {e}", cert.display())))?;
                let key_pem = std::fs::read(key).map_err(|e| (true, format!("cannot read sink.eventhubs.client_key_file {}: {e}", key.display())))?;
                let jti = uuid::Uuid::new_v4().to_string();
                let a = entra::client_assertion(&self.client_id, &self.endpoint, &jti, now, &cert_pem, &key_pem)
                    .map_err(|e| (true, format!("cannot sign the certificate assertion: {e}")))?;
                ClientCredential::Assertion(a)
            }
        };
        let fields = entra::token_request_fields(&self.client_id, &credential, entra::EVENTHUBS_SCOPE).map_err(|e| (true, e.to_string()))?;
        let answer = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(entra::form_body(&fields))
            .send()
            .await
            .map_err(|e| (false, format!("cannot reach the Microsoft Entra ID token endpoint: {}", transport_detail(&e))))?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| (false, format!("the token answer was cut off: {}", transport_detail(&e))))?;
        entra::parse_token_response(status, &body, now).map_err(|e| {
            let fatal = matches!(e, entra::EntraError::Refused { .. });
            (fatal, e.to_string())
        })
    }
}

fn transport_detail(e: &reqwest::Error) -> String {
    match transport_outcome(e) {
        SendOutcome::Retry { detail } => detail,
        other => format!("{other:?}"),
    }
}

/// A bearer token file kept current by another process.
struct TokenFileCredential {
    path: PathBuf,
    state: parking_lot::Mutex<TokenFileState>,
}

#[derive(Default)]
struct TokenFileState {
    stamp: Option<FileStamp>,
    token: Option<String>,
    expires_at: Option<u64>,
}

impl TokenFileCredential {
    fn authorization(&self, now: u64, counters: &EventHubsCounters) -> Result<String, SinkError> {
        use std::os::unix::fs::MetadataExt;
        let mut st = self.state.lock();
        let usable = |st: &TokenFileState| st.token.clone().filter(|_| st.expires_at.is_none_or(|e| now < e));
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                // A helper replacing the file by rename can leave a short gap.
                return usable(&st).map(|t| format!("Bearer {t}")).ok_or_else(|| {
                    SinkError::FatalAuth(format!(
                        "cannot read the bearer token file {} (sink.eventhubs.token_file): {e}; check that its helper is running",
                        self.path.display()
                    ))
                });
            }
        };
        let stamp = FileStamp { len: meta.len(), mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()) };
        if entra::should_reread_token_file(st.stamp, stamp, st.expires_at, now) {
            let text = std::fs::read_to_string(&self.path).map_err(|e| {
                SinkError::FatalAuth(format!("cannot read the bearer token file {} (sink.eventhubs.token_file): {e}", self.path.display()))
            })?;
            st.stamp = Some(stamp);
            match entra::bearer_from_file_text(&text) {
                Some(t) => {
                    st.expires_at = entra::jwt_expiry(&t);
                    st.token = Some(t);
                    counters.tokens.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    st.token = None;
                    st.expires_at = None;
                }
            }
        }
        match usable(&st) {
            Some(t) => Ok(format!("Bearer {t}")),
            None if st.token.is_some() => Err(SinkError::FatalAuth(format!(
                "the bearer token in {} (sink.eventhubs.token_file) has expired; check that its helper still renews it",
                self.path.display()
            ))),
            None => Err(SinkError::FatalAuth(format!(
                "the bearer token file {} (sink.eventhubs.token_file) holds no token (one word, optionally after `Bearer `)",
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(cs: &str) -> EventHubsSink {
        EventHubsSink::start(&EventHubsSinkConfig::with_connection_string(cs)).unwrap()
    }

    #[test]
    fn url_and_limits_come_from_the_connection_string_and_tier() {
        let s = sink("Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5;EntityPath=vitals");
        assert_eq!(s.url(), "https://contoso.servicebus.windows.net/vitals/messages?timeout=60&api-version=2014-01");
        assert!(s.max_message_bytes() < batch::STANDARD_TIER_LIMIT * 2 / 3);
        let s = sink("Endpoint=sb://127.0.0.1:8443/;SharedAccessKeyName=send;SharedAccessKey=a2V5;EntityPath=v");
        assert_eq!(s.url(), "https://127.0.0.1:8443/v/messages?timeout=60&api-version=2014-01");
    }

    #[test]
    fn a_message_at_the_forwarders_cap_fits_in_one_request_even_all_escaped() {
        use crate::model::{DeviceKind, Reading, ReadingType};
        let mut cfg = EventHubsSinkConfig::with_connection_string("Endpoint=sb://n/;SharedAccessKeyName=k;SharedAccessKey=a2V5;EntityPath=v");
        cfg.max_request_bytes = Some(crate::config::units::ByteSize(16 * 1024));
        let s = EventHubsSink::start(&cfg).unwrap();
        // Readings until the message body reaches the cap the sink announces.
        let mut rs = Vec::new();
        loop {
            let mut r = Reading::new("dev-\"quoted\"", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 97.0);
            r.seq = rs.len() as u64 + 1;
            rs.push(r);
            let m = Message::from_batch("gw", "e", &rs).unwrap();
            if m.to_json().len() > s.max_message_bytes() {
                rs.pop();
                break;
            }
        }
        let m = Message::from_batch("gw", "e", &rs).unwrap();
        assert!(s.request_body(&m).len() <= 16 * 1024, "{} > 16 KiB", s.request_body(&m).len());
    }

    /// Several messages: one event each, in order, in one batch body; as many
    /// as the sink allows, with message bodies up to what it announces for a
    /// request together, fit in the request limit even all escaped.
    #[test]
    fn several_messages_are_one_batch_in_order_within_the_request_limit() {
        use crate::model::{DeviceKind, Reading, ReadingType};
        let mut cfg = EventHubsSinkConfig::with_connection_string("Endpoint=sb://n/;SharedAccessKeyName=k;SharedAccessKey=a2V5;EntityPath=v");
        cfg.max_request_bytes = Some(crate::config::units::ByteSize(64 * 1024));
        cfg.max_events_per_request = 6;
        cfg.user_properties.insert("site".into(), "ward-3".into());
        let s = EventHubsSink::start(&cfg).unwrap();
        assert_eq!(s.max_messages_per_request(), 6);
        assert!(s.max_request_bytes() < 64 * 1024 * 2 / 3);
        let per_message = s.max_request_bytes() / 6;
        let mut seq = 0u64;
        let ms: Vec<Message> = (0..6)
            .map(|_| {
                let mut rs = Vec::new();
                loop {
                    seq += 1;
                    let mut r = Reading::new("dev-\"quoted\"", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 97.0);
                    r.seq = seq;
                    rs.push(r);
                    if Message::from_batch("gw", "e", &rs).unwrap().to_json().len() > per_message {
                        rs.pop();
                        seq -= 1;
                        break;
                    }
                }
                Message::from_batch("gw", "e", &rs).unwrap()
            })
            .collect();
        assert!(ms.iter().map(|m| m.to_json().len()).sum::<usize>() <= s.max_request_bytes());
        let body = s.request_body_many(&ms);
        assert!(body.len() <= 64 * 1024, "{} > 64 KiB", body.len());
        let events: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(events.len(), 6);
        for (e, m) in events.iter().zip(&ms) {
            assert_eq!(e["BrokerProperties"]["MessageId"], m.message_id.as_str());
            assert_eq!(e["BrokerProperties"]["PartitionKey"], "dev-\"quoted\"");
            assert_eq!(e["UserProperties"]["site"], "ward-3");
            assert_eq!(serde_json::from_str::<Message>(e["Body"].as_str().unwrap()).unwrap(), *m);
        }
        assert_eq!(s.request_body(&ms[0]), s.request_body_many(&ms[..1]));
    }

    #[test]
    fn sas_tokens_are_reused_then_renewed_and_the_key_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cs");
        std::fs::write(&f, "Endpoint=sb://n/;SharedAccessKeyName=k;SharedAccessKey=first;EntityPath=v").unwrap();
        let c = SasCredential {
            source: Secret::File(f.clone()),
            resource: "https://n/v".into(),
            ttl: Duration::from_secs(100),
            current: parking_lot::Mutex::new(None),
            read_failed: SharedEpisode::default(),
        };
        let n = EventHubsCounters::default();
        let a = c.authorization(1_000, &n).unwrap();
        assert_eq!(a, sas::token("https://n/v", "k", "first", 1_100));
        assert_eq!(c.authorization(1_079, &n).unwrap(), a, "reused before 80 %");
        std::fs::write(&f, "Endpoint=sb://n/;SharedAccessKeyName=k;SharedAccessKey=second;EntityPath=v").unwrap();
        assert_eq!(c.authorization(1_080, &n).unwrap(), sas::token("https://n/v", "k", "second", 1_180), "renewed with the new key");
        // The key file disappears: the current token serves until expiry, then a named error.
        std::fs::remove_file(&f).unwrap();
        *c.current.lock() = Some(sas::issue("https://n/v", "k", "second", 1_080, Duration::from_secs(100)));
        assert!(c.authorization(1_170, &n).is_ok());
        assert!(matches!(c.authorization(1_181, &n), Err(SinkError::FatalAuth(m)) if m.contains("connection string")));
        assert_eq!(n.tokens.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn token_file_is_reread_when_it_changes_and_expired_tokens_are_refused() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = |exp: u64| format!("{}.{}.c2ln", b64("{\"alg\":\"RS256\"}"), b64(&format!("{{\"exp\":{exp}}}")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let c = TokenFileCredential { path: path.clone(), state: Default::default() };
        let n = EventHubsCounters::default();
        assert!(matches!(c.authorization(1_000, &n), Err(SinkError::FatalAuth(m)) if m.contains("helper")));
        std::fs::write(&path, format!("Bearer {}\n", jwt(2_000))).unwrap();
        assert_eq!(c.authorization(1_000, &n).unwrap(), format!("Bearer {}", jwt(2_000)));
        // Rewritten with a longer token (another length): picked up.
        std::fs::write(&path, jwt(20_000)).unwrap();
        assert_eq!(c.authorization(1_001, &n).unwrap(), format!("Bearer {}", jwt(20_000)));
        std::fs::write(&path, jwt(1_500)).unwrap();
        assert!(matches!(c.authorization(1_600, &n), Err(SinkError::FatalAuth(m)) if m.contains("expired")));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(c.authorization(1_600, &n), Err(SinkError::FatalAuth(m)) if m.contains("holds no token")));
    }
}
