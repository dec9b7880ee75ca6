//! The whole gateway against the local IoT Hub emulator: simulated devices ->
//! outbox -> forwarder -> IoT Hub sink (MQTT over TLS) -> emulator, as a real
//! process, through a hub outage, a `kill -9` and restart, and lost PUBACKs.
//! Every committed reading must arrive, under one message id, in per-device
//! order, with the IoT Hub properties set.

mod gateway_common;

use gateway_common::{start, terminate, Committed, Delivered};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig};
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, cs: &str, ca: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        r#"[gateway]
id = "e2e-gateway"
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
patient_id = "P-77"
[device.simulated]
interval_ms = 40
seed = 11
[[device]]
id = "oxi-1"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 50
seed = 12
[sink.iothub]
connection_string = {{ value = "{cs}" }}
ca_file = "{ca}"
# Lost PUBACKs are detected after this long (default 30s); short here to keep the test quick.
ack_timeout = "3s"
"#,
        state = dir.join("state").display(),
        ca = ca.display()
    );
    let p = dir.join("gw.toml");
    std::fs::write(&p, text).unwrap();
    p
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

async fn wait_delivered(emu: &Emulator, committed: &Committed, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let c = committed.lock().unwrap().clone();
        let d = delivered(emu);
        let missing = c.keys().filter(|s| !d.ids.contains_key(s)).count();
        if missing == 0 && !c.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {missing} of {} committed readings not delivered", c.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_to_iothub_survives_outage_kill9_and_lost_pubacks() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = emu.write_ca(dir.path()).unwrap();
    let cs = emu.add_device("e2e-gateway");
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
