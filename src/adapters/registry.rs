//! The live view of every configured device: link state, battery, last values.
//!
//! Adapters write it; the demo view, systemd `STATUS=`, the IoT Hub twin and
//! `getStatus` read it. It holds no history, only the latest state.

use crate::model::{Flag, Reading, ReadingType};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Where a device is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkState {
    /// Configured, not yet seen.
    Scanning,
    Connecting,
    /// Connected and sending data.
    Streaming,
    /// Was streaming, now gone or silent; the adapter is trying to get it back.
    Lost,
}

/// The latest known state of one device.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub device_id: String,
    pub state: LinkState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// Reading type -> (primary value if available, flags).
    #[serde(skip)]
    pub last_values: BTreeMap<ReadingType, (Option<f64>, Vec<Flag>)>,
    pub readings: u64,
    /// Malformed input from this device (bad notification, serial noise).
    pub input_errors: u64,
}

/// All devices, keyed by device id.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    devices: Mutex<BTreeMap<String, DeviceStatus>>,
}

impl DeviceRegistry {
    pub fn new() -> DeviceRegistry {
        DeviceRegistry::default()
    }

    fn with<R>(&self, device_id: &str, f: impl FnOnce(&mut DeviceStatus) -> R) -> R {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(device_id.to_string()).or_insert_with(|| DeviceStatus {
            device_id: device_id.to_string(),
            state: LinkState::Scanning,
            battery: None,
            last_seen: None,
            last_values: BTreeMap::new(),
            readings: 0,
            input_errors: 0,
        });
        f(entry)
    }

    /// Makes a configured device known (state `scanning`).
    pub fn register(&self, device_id: &str) {
        self.with(device_id, |_| ());
    }

    pub fn set_state(&self, device_id: &str, state: LinkState) {
        self.with(device_id, |d| d.state = state);
    }

    /// Records a stored reading: its values become the device's latest and it
    /// is counted. The committer calls this once per reading, after the flush,
    /// so counts are of durable readings (adapters do not call it).
    pub fn observe(&self, reading: &Reading) {
        self.with(&reading.device_id, |d| {
            d.readings += 1;
            d.last_seen = Some(reading.time);
            if reading.kind == ReadingType::BatteryLevel {
                if let Some(v) = reading.primary_value() {
                    d.battery = Some(v);
                }
            }
            if reading.kind != ReadingType::DeviceEvent {
                d.last_values.insert(reading.kind, (reading.primary_value(), reading.flags.clone()));
            }
        });
    }

    pub fn input_error(&self, device_id: &str) {
        self.with(device_id, |d| d.input_errors += 1);
    }

    pub fn snapshot(&self) -> Vec<DeviceStatus> {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// How many devices are streaming right now.
    pub fn streaming(&self) -> usize {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|d| d.state == LinkState::Streaming).count()
    }
}
