//! One long-lived MQTT session with IoT Hub over rumqttc.
//!
//! As in rumqtt, the event loop runs in its own task apart from the handle
//! ([`HubSession`]). The handle publishes with QoS 1 and gets a receiver that
//! resolves when *that* publish's PUBACK arrives: the loop matches
//! `Outgoing::Publish(pkid)` events (emitted in request order) to the queue of
//! waiters, then `Incoming::PubAck(pkid)` to the waiter.
//!
//! When a connection ends, every waiter is dropped (the caller sees "lost" and
//! republishes the same message, with the same `$.mid`, once reconnected) and
//! rumqttc's own replay queue is cleared, so each message has exactly one owner
//! of its retries: the caller. This keeps delivery at-least-once, with any
//! duplicate carrying the same message id.
//!
//! The loop also renews SAS tokens: at 80 % of the token's life (and at least
//! 2 min before expiry) it stops new publishes, lets the in-flight window drain,
//! disconnects cleanly and reconnects with a fresh token.

use super::connection_string::ConnectionString;
use super::error::IotHubError;
use super::sas::{self, SasError};
use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// rumqttc's packet-id window. Larger than any in-flight window we allow, so
/// packet ids are not reused while a PUBACK is outstanding.
const PKID_WINDOW: u16 = 4096;
/// Largest packet we accept from the hub (twin documents, method payloads).
const MAX_INCOMING_PACKET: usize = 512 * 1024;
/// Largest packet we send: 256 KiB of message plus topic and header.
const MAX_OUTGOING_PACKET: usize = 256 * 1024 + 16 * 1024;

/// How the device proves its identity.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A base64 symmetric key: SAS tokens are minted and renewed from it.
    Key { key: String, key_name: Option<String> },
    /// A fixed SAS token (from the connection string); cannot be renewed.
    Token(String),
    /// A client certificate in the TLS handshake; no password.
    X509,
}

/// Everything needed to connect as one identity.
#[derive(Clone)]
pub struct Identity {
    /// Where to connect (gateway host or hub host).
    pub(crate) connect_host: String,
    /// Port to connect to.
    pub(crate) connect_port: u16,
    /// The hub's host name (for the username and the token's resource).
    pub(crate) hub_host: String,
    /// Device id.
    pub(crate) device_id: String,
    /// Module id, for IoT Edge modules.
    pub(crate) module_id: Option<String>,
    /// Proof of identity.
    pub(crate) credential: Credential,
}

impl Identity {
    /// The identity a connection string describes.
    pub fn from_connection_string(cs: &ConnectionString, default_port: u16) -> Identity {
        let (connect_host, connect_port) = cs.connect_address(default_port);
        let credential = if let Some(k) = &cs.shared_access_key {
            Credential::Key { key: k.clone(), key_name: cs.shared_access_key_name.clone() }
        } else if let Some(t) = &cs.shared_access_signature {
            Credential::Token(t.clone())
        } else {
            Credential::X509
        };
        Identity {
            connect_host,
            connect_port,
            hub_host: cs.hub_host().to_string(),
            device_id: cs.device_id.clone(),
            module_id: cs.module_id.clone(),
            credential,
        }
    }

    /// MQTT client id.
    pub(crate) fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{}", self.device_id, m),
            None => self.device_id.clone(),
        }
    }

    /// MQTT username.
    pub(crate) fn username(&self) -> String {
        format!("{}/{}/?api-version=2021-04-12&DeviceClientType=iomt-edge%2F{}", self.hub_host, self.client_id(), env!("CARGO_PKG_VERSION"))
    }

    /// The resource tokens are signed for.
    pub(crate) fn resource_uri(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/devices/{}/modules/{}", self.hub_host, self.device_id, m),
            None => format!("{}/devices/{}", self.hub_host, self.device_id),
        }
    }

    /// A password valid until `expiry` (Unix s), or `None` for X.509.
    pub(crate) fn password(&self, expiry: u64) -> Result<Option<String>, SasError> {
        Ok(match &self.credential {
            Credential::Key { key, key_name } => Some(sas::token(key, &self.resource_uri(), expiry, key_name.as_deref())?),
            Credential::Token(t) => Some(t.clone()),
            Credential::X509 => None,
        })
    }
}

/// Supplies the identity before each connection attempt (re-reading a
/// connection string file, or provisioning through DPS).
#[async_trait::async_trait]
pub trait IdentitySource: Send + Sync {
    /// The identity to connect with now.
    async fn current(&self) -> Result<Identity, IotHubError>;
    /// The hub refused the identity: the next `current()` should look again
    /// (re-read the secret, re-provision).
    async fn rejected(&self) {}
    /// The hub accepted the identity (CONNACK): a refusal episode is over.
    fn connected(&self) {}
}

/// A fixed identity.
pub struct FixedIdentity(pub Identity);

#[async_trait::async_trait]
impl IdentitySource for FixedIdentity {
    async fn current(&self) -> Result<Identity, IotHubError> {
        Ok(self.0.clone())
    }
}

/// The network path to the hub.
#[derive(Clone)]
pub enum TransportKind {
    /// MQTT over TLS (8883).
    Mqtt,
    /// MQTT over secure WebSockets (443, `/$iothub/websocket`), optionally through an HTTP CONNECT proxy.
    Websocket { proxy: Option<ProxySettings> },
}

/// Reconnection timing.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// First backoff after a failure (then doubling, with jitter).
    pub backoff_min: Duration,
    /// Backoff ceiling.
    pub backoff_max: Duration,
    /// Wait after the hub refused the credentials.
    pub auth_retry: Duration,
    /// How long a token renewal waits for the in-flight window to drain.
    pub drain_timeout: Duration,
    /// How long a send waits for a connection before reporting the failure.
    pub connect_wait: Duration,
    /// How often reported properties are refreshed.
    pub report_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            auth_retry: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
            connect_wait: Duration::from_secs(10),
            report_every: Duration::from_secs(300),
        }
    }
}

/// Settings of a [`HubSession`].
#[derive(Clone)]
pub struct SessionOptions {
    pub transport: TransportKind,
    pub tls: Arc<ClientConfig>,
    pub keep_alive: Duration,
    pub token_ttl: Duration,
    /// Upper bound on QoS 1 publishes outstanding (telemetry + twin + methods).
    pub max_in_flight: usize,
    pub tuning: Tuning,
}

/// The state of the MQTT connection to the hub as the sink sees it (not a
/// device's link: that is `model::status::LinkState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttLinkState {
    /// Trying to connect (first time or after a drop).
    Connecting,
    /// Connected; `generation` counts successful connections.
    Connected { generation: u64 },
    /// Draining before a token renewal; new publishes wait.
    Renewing,
    /// The hub refused the credentials (CONNACK refusal).
    Refused { detail: String },
    /// The last attempt failed; `server_closed` when an open connection was closed by the hub.
    Down { detail: String, server_closed: bool, retry_in: Duration },
    /// Closed for good.
    Closed,
}

/// Counters for status reports.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub(crate) connects: AtomicU64,
    pub refusals: AtomicU64,
    pub drops: AtomicU64,
    pub renewals: AtomicU64,
}

#[derive(Default)]
struct Window {
    /// Waiters of publishes handed to rumqttc but not yet given a packet id.
    fifo: VecDeque<oneshot::Sender<()>>,
    /// Waiters by packet id, until their PUBACK.
    acks: HashMap<u16, oneshot::Sender<()>>,
}

struct Shared {
    client: AsyncClient,
    window: Mutex<Window>,
    state: watch::Sender<MqttLinkState>,
    closing: AtomicBool,
    wake: Notify,
    identity: Mutex<Option<(String, Option<String>)>>,
    stats: SessionStats,
}

impl Shared {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A publish that could not be handed to the connection.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT request queue is full or closed")]
pub(crate) struct QueueFull;

/// The handle to one MQTT session with the IoT Hub (connection, reconnects,
/// token renewal, in-flight window).
pub struct HubSession {
    shared: Arc<Shared>,
    incoming: Mutex<Option<mpsc::Receiver<Publish>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HubSession {
    /// Starts the session's event loop task; it connects in the background.
    pub fn start(opts: SessionOptions, source: Arc<dyn IdentitySource>) -> HubSession {
        let mut placeholder = MqttOptions::new("pending", "localhost", 8883);
        placeholder.set_inflight(PKID_WINDOW);
        placeholder.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        let cap = opts.max_in_flight + 64;
        let (client, eventloop) = AsyncClient::new(placeholder, cap);
        let (state, _) = watch::channel(MqttLinkState::Connecting);
        let shared = Arc::new(Shared {
            client,
            window: Mutex::new(Window::default()),
            state,
            closing: AtomicBool::new(false),
            wake: Notify::new(),
            identity: Mutex::new(None),
            stats: SessionStats::default(),
        });
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(run(shared.clone(), eventloop, opts, source, tx));
        HubSession { shared, incoming: Mutex::new(Some(rx)), task: Mutex::new(Some(task)) }
    }

    /// Watches the link state.
    pub fn state(&self) -> watch::Receiver<MqttLinkState> {
        self.shared.state.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.shared.stats
    }

    /// The connected identity's (device id, module id), once known.
    pub(crate) fn identity(&self) -> Option<(String, Option<String>)> {
        self.shared.identity.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the stream of publishes from the hub (twin responses, desired
    /// patches, method calls). Only the first call gets it.
    pub(crate) fn take_incoming(&self) -> Option<mpsc::Receiver<Publish>> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Publishes with QoS 1. The receiver resolves on PUBACK; an error means
    /// the connection ended first and the caller should publish again.
    pub(crate) fn publish(&self, topic: String, payload: Vec<u8>) -> Result<oneshot::Receiver<()>, QueueFull> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.shared.window();
        self.shared.client.try_publish(topic, QoS::AtLeastOnce, false, payload).map_err(|_| QueueFull)?;
        w.fifo.push_back(tx);
        Ok(rx)
    }

    /// Publishes outstanding (for status).
    pub(crate) fn in_flight(&self) -> usize {
        let w = self.shared.window();
        w.fifo.len() + w.acks.len()
    }

    /// Drops the connection of `generation` (if still current) and reconnects:
    /// used when a PUBACK is overdue.
    pub(crate) fn force_reconnect(&self, generation: u64) {
        let mut done = false;
        self.shared.state.send_if_modified(|s| {
            if *s == (MqttLinkState::Connected { generation }) {
                *s = MqttLinkState::Connecting;
                done = true;
                true
            } else {
                false
            }
        });
        if done {
            let _ = self.shared.client.try_disconnect();
        }
    }

    /// Disconnects and stops the event loop.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.shared.client.try_disconnect();
        self.shared.wake.notify_waiters();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut t) = task {
            if tokio::time::timeout(Duration::from_secs(3), &mut t).await.is_err() {
                t.abort();
            }
        }
        self.shared.state.send_replace(MqttLinkState::Closed);
    }
}

impl Drop for HubSession {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// An HTTP CONNECT proxy for the WebSocket transport.
#[derive(Clone)]
pub struct ProxySettings {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Basic authentication (user, password).
    pub(crate) basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ProxySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| format!("{u}:***")))
            .finish()
    }
}

/// Builds the rumqttc options for one connection attempt.
fn mqtt_options(opts: &SessionOptions, id: &Identity, password: Option<String>) -> MqttOptions {
    let mut o = match &opts.transport {
        TransportKind::Mqtt => {
            let mut o = MqttOptions::new(id.client_id(), id.connect_host.clone(), id.connect_port);
            o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(opts.tls.clone())));
            o
        }
        TransportKind::Websocket { proxy } => {
            let url = format!("wss://{}:{}/$iothub/websocket", id.connect_host, id.connect_port);
            let mut o = MqttOptions::new(id.client_id(), url, id.connect_port);
            o.set_transport(rumqttc::Transport::Wss(rumqttc::TlsConfiguration::Rustls(opts.tls.clone())));
            if let Some(p) = proxy {
                let auth = match &p.basic_auth {
                    Some((username, password)) => rumqttc::ProxyAuth::Basic { username: username.clone(), password: password.clone() },
                    None => rumqttc::ProxyAuth::None,
                };
                o.set_proxy(rumqttc::Proxy { ty: rumqttc::ProxyType::Http, auth, addr: p.host.clone(), port: p.port });
            }
            o
        }
    };
    o.set_keep_alive(opts.keep_alive.min(Duration::from_secs(1177)).max(Duration::from_secs(5)));
    o.set_clean_session(false);
    o.set_inflight(PKID_WINDOW);
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    o.set_credentials(id.username(), password.unwrap_or_default());
    o
}

/// When to renew a token of `ttl` issued now: at 80 % of its life, and at least
/// 2 min early for long tokens.
pub(crate) fn renew_after(ttl: Duration) -> Duration {
    let eighty = ttl.mul_f64(0.8);
    let two_min_early = ttl.saturating_sub(Duration::from_secs(120));
    if ttl > Duration::from_secs(600) {
        eighty.min(two_min_early)
    } else {
        eighty
    }
}

/// The delay after `failures` failures in a row (1 or more): `backoff_min`
/// doubling up to `backoff_max`, each drawn from 50-100 % of that.
fn backoff(t: &Tuning, failures: u32) -> Duration {
    crate::backoff::Backoff::new(t.backoff_min, t.backoff_max).with_jitter().delay(failures.saturating_sub(1))
}

/// Forgets the connection's in-flight window: waiters are dropped (their
/// callers republish), rumqttc's replay queue is cleared, and so are the
/// events rumqttc had queued for the dead connection.
///
/// The last part matters: rumqttc queues `Outgoing::Publish(pkid)` before it
/// flushes the packet, and `EventLoop::clean` leaves `state.events` alone. A
/// flush that fails as the connection dies leaves that event behind; handed
/// out after the reconnection, it would pair the *next* publish's waiter
/// with a dead packet id and shift every later waiter by one, so a PUBACK
/// would confirm a message the hub has not received yet (and may never
/// receive). Measured with `a_confirmation_always_belongs_to_a_message_the_hub_received`.
fn drop_window(shared: &Shared, eventloop: &mut EventLoop) {
    let mut w = shared.window();
    eventloop.clean();
    eventloop.pending.clear();
    eventloop.state.events.clear();
    eventloop.state.collision = None;
    w.fifo.clear();
    w.acks.clear();
}

async fn sleep_or_close(shared: &Shared, d: Duration) {
    if shared.closing.load(Ordering::SeqCst) {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shared.wake.notified() => {}
    }
}

fn describe(e: &ConnectionError) -> (bool, String) {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let auth = matches!(code, ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadClientId);
            let what = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password (wrong key, expired token or unknown device)",
                ConnectReturnCode::NotAuthorized => "not authorized (device disabled or unknown)",
                ConnectReturnCode::BadClientId => "client id refused (unknown device id)",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                _ => "refused",
            };
            (auth, format!("the hub refused the connection: {what}"))
        }
        other => (false, other.to_string()),
    }
}

async fn run(shared: Arc<Shared>, mut eventloop: EventLoop, opts: SessionOptions, source: Arc<dyn IdentitySource>, incoming: mpsc::Sender<Publish>) {
    let mut connected = false;
    let mut failures: u32 = 0;
    let mut generation: u64 = 0;
    let mut renew_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut token_ttl = opts.token_ttl;
    // Said once per episode: the first failure at warn/error, the
    // retries at debug, the recovery at info.
    let mut link_down = crate::logging::Episode::default();
    let mut refused = crate::logging::Episode::default();
    let mut ack_stall = crate::logging::Episode::default();
    loop {
        if shared.closing.load(Ordering::SeqCst) {
            break;
        }
        if !connected {
            // Fresh identity and token for every attempt.
            let id = match source.current().await {
                Ok(id) => id,
                Err(e @ IotHubError::Refused(_)) => {
                    shared.stats.refusals.fetch_add(1, Ordering::Relaxed);
                    let e = crate::logging::error_chain(&e);
                    if refused.occurred() {
                        tracing::error!("{e}; retrying every {:.0?} (logged once until it connects)", opts.tuning.auth_retry);
                    } else {
                        tracing::debug!("{e}; retrying in {:.0?}", opts.tuning.auth_retry);
                    }
                    shared.state.send_replace(MqttLinkState::Refused { detail: format!("{e:#}") });
                    sleep_or_close(&shared, opts.tuning.auth_retry).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    let retry_in = backoff(&opts.tuning, failures).max(opts.tuning.backoff_min);
                    let e = crate::logging::error_chain(&e);
                    if link_down.occurred() {
                        tracing::warn!(
                            "IoT Hub identity unavailable: {e}; retrying with backoff (further failures are logged at debug level until it connects)"
                        );
                    } else {
                        tracing::debug!("IoT Hub identity unavailable: {e}; retrying in {:.0?}", retry_in);
                    }
                    shared.state.send_replace(MqttLinkState::Down { detail: format!("{e:#}"), server_closed: false, retry_in });
                    sleep_or_close(&shared, retry_in).await;
                    continue;
                }
            };
            let expiry = sas::now_unix().saturating_add(token_ttl.as_secs().max(1));
            let password = match id.password(expiry) {
                Ok(p) => p,
                Err(e) => {
                    shared.state.send_replace(MqttLinkState::Refused { detail: format!("cannot make a SAS token: {e}") });
                    sleep_or_close(&shared, opts.tuning.auth_retry).await;
                    continue;
                }
            };
            if matches!(id.credential, Credential::Token(_)) {
                if let Ok(p) = sas::parse_token(password.as_deref().unwrap_or_default()) {
                    token_ttl = Duration::from_secs(p.expiry.saturating_sub(sas::now_unix()));
                }
            }
            *shared.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.device_id.clone(), id.module_id.clone()));
            eventloop.mqtt_options = mqtt_options(&opts, &id, password);
        }
        let ev = eventloop.poll().await;
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected = true;
                failures = 0;
                generation += 1;
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                let _ = shared.client.try_subscribe_many([
                    rumqttc::SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
                    rumqttc::SubscribeFilter::new("$iothub/twin/PATCH/properties/desired/#".into(), QoS::AtLeastOnce),
                    rumqttc::SubscribeFilter::new("$iothub/methods/POST/#".into(), QoS::AtLeastOnce),
                ]);
                source.connected();
                let down = link_down.end().or(refused.end());
                match down {
                    Some(end) => tracing::info!("connected to IoT Hub again (connection {generation}), {end}"),
                    None => tracing::info!("connected to IoT Hub (connection {generation})"),
                }
                shared.state.send_replace(MqttLinkState::Connected { generation });
                if let Some(t) = renew_task.take() {
                    t.abort();
                }
                if !matches!(eventloop.mqtt_options.credentials(), Some((_, p)) if p.is_empty()) {
                    renew_task = Some(tokio::spawn(renew(shared.clone(), generation, renew_after(token_ttl), opts.tuning.drain_timeout)));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = shared.window();
                if let Some(tx) = w.fifo.pop_front() {
                    w.acks.insert(pkid, tx);
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(end) = ack_stall.end() {
                    tracing::info!("the hub confirms messages again, {end}");
                }
                let tx = shared.window().acks.remove(&ack.pkid);
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if incoming.try_send(p).is_err() {
                    tracing::warn!("dropped a message from the hub: its handler is busy");
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                if ack_stall.occurred() {
                    tracing::warn!("packet id {pkid} still awaits its PUBACK; reconnecting to resend (logged once until the hub confirms again)");
                } else {
                    tracing::debug!("packet id {pkid} still awaits its PUBACK; reconnecting to resend");
                }
                drop_window(&shared, &mut eventloop);
                connected = false;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                drop_window(&shared, &mut eventloop);
                connected = false;
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
                shared.state.send_replace(MqttLinkState::Connecting);
            }
            Ok(_) => {}
            Err(e) => {
                drop_window(&shared, &mut eventloop);
                if let Some(t) = renew_task.take() {
                    t.abort();
                }
                let was_connected = std::mem::replace(&mut connected, false);
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
                let (auth, detail) = describe(&e);
                if auth {
                    shared.stats.refusals.fetch_add(1, Ordering::Relaxed);
                    if refused.occurred() {
                        tracing::error!(
                            "{detail}; check the device key or connection string; retrying every {:.0?} (logged once until it connects)",
                            opts.tuning.auth_retry
                        );
                    } else {
                        tracing::debug!("{detail}; retrying in {:.0?}", opts.tuning.auth_retry);
                    }
                    shared.state.send_replace(MqttLinkState::Refused { detail });
                    source.rejected().await;
                    sleep_or_close(&shared, opts.tuning.auth_retry).await;
                    continue;
                }
                if was_connected {
                    shared.stats.drops.fetch_add(1, Ordering::Relaxed);
                }
                failures += 1;
                // First retry after a drop is immediate (as the C SDK does), then exponential with jitter.
                let retry_in = if was_connected && failures == 1 { Duration::ZERO } else { backoff(&opts.tuning, failures) };
                let how = if was_connected { "lost" } else { "failed" };
                if link_down.occurred() {
                    tracing::warn!(
                        "IoT Hub connection {how}: {detail}; retrying with backoff, readings stay in the outbox \
                         (further failures are logged at debug level until it connects)"
                    );
                } else {
                    tracing::debug!("IoT Hub connection {how}: {detail}; retrying in {:.1?}", retry_in);
                }
                shared.state.send_replace(MqttLinkState::Down { detail, server_closed: was_connected, retry_in });
                sleep_or_close(&shared, retry_in).await;
            }
        }
    }
    if let Some(t) = renew_task.take() {
        t.abort();
    }
    drop_window(&shared, &mut eventloop);
    shared.state.send_replace(MqttLinkState::Closed);
}

/// Waits for the renewal time, drains the window, disconnects (the loop then
/// reconnects with a fresh token).
async fn renew(shared: Arc<Shared>, generation: u64, after: Duration, drain: Duration) {
    tokio::time::sleep(after).await;
    let mut started = false;
    shared.state.send_if_modified(|s| {
        if *s == (MqttLinkState::Connected { generation }) {
            *s = MqttLinkState::Renewing;
            started = true;
            true
        } else {
            false
        }
    });
    if !started {
        return;
    }
    let deadline = tokio::time::Instant::now() + drain;
    while tokio::time::Instant::now() < deadline {
        let busy = {
            let w = shared.window();
            w.fifo.len() + w.acks.len()
        };
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.stats.renewals.fetch_add(1, Ordering::Relaxed);
    tracing::info!("renewing the IoT Hub token (reconnecting)");
    let _ = shared.client.try_disconnect();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever rumqttc queued for a dead connection is forgotten with it: a
    /// stale `Outgoing::Publish` handed out after the reconnection would pair
    /// the next waiter with a dead packet id.
    #[test]
    fn a_dead_connection_leaves_no_events_behind() {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("t", "localhost", 8883), 8);
        let (state, _) = watch::channel(MqttLinkState::Connecting);
        let shared = Shared {
            client,
            window: Mutex::new(Window::default()),
            state,
            closing: AtomicBool::new(false),
            wake: Notify::new(),
            identity: Mutex::new(None),
            stats: SessionStats::default(),
        };
        let (tx, mut rx) = oneshot::channel();
        shared.window().fifo.push_back(tx);
        eventloop.state.events.push_back(Event::Outgoing(Outgoing::Publish(7)));
        eventloop.state.events.push_back(Event::Incoming(Incoming::PubAck(rumqttc::PubAck::new(7))));
        drop_window(&shared, &mut eventloop);
        assert!(eventloop.state.events.is_empty(), "stale events: {:?}", eventloop.state.events);
        assert!(shared.window().fifo.is_empty() && shared.window().acks.is_empty());
        assert!(rx.try_recv().is_err(), "the waiter learns its connection ended");
    }

    #[test]
    fn renewal_is_well_before_expiry() {
        assert_eq!(renew_after(Duration::from_secs(3600)), Duration::from_secs(2880));
        assert_eq!(renew_after(Duration::from_secs(5)), Duration::from_secs(4));
        let t = Tuning::default();
        for n in 1..40 {
            let b = backoff(&t, n);
            assert!(b <= t.backoff_max && b >= t.backoff_min / 2);
        }
    }
}
