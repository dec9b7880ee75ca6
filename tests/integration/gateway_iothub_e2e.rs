//! The whole gateway against the local IoT Hub emulator: simulated devices ->
//! outbox -> forwarder -> IoT Hub sink (MQTT over TLS) -> emulator, as a real
//! process, through a hub outage, a `kill -9` and restart, and lost PUBACKs.
//! Every committed reading must arrive, under one message id, in per-device
//! order, with the IoT Hub properties set.

use crate::support::gateway as gateway_common;

use gateway_common::{start, terminate, Committed, Delivered};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The gateway's config ([`gateway_common::write_two_device_cloud_config`])
/// with the IoT Hub sink: device connection string `cs`, the emulator's CA
/// `ca`.
fn config(dir: &Path, cs: &str, ca: &Path) -> PathBuf {
    let sink = format!(
        "[sink.iothub]\nconnection_string = {{ value = \"{cs}\" }}\nca_file = \"{ca}\"\n\
         # Lost PUBACKs are detected after this long (default 30s); short here to keep the test quick.\n\
         ack_timeout = \"3s\"",
        ca = ca.display()
    );
    gateway_common::write_two_device_cloud_config(dir, "e2e-gateway", "", (11, 12), &sink)
}

/// The emulator, with gateway device `id` registered, and a temporary folder
/// holding the emulator's CA certificate: (emulator, folder, the device's
/// connection string, the CA file).
async fn emulator_with_device(id: &str) -> (Emulator, tempfile::TempDir, String, PathBuf) {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = emu.write_ca(dir.path()).unwrap();
    let cs = emu.add_device(id);
    (emu, dir, cs, ca)
}

/// The twin tests' config, `dir/gw.toml`: gateway `id`, group commit every
/// 20 ms, batches at most 100 ms old (`forwarder_extra`: more `[forwarder]`
/// lines, each ending in `\n`), one simulated strap-1 every 100 ms with
/// patient P-config in the config, the IoT Hub sink.
fn twin_config(dir: &Path, id: &str, forwarder_extra: &str, cs: &str, ca: &Path) -> PathBuf {
    let text = format!(
        "[gateway]\nid = \"{id}\"\nstate_dir = \"{state}\"\n[outbox]\nflush_interval_ms = 20\n\
         [forwarder]\nbatch_max_age_ms = 100\n{forwarder_extra}\
         [[device]]\nid = \"strap-1\"\nkind = \"heart_rate_strap\"\npatient_id = \"P-config\"\n\
         [device.simulated]\ninterval_ms = 100\n\
         [sink.iothub]\nconnection_string = {{ value = \"{cs}\" }}\nca_file = \"{ca}\"\n",
        state = dir.join("state").display(),
        ca = ca.display()
    );
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// (sequence number, patient id) of every strap-1 reading the hub received,
/// in sequence order (a reading sent twice is there twice).
fn strap_patients(emu: &Emulator) -> Vec<(u64, Option<String>)> {
    let mut v: Vec<(u64, Option<String>)> = emu
        .messages()
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.body).unwrap())
        .filter(|b| b["deviceId"] == "strap-1")
        .flat_map(|b| {
            let p = b["patientId"].as_str().map(str::to_string);
            b["readings"].as_array().unwrap().iter().map(move |r| (r["seq"].as_u64().unwrap(), p.clone())).collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

fn delivered(emu: &Emulator) -> Delivered {
    let mut d = Delivered::default();
    for m in emu.messages() {
        let body: serde_json::Value = serde_json::from_slice(&m.body).expect("telemetry body is our JSON message");
        // The IoT Hub contract for every message.
        assert_eq!(m.property("$.mid"), body["messageId"].as_str(), "$.mid must be the message id");
        assert_eq!(m.property("$.ct"), Some("application/json"));
        assert_eq!(m.property("$.ce"), Some("utf-8"));
        let earliest = body["readings"].as_array().unwrap().iter().map(|r| r["time"].as_str().unwrap().to_string()).min();
        assert_eq!(m.property("iothub-creation-time-utc").map(str::to_string), earliest);
        d.add(&body);
    }
    d
}

/// Waits until every reading committed so far (at least one) is delivered
/// ([`gateway_common::wait_delivered`]).
async fn wait_delivered(emu: &Emulator, committed: &Committed, what: &str, limit: Duration) {
    gateway_common::wait_delivered(committed, what, limit, || delivered(emu)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_to_iothub_survives_outage_kill9_and_lost_pubacks() {
    let (emu, dir, cs, ca) = emulator_with_device("e2e-gateway").await;
    let cfg = config(dir.path(), &cs, &ca);
    let committed: Committed = Default::default();

    // 1. Normal streaming.
    let (mut gw, reader) = start(&cfg, committed.clone());
    wait_delivered(&emu, &committed, "live", Duration::from_secs(30)).await;

    // 2. The hub goes away for 4 s while readings keep coming; then kill -9.
    emu.go_away(Duration::from_secs(4));
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.kill().unwrap();
    gw.wait().unwrap();
    reader.join().unwrap();
    let before = committed.lock().unwrap().len();

    // 3. Restart with PUBACKs being lost: the backlog drains, resends keep their ids.
    emu.update_faults(|f| f.drop_pubacks = 3);
    let (gw, reader) = start(&cfg, committed.clone());
    wait_delivered(&emu, &committed, "after outage and restart", Duration::from_secs(60)).await;
    terminate(&gw);
    let mut gw = gw;
    let status = gw.wait().unwrap();
    assert!(status.success(), "clean stop expected, got {status:?}");
    reader.join().unwrap();

    let c = committed.lock().unwrap().clone();
    assert!(c.len() > before, "the restarted gateway kept committing");
    let d = delivered(&emu);
    d.check(&c);
    assert!(d.duplicated() > 0, "lost PUBACKs must have caused same-id resends");
    // Patient association travels in the body.
    let with_patient = emu
        .messages()
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.body).ok())
        .filter(|b| b["deviceId"] == "strap-1")
        .all(|b| b["patientId"] == "P-77");
    assert!(with_patient, "every strap-1 message carries its patient id");
    eprintln!("{} committed readings delivered via IoT Hub; {} resent with the same id", c.len(), d.duplicated());
}

/// The twin drives the running gateway: a desired patient assignment changes
/// the patient on readings committed after it (over the config's), the change
/// is persisted across a restart, reported properties describe the gateway,
/// and the direct methods answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_reassigns_a_patient_in_the_running_gateway() {
    let (emu, dir, cs, ca) = emulator_with_device("twin-gw").await;
    let cfg = twin_config(dir.path(), "twin-gw", "", &cs, &ca);

    let committed: Committed = Default::default();
    let (mut gw, reader) = start(&cfg, committed.clone());
    assert!(emu.wait_for(Duration::from_secs(30), |ms| ms.len() >= 2).await, "no telemetry");
    assert!(strap_patients(&emu).iter().all(|(_, p)| p.as_deref() == Some("P-config")));

    // Reported properties describe the gateway (without patient ids).
    let deadline = Instant::now() + Duration::from_secs(20);
    while emu.reported("twin-gw").get("gatewayVersion").is_none() {
        assert!(Instant::now() < deadline, "no reported properties: {}", emu.reported("twin-gw"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rep = emu.reported("twin-gw");
    assert_eq!(rep["devices"][0]["id"], "strap-1", "{rep}");
    assert!(rep["outboxDepth"].is_u64() && rep["dropped"].is_object() && rep["iothub"]["connects"].as_u64() >= Some(1), "{rep}");
    assert!(!rep.to_string().contains("P-config"), "reported properties must not carry patient ids");

    // A ward system reassigns the strap.
    emu.patch_desired("twin-gw", serde_json::json!({"patients": {"strap-1": "P-twin"}}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !strap_patients(&emu).iter().any(|(_, p)| p.as_deref() == Some("P-twin")) {
        assert!(Instant::now() < deadline, "the new patient never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once switched, never back (messages in sequence order).
    let seen = strap_patients(&emu);
    let first_new = seen.iter().position(|(_, p)| p.as_deref() == Some("P-twin")).unwrap();
    assert!(seen[first_new..].iter().all(|(_, p)| p.as_deref() == Some("P-twin")), "{seen:?}");

    // Direct methods on the running gateway.
    let (status, body) = emu.invoke_method("twin-gw", "getStatus", serde_json::json!({}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(status, 200);
    assert!(body["delivered"]["readings"].as_u64() > Some(0), "{body}");
    let (status, body) = emu.invoke_method("twin-gw", "flush", serde_json::json!({}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(status, 200);
    assert!(body["queuedNow"].is_u64(), "{body}");
    let (status, _) = emu.invoke_method("twin-gw", "reboot", serde_json::json!({}), Duration::from_secs(10)).await.unwrap();
    assert_eq!(status, 404);

    // The assignment survives a restart, before the twin is fetched again:
    // stop the hub first so the restarted gateway cannot ask it.
    terminate(&gw);
    gw.wait().unwrap();
    reader.join().unwrap();
    let saved = std::fs::read_to_string(dir.path().join("state/associations.json")).unwrap();
    assert!(saved.contains("P-twin"), "{saved}");
    let n = emu.messages().len();
    emu.go_away(Duration::from_secs(3));
    let (mut gw, reader) = start(&cfg, committed.clone());
    assert!(emu.wait_for(Duration::from_secs(30), |ms| ms.len() > n + 2).await, "no telemetry after the restart");
    let after: Vec<_> = strap_patients(&emu).into_iter().filter(|(seq, _)| *seq > seen.last().unwrap().0).collect();
    assert!(!after.is_empty() && after.iter().all(|(_, p)| p.as_deref() == Some("P-twin")), "{after:?}");
    terminate(&gw);
    gw.wait().unwrap();
    reader.join().unwrap();
}

/// Polls `f` every 100 ms; fails the test with `what` after `limit` seconds.
async fn wait_until(what: &str, limit: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(limit);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 9, item 1, in the running gateway: a desired patch in flight when
/// the link drops arrives after the full twin the reconnected gateway
/// fetched (the reconnection race of the IoT Hub device twin guide). It must
/// not re-assign the strap: telemetry never carries the stale patient, the
/// saved association keeps the newer twin version, and the log says once,
/// without patient ids, that a stale patch was ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_twin_patch_never_reassigns_a_device_in_the_running_gateway() {
    use iomt_edge::simulate::iothub::EmulatorEvent;
    let (emu, dir, cs, ca) = emulator_with_device("race-gw").await;
    let cfg = twin_config(dir.path(), "race-gw", "retry_initial_ms = 100\nretry_max_ms = 500\n", &cs, &ca);

    assert_eq!(emu.patch_desired("race-gw", serde_json::json!({"patients": {"strap-1": "PAT-FIRST"}})), 1);
    let log = dir.path().join("gw.log");
    let mut gw = std::process::Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start gateway");
    wait_until("the twin's first patient never appeared", 30, || strap_patients(&emu).iter().any(|(_, p)| p.as_deref() == Some("PAT-FIRST"))).await;

    // Patch 2 (PAT-OLD) is in flight when the link drops; patch 3 (PAT-NEW)
    // is made while the gateway is away; on reconnection the gateway fetches
    // the twin at 3, then patch 2 arrives.
    emu.update_faults(|f| f.hold_desired_patches = true);
    assert_eq!(emu.patch_desired("race-gw", serde_json::json!({"patients": {"strap-1": "PAT-OLD"}})), 2);
    emu.update_faults(|f| f.hold_desired_patches = false);
    emu.go_away(Duration::from_secs(1));
    wait_until("the gateway did not drop", 10, || !emu.is_connected("race-gw")).await;
    assert_eq!(emu.patch_desired("race-gw", serde_json::json!({"patients": {"strap-1": "PAT-NEW"}})), 3);
    wait_until("the held patch was never delivered", 30, || {
        emu.events().iter().any(|e| matches!(e, EmulatorEvent::HeldPatchDelivered { version: 2, .. }))
    })
    .await;
    // Patch 4 is a barrier: once the gateway reports it applied, patch 2 was handled.
    assert_eq!(emu.patch_desired("race-gw", serde_json::json!({"batching": {"maxReadings": 50}})), 4);
    wait_until("the barrier patch was never applied", 20, || emu.reported("race-gw")["batching"]["maxReadings"] == 50).await;
    // Readings committed from now on: well past the barrier.
    let last_seen = strap_patients(&emu).last().map(|(s, _)| *s).unwrap_or(0);
    wait_until("no telemetry after the barrier", 20, || strap_patients(&emu).iter().filter(|(s, _)| *s > last_seen).count() >= 10).await;
    terminate(&gw);
    gw.wait().unwrap();

    let seen = strap_patients(&emu);
    assert!(!seen.iter().any(|(_, p)| p.as_deref() == Some("PAT-OLD")), "a stale patch re-assigned the strap: {seen:?}");
    let after: Vec<_> = seen.iter().filter(|(s, _)| *s > last_seen).collect();
    assert!(after.iter().all(|(_, p)| p.as_deref() == Some("PAT-NEW")), "{after:?}");
    let rep = emu.reported("race-gw");
    assert_eq!((rep["iothub"]["desiredVersion"].as_u64(), rep["iothub"]["desiredIgnored"]["stale"].as_u64()), (Some(4), Some(1)), "{rep}");
    // Saved with the version it came from.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/associations.json")).unwrap()).unwrap();
    assert_eq!(saved["strap-1"], serde_json::json!({"patient": "PAT-NEW", "twinVersion": 3}), "{saved}");
    let desired: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/iothub-desired.json")).unwrap()).unwrap();
    assert_eq!((desired["version"].as_u64(), desired["patients"]["strap-1"].as_str()), (Some(4), Some("PAT-NEW")), "{desired}");
    // One info line, no patient id in clear text anywhere in the log.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("ignored a stale desired-properties patch").count(), 1, "{text}");
    for p in ["PAT-OLD", "PAT-NEW", "PAT-FIRST", "P-config"] {
        assert!(!text.contains(p), "the log names patient {p} in clear text:\n{text}");
    }
}

/// Measurement (ignored by default, no timing assertion): reading-to-PUBACK
/// latency of the whole gateway while live, at the default outbox and
/// forwarder settings (100 ms group commit, 1 s batch age), then with
/// `batch_max_age_ms = 100`. RR intervals are left out: their time is the
/// beat's, before the notification that reported them. Each reading's time is when the adapter made it;
/// the PUBACK instant is when the emulator recorded the message (it acks
/// right after).
///
/// `cargo test --release --test integration gateway_iothub_e2e::live_reading_to_puback_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn live_reading_to_puback_latency() {
    for batch_age in [None, Some(100)] {
        let (emu, dir, cs, ca) = emulator_with_device("live-gw").await;
        let text = format!(
            "[gateway]\nid = \"live-gw\"\nstate_dir = \"{state}\"\n{fwd}\
             [[device]]\nid = \"strap-1\"\nkind = \"heart_rate_strap\"\n[device.simulated]\ninterval_ms = 1000\n\
             [[device]]\nid = \"oxi-1\"\nkind = \"pulse_oximeter\"\n[device.simulated]\ninterval_ms = 1000\n\
             [sink.iothub]\nconnection_string = {{ value = \"{cs}\" }}\nca_file = \"{ca}\"\n",
            state = dir.path().join("state").display(),
            fwd = batch_age.map(|a| format!("[forwarder]\nbatch_max_age_ms = {a}\n")).unwrap_or_default(),
            ca = ca.display()
        );
        let cfg = dir.path().join("gw.toml");
        std::fs::write(&cfg, text).unwrap();
        let committed: Committed = Default::default();
        let (mut gw, reader) = start(&cfg, committed.clone());
        tokio::time::sleep(Duration::from_secs(40)).await;
        terminate(&gw);
        gw.wait().unwrap();
        reader.join().unwrap();

        let now_wall = chrono::Utc::now();
        let now = Instant::now();
        let mut lat = Vec::new();
        for m in emu.messages() {
            let acked = now_wall - chrono::Duration::from_std(now.duration_since(m.received_at)).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            for r in body["readings"].as_array().unwrap() {
                // RR intervals are timed at their beat (back-dated up to a few
                // seconds by design); events are not measurements.
                if r["type"] == "deviceEvent" || r["type"] == "rrInterval" {
                    continue;
                }
                let t = iomt_edge::model::time::parse(r["time"].as_str().unwrap()).unwrap();
                lat.push((acked - t).num_microseconds().unwrap() as f64 / 1000.0);
            }
        }
        assert!(lat.len() > 100, "too few readings delivered: {}", lat.len());
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
        eprintln!(
            "reading -> PUBACK, live, batch_max_age_ms = {}: {} readings in {} messages: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            batch_age.map(|a| a.to_string()).unwrap_or_else(|| "1000 (default)".into()),
            lat.len(),
            emu.messages().len(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
    }
}
