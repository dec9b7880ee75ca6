//! The emulator's broker: TLS accept loop, CONNECT checks (IoT Hub and DPS),
//! and the per-connection packet loop. The loop runs over any byte stream:
//! TLS directly (8883) or a WebSocket inside TLS (443, see `super::ws`).

use super::oracle::{self, Published};
use super::{DeviceAuth, EmulatorEvent, ReceivedMessage, Shared, Transport};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio_rustls::rustls;

/// IoT Hub's message limit (body + property values and names).
const MAX_MESSAGE: usize = 256 * 1024;
/// Largest MQTT packet read (bigger packets close the connection).
const MAX_PACKET: usize = MAX_MESSAGE + 64 * 1024;
/// Subscriptions allowed per connection.
const MAX_SUBSCRIPTIONS: usize = 5;

/// TLS settings: the server certificate, and optional client certificates from our CA.
pub(crate) fn server_config(server: &super::certs::Issued, ca_der: &[u8]) -> Result<Arc<rustls::ServerConfig>, crate::simulate::EmulatorError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).allow_unauthenticated().build()?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(server.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
        )?;
    Ok(Arc::new(cfg))
}

/// Accepts connections on one listener until aborted: TLS, then (for
/// `Transport::WebSocket`) the WebSocket upgrade, then the MQTT session.
pub(crate) async fn accept_loop(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>, transport: Transport) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer_addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let away = shared.state().faults.away_until.is_some_and(|t| Instant::now() < t);
        if away {
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            let link = Link { peer_cert: peer, peer_addr: Some(peer_addr), transport };
            match transport {
                Transport::Mqtt => connection(stream, link, shared).await,
                Transport::WebSocket => {
                    let upgraded = tokio::time::timeout(Duration::from_secs(10), super::ws::accept(stream)).await;
                    match upgraded {
                        Ok(Ok(ws)) => connection(ws, link, shared).await,
                        Ok(Err(super::ws::UpgradeError::Refused { status, reason })) => {
                            event(&shared, EmulatorEvent::UpgradeRefused { status, reason });
                        }
                        Ok(Err(super::ws::UpgradeError::Handshake)) | Err(_) => {}
                    }
                }
            }
        });
    }
}

/// Reads the next packet (cancel-safe: bytes stay in `buf`).
async fn next_packet<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match v4::read(buf, MAX_PACKET) {
            Ok(p) => return Ok(p),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(CodecError::PayloadSizeLimitExceeded(n)) => return Err(format!("packet of {n} bytes exceeds the message size limit")),
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
        match r.read_buf(buf).await {
            Ok(0) => return Err("connection closed by the device".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, f: impl FnOnce(&mut BytesMut) -> Result<usize, CodecError>) -> Result<(), String> {
    let mut out = BytesMut::new();
    f(&mut out).map_err(|e| e.to_string())?;
    w.write_all(&out).await.map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// MQTT topic filter matching (`+`, `#`).
pub(crate) fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn code(n: u8) -> ConnectReturnCode {
    match n {
        1 => ConnectReturnCode::RefusedProtocolVersion,
        2 => ConnectReturnCode::BadClientId,
        3 => ConnectReturnCode::ServiceUnavailable,
        4 => ConnectReturnCode::BadUserNamePassword,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// What the transport tells about a connection.
struct Link {
    /// The client certificate (DER), if one was presented.
    peer_cert: Option<Vec<u8>>,
    /// The TCP peer (a proxy, when one is used).
    peer_addr: Option<std::net::SocketAddr>,
    /// Which listener.
    transport: Transport,
}

/// Who connected.
enum Who {
    Device { device_id: String, module_id: Option<String>, expiry: Option<u64> },
    Dps { registration_id: String, device_key: String },
}

/// Checks a CONNECT against the IoT Hub / DPS rules.
fn authenticate(shared: &Shared, c: &v4::Connect, peer: Option<&[u8]>) -> Result<Who, (u8, String)> {
    let (user, pass) = c.login.as_ref().map(|l| (l.username.as_str(), l.password.as_str())).unwrap_or(("", ""));
    let st = shared.state();
    if let Some((scope, rest)) = user.split_once("/registrations/") {
        // DPS: {idScope}/registrations/{regId}/api-version=...
        let (reg, api) = rest.split_once('/').ok_or((4, "DPS username lacks api-version".to_string()))?;
        if scope != shared.cfg.dps_id_scope || !api.starts_with("api-version=") || reg != c.client_id {
            return Err((4, "DPS username or client id do not match the scope and registration id".into()));
        }
        let tok = oracle::read_token(pass).map_err(|e| (4, format!("DPS password: {e}")))?;
        if tok.resource != format!("{scope}/registrations/{reg}") || tok.policy.as_deref() != Some("registration") {
            return Err((4, "DPS token resource or skn is wrong".into()));
        }
        if tok.expires <= oracle::unix_now() {
            return Err((5, "DPS token expired".into()));
        }
        let keys = st.group_keys.iter().filter_map(|g| oracle::group_device_key(g, reg));
        let key =
            keys.into_iter().find(|k| oracle::signed_with(&tok, k)).ok_or((5, "no enrollment matches this registration's signature".to_string()))?;
        return Ok(Who::Dps { registration_id: reg.to_string(), device_key: key });
    }
    // IoT Hub: {hub}/{deviceId}[/{moduleId}]/?api-version=...
    let (path, query) = user.split_once("/?").ok_or((4, "username lacks `/?api-version=`".to_string()))?;
    if !query.split('&').any(|kv| kv.starts_with("api-version=")) {
        return Err((4, "username lacks api-version".into()));
    }
    let (host, client) = path.split_once('/').ok_or((4, "username lacks the device id".to_string()))?;
    if !host.eq_ignore_ascii_case(&shared.cfg.hub_name) {
        return Err((4, format!("username names hub `{host}`, this is `{}`", shared.cfg.hub_name)));
    }
    if client != c.client_id || c.client_id.is_empty() {
        return Err((2, "client id does not match the username".into()));
    }
    let (device_id, module_id) = match c.client_id.split_once('/') {
        Some((d, m)) => (d.to_string(), Some(m.to_string())),
        None => (c.client_id.clone(), None),
    };
    // Modules are identities of their own, registered as `{device}/{module}`.
    let auth = st.devices.get(&c.client_id).ok_or((5, format!("identity `{}` is not registered", c.client_id)))?;
    match auth {
        DeviceAuth::Key(key) => {
            let tok = oracle::read_token(pass).map_err(|e| (4, format!("password: {e}")))?;
            if tok.policy.is_some() {
                return Err((5, "hub policy tokens are not supported by the emulator".into()));
            }
            let mut want = format!("{}/devices/{}", shared.cfg.hub_name, device_id);
            if let Some(m) = &module_id {
                want.push_str(&format!("/modules/{m}"));
            }
            // The token's resource must be a segment prefix of the identity's, and name the device.
            let got: Vec<&str> = tok.resource.split('/').collect();
            let want_segs: Vec<&str> = want.split('/').collect();
            let prefix_ok = got.len() >= 3
                && got.len() <= want_segs.len()
                && got.iter().zip(&want_segs).enumerate().all(|(i, (a, b))| if i == 0 { a.eq_ignore_ascii_case(b) } else { a == b });
            if !prefix_ok {
                return Err((5, format!("token resource `{}` does not cover this identity", tok.resource)));
            }
            if !oracle::signed_with(&tok, key) {
                return Err((4, "SAS signature does not match the device key".into()));
            }
            if tok.expires <= oracle::unix_now() {
                return Err((5, "SAS token expired".into()));
            }
            Ok(Who::Device { device_id, module_id, expiry: Some(tok.expires) })
        }
        DeviceAuth::X509(der) => {
            if peer != Some(der.as_slice()) {
                return Err((5, "no client certificate, or not this device's certificate".into()));
            }
            Ok(Who::Device { device_id, module_id, expiry: None })
        }
    }
}

fn event(shared: &Shared, e: EmulatorEvent) {
    shared.state().events.push(e);
    shared.changed.notify_waiters();
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, link: Link, shared: Arc<Shared>) {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let first = match tokio::time::timeout(Duration::from_secs(10), next_packet(&mut r, &mut buf)).await {
        Ok(Ok(Packet::Connect(c))) => c,
        _ => return,
    };
    let refuse = shared.state().faults.refuse_code;
    if let Some(n) = refuse {
        let _ = write(&mut w, |b| ConnAck::new(code(n), false).write(b)).await;
        event(&shared, EmulatorEvent::Refused { client_id: first.client_id.clone(), reason: format!("fault injection: refused with code {n}") });
        return;
    }
    let who = authenticate(&shared, &first, link.peer_cert.as_deref());
    let who = match who {
        Ok(w) => w,
        Err((n, reason)) => {
            let _ = write(&mut w, |b| ConnAck::new(code(n), false).write(b)).await;
            event(&shared, EmulatorEvent::Refused { client_id: first.client_id.clone(), reason });
            return;
        }
    };
    match who {
        Who::Dps { registration_id, device_key } => dps(r, w, buf, shared, registration_id, device_key).await,
        Who::Device { device_id, module_id, expiry } => {
            device(r, w, buf, shared, &link, first.client_id.clone(), device_id, module_id, expiry, first.keep_alive).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn device<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    link: &Link,
    client_id: String,
    device_id: String,
    module_id: Option<String>,
    expiry: Option<u64>,
    keep_alive: u16,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let kill = Arc::new(Notify::new());
    let subs = Arc::new(Mutex::new(Vec::<String>::new()));
    let connection = {
        let mut st = shared.state();
        st.next_connection += 1;
        let n = st.next_connection;
        // One connection per identity: a new one drops the old one (400027).
        if let Some(old) =
            st.live.insert(client_id.clone(), super::Live { connection: n, to_device: tx, kill: kill.clone(), subscriptions: subs.clone() })
        {
            old.kill.notify_one();
        }
        st.events.push(EmulatorEvent::Connected { client_id: client_id.clone(), connection: n, transport: link.transport, peer: link.peer_addr });
        n
    };
    shared.changed.notify_waiters();
    let reason = 'conn: {
        if write(&mut w, |b| ConnAck::new(ConnectReturnCode::Success, false).write(b)).await.is_err() {
            break 'conn "write failed".to_string();
        }
        let expires_in = expiry.map(|e| Duration::from_secs(e.saturating_sub(oracle::unix_now())));
        let expiry_sleep = tokio::time::sleep(expires_in.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(expiry_sleep);
        let ka = if keep_alive == 0 {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_millis(keep_alive as u64 * 1500).min(Duration::from_secs(1767))
        };
        let mut ka_deadline = tokio::time::Instant::now() + ka;
        loop {
            tokio::select! {
                p = next_packet(&mut r, &mut buf) => {
                    ka_deadline = tokio::time::Instant::now() + ka;
                    let p = match p { Ok(p) => p, Err(e) => break 'conn e };
                    match p {
                        Packet::Publish(p) => {
                            if let Err(e) = on_publish(&shared, &mut w, &device_id, &module_id, (connection, link.transport), &subs, p).await {
                                break 'conn e;
                            }
                        }
                        Packet::Subscribe(s) => {
                            let codes: Vec<SubscribeReasonCode> = {
                                let mut have = subs.lock().unwrap_or_else(|e| e.into_inner());
                                s.filters.iter().map(|f| {
                                    let allowed = f.path == "$iothub/twin/res/#"
                                        || f.path.starts_with("$iothub/twin/PATCH/properties/desired/")
                                        || f.path.starts_with("$iothub/methods/POST/")
                                        || f.path.starts_with(&format!("devices/{device_id}/"));
                                    if !allowed || (have.len() >= MAX_SUBSCRIPTIONS && !have.contains(&f.path)) {
                                        return SubscribeReasonCode::Failure;
                                    }
                                    if !have.contains(&f.path) { have.push(f.path.clone()); }
                                    SubscribeReasonCode::Success(if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce })
                                }).collect()
                            };
                            if write(&mut w, |b| SubAck::new(s.pkid, codes).write(b)).await.is_err() { break 'conn "write failed".into(); }
                        }
                        Packet::Unsubscribe(u) => {
                            subs.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| !u.topics.contains(s));
                            if write(&mut w, |b| v4::UnsubAck::new(u.pkid).write(b)).await.is_err() { break 'conn "write failed".into(); }
                        }
                        Packet::PingReq => { if write(&mut w, |b| v4::PingResp.write(b)).await.is_err() { break 'conn "write failed".into(); } }
                        Packet::Disconnect => break 'conn "client disconnect".into(),
                        Packet::PubAck(_) => {}
                        other => break 'conn format!("unexpected packet {other:?}"),
                    }
                }
                m = rx.recv() => {
                    let Some((topic, payload)) = m else { break 'conn "closed".into() };
                    if write(&mut w, |b| Publish::new(topic, QoS::AtMostOnce, payload).write(b)).await.is_err() { break 'conn "write failed".into(); }
                }
                _ = kill.notified() => break 'conn "closed by the hub".into(),
                _ = &mut expiry_sleep => break 'conn "token expired".into(),
                _ = tokio::time::sleep_until(ka_deadline) => break 'conn "keep-alive timeout".into(),
            }
        }
    };
    let _ = w.shutdown().await;
    {
        let mut st = shared.state();
        if st.live.get(&client_id).is_some_and(|l| l.connection == connection) {
            st.live.remove(&client_id);
        }
        st.events.push(EmulatorEvent::Closed { client_id, connection, reason });
    }
    shared.changed.notify_waiters();
}

async fn puback<W: AsyncWrite + Unpin>(w: &mut W, p: &Publish) -> Result<(), String> {
    if p.qos == QoS::AtLeastOnce {
        write(w, |b| PubAck::new(p.pkid).write(b)).await?;
    }
    Ok(())
}

async fn on_publish<W: AsyncWrite + Unpin>(
    shared: &Shared,
    w: &mut W,
    device_id: &str,
    module_id: &Option<String>,
    (connection, transport): (u64, Transport),
    subs: &Mutex<Vec<String>>,
    p: Publish,
) -> Result<(), String> {
    if p.qos == QoS::ExactlyOnce {
        return Err("QoS 2 publish (IoT Hub supports QoS 0 and 1)".into());
    }
    let subscribed = |prefix: &str| subs.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|s| topic_matches(s, prefix));
    match oracle::read_topic(&p.topic) {
        Some(Published::Telemetry { device_id: d, module_id: m, properties }) => {
            if d != device_id || &m != module_id {
                return Err("publish to another identity's topic".into());
            }
            let counted: usize =
                p.payload.len() + properties.iter().map(|(k, v)| if k.starts_with("$.") { v.len() } else { k.len() + v.len() }).sum::<usize>();
            if counted > MAX_MESSAGE {
                return Err(format!("message of {counted} bytes exceeds 256 KB"));
            }
            if properties.iter().any(|(k, v)| !k.is_ascii() || !v.is_ascii()) {
                return Err("non-ASCII property".into());
            }
            if properties.iter().any(|(k, v)| k == "$.mid" && v.len() > 128) {
                return Err("$.mid longer than 128 characters".into());
            }
            let (ack, throttle) = {
                let mut st = shared.state();
                let throttle = match st.faults.throttle_after {
                    Some(0) => {
                        st.faults.throttle_after = None;
                        true
                    }
                    Some(n) => {
                        st.faults.throttle_after = Some(n - 1);
                        false
                    }
                    None => false,
                };
                if !throttle {
                    st.messages.push(ReceivedMessage {
                        device_id: d,
                        module_id: m,
                        topic: p.topic.clone(),
                        properties,
                        body: p.payload.to_vec(),
                        connection,
                        transport,
                        received_at: Instant::now(),
                    });
                }
                let ack = if st.faults.drop_pubacks > 0 {
                    st.faults.drop_pubacks -= 1;
                    false
                } else {
                    true
                };
                (ack, throttle)
            };
            if throttle {
                return Err("throttled (429): connection closed".into());
            }
            shared.changed.notify_waiters();
            if ack {
                puback(w, &p).await?;
            }
            Ok(())
        }
        Some(Published::TwinGet { rid }) => {
            puback(w, &p).await?;
            shared.state().events.push(EmulatorEvent::TwinRequested { device_id: device_id.to_string(), connection });
            shared.changed.notify_waiters();
            if !subscribed("$iothub/twin/res/200/") {
                return Ok(());
            }
            let body = {
                let mut st = shared.state();
                let t = st.twins.entry(device_id.to_string()).or_default();
                let mut d = t.desired.clone();
                d.insert("$version".into(), t.desired_version.into());
                let mut r = t.reported.clone();
                r.insert("$version".into(), t.reported_version.into());
                json!({"desired": d, "reported": r})
            };
            write(w, |b| {
                Publish::new(format!("$iothub/twin/res/200/?$rid={rid}"), QoS::AtMostOnce, serde_json::to_vec(&body).unwrap_or_default()).write(b)
            })
            .await?;
            // Notifications held in flight arrive after the full twin (the
            // reconnection race of the device twin guide).
            if !subscribed("$iothub/twin/PATCH/properties/desired/") {
                return Ok(());
            }
            let held = {
                let mut st = shared.state();
                let held = st.twins.get_mut(device_id).map(|t| std::mem::take(&mut t.held)).unwrap_or_default();
                for (v, _, _) in &held {
                    st.events.push(EmulatorEvent::HeldPatchDelivered { device_id: device_id.to_string(), version: *v, connection });
                }
                held
            };
            for (_, topic, body) in held {
                write(w, |b| Publish::new(topic, QoS::AtMostOnce, body).write(b)).await?;
            }
            shared.changed.notify_waiters();
            Ok(())
        }
        Some(Published::TwinReported { rid }) => {
            puback(w, &p).await?;
            let (status, version) = match serde_json::from_slice::<Value>(&p.payload) {
                Ok(Value::Object(patch)) if p.payload.len() <= 32 * 1024 => {
                    let mut st = shared.state();
                    let t = st.twins.entry(device_id.to_string()).or_default();
                    super::merge(&mut t.reported, &patch);
                    t.reported_version += 1;
                    (204, Some(t.reported_version))
                }
                _ => (400, None),
            };
            shared.changed.notify_waiters();
            if !subscribed("$iothub/twin/res/204/") {
                return Ok(());
            }
            let topic = match version {
                Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
                None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
            };
            write(w, |b| Publish::new(topic, QoS::AtMostOnce, Vec::new()).write(b)).await
        }
        Some(Published::MethodResponse { status, rid }) => {
            puback(w, &p).await?;
            let tx = shared.state().pending_methods.remove(&rid);
            if let Some(tx) = tx {
                let _ = tx.send((status, serde_json::from_slice(&p.payload).unwrap_or(Value::Null)));
            }
            Ok(())
        }
        None => Err(format!("topic `{}` is not part of the IoT Hub device API", p.topic)),
    }
}

/// A DPS session: registration and operation-status polling.
async fn dps<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(mut r: R, mut w: W, mut buf: BytesMut, shared: Arc<Shared>, reg: String, key: String) {
    if write(&mut w, |b| ConnAck::new(ConnectReturnCode::Success, false).write(b)).await.is_err() {
        return;
    }
    let mut polls = 0u32;
    loop {
        let p = match tokio::time::timeout(Duration::from_secs(60), next_packet(&mut r, &mut buf)).await {
            Ok(Ok(p)) => p,
            _ => return,
        };
        let ok = match p {
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        if f.path == "$dps/registrations/res/#" {
                            SubscribeReasonCode::Success(QoS::AtLeastOnce)
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                write(&mut w, |b| SubAck::new(s.pkid, codes).write(b)).await
            }
            Packet::PingReq => write(&mut w, |b| v4::PingResp.write(b)).await,
            Packet::Disconnect => return,
            Packet::Publish(p) => {
                if puback(&mut w, &p).await.is_err() {
                    return;
                }
                let Some((path, q)) = p.topic.split_once("/?") else { return };
                let bag = oracle::property_bag(q).unwrap_or_default();
                let rid = bag.iter().find(|(k, _)| k == "$rid").map(|(_, v)| v.clone()).unwrap_or_default();
                let (status, body, retry) = match path {
                    "$dps/registrations/PUT/iotdps-register" => {
                        let body: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                        if body.get("registrationId").and_then(|v| v.as_str()) != Some(reg.as_str()) {
                            (400, json!({"errorCode": 400004, "message": "registrationId does not match", "trackingId": "emulator"}), None)
                        } else {
                            (202, json!({"operationId": format!("op-{reg}"), "status": "assigning"}), Some(1))
                        }
                    }
                    "$dps/registrations/GET/iotdps-get-operationstatus" => {
                        polls += 1;
                        if polls < 2 {
                            (202, json!({"operationId": format!("op-{reg}"), "status": "assigning"}), Some(1))
                        } else {
                            let hub = shared.cfg.hub_name.clone();
                            {
                                let mut st = shared.state();
                                st.devices.insert(reg.clone(), DeviceAuth::Key(key.clone()));
                                st.provisioned.insert(reg.clone(), hub.clone());
                                st.events.push(EmulatorEvent::Provisioned { registration_id: reg.clone() });
                            }
                            (
                                200,
                                json!({"operationId": format!("op-{reg}"), "status": "assigned", "registrationState": {
                                    "registrationId": reg, "assignedHub": hub, "deviceId": reg, "status": "assigned",
                                    "substatus": "initialAssignment", "etag": "\"emulator\"",
                                    "createdDateTimeUtc": crate::model::time::format(&chrono::Utc::now())}}),
                                None,
                            )
                        }
                    }
                    _ => return,
                };
                let topic = match retry {
                    Some(s) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={s}"),
                    None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
                };
                write(&mut w, |b| Publish::new(topic, QoS::AtMostOnce, serde_json::to_vec(&body).unwrap_or_default()).write(b)).await
            }
            _ => Ok(()),
        };
        if ok.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn filters() {
        assert!(topic_matches("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1"));
        assert!(topic_matches("$iothub/methods/POST/#", "$iothub/methods/POST/x/"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("$iothub/twin/res/#", "$iothub/methods/POST/x"));
    }
}
