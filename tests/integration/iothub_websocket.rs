//! MQTT over secure WebSockets, IoT Hub's port-443 path, against the local
//! emulator's WSS listener: the upgrade rules and frame handling with a raw
//! WebSocket client; the gateway's own IoT Hub sink directly (delivery,
//! properties, PUBACK-gated confirmation, resend with the same `$.mid`, an
//! outage) and through a real HTTP CONNECT proxy (tinyproxy); Microsoft's
//! Python device SDK with `websockets=True` on port 443; a module identity; and
//! the whole gateway process (outbox, forwarder) over WebSockets via the proxy.

use crate::support::gateway as gateway_common;
use crate::support::iothub as iothub_support;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use iomt_edge::config::iothub::{IotHubProxy, IotHubSinkConfig, IotHubTransport};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig, EmulatorEvent, Transport};
use iomt_edge::sinks::iothub::sas;
use iomt_edge::sinks::Sink;
use iothub_support::*;
use rumqttc::mqttbytes::v4::{self, Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// An emulator on 127.0.0.1 with its WebSocket listener on a free port.
async fn ws_emulator() -> Emulator {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    Emulator::start(EmulatorConfig { ws_bind: Some(local), ..Default::default() }).await.unwrap()
}

/// A sink config for a new device of `emu`, over WebSockets to its WSS listener.
fn ws_config(emu: &Emulator, device: &str, dir: &Path) -> IotHubSinkConfig {
    let mut cfg = config(emu, device, dir);
    cfg.transport = IotHubTransport::Websocket;
    cfg.gateway_host_name = emu.ws_gateway_host();
    cfg
}

fn connections(emu: &Emulator) -> Vec<Transport> {
    emu.events()
        .iter()
        .filter_map(|e| match e {
            EmulatorEvent::Connected { transport, .. } => Some(*transport),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A raw WebSocket client (async-tungstenite over tokio-rustls) for the upgrade
// rules and for MQTT bytes that span frames.

type RawWs = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;

async fn raw_ws(emu: &Emulator, path: &str, subprotocol: Option<&str>) -> Result<RawWs, WsError> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut emu.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = emu.ws_addr().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let mut req = format!("wss://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, resp) = async_tungstenite::tokio::client_async(req, stream).await?;
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()), Some("mqtt"), "the subprotocol is echoed");
    Ok(ws)
}

/// Reads binary frames until one whole MQTT packet is buffered.
async fn next_packet(ws: &mut RawWs, buf: &mut BytesMut) -> Packet {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match v4::read(buf, 1 << 20) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the emulator: {e}"),
            }
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => buf.extend_from_slice(&b),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("no MQTT packet from the emulator within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rules_and_packets_split_across_frames() {
    let emu = ws_emulator().await;

    // Wrong path: 404. No `mqtt` subprotocol: 400. Neither reaches the broker.
    match raw_ws(&emu, "/mqtt", Some("mqtt")).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 404),
        Err(e) => panic!("expected HTTP 404, got {e}"),
        Ok(_) => panic!("expected HTTP 404, the upgrade succeeded"),
    }
    match raw_ws(&emu, "/$iothub/websocket", None).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 400),
        Err(e) => panic!("expected HTTP 400, got {e}"),
        Ok(_) => panic!("expected HTTP 400, the upgrade succeeded"),
    }
    let refusals: Vec<u16> = emu
        .events()
        .iter()
        .filter_map(|e| match e {
            EmulatorEvent::UpgradeRefused { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![404, 400]);

    // The real path, with the query string devices without a client cert add.
    let mut ws = raw_ws(&emu, "/$iothub/websocket?iothub-no-client-cert=true", Some("mqtt")).await.unwrap();
    let key = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
    emu.register_device("raw-1", key);
    let resource = format!("{}/devices/raw-1", emu.hub_name());
    let mut connect = Connect::new("raw-1");
    connect.set_login(format!("{}/raw-1/?api-version=2021-04-12", emu.hub_name()), sas::token(key, &resource, sas::now_unix() + 600, None).unwrap());
    let mut bytes = BytesMut::new();
    connect.write(&mut bytes).unwrap();
    // CONNECT split over three frames.
    let (a, rest) = bytes.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    for part in [a, b, c] {
        ws.send(WsMessage::Binary(part.to_vec())).await.unwrap();
    }
    let mut buf = BytesMut::new();
    match next_packet(&mut ws, &mut buf).await {
        Packet::ConnAck(ack) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Two PUBLISHes and a PINGREQ in one frame, the second PUBLISH's tail in the next.
    let mut out = BytesMut::new();
    for (pkid, mid) in [(1u16, "raw-a"), (2, "raw-b")] {
        let mut p =
            Publish::new(format!("devices/raw-1/messages/events/%24.mid={mid}&%24.ct=application%2Fjson"), QoS::AtLeastOnce, b"{\"n\":1}".to_vec());
        p.pkid = pkid;
        p.write(&mut out).unwrap();
    }
    v4::PingReq.write(&mut out).unwrap();
    let cut = out.len() - 6;
    ws.send(WsMessage::Binary(out[..cut].to_vec())).await.unwrap();
    ws.send(WsMessage::Binary(out[cut..].to_vec())).await.unwrap();
    let mut acked = Vec::new();
    let mut pong = false;
    while acked.len() < 2 || !pong {
        match next_packet(&mut ws, &mut buf).await {
            Packet::PubAck(a) => acked.push(a.pkid),
            Packet::PingResp => pong = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acked, vec![1, 2]);
    let got = emu.messages();
    assert_eq!(got.iter().map(|m| m.property("$.mid").unwrap()).collect::<Vec<_>>(), vec!["raw-a", "raw-b"]);
    assert!(got.iter().all(|m| m.device_id == "raw-1" && m.transport == Transport::WebSocket && m.body == b"{\"n\":1}"));
    assert_eq!(connections(&emu), vec![Transport::WebSocket]);
}

// ---------------------------------------------------------------------------
// The gateway's IoT Hub sink with `transport = "websocket"`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_over_websockets_delivers_with_properties() {
    let emu = ws_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ws_config(&emu, "gw-ws", dir.path());
    cfg.application_properties.insert("site".into(), "ward-3".into());
    let (sink, _) = sink(&cfg, dir.path());
    let a = messages("strap-1", 1, 25);
    let b = messages("oxi-1", 100, 25);
    let (s1, s2, m1, m2) = (sink.clone(), sink.clone(), a.clone(), b.clone());
    let t1 = tokio::spawn(async move { send_all(s1.as_ref(), &m1).await });
    let t2 = tokio::spawn(async move { send_all(s2.as_ref(), &m2).await });
    assert!(t1.await.unwrap().is_empty());
    assert!(t2.await.unwrap().is_empty());
    let got = emu.messages();
    let mut all = a.clone();
    all.extend(b);
    assert_eq!(check_delivery(&all, &got), 0, "no duplicates without faults");
    for m in &got {
        assert_eq!(m.transport, Transport::WebSocket);
        assert_eq!(m.device_id, "gw-ws");
        assert!(m.topic.starts_with("devices/gw-ws/messages/events/") && m.topic.contains("%24.mid="), "{}", m.topic);
        assert_eq!(m.property("$.ct"), Some("application/json"));
        assert_eq!(m.property("$.ce"), Some("utf-8"));
        assert_eq!(m.property("site"), Some("ward-3"));
        assert!(m.property("iothub-creation-time-utc").is_some_and(|t| t.ends_with('Z')));
    }
    let first = got.iter().find(|m| m.property("$.mid") == Some(a[0].message_id.as_str())).unwrap();
    assert_eq!(first.body, a[0].to_json());
    assert_eq!(connections(&emu), vec![Transport::WebSocket], "one connection, over the WebSocket listener");
    sink.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_send_is_confirmed_only_by_puback_and_resent_with_the_same_id() {
    let emu = ws_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ws_config(&emu, "gw-ws", dir.path());
    cfg.ack_timeout = Duration::from_millis(800);
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 30);
    assert!(send_all(sink.as_ref(), &sent[..5]).await.is_empty());

    // The hub records the message but never acknowledges it: the sink must not
    // report it confirmed (the forwarder would then delete it from the outbox).
    emu.update_faults(|f| f.drop_pubacks = 1_000);
    let r = tokio::time::timeout(Duration::from_secs(40), sink.send(&sent[5])).await.expect("send must give up, not hang");
    assert!(r.is_err(), "a message without a PUBACK was reported as confirmed");
    let mid = sent[5].message_id.as_str();
    assert!(emu.messages().iter().any(|m| m.property("$.mid") == Some(mid)), "the hub did receive it");

    // Acknowledgements come back: the same message goes again, same $.mid, on a new connection.
    emu.update_faults(|f| f.drop_pubacks = 0);
    assert!(send_all(sink.as_ref(), &sent[5..15]).await.is_empty());

    // The hub goes away for 2 s, then comes back: sends fail meanwhile, then drain.
    emu.go_away(Duration::from_secs(2));
    let errors = send_all(sink.as_ref(), &sent[15..]).await;
    assert!(!errors.is_empty(), "sends during the outage must fail, not hang or succeed");

    let got = emu.messages();
    let dups = check_delivery(&sent, &got);
    assert!(dups >= 1);
    let copies: Vec<_> = got.iter().filter(|m| m.property("$.mid") == Some(mid)).collect();
    assert!(copies.len() >= 2, "resent");
    assert!(copies.iter().all(|c| c.body == sent[5].to_json()));
    assert!(copies.last().unwrap().connection > copies[0].connection, "the copy came on a later connection");
    let conns = connections(&emu);
    assert!(conns.len() >= 3, "reconnected after the lost PUBACK and after the outage: {conns:?}");
    assert!(conns.iter().all(|t| *t == Transport::WebSocket));
}

// ---------------------------------------------------------------------------
// Through a real HTTP CONNECT proxy.

/// A tinyproxy in the foreground on a free loopback port, killed on drop.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tinyproxy_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("tinyproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        crate::support::skip(&crate::support::this_test(), "tinyproxy is not installed (apt-get install tinyproxy; scripts/apt-test-packages.txt)");
    }
    found
}

impl Tinyproxy {
    /// Starts tinyproxy allowing CONNECT to `target_port` only; `port` 0 picks one.
    async fn start(bin: &Path, dir: &Path, port: u16, target_port: u16) -> Tinyproxy {
        Tinyproxy::start_with(bin, dir, port, target_port, "").await
    }

    /// As `start`, with extra configuration lines (e.g. `BasicAuth user password`).
    async fn start_with(bin: &Path, dir: &Path, port: u16, target_port: u16, extra: &str) -> Tinyproxy {
        let port = if port == 0 { std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port() } else { port };
        let log = dir.join(format!("tinyproxy-{port}.log"));
        let conf = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\nConnectPort {target_port}\nLogLevel Connect\nLogFile \"{}\"\n{extra}",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin).arg("-d").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut proxy = Tinyproxy { child, port, log };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(s) = proxy.child.try_wait().unwrap() {
                panic!("tinyproxy exited at start ({s}): {}", std::fs::read_to_string(&proxy.log).unwrap_or_default());
            }
            assert!(tokio::time::Instant::now() < deadline, "tinyproxy did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.port = port;
        proxy
    }

    /// How many CONNECT requests for `target` the proxy logged.
    fn connects_to(&self, target: SocketAddr) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(&format!("CONNECT {target} "))).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_over_websockets_through_an_http_connect_proxy() {
    let Some(bin) = tinyproxy_binary() else { return };
    let emu = ws_emulator().await;
    let target = emu.ws_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&bin, dir.path(), 0, target.port()).await;
    let mut cfg = ws_config(&emu, "gw-proxied", dir.path());
    cfg.proxy = Some(IotHubProxy::new(format!("http://127.0.0.1:{}", proxy.port)));
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 40);
    assert!(send_all(sink.as_ref(), &sent[..20]).await.is_empty());

    // The proxy carried the connection: it logged the CONNECT to the hub's WSS port.
    let conns = connections(&emu);
    assert_eq!(conns, vec![Transport::WebSocket]);
    assert_eq!(proxy.connects_to(target), conns.len(), "every hub connection went through the proxy");

    // Without the proxy the hub is out of reach: no direct fallback.
    let port = proxy.port;
    drop(proxy);
    emu.disconnect("gw-proxied");
    let r = tokio::time::timeout(Duration::from_secs(15), sink.send(&sent[20])).await.expect("send must give up, not hang");
    assert!(r.is_err(), "delivered with the proxy down");
    assert_eq!(connections(&emu).len(), 1, "the sink reached the hub without its proxy");

    // The proxy is back (same port): the sink reconnects through it and drains.
    let proxy = Tinyproxy::start(&bin, dir.path(), port, target.port()).await;
    send_all(sink.as_ref(), &sent[20..]).await;
    check_delivery(&sent, &emu.messages());
    assert!(emu.messages().iter().all(|m| m.transport == Transport::WebSocket));
    assert!(proxy.connects_to(target) >= 1, "the reconnection went through the restarted proxy");
    assert_eq!(connections(&emu).len(), 2);
    sink.close().await;
}

/// A proxy that requires Basic authentication (many hospital proxies do):
/// without credentials the hub is out of reach; with `proxy_credentials` read
/// from a file (`user:password`) the sink delivers
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_with_basic_authentication() {
    let Some(bin) = tinyproxy_binary() else { return };
    let emu = ws_emulator().await;
    let target = emu.ws_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start_with(&bin, dir.path(), 0, target.port(), "BasicAuth ward3 p4ss-w0rd\n").await;
    let sent = messages("strap-1", 1, 10);

    // No credentials: refused by the proxy, nothing reaches the hub.
    let mut cfg = ws_config(&emu, "gw-auth", dir.path());
    cfg.proxy = Some(IotHubProxy::new(format!("127.0.0.1:{}", proxy.port)));
    let (sink_without, _) = sink(&cfg, dir.path());
    let r = tokio::time::timeout(Duration::from_secs(15), sink_without.send(&sent[0])).await.expect("send must give up, not hang");
    assert!(r.is_err(), "delivered through an authenticating proxy without credentials");
    assert!(connections(&emu).is_empty(), "the hub saw a connection");
    sink_without.close().await;

    // Credentials from a file.
    let secret = dir.path().join("proxy.secret");
    std::fs::write(&secret, "ward3:p4ss-w0rd\n").unwrap();
    cfg.proxy = cfg.proxy.map(|p| IotHubProxy { credentials: Some(iomt_edge::config::Secret::File(secret)), ..p });
    let (sink_with, _) = sink(&cfg, dir.path());
    assert!(send_all(sink_with.as_ref(), &sent).await.is_empty());
    check_delivery(&sent, &emu.messages());
    assert!(proxy.connects_to(target) >= 1, "the connection went through the proxy");
    assert_eq!(connections(&emu), vec![Transport::WebSocket]);
    sink_with.close().await;
}

/// The gateway binary (simulated devices -> outbox -> forwarder -> IoT Hub sink)
/// over WebSockets through tinyproxy, with PUBACKs lost on the way: every
/// reading it committed arrives, resends keep their message id.
///
/// This test once failed in 2 of 5 suite runs with a handful of readings
/// never delivered: after a reconnection the IoT Hub session paired PUBACKs
/// with the wrong waiters, so the forwarder removed readings the hub never
/// got. `iothub_sink::a_confirmation_always_belongs_to_a_message_the_hub_received`
/// reproduces that within seconds; the fix is in the session's `drop_window`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_process_over_websockets_through_the_proxy() {
    use gateway_common::{start, terminate, Committed, Delivered};
    let Some(bin) = tinyproxy_binary() else { return };
    let emu = ws_emulator().await;
    let target = emu.ws_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start(&bin, dir.path(), 0, target.port()).await;
    let ca = emu.write_ca(dir.path()).unwrap();
    let cs = emu.add_device("ws-gateway");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "ws-gateway"
state_dir = "{state}"
[outbox]
flush_interval_ms = 50
[forwarder]
batch_max_age_ms = 200
retry_initial_ms = 100
retry_max_ms = 1000
[[device]]
id = "strap-1"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 40
seed = 21
[sink.iothub]
connection_string = {{ value = "{cs}" }}
ca_file = "{ca}"
transport = "websocket"
gateway_host_name = "{gw}"
proxy = "127.0.0.1:{port}"
ack_timeout = "2s"
"#,
            state = dir.path().join("state").display(),
            ca = ca.display(),
            gw = emu.ws_gateway_host().unwrap(),
            port = proxy.port,
        ),
    )
    .unwrap();
    let committed: Committed = Default::default();
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = scopeguard(gw);
    let delivered = |emu: &Emulator| {
        let mut d = Delivered::default();
        for m in emu.messages() {
            d.add(&serde_json::from_slice(&m.body).unwrap());
        }
        d
    };
    let wait_all = |what: &'static str| {
        let committed = committed.clone();
        let emu = &emu;
        async move {
            // Generous: on a loaded 2-core machine the resends after lost
            // PUBACKs (ack timeout, backoff, proxy) once took just over 30 s.
            // Every reading committed by now (at least 20) must arrive; those
            // committed meanwhile are checked at the end, after the stop.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut target: Vec<u64> = Vec::new();
            loop {
                if target.len() < 20 {
                    target = committed.lock().unwrap().keys().copied().collect();
                }
                let d = delivered(emu);
                let missing = target.iter().filter(|s| !d.ids.contains_key(s)).count();
                if missing == 0 && target.len() >= 20 {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{what}: {missing} of {} committed readings not delivered", target.len());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_all("streaming").await;
    emu.update_faults(|f| f.drop_pubacks = 2);
    let before = committed.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_all("after lost PUBACKs").await;
    terminate(&gw.0);
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.0.wait().unwrap();
        drop(gw);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "clean stop expected, got {status:?}");
    reader.join().unwrap();
    let c = committed.lock().unwrap().clone();
    assert!(c.len() > before);
    let d = delivered(&emu);
    d.check(&c);
    assert!(d.duplicated() > 0, "lost PUBACKs must have caused same-id resends");
    assert!(emu.messages().iter().all(|m| m.transport == Transport::WebSocket && m.property("$.mid").is_some()));
    let conns = connections(&emu).len();
    assert!(conns >= 2 && proxy.connects_to(target) == conns, "every connection went through the proxy: {conns} vs {}", proxy.connects_to(target));
}

/// Kills the gateway process if the test fails midway.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

// ---------------------------------------------------------------------------
// Microsoft's Python SDK with websockets=True (it dials port 443).

/// An emulator whose WebSocket listener is on port 443 of a random loopback
/// address, or None (after printing SKIPPED) when port 443 cannot be bound.
async fn emulator_on_443() -> Option<Emulator> {
    for _ in 0..30 {
        let ip = [127, rand::random::<u8>().max(1), rand::random::<u8>(), rand::random::<u8>().clamp(2, 254)];
        match std::net::TcpListener::bind(SocketAddr::from((ip, 443))) {
            Ok(l) => drop(l),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let why = format!("port 443 cannot be bound ({e}; needs root or CAP_NET_BIND_SERVICE): the SDK's websocket transport dials 443");
                crate::support::skip(&crate::support::this_test(), why);
                return None;
            }
            Err(_) => continue,
        }
        let cfg = EmulatorConfig { bind: SocketAddr::from((ip, 0)), ws_bind: Some(SocketAddr::from((ip, 443))), ..Default::default() };
        if let Ok(e) = Emulator::start(cfg).await {
            return Some(e);
        }
    }
    panic!("no free loopback address for port 443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_sdk_over_websockets() {
    let Some(py) = python_with_sdk() else { return };
    let Some(emu) = emulator_on_443().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = emu.write_ca(dir.path()).unwrap();
    let key = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
    emu.register_device("py-ws", key);
    let gateway = emu.ws_gateway_host().unwrap();
    assert!(!gateway.contains(':'), "on 443 the gateway host is the bare address: {gateway}");
    let cs = format!("HostName={};DeviceId=py-ws;SharedAccessKey={key};GatewayHostName={gateway}", emu.hub_name());
    let mut sdk = SdkClient::start(&py, &["--websockets", &cs, ca.to_str().unwrap(), "3"]);
    sdk.wait_ready(|| format!("events {:?}", emu.events())).await;
    let msgs = emu.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.transport, Transport::WebSocket);
        assert_eq!(m.device_id, "py-ws");
        assert_eq!(m.property("$.mid"), Some(format!("py-{i}").as_str()));
        assert_eq!(m.property("$.ct"), Some("application/json"));
        assert_eq!(m.property("site"), Some("ward-3"));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.body).unwrap(), json!({"n": i}));
    }
    // Twin and direct methods work over the WebSocket too.
    assert_eq!(emu.reported("py-ws")["sdk"], "python");
    let (status, payload) = emu.invoke_method("py-ws", "ping", json!({"x": 1}), Duration::from_secs(15)).await.unwrap();
    assert_eq!((status, payload), (200, json!({"pong": {"x": 1}})));
    let exit = sdk.finish().await;
    assert!(exit.is_some_and(|s| s.success()), "SDK script failed: {exit:?}");
    let conns = connections(&emu);
    assert!(!conns.is_empty() && conns.iter().all(|t| *t == Transport::WebSocket), "{:?}", emu.events());
    assert!(!emu.events().iter().any(|e| matches!(e, EmulatorEvent::Refused { .. } | EmulatorEvent::UpgradeRefused { .. })));
}

// ---------------------------------------------------------------------------
// A module identity (IoT Edge style) over both listeners.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_identity_publishes_on_its_module_topic() {
    let emu = ws_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cs = emu.add_module("edge-gw", "iomt");
    let mut cfg = IotHubSinkConfig::with_connection_string(&cs);
    cfg.ca_file = Some(emu.write_ca(dir.path()).unwrap());
    cfg.ack_timeout = Duration::from_secs(2);
    let sent = messages("strap-1", 1, 4);
    {
        let (sink, _) = sink(&cfg, dir.path());
        assert!(send_all(sink.as_ref(), &sent[..2]).await.is_empty());
        sink.close().await;
    }
    cfg.transport = IotHubTransport::Websocket;
    cfg.gateway_host_name = emu.ws_gateway_host();
    let (sink, _) = iothub_support::sink(&cfg, dir.path());
    assert!(send_all(sink.as_ref(), &sent[2..]).await.is_empty());
    sink.close().await;

    let got = emu.messages();
    check_delivery(&sent, &got);
    for m in &got {
        assert_eq!(m.device_id, "edge-gw");
        assert_eq!(m.module_id.as_deref(), Some("iomt"));
        assert!(m.topic.starts_with("devices/edge-gw/modules/iomt/messages/events/"), "{}", m.topic);
    }
    assert_eq!(
        got.iter().map(|m| m.transport).collect::<Vec<_>>(),
        vec![Transport::Mqtt, Transport::Mqtt, Transport::WebSocket, Transport::WebSocket]
    );
    let clients: Vec<_> = emu
        .events()
        .iter()
        .filter_map(|e| match e {
            EmulatorEvent::Connected { client_id, .. } => Some(client_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(clients, vec!["edge-gw/iomt", "edge-gw/iomt"]);

    // A module is an identity of its own: a token signed with another key is refused.
    let key = cs.split("SharedAccessKey=").nth(1).unwrap().split(';').next().unwrap();
    assert_ne!(key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let wrong = cs.replace(key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let mut bad = IotHubSinkConfig::with_connection_string(&wrong);
    bad.ca_file = cfg.ca_file.clone();
    let (sink, _) = iothub_support::sink(&bad, dir.path());
    let r = tokio::time::timeout(Duration::from_secs(15), sink.send(&sent[0])).await.unwrap();
    assert!(matches!(r, Err(iomt_edge::sinks::SinkError::FatalAuth(_))), "{r:?}");
    assert!(emu.events().iter().any(|e| matches!(e, EmulatorEvent::Refused { client_id, .. } if client_id == "edge-gw/iomt")));
}
