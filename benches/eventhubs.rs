//! Event Hubs beside IoT Hub in one run: a backlog drained from a real
//! outbox through the real forwarder to each sink's local emulator, with the
//! bytes on the wire counted by a TCP relay between the sink and the
//! emulator (TLS records, HTTP or MQTT framing, handshakes and answers
//! included).
//!
//! Run: `cargo bench --bench eventhubs` (`READINGS=20000 DEVICES=8
//! IN_FLIGHT=1 BATCH_READINGS=500 EVENTS=1,10` to change the sizes;
//! `IN_FLIGHT` sets both sinks' `max_in_flight`, default each sink's own
//! default; `BATCH_READINGS` sets `[forwarder] batch_max_readings`, default
//! the shipped 500; Event Hubs runs once per `EVENTS` value of
//! `max_events_per_request`, default 1 and the shipped 10). Figures go in
//! docs/performance.md with the command.

use iomt_edge::config::eventhubs::EventHubsSinkConfig;
use iomt_edge::config::iothub::IotHubSinkConfig;
use iomt_edge::config::OutboxConfig;
use iomt_edge::forwarder::{FlushHandle, Forwarder, ForwarderSettings, ForwarderStats, LiveBatching};
use iomt_edge::health::Health;
use iomt_edge::model::{DeviceKind, Reading, ReadingType};
use iomt_edge::outbox::Outbox;
use iomt_edge::sinks::Sink;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes relayed each way.
#[derive(Default)]
struct Wire {
    up: AtomicU64,
    down: AtomicU64,
}

/// A TCP relay on 127.0.0.1 to `to`, counting bytes each way.
async fn relay(to: SocketAddr) -> (SocketAddr, Arc<Wire>) {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let wire = Arc::new(Wire::default());
    let w = wire.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(to).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                // Counted as they pass (a kept-alive connection never ends
                // within the measurement).
                async fn pipe(from: &mut (impl tokio::io::AsyncRead + Unpin), to: &mut (impl tokio::io::AsyncWrite + Unpin), n: &AtomicU64) {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match from.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => {
                                n.fetch_add(k as u64, Ordering::Relaxed);
                                if to.write_all(&buf[..k]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown().await;
                }
                let up = pipe(&mut cr, &mut sw, &w.up);
                let down = pipe(&mut sr, &mut cw, &w.down);
                tokio::join!(up, down);
            });
        }
    });
    (addr, wire)
}

fn sample(i: u64, devices: u64) -> Reading {
    let dev = format!("device-{}", i % devices);
    if i % 3 == 0 {
        Reading::new(dev, DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 90.0 + (i % 10) as f64)
    } else {
        Reading::new(dev, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + (i % 40) as f64)
    }
}

/// Drains `n` readings from a fresh outbox through the forwarder (default
/// batching: 500 readings, 64 KiB; `max_readings` readings if given) into
/// `sink`; returns (seconds, messages).
async fn drain(dir: &Path, sink: Arc<dyn Sink>, n: u64, devices: u64, max_readings: Option<usize>) -> (f64, u64) {
    let cfg = OutboxConfig { max_bytes: iomt_edge::config::units::ByteSize(4 << 30), ..OutboxConfig::default() };
    let (ob, _) = Outbox::open(dir, &cfg).unwrap();
    let mut i = 0;
    while i < n {
        let mut group: Vec<Reading> = (i..(i + 5000).min(n)).map(|i| sample(i, devices)).collect();
        ob.append(&mut group).unwrap();
        i += group.len() as u64;
    }
    let ob = Arc::new(ob);
    let (_tx, committed) = tokio::sync::watch::channel(ob.last_seq());
    let stats = Arc::new(ForwarderStats::default());
    // The shipped defaults ([forwarder]: 500 readings, 64 KiB, 1 s).
    let fc = iomt_edge::config::ForwarderConfig::default();
    let settings = ForwarderSettings {
        gateway_id: "bench-gw".into(),
        batching: LiveBatching::new(max_readings.unwrap_or(fc.batch_max_readings), Duration::from_millis(fc.batch_max_age_ms)),
        batch_max_bytes: fc.batch_max_bytes.bytes() as usize,
        retry: iomt_edge::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(),
        auth_retry: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        idle_tick: iomt_edge::forwarder::IDLE_TICK,
    };
    let f = Forwarder {
        outbox: ob.clone(),
        sink,
        settings,
        committed,
        stats: stats.clone(),
        health: Arc::new(Health::new()),
        flush: FlushHandle::default(),
        group_sync: None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(f.run(stop.clone()));
    while stats.delivered_readings.load(Ordering::Relaxed) < n {
        assert!(start.elapsed() < Duration::from_secs(600), "drain did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(stats.failed_sends.load(Ordering::Relaxed), 0, "a send failed during the drain");
    (secs, stats.delivered_messages.load(Ordering::Relaxed))
}

/// One line of figures; `messages` are events for Event Hubs, `requests`
/// HTTP requests or MQTT publishes.
fn report(name: &str, n: u64, secs: f64, messages: u64, requests: u64, wire: &Wire, extra: serde_json::Value) -> serde_json::Value {
    let (up, down) = (wire.up.load(Ordering::Relaxed), wire.down.load(Ordering::Relaxed));
    let mut v = serde_json::json!({
        "sink": name,
        "readings": n,
        "messages": messages,
        "requests": requests,
        "drain_s": secs,
        "readings_per_s": n as f64 / secs,
        "requests_per_s": requests as f64 / secs,
        "wire_bytes_up": up,
        "wire_bytes_down": down,
        "wire_bytes_per_reading": (up + down) as f64 / n as f64,
        "wire_bytes_per_event": (up + down) as f64 / messages.max(1) as f64,
        "wire_up_bytes_per_reading": up as f64 / n as f64,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{name:9}: {v}");
    v
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let n = env_num("READINGS", 20_000);
    let devices = env_num("DEVICES", 8);
    let in_flight = std::env::var("IN_FLIGHT").ok().and_then(|v| v.parse::<usize>().ok());
    let max_readings = std::env::var("BATCH_READINGS").ok().and_then(|v| v.parse::<usize>().ok());
    let events: Vec<usize> =
        std::env::var("EVENTS").ok().map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect()).unwrap_or_else(|| vec![1, 10]);
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();

        // IoT Hub: MQTT over TLS to its emulator, through the relay.
        let emu = iomt_edge::simulate::iothub::Emulator::start(iomt_edge::simulate::iothub::EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        })
        .await
        .unwrap();
        let ca = emu.write_ca(dir.path()).unwrap();
        let (via, wire) = relay(emu.addr()).await;
        let cs = emu.add_device("bench-iothub");
        let cs = cs.split(';').filter(|p| !p.starts_with("GatewayHostName=")).collect::<Vec<_>>().join(";") + &format!(";GatewayHostName={via}");
        let mut cfg = IotHubSinkConfig::with_connection_string(&cs);
        cfg.ca_file = Some(ca.clone());
        if let Some(k) = in_flight {
            cfg.max_in_flight = k;
        }
        let iothub_in_flight = cfg.max_in_flight;
        let sink = Arc::new(
            iomt_edge::sinks::iothub::IotHubSink::start(
                &cfg,
                &dir.path().join("iothub-state"),
                Arc::new(iomt_edge::sinks::iothub::SimpleControl::default()),
                iomt_edge::sinks::iothub::session::Tuning::default(),
            )
            .unwrap(),
        );
        let (secs, msgs) = drain(&dir.path().join("outbox-iothub"), sink.clone(), n, devices, max_readings).await;
        sink.close().await;
        let got: usize = emu
            .messages()
            .iter()
            .map(|m| serde_json::from_slice::<serde_json::Value>(&m.body).ok().and_then(|v| v["readings"].as_array().map(Vec::len)).unwrap_or(0))
            .sum();
        assert_eq!(got as u64, n, "the IoT Hub emulator did not get every reading");
        report("iothub", n, secs, msgs, msgs, &wire, serde_json::json!({ "max_in_flight": iothub_in_flight }));

        // Event Hubs: HTTPS (REST "send batch") to its emulator, through the
        // relay, once per number of events per request.
        for (run, k) in events.iter().enumerate() {
            let emu = iomt_edge::simulate::eventhubs::Emulator::start(iomt_edge::simulate::eventhubs::EmulatorConfig {
                state_dir: Some(dir.path().join(format!("eh-emulator-{run}"))),
                ..Default::default()
            })
            .await
            .unwrap();
            let ca = emu.write_ca(dir.path()).unwrap();
            let (via, wire) = relay(emu.addr()).await;
            let cs = emu.connection_string().replace(&emu.addr().to_string(), &via.to_string());
            let mut cfg = EventHubsSinkConfig::with_connection_string(&cs);
            cfg.ca_file = Some(ca);
            cfg.max_events_per_request = *k;
            if let Some(k) = in_flight {
                cfg.max_in_flight = k;
            }
            let eh_in_flight = cfg.max_in_flight;
            let sink = Arc::new(iomt_edge::sinks::eventhubs::EventHubsSink::start(&cfg).unwrap());
            let counters = sink.counters();
            let (secs, msgs) = drain(&dir.path().join(format!("outbox-eventhubs-{run}")), sink.clone(), n, devices, max_readings).await;
            let got: usize = emu
                .events()
                .iter()
                .map(|e| serde_json::from_str::<serde_json::Value>(&e.body).ok().and_then(|v| v["readings"].as_array().map(Vec::len)).unwrap_or(0))
                .sum();
            assert_eq!(got as u64, n, "the Event Hubs emulator did not get every reading");
            let body = counters.request_bytes.load(Ordering::Relaxed);
            let requests = counters.requests.load(Ordering::Relaxed);
            let st = emu.stats();
            report(
                "eventhubs",
                n,
                secs,
                msgs,
                requests,
                &wire,
                serde_json::json!({
                    "max_in_flight": eh_in_flight,
                    "max_events_per_request": k,
                    "events_per_request": msgs as f64 / requests.max(1) as f64,
                    "largest_request_events": st.max_batch_events,
                    "request_body_bytes_per_event": body as f64 / msgs.max(1) as f64,
                    "connections": st.connections,
                }),
            );
        }
    });
}
