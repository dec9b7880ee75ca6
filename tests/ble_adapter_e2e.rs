//! The gateway's real BLE path (btleplug -> bluez-async -> libdbus) against the
//! simulated BlueZ on a private dbus-daemon: readings that reach the adapter's
//! ReadingSender (values, units, flags, order), nothing lost or invented.

mod ble_common;

use ble_common::*;
use iomt_edge::adapters::ble::Selector;
use iomt_edge::adapters::LinkState;
use iomt_edge::model::{DeviceEvent, DeviceKind, Flag, ReadingType};
use iomt_edge::simulate::bluez::SimConfig;
use std::time::Duration;

const STRAP: &str = "C0:FF:EE:00:00:01";

fn fast() -> SimConfig {
    SimConfig { interval: Duration::from_millis(100), ..SimConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_heart_rate_and_spo2_readings() {
    if !have_dbus_daemon("streams_heart_rate_and_spo2_readings") {
        return;
    }
    let _turn = serial();
    let strap = device("strap-1", DeviceKind::HeartRateStrap, Selector::Address(STRAP.into()));
    let mut ox = device("ignored-alias", DeviceKind::PulseOximeter, Selector::NamePattern("PLX-*".into()));
    ox.config.id_from_device = true;
    let mut rig = Rig::start(fast(), vec![strap, ox]).await;
    let ox_id = "Acme_Medical-SN0002";
    let took = rig
        .wait_for("10 heart rates and 10 SpO2", Duration::from_secs(20), |rs| {
            count(rs, "strap-1", ReadingType::HeartRate) >= 10 && count(rs, ox_id, ReadingType::Spo2) >= 10
        })
        .await;
    eprintln!("first 10 readings of each device after {took:?}");
    assert_eq!(rig.registry.streaming(), 2);
    let (rs, sent, registry) = rig.finish().await;

    // Per device: connected event, then the battery read, then measurements.
    for id in ["strap-1", ox_id] {
        let mine: Vec<_> = rs.iter().filter(|r| r.device_id == id).collect();
        assert_eq!(mine[0].event, Some(DeviceEvent::Connected), "{id}");
        assert_eq!(mine[1].kind, ReadingType::BatteryLevel);
        assert_eq!(mine[1].values.get("batteryLevel"), Some(&90.0));
        assert_eq!(mine[1].units.get("batteryLevel").map(String::as_str), Some("%"));
        assert!(mine.iter().all(|r| r.patient_id.as_deref() == Some("patient-1")));
    }
    // Exactly what was sent, decoded, in order: nothing lost, nothing invented.
    let want = expected(&sent, STRAP, DeviceKind::HeartRateStrap);
    assert!(want.len() >= 20);
    assert_eq!(measurements(&rs, "strap-1"), want);
    let want = expected(&sent, "C0:FF:EE:00:00:02", DeviceKind::PulseOximeter);
    assert_eq!(measurements(&rs, ox_id), want);

    // Values and units as the cloud will see them.
    let hr = rs.iter().find(|r| r.kind == ReadingType::HeartRate).unwrap();
    assert_eq!(hr.units.get("heartRate").map(String::as_str), Some("/min"));
    assert!((60.0..100.0).contains(hr.values.get("heartRate").unwrap()));
    let rr = rs.iter().find(|r| r.kind == ReadingType::RrInterval).unwrap();
    assert_eq!(rr.units.get("rrInterval").map(String::as_str), Some("ms"));
    let spo2 = rs.iter().find(|r| r.kind == ReadingType::Spo2).unwrap();
    assert_eq!(spo2.units.get("spo2").map(String::as_str), Some("%"));
    assert!(spo2.flags.is_empty());
    assert!(rs.iter().any(|r| r.kind == ReadingType::PerfusionIndex && r.units.get("perfusionIndex").map(String::as_str) == Some("%")));
    assert!(rs.iter().any(|r| r.kind == ReadingType::EnergyExpended));
    // Spot-check indications arrive too (every 5th tick).
    assert!(sent.iter().any(|s| s.uuid16 == 0x2A5E));
    assert!(registry.snapshot().iter().all(|d| d.input_errors == 0));
}
