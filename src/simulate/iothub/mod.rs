//! A local Azure IoT Hub (and DPS) emulator for tests and for trying the
//! gateway without an Azure subscription.
//!
//! A loopback MQTT 3.1.1-over-TLS broker that enforces the IoT Hub device
//! contract (Azure IoT Hub documentation, "Communicate with an IoT hub using the MQTT protocol"): client id and
//! username format, SAS signature and expiry (the connection is closed at
//! expiry), X.509 client certificates, QoS <= 1, the 256 KB message limit,
//! topic grammar, one connection per identity, at most 5 subscriptions. It
//! serves twin and direct-method topics, records every telemetry message with
//! its properties, and can inject faults (refuse connections, disconnect as
//! throttling does, drop PUBACKs, go away for a while, hold desired-property
//! notifications in flight and deliver them after the next full twin, as in
//! the race the IoT Hub device twin guide's "Device reconnection flow"
//! describes). The same port serves
//! DPS registrations (`$dps/registrations/...`) for symmetric-key enrollments.
//!
//! A second, optional listener serves the same broker over secure WebSockets
//! as IoT Hub does on 443: TLS, then an HTTP/1.1 upgrade on `/$iothub/websocket`
//! with the `mqtt` subprotocol, then MQTT bytes in binary frames (see [`ws`]).
//!
//! The packet codec is rumqttc's public `mqttbytes::v4`; TLS is tokio-rustls;
//! the WebSocket layer is async-tungstenite with ws_stream_tungstenite (the
//! same crates rumqttc's own websocket transport uses).

mod broker;
pub(crate) mod certs;
mod oracle;
pub(crate) mod ws;

use crate::simulate::EmulatorError;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen (loopback). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The hub name devices sign tokens for.
    pub hub_name: String,
    /// The DPS ID scope served on the same port.
    pub dps_id_scope: String,
    /// Where to serve MQTT over secure WebSockets (`wss://.../$iothub/websocket`),
    /// if anywhere (loopback; port 0 picks a free port, 443 is what SDKs dial).
    pub ws_bind: Option<SocketAddr>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub_name: "iomt-emulator.azure-devices.net".into(),
            dps_id_scope: "0ne00EMUL8".into(),
            ws_bind: None,
        }
    }
}

/// A telemetry message as the hub received it.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub device_id: String,
    pub module_id: Option<String>,
    /// The topic as published.
    pub topic: String,
    /// The decoded property bag, in order.
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection (1, 2, ...) carried it.
    pub connection: u64,
    /// Which listener that connection came in on.
    pub transport: Transport,
    pub received_at: Instant,
}

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TLS (8883).
    Mqtt,
    /// MQTT over secure WebSockets (443, `/$iothub/websocket`).
    WebSocket,
}

impl ReceivedMessage {
    /// A property's value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Something that happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulatorEvent {
    /// A device connected (connection number, listener, peer address).
    Connected { client_id: String, connection: u64, transport: Transport, peer: Option<SocketAddr> },
    /// A WebSocket upgrade was refused with an HTTP status (wrong path, no `mqtt` subprotocol).
    UpgradeRefused { status: u16, reason: String },
    /// A connection attempt was refused, with the reason.
    Refused { client_id: String, reason: String },
    /// A connection ended, with the reason (`client disconnect`, `token expired`...).
    Closed { client_id: String, connection: u64, reason: String },
    /// A DPS registration completed.
    Provisioned { registration_id: String },
    /// A desired-properties notification held by [`Faults::hold_desired_patches`]
    /// was delivered late (after the twin GET answer on `connection`, or by
    /// [`Emulator::release_held_patches`]).
    HeldPatchDelivered { device_id: String, version: u64, connection: u64 },
    /// A device asked for its full twin (`$iothub/twin/GET`) on `connection`.
    TwinRequested { device_id: String, connection: u64 },
}

/// Faults to inject.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Refuse every CONNECT with this return code (e.g. 5 = not authorized).
    pub refuse_code: Option<u8>,
    /// Do not acknowledge this many upcoming telemetry messages (they are
    /// still recorded, as when a PUBACK is lost on the way back).
    pub drop_pubacks: u32,
    /// After accepting this many more telemetry messages, disconnect the
    /// device as throttling does (the next message is not accepted).
    pub throttle_after: Option<u32>,
    /// Until then, close every new TCP connection at once.
    pub away_until: Option<Instant>,
    /// While set, desired-property notifications made by
    /// [`Emulator::patch_desired`] are not sent but held "in flight" (the
    /// twin itself is updated). Held notifications are delivered, in the
    /// order they were made and with their own `$version`, right after the
    /// device's next full-twin answer (`$iothub/twin/res/200`), so a device
    /// sees an old patch after a newer full twin, or when
    /// [`Emulator::release_held_patches`] is called. Clearing the flag does
    /// not drop what is held.
    pub hold_desired_patches: bool,
}

/// How a device authenticates to the emulator.
#[derive(Debug, Clone)]
pub(crate) enum DeviceAuth {
    /// A symmetric key (base64).
    Key(String),
    /// A client certificate (DER) issued by the emulator's CA.
    X509(Vec<u8>),
}

#[derive(Default)]
struct Twin {
    desired: serde_json::Map<String, Value>,
    desired_version: u64,
    /// Desired notifications held in flight: (version, topic, body).
    held: Vec<(u64, String, Vec<u8>)>,
    reported: serde_json::Map<String, Value>,
    reported_version: u64,
}

/// A live connection's handle.
struct Live {
    connection: u64,
    to_device: mpsc::UnboundedSender<(String, Vec<u8>)>,
    kill: Arc<Notify>,
    subscriptions: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
struct State {
    devices: HashMap<String, DeviceAuth>,
    group_keys: Vec<String>,
    messages: Vec<ReceivedMessage>,
    events: Vec<EmulatorEvent>,
    faults: Faults,
    twins: HashMap<String, Twin>,
    live: HashMap<String, Live>,
    next_connection: u64,
    pending_methods: HashMap<String, oneshot::Sender<(u16, Value)>>,
    next_rid: u64,
    provisioned: BTreeMap<String, String>,
}

pub(crate) struct Shared {
    cfg: EmulatorConfig,
    state: Mutex<State>,
    changed: Notify,
    x509_certs: Mutex<HashMap<Vec<u8>, String>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running emulator. Dropping it stops it.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    authority: certs::Authority,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
    ws_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = &self.ws_task {
            t.abort();
        }
        let st = self.shared.state();
        for l in st.live.values() {
            l.kill.notify_one();
        }
    }
}

impl Emulator {
    /// Starts the emulator: makes the certificates, binds, accepts in the background.
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let authority = certs::Authority::new()?;
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        for ip in std::iter::once(cfg.bind.ip()).chain(cfg.ws_bind.map(|a| a.ip())) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let server = authority.server(&["localhost".to_string(), cfg.hub_name.clone()], &ips)?;
        let listener = tokio::net::TcpListener::bind(cfg.bind).await.map_err(|error| EmulatorError::Listen { what: cfg.bind.to_string(), error })?;
        let addr = listener.local_addr()?;
        let ws_listener = match cfg.ws_bind {
            Some(a) => {
                Some(tokio::net::TcpListener::bind(a).await.map_err(|error| EmulatorError::Listen { what: format!("{a} (websocket)"), error })?)
            }
            None => None,
        };
        let ws_addr = ws_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let tls = broker::server_config(&server, &authority.ca_der())?;
        let shared = Arc::new(Shared { cfg, state: Mutex::new(State::default()), changed: Notify::new(), x509_certs: Mutex::new(HashMap::new()) });
        let task = tokio::spawn(broker::accept_loop(listener, tls.clone(), shared.clone(), Transport::Mqtt));
        let ws_task = ws_listener.map(|l| tokio::spawn(broker::accept_loop(l, tls, shared.clone(), Transport::WebSocket)));
        let ca_pem = authority.ca_pem();
        Ok(Emulator { shared, addr, ws_addr, authority, ca_pem, task, ws_task })
    }

    /// The listening address (MQTT over TLS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket listener's address, if one was configured (`ws_bind`).
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// `gateway_host_name` for `transport = "websocket"`: `ip:port`, or just
    /// the address when listening on 443 (what a gateway dials by default).
    pub fn ws_gateway_host(&self) -> Option<String> {
        self.ws_addr.map(|a| if a.port() == 443 { a.ip().to_string() } else { a.to_string() })
    }

    /// The hub name.
    pub fn hub_name(&self) -> &str {
        &self.shared.cfg.hub_name
    }

    /// The DPS ID scope.
    pub fn id_scope(&self) -> &str {
        &self.shared.cfg.dps_id_scope
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate to `dir/emulator-ca.pem` and returns the path.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf, EmulatorError> {
        let p = dir.join("emulator-ca.pem");
        std::fs::write(&p, &self.ca_pem)?;
        Ok(p)
    }

    /// `GatewayHostName` value pointing at this emulator (`127.0.0.1:port`, or
    /// just the address when listening on 8883).
    pub fn gateway_host(&self) -> String {
        if self.addr.port() == 8883 {
            self.addr.ip().to_string()
        } else {
            self.addr.to_string()
        }
    }

    /// Registers a device with a symmetric key (replacing any previous registration).
    pub fn register_device(&self, device_id: &str, key_b64: &str) {
        self.shared.state().devices.insert(device_id.to_string(), DeviceAuth::Key(key_b64.to_string()));
    }

    /// Registers a device with a new random key and returns its connection string.
    pub fn add_device(&self, device_id: &str) -> String {
        let key = random_key();
        self.register_device(device_id, &key);
        self.connection_string(device_id, &key)
    }

    /// Registers a module identity (`{device}/{module}`, IoT Edge style) with
    /// its own new random key and returns its connection string.
    pub fn add_module(&self, device_id: &str, module_id: &str) -> String {
        let key = random_key();
        self.register_device(&format!("{device_id}/{module_id}"), &key);
        format!(
            "HostName={};DeviceId={};ModuleId={};SharedAccessKey={};GatewayHostName={}",
            self.hub_name(),
            device_id,
            module_id,
            key,
            self.gateway_host()
        )
    }

    /// Registers a device that authenticates with a client certificate; returns (cert PEM, key PEM).
    pub fn add_x509_device(&self, device_id: &str) -> Result<(String, String), EmulatorError> {
        let issued = self.authority.device(device_id)?;
        self.shared.x509_certs.lock().unwrap_or_else(|e| e.into_inner()).insert(issued.cert_der.clone(), device_id.to_string());
        self.shared.state().devices.insert(device_id.to_string(), DeviceAuth::X509(issued.cert_der.clone()));
        Ok((issued.cert_pem, issued.key_pem))
    }

    /// Removes a device (its connection is closed).
    pub fn remove_device(&self, device_id: &str) {
        let mut st = self.shared.state();
        st.devices.remove(device_id);
        if let Some(l) = st.live.get(device_id) {
            l.kill.notify_one();
        }
    }

    /// A device connection string for this emulator.
    pub fn connection_string(&self, device_id: &str, key_b64: &str) -> String {
        format!("HostName={};DeviceId={};SharedAccessKey={};GatewayHostName={}", self.hub_name(), device_id, key_b64, self.gateway_host())
    }

    /// Adds a DPS group enrollment key.
    pub fn add_group_enrollment(&self, group_key_b64: &str) {
        self.shared.state().group_keys.push(group_key_b64.to_string());
    }

    /// Every telemetry message received so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.state().messages.clone()
    }

    /// Events so far.
    pub fn events(&self) -> Vec<EmulatorEvent> {
        self.shared.state().events.clone()
    }

    /// Sets the faults to inject.
    pub fn set_faults(&self, f: Faults) {
        self.shared.state().faults = f;
    }

    /// Changes the faults in place.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.state().faults);
    }

    /// Closes every connection and refuses new ones for `d`.
    pub fn go_away(&self, d: Duration) {
        let mut st = self.shared.state();
        st.faults.away_until = Some(Instant::now() + d);
        for l in st.live.values() {
            l.kill.notify_one();
        }
    }

    /// Closes a device's connection now (as a server-side disconnect).
    pub fn disconnect(&self, device_id: &str) {
        if let Some(l) = self.shared.state().live.get(device_id) {
            l.kill.notify_one();
        }
    }

    /// Whether a device is connected.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.shared.state().live.contains_key(device_id)
    }

    /// Waits until `pred` holds over the received messages, or the timeout passes.
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[ReceivedMessage]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if pred(&self.shared.state().messages) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.shared.state().messages);
            }
        }
    }

    /// The device's reported properties.
    pub fn reported(&self, device_id: &str) -> Value {
        self.shared.state().twins.get(device_id).map(|t| Value::Object(t.reported.clone())).unwrap_or(Value::Null)
    }

    /// Applies a desired-properties patch and sends it to the device if connected
    /// (and subscribed). Returns the new desired version.
    pub fn patch_desired(&self, device_id: &str, patch: Value) -> u64 {
        let mut guard = self.shared.state();
        let st = &mut *guard;
        let twin = st.twins.entry(device_id.to_string()).or_default();
        if let Value::Object(p) = &patch {
            merge(&mut twin.desired, p);
        }
        twin.desired_version += 1;
        let v = twin.desired_version;
        let mut body = patch;
        if let Value::Object(o) = &mut body {
            o.insert("$version".into(), Value::from(v));
        }
        let topic = format!("$iothub/twin/PATCH/properties/desired/?$version={v}");
        let body = serde_json::to_vec(&body).unwrap_or_default();
        if st.faults.hold_desired_patches {
            twin.held.push((v, topic, body));
            return v;
        }
        if let Some(l) = st.live.get(device_id) {
            if l.subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|s| broker::topic_matches(s, "$iothub/twin/PATCH/properties/desired/"))
            {
                let _ = l.to_device.send((topic, body));
            }
        }
        v
    }

    /// The versions of the desired notifications held for a device (see
    /// [`Faults::hold_desired_patches`]).
    pub fn held_patches(&self, device_id: &str) -> Vec<u64> {
        self.shared.state().twins.get(device_id).map(|t| t.held.iter().map(|(v, _, _)| *v).collect()).unwrap_or_default()
    }

    /// Delivers the held desired notifications of a device now, in order, if
    /// it is connected and subscribed; returns how many were delivered (they
    /// stay held otherwise).
    pub fn release_held_patches(&self, device_id: &str) -> usize {
        let n = {
            let mut st = self.shared.state();
            let st = &mut *st;
            let Some(l) = st.live.get(device_id) else { return 0 };
            if !l
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|s| broker::topic_matches(s, "$iothub/twin/PATCH/properties/desired/"))
            {
                return 0;
            }
            let held = st.twins.get_mut(device_id).map(|t| std::mem::take(&mut t.held)).unwrap_or_default();
            for (v, topic, body) in &held {
                let _ = l.to_device.send((topic.clone(), body.clone()));
                st.events.push(EmulatorEvent::HeldPatchDelivered { device_id: device_id.to_string(), version: *v, connection: l.connection });
            }
            held.len()
        };
        self.shared.changed.notify_waiters();
        n
    }

    /// Fault injection: publishes `payload` on `topic` to a connected device
    /// as is, whatever it is (e.g. a desired patch without `$version`, which
    /// IoT Hub never sends). Returns whether a connection took it.
    pub fn send_raw(&self, device_id: &str, topic: &str, payload: Vec<u8>) -> bool {
        self.shared.state().live.get(device_id).is_some_and(|l| l.to_device.send((topic.to_string(), payload)).is_ok())
    }

    /// Invokes a direct method; returns the device's status and payload. Errors
    /// when the device is offline, not subscribed, or does not answer in time.
    pub async fn invoke_method(&self, device_id: &str, name: &str, payload: Value, timeout: Duration) -> Result<(u16, Value), EmulatorError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state();
            st.next_rid += 1;
            let rid = format!("m{}", st.next_rid);
            let live = st.live.get(device_id).ok_or(EmulatorError::MethodNotDelivered("device is not connected (404)"))?;
            let subscribed =
                live.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|s| broker::topic_matches(s, "$iothub/methods/POST/x/"));
            if !subscribed {
                return Err(EmulatorError::MethodNotDelivered("device has not subscribed to direct methods (404)"));
            }
            live.to_device
                .send((format!("$iothub/methods/POST/{name}/?$rid={rid}"), serde_json::to_vec(&payload)?))
                .map_err(|_| EmulatorError::MethodNotDelivered("device connection closed"))?;
            st.pending_methods.insert(rid, tx);
        }
        tokio::time::timeout(timeout, rx).await.map_err(EmulatorError::MethodTimeout)?.map_err(EmulatorError::MethodDropped)
    }
}

/// A new random 256-bit symmetric key, base64.
fn random_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// JSON merge patch semantics (null removes) as twins use.
fn merge(target: &mut serde_json::Map<String, Value>, patch: &serde_json::Map<String, Value>) {
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target.entry(k.clone()).or_insert_with(|| Value::Object(Default::default()));
                if let Value::Object(t) = entry {
                    merge(t, p);
                } else {
                    *entry = v.clone();
                }
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}
