//! Fidelity of the simulated BlueZ, proven with an independent client: Python
//! `bleak` scans, connects, reads Device Information and Battery, and receives
//! 0x2A37 and 0x2A5F notifications from the simulator on a private dbus-daemon.

use crate::support::ble as ble_common;

use iomt_edge::adapters::ble::gatt::{decode, Characteristic, Decoded};
use iomt_edge::simulate::bluez::{spawn_private, SimConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bleak_scans_connects_reads_and_gets_notifications() {
    let test = "bleak_scans_connects_reads_and_gets_notifications";
    if !ble_common::have_dbus_daemon(test) {
        return;
    }
    let Some(py) = ble_common::python_with(test, "bleak") else { return };
    let config = SimConfig { interval: Duration::from_millis(100), ..SimConfig::default() };
    let h = spawn_private(config).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/bleak_fidelity.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&py).arg(script).env("DBUS_SYSTEM_BUS_ADDRESS", h.address()).kill_on_drop(true).output(),
    )
    .await
    .expect("bleak finished within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bleak failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    let strap = &v["strap"];
    assert_eq!(strap["address"], "C0:FF:EE:00:00:01");
    assert_eq!(strap["name"], "HRM-SIM");
    assert_eq!(strap["manufacturer"], "Acme Medical");
    assert_eq!(strap["model"], "HR-100");
    assert_eq!(strap["serial"], "SN0001");
    assert_eq!(strap["battery"], 90);
    let services: Vec<&str> = strap["services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(services, ["0000180a-0000-1000-8000-00805f9b34fb", "0000180d-0000-1000-8000-00805f9b34fb", "0000180f-0000-1000-8000-00805f9b34fb"]);
    let ox = &v["oximeter"];
    assert_eq!(ox["serial"], "SN0002");
    assert_eq!(ox["model"], "OX-200");

    // What bleak received are exactly notifications the simulator logged as
    // sent, and they decode with our decoders.
    let sent = h.sim.sent();
    for (dev, addr, uuid, ch) in [
        (strap, "C0:FF:EE:00:00:01", 0x2A37u16, Characteristic::HeartRateMeasurement),
        (ox, "C0:FF:EE:00:00:02", 0x2A5F, Characteristic::PlxContinuous),
    ] {
        let got: Vec<Vec<u8>> = dev["notifications"].as_array().unwrap().iter().map(|h| hex::decode(h.as_str().unwrap()).unwrap()).collect();
        assert!(got.len() >= 3, "{got:?}");
        let ours: Vec<Vec<u8>> = sent.iter().filter(|s| s.address == addr && s.uuid16 == uuid).map(|s| s.bytes.clone()).collect();
        let start = ours.iter().position(|b| *b == got[0]).expect("first notification bleak saw was sent by the simulator");
        assert_eq!(&ours[start..start + got.len()], &got[..], "same bytes, same order");
        for b in &got {
            match decode(ch, b).unwrap() {
                Decoded::HeartRateMeasurement(m) => assert!((60..100).contains(&m.heart_rate)),
                Decoded::PlxContinuous(m) => assert!(m.normal.spo2.value().is_some()),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
