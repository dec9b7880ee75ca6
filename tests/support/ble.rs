//! Shared helpers for the BLE integration tests: finding external tools with
//! the suite's skip/require rule ([`super::skip`]).

#![allow(dead_code)]

/// `true` when dbus-daemon is installed; otherwise fails (IOMT_REQUIRE_ALL=1)
/// or prints a SKIPPED line and returns `false`.
pub fn have_dbus_daemon(test: &str) -> bool {
    if iomt_edge::simulate::bluez::daemon::find_dbus_daemon().is_some() {
        return true;
    }
    super::skip(test, "dbus-daemon is not installed (apt-get install dbus-daemon)");
    false
}

/// The Python with the cross-check clients (IOMT_TEST_PYTHON), if it has `module`.
pub fn python_with(test: &str, module: &str) -> Option<String> {
    let py = std::env::var("IOMT_TEST_PYTHON").ok();
    let ok = py.as_ref().is_some_and(|p| {
        std::process::Command::new(p).args(["-c", &format!("import {module}")]).output().map(|o| o.status.success()).unwrap_or(false)
    });
    if ok {
        return py;
    }
    let why = format!("IOMT_TEST_PYTHON is not a Python with `{module}` (pip install -r scripts/requirements-test.txt, or scripts/test.sh)");
    super::skip(test, why);
    None
}

use iomt_edge::adapters::ble::{gatt, BleAdapter, BleDevice, Selector};
use iomt_edge::adapters::{Adapter, AdapterContext, DeviceRegistry, ReadingSender};
use iomt_edge::config::ble::BleDeviceConfig;
use iomt_edge::model::{DeviceKind, Flag, Reading, ReadingType};
use iomt_edge::simulate::bluez::{BluezSim, PrivateBus, Sent, SimConfig};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// libdbus fixes the system-bus address per process, so every test in a
/// binary shares one private dbus-daemon (killed when the process exits),
/// and the tests take turns (one simulated bluetoothd owns org.bluez at a time).
pub fn shared_bus() -> &'static PrivateBus {
    static BUS: OnceLock<PrivateBus> = OnceLock::new();
    BUS.get_or_init(|| {
        let bus = PrivateBus::start().expect("private dbus-daemon");
        iomt_edge::adapters::ble::set_system_bus_address(bus.address()).expect("bus address");
        bus
    })
}

pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configured BLE device for tests.
pub fn device(alias: &str, kind: DeviceKind, selector: Selector) -> BleDevice {
    BleDevice {
        alias: alias.into(),
        kind,
        patient_id: Some("patient-1".into()),
        config: BleDeviceConfig {
            silence_timeout: Duration::from_millis(1500),
            reconnect_max: Duration::from_secs(1),
            ..BleDeviceConfig::new(selector)
        },
    }
}

/// Simulator + the real BLE adapter (btleplug -> libdbus -> dbus-daemon -> zbus).
pub struct Rig {
    pub sim: BluezSim,
    pub registry: Arc<DeviceRegistry>,
    pub readings: Vec<Reading>,
    rx: mpsc::Receiver<Reading>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), iomt_edge::adapters::AdapterError>>,
}

impl Rig {
    pub async fn start(config: SimConfig, devices: Vec<BleDevice>) -> Rig {
        let bus = shared_bus();
        let sim = BluezSim::start(bus.address(), config).await.expect("simulator");
        let (tx, rx) = mpsc::channel(10_000);
        let registry = Arc::new(DeviceRegistry::new());
        let shutdown = CancellationToken::new();
        let ctx = AdapterContext { readings: ReadingSender::new(tx), registry: registry.clone(), shutdown: shutdown.clone() };
        let adapter: Box<dyn Adapter> = Box::new(BleAdapter::new(devices).with_system_bus(bus.address()));
        let task = tokio::spawn(adapter.run(ctx));
        Rig { sim, registry, readings: Vec::new(), rx, shutdown, task }
    }

    /// Collects readings until `pred` holds for the collected list, or panics
    /// after `within`.
    pub async fn wait_for(&mut self, what: &str, within: Duration, pred: impl Fn(&[Reading]) -> bool) -> Duration {
        let start = Instant::now();
        while !pred(&self.readings) {
            let left = within
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}; got {:#?}", summary(&self.readings)));
            if let Ok(Some(r)) = tokio::time::timeout(left, self.rx.recv()).await {
                // The rig stands in for the committer, which records each
                // reading in the registry once it is stored.
                self.registry.observe(&r);
                self.readings.push(r);
            }
        }
        start.elapsed()
    }

    /// Stops the simulator first (so its sent log is final), lets in-flight
    /// notifications arrive, then stops the adapter and drains its readings.
    pub async fn finish(mut self) -> (Vec<Reading>, Vec<Sent>, Arc<DeviceRegistry>) {
        let sent_before_stop = self.sim.sent();
        let sim = self.sim;
        sim.stop().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("adapter stops within 10 s");
        r.expect("join").expect("adapter ran without error");
        while let Ok(x) = self.rx.try_recv() {
            self.registry.observe(&x);
            self.readings.push(x);
        }
        (self.readings, sent_before_stop, self.registry)
    }
}

pub fn summary(rs: &[Reading]) -> Vec<String> {
    rs.iter().map(|r| format!("{} {:?} {:?} {:?} {:?}", r.device_id, r.kind, r.event, r.values, r.flags)).collect()
}

/// (type, values, flags) of a reading, for comparisons.
pub type Key = (ReadingType, Vec<(String, f64)>, Vec<Flag>);

pub fn key(r: &Reading) -> Key {
    (r.kind, r.values.iter().map(|(k, v)| (k.clone(), *v)).collect(), r.flags.clone())
}

/// The measurement readings the gateway must have produced from what the
/// simulator sent to `address` (malformed ones give none).
pub fn expected(sent: &[Sent], address: &str, kind: DeviceKind) -> Vec<Key> {
    use iomt_edge::adapters::device_clock::{GatewayZone, TimeContext};
    let t = TimeContext::new(chrono::Utc::now(), GatewayZone::Local);
    sent.iter()
        .filter(|s| s.address == address && s.uuid16 != 0x2A19)
        .filter_map(|s| gatt::decode(gatt::Characteristic::from_uuid16(s.uuid16)?, &s.bytes).ok())
        .flat_map(|d| d.to_readings("x", kind, &t))
        .map(|r| key(&r))
        .collect()
}

/// The measurement readings (not events, not battery) of one device.
pub fn measurements(rs: &[Reading], device_id: &str) -> Vec<Key> {
    rs.iter().filter(|r| r.device_id == device_id && r.kind != ReadingType::DeviceEvent && r.kind != ReadingType::BatteryLevel).map(key).collect()
}

pub fn count(rs: &[Reading], device_id: &str, kind: ReadingType) -> usize {
    rs.iter().filter(|r| r.device_id == device_id && r.kind == kind).count()
}

pub fn events(rs: &[Reading], device_id: &str) -> Vec<iomt_edge::model::DeviceEvent> {
    rs.iter().filter(|r| r.device_id == device_id).filter_map(|r| r.event).collect()
}
