//! The IoT Hub sink end to end against the local emulator: delivery contract,
//! properties, and recovery from outages, token expiry, lost PUBACKs,
//! throttling disconnects and refused credentials.

use crate::support::iothub as iothub_support;

use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use iomt_edge::simulate::iothub::{EmulatorEvent, Faults};
use iomt_edge::sinks::{Sink, SinkError};
use iothub_support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_once_in_order_with_properties() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&emu, "gw-1", dir.path());
    cfg.application_properties.insert("site".into(), "ward-3".into());
    let (sink, _) = sink(&cfg, dir.path());
    assert!(sink.max_message_bytes() < 256 * 1024 && sink.max_message_bytes() > 250 * 1024);

    // A batch with readings out of time order: creation time is the earliest.
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().with_timezone(&chrono::Utc);
    let mut a = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 70.0);
    a.seq = 1;
    a.time = t0 + chrono::Duration::seconds(5);
    let mut b = a.clone();
    b.seq = 2;
    b.time = t0;
    let batch = Message::from_batch("gw-test", "0000beef", &[a, b]).unwrap();

    let mut sent = vec![batch.clone()];
    sent.extend(messages("strap-1", 3, 30));
    let other = messages("oxi-1", 100, 30);
    let (s1, s2) = (sink.clone(), sink.clone());
    let (m1, m2) = (sent.clone(), other.clone());
    let t1 = tokio::spawn(async move { send_all(s1.as_ref(), &m1).await });
    let t2 = tokio::spawn(async move { send_all(s2.as_ref(), &m2).await });
    assert!(t1.await.unwrap().is_empty());
    assert!(t2.await.unwrap().is_empty());

    let got = emu.messages();
    let mut all = sent.clone();
    all.extend(other);
    assert_eq!(check_delivery(&all, &got), 0, "no duplicates without faults");
    let first = got.iter().find(|m| m.property("$.mid") == Some(batch.message_id.as_str())).unwrap();
    assert_eq!(first.device_id, "gw-1");
    assert!(first.topic.starts_with("devices/gw-1/messages/events/"));
    assert!(first.topic.contains("%24.mid="), "system properties are sent as %24: {}", first.topic);
    assert_eq!(first.property("$.ct"), Some("application/json"));
    assert_eq!(first.property("$.ce"), Some("utf-8"));
    assert_eq!(first.property("iothub-creation-time-utc"), Some("2026-01-02T03:04:05.678Z"));
    assert_eq!(first.property("site"), Some("ward-3"));
    assert_eq!(first.body, batch.to_json());
    sink.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_before_sending() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-1", dir.path());
    let (sink, _) = sink(&cfg, dir.path());
    let readings: Vec<Reading> = (0..3000)
        .map(|i| {
            let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0);
            r.seq = i;
            r
        })
        .collect();
    let big = Message::from_batch("gw", "00000001", &readings).unwrap();
    assert!(big.to_json().len() > 256 * 1024);
    assert!(matches!(sink.send(&big).await, Err(SinkError::TooLarge(_))));
    assert!(emu.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_then_drain() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-1", dir.path());
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 60);
    assert!(send_all(sink.as_ref(), &sent[..10]).await.is_empty());
    emu.go_away(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let errors = send_all(sink.as_ref(), &sent[10..]).await;
    assert!(started.elapsed() >= Duration::from_secs(2), "nothing can be confirmed while the hub is away");
    assert!(!errors.is_empty(), "sends during the outage must fail, not hang or succeed");
    check_delivery(&sent, &emu.messages());
    let conns = emu.events().iter().filter(|e| matches!(e, EmulatorEvent::Connected { .. })).count();
    assert!(conns >= 2, "reconnected after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_renewed_before_expiry_mid_stream() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&emu, "gw-1", dir.path());
    cfg.token_ttl = Duration::from_secs(3);
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 400);
    let s = sink.clone();
    let m = sent.clone();
    let task = tokio::spawn(async move {
        let mut errs = Vec::new();
        for chunk in m.chunks(10) {
            errs.extend(send_all(s.as_ref(), chunk).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        errs
    });
    let errors = task.await.unwrap();
    let dups = check_delivery(&sent, &emu.messages());
    let events = emu.events();
    let conns = events.iter().filter(|e| matches!(e, EmulatorEvent::Connected { .. })).count();
    assert!(conns >= 3, "expected renewals across the 3 s tokens: {events:?}");
    assert!(
        !events.iter().any(|e| matches!(e, EmulatorEvent::Closed { reason, .. } if reason.contains("expired"))),
        "the hub had to cut an expired token: {events:?}"
    );
    assert!(errors.is_empty(), "renewal should be invisible to the forwarder: {errors:?}");
    assert_eq!(dups, 0, "a graceful renewal drains the window, so nothing is duplicated");
    assert!(sink.session().stats().renewals.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pubacks_are_resent_with_the_same_id() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&emu, "gw-1", dir.path());
    cfg.ack_timeout = Duration::from_millis(800);
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 20);
    send_all(sink.as_ref(), &sent[..5]).await;
    emu.update_faults(|f| f.drop_pubacks = 2);
    let errors = send_all(sink.as_ref(), &sent[5..]).await;
    assert!(errors.is_empty(), "lost PUBACKs are handled inside the sink: {errors:?}");
    let got = emu.messages();
    let dups = check_delivery(&sent, &got);
    assert!(dups >= 1, "the unacknowledged message was sent again");
    // The copy came on a new connection, with the same $.mid.
    let mid = &sent[5].message_id;
    let copies: Vec<_> = got.iter().filter(|m| m.property("$.mid") == Some(mid.as_str())).collect();
    assert!(copies.len() >= 2);
    assert!(copies[1].connection > copies[0].connection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_disconnects_back_off_and_recover() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-1", dir.path());
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 30);
    emu.set_faults(Faults { throttle_after: Some(5), ..Default::default() });
    send_all(sink.as_ref(), &sent).await;
    check_delivery(&sent, &emu.messages());
    assert!(emu.events().iter().any(|e| matches!(e, EmulatorEvent::Closed { reason, .. } if reason.contains("429"))));
    assert!(sink.session().stats().drops.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_fatal_auth_until_fixed() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-1", dir.path());
    // The hub holds another key for this device (e.g. rotated in the portal).
    let iomt_edge::config::iothub::IotHubIdentity::ConnectionString(iomt_edge::config::Secret::Value(key)) = &cfg.identity else {
        panic!("the test config holds its connection string inline")
    };
    let key = key.split("SharedAccessKey=").nth(1).unwrap().split(';').next().unwrap().to_string();
    emu.register_device("gw-1", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 5);
    match sink.send(&sent[0]).await {
        Err(SinkError::FatalAuth(detail)) => assert!(detail.contains("refused"), "{detail}"),
        other => panic!("expected FatalAuth, got {other:?}"),
    }
    assert!(emu.messages().is_empty());
    // The key is fixed on the hub side; the sink's slow retry picks it up.
    emu.register_device("gw-1", &key);
    send_all(sink.as_ref(), &sent).await;
    check_delivery(&sent, &emu.messages());
    assert!(sink.session().stats().refusals.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_identity_connects_without_a_key() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = emu.add_x509_device("x509-gw").unwrap();
    std::fs::write(dir.path().join("dev.pem"), cert).unwrap();
    std::fs::write(dir.path().join("dev.key"), key).unwrap();
    let cs = format!("HostName={};DeviceId=x509-gw;x509=true;GatewayHostName={}", emu.hub_name(), emu.gateway_host());
    let mut cfg = iomt_edge::config::iothub::IotHubSinkConfig::with_connection_string(&cs);
    cfg.ca_file = Some(emu.write_ca(dir.path()).unwrap());
    cfg.client_certificate =
        Some(iomt_edge::config::iothub::ClientCertificate { cert_file: dir.path().join("dev.pem"), key_file: dir.path().join("dev.key") });
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 3);
    assert!(send_all(sink.as_ref(), &sent).await.is_empty());
    check_delivery(&sent, &emu.messages());
    assert!(emu.messages().iter().all(|m| m.device_id == "x509-gw"));
}

/// A confirmation must belong to the message it confirms: when `send` returns
/// Ok, the hub has that message (the emulator records a message before it
/// sends its PUBACK). Eight devices keep the MQTT window full while the hub
/// drops the connection over and over, so publishes are often in rumqttc's
/// hands when a connection dies (written but not flushed, queued, or
/// unacknowledged). A PUBACK matched to the wrong waiter would confirm a
/// message the hub never got, and the forwarder would remove its readings
/// from the outbox: a silent loss (the stalled-delivery flake of the
/// websocket + proxy gateway test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_always_belongs_to_a_message_the_hub_received() {
    let emu = std::sync::Arc::new(emulator().await);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&emu, "gw-1", dir.path());
    cfg.max_in_flight = 16;
    let (sink, _) = sink(&cfg, dir.path());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kicker = {
        let (emu, done) = (emu.clone(), done.clone());
        tokio::spawn(async move {
            let mut kicks = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 50 + 10)).await;
                if emu.is_connected("gw-1") {
                    emu.disconnect("gw-1");
                    kicks += 1;
                }
            }
            kicks
        })
    };
    let mut senders = Vec::new();
    for d in 0..8u64 {
        let (sink, emu) = (sink.clone(), emu.clone());
        senders.push(tokio::spawn(async move {
            let msgs = messages(&format!("strap-{d}"), 1 + d * 1000, 150);
            let mut wrong = Vec::new();
            for m in &msgs {
                let mut tries = 0;
                while let Err(e) = sink.send(m).await {
                    tries += 1;
                    assert!(tries < 300, "message {} never confirmed: {e}", m.message_id);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if !emu.messages().iter().any(|g| g.property("$.mid") == Some(m.message_id.as_str())) {
                    wrong.push(m.message_id.clone());
                }
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 10)).await;
            }
            (msgs, wrong)
        }));
    }
    let mut sent = Vec::new();
    let mut wrong = Vec::new();
    for s in senders {
        let (m, w) = s.await.unwrap();
        sent.extend(m);
        wrong.extend(w);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let kicks = kicker.await.unwrap();
    assert!(kicks >= 10, "the hub dropped the connection only {kicks} times");
    assert!(wrong.is_empty(), "{} message(s) confirmed before the hub had them (after {kicks} drops): {wrong:?}", wrong.len());
    // Per device, first arrivals in order and every message delivered.
    let got = emu.messages();
    for d in 0..8u64 {
        let dev = format!("strap-{d}");
        let mine: Vec<Message> = sent.iter().filter(|m| m.device_id == dev).cloned().collect();
        let ids: std::collections::HashSet<&str> = mine.iter().map(|m| m.message_id.as_str()).collect();
        let theirs: Vec<_> = got.iter().filter(|g| g.property("$.mid").is_some_and(|id| ids.contains(id))).cloned().collect();
        check_delivery(&mine, &theirs);
    }
}
