//! `[[device]]`: one device and the adapter that reads it.
//!
//! Written as one adapter table beside the device's id and kind
//! (`[device.simulated]`, `[device.ble]`, `[device.serial]`,
//! `[device.hl7_tcp]`); validated into a [`DeviceConfig`] whose
//! [`DeviceSource`] is that one adapter. A new kind of source is one variant
//! here, one table field in [`RawDevice`] and its adapter folder under
//! `src/adapters/` (docs/design.md, "Adding a device source or a sink").

use super::ble::{BleDeviceConfig, RawBle};
use super::serial::{self, Hl7PatientFrom, Hl7TcpConfig, RawSerial, SerialDeviceConfig, SerialDriver};
use super::units::{self, Unit};
use super::Problem;
use crate::model::DeviceKind;
use serde::Deserialize;

/// The longest device id, bytes: as an Azure IoT Hub device id ("up to 128
/// characters long", Azure IoT Hub device identity, `deviceId`). An id goes
/// into every message, log line and outbox key; without a limit a 1 MB id
/// was accepted.
pub(crate) const MAX_DEVICE_ID_BYTES: usize = 128;

/// A validated `[[device]]`.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Stable alias, used as the device id in messages.
    pub(crate) id: String,
    pub(crate) kind: DeviceKindConfig,
    /// Patient association; may be changed later (IoT Hub desired properties).
    pub(crate) patient_id: Option<String>,
    /// The adapter that reads it.
    pub source: DeviceSource,
}

/// Where a device's readings come from: its one adapter table.
#[derive(Debug, Clone)]
pub enum DeviceSource {
    /// `[device.simulated]`: generated values (src/adapters/simulated/).
    Simulated(SimulatedDeviceConfig),
    /// `[device.ble]`: Bluetooth Low Energy through BlueZ (src/adapters/ble/).
    Ble(BleDeviceConfig),
    /// `[device.serial]`: a monitor on a serial port (src/adapters/serial/).
    Serial(SerialDeviceConfig),
    /// `[device.hl7_tcp]`: an HL7 feed over TCP, MLLP (src/adapters/serial/tcp.rs).
    Hl7Tcp(Hl7TcpConfig),
}

impl DeviceConfig {
    /// Whether the device's readings take their patient from HL7 PID-3
    /// (`patient_from = "pid"`, serial `hl7` driver or HL7 over TCP).
    pub(crate) fn patients_from_messages(&self) -> bool {
        let from = match &self.source {
            DeviceSource::Serial(SerialDeviceConfig { driver: SerialDriver::Hl7 { patient_from, .. }, .. }) => *patient_from,
            DeviceSource::Serial(_) => None,
            DeviceSource::Hl7Tcp(h) => h.patient_from,
            DeviceSource::Simulated(_) | DeviceSource::Ble(_) => None,
        };
        from == Some(Hl7PatientFrom::Pid)
    }
}

/// Device kinds as written in the config (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKindConfig {
    HeartRateStrap,
    PulseOximeter,
    BedsideMonitor,
}

impl From<DeviceKindConfig> for DeviceKind {
    fn from(k: DeviceKindConfig) -> DeviceKind {
        match k {
            DeviceKindConfig::HeartRateStrap => DeviceKind::HeartRateStrap,
            DeviceKindConfig::PulseOximeter => DeviceKind::PulseOximeter,
            DeviceKindConfig::BedsideMonitor => DeviceKind::BedsideMonitor,
        }
    }
}

/// `[device.simulated]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedDeviceConfig {
    /// Time between measurements (10 ms to 1 day).
    pub interval_ms: u64,
    /// Seed for the value generator; the same seed gives the same values.
    pub(crate) seed: Option<u64>,
    /// Probability per measurement of starting a sensor-off episode (0 to 1).
    pub(crate) dropout_probability: f64,
}

impl Default for SimulatedDeviceConfig {
    fn default() -> Self {
        SimulatedDeviceConfig { interval_ms: 1000, seed: None, dropout_probability: 0.01 }
    }
}

impl SimulatedDeviceConfig {
    /// Problems, keyed relative to the `[[device]]` (`simulated.interval_ms`).
    fn validate(&self) -> Vec<Problem> {
        let mut errs = Vec::new();
        if let Some(m) = units::out_of_range("interval_ms", self.interval_ms.into(), 10, 86_400_000, Unit::Millis, "1000") {
            errs.push(("simulated.interval_ms".into(), m));
        }
        if !(0.0..=1.0).contains(&self.dropout_probability) {
            errs.push(("simulated.dropout_probability".into(), "dropout_probability must be between 0 and 1".into()));
        }
        errs
    }
}

/// `[[device]]` as written: each adapter table is optional here; exactly one
/// must be present ([`RawDevice::validate`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub(crate) id: String,
    pub(crate) kind: DeviceKindConfig,
    #[serde(default)]
    pub(crate) patient_id: Option<String>,
    #[serde(default)]
    pub(crate) simulated: Option<SimulatedDeviceConfig>,
    #[serde(default)]
    pub(crate) ble: Option<RawBle>,
    #[serde(default)]
    pub(crate) serial: Option<RawSerial>,
    #[serde(default)]
    pub(crate) hl7_tcp: Option<Hl7TcpConfig>,
}

impl RawDevice {
    /// The device alone, checked and converted: its id, its one adapter
    /// table (and that table's own checks), its patient id. Problems' keys are
    /// relative to the `[[device]]` (`id`, `ble.address`); the checks across
    /// devices (ids used twice, bed names) are [`validate_all`]'s.
    pub(crate) fn validate(self) -> Result<DeviceConfig, Vec<Problem>> {
        let mut errs: Vec<Problem> = Vec::new();
        if self.id.trim().is_empty() {
            errs.push(("id".into(), "device id must not be empty".into()));
        } else if self.id.len() > MAX_DEVICE_ID_BYTES {
            errs.push((
                "id".into(),
                format!(
                    "device id is {} bytes long; at most {MAX_DEVICE_ID_BYTES} (as an Azure IoT Hub device id): it goes into every message, log line and outbox key",
                    self.id.len()
                ),
            ));
        } else if self.id.chars().any(char::is_control) {
            errs.push((
                "id".into(),
                "device id must not contain control characters (tab, newline, escape, NUL...): it goes into messages, logs and the outbox's keys"
                    .into(),
            ));
        }
        let kind = self.kind;
        let mut source_errs = |r: Result<DeviceSource, Vec<Problem>>| match r {
            Ok(s) => Some(s),
            Err(e) => {
                errs.extend(e);
                None
            }
        };
        let source = match (self.simulated, self.ble, self.serial, self.hl7_tcp) {
            (Some(s), None, None, None) => {
                let e = s.validate();
                source_errs(if e.is_empty() { Ok(DeviceSource::Simulated(s)) } else { Err(e) })
            }
            (None, Some(b), None, None) => source_errs(b.validate(kind).map(DeviceSource::Ble)),
            (None, None, Some(s), None) => source_errs(s.validate().map(DeviceSource::Serial)),
            (None, None, None, Some(h)) => {
                let mut e = serial::validate_hl7_tcp("hl7_tcp", &h);
                if kind != DeviceKindConfig::BedsideMonitor {
                    e.push(("kind".into(), "an [device.hl7_tcp] device is a bedside_monitor".into()));
                }
                source_errs(if e.is_empty() { Ok(DeviceSource::Hl7Tcp(h)) } else { Err(e) })
            }
            (simulated, ble, serial, hl7_tcp) => {
                let n = simulated.is_some() as u8 + ble.is_some() as u8 + serial.is_some() as u8 + hl7_tcp.is_some() as u8;
                errs.push((
                    String::new(),
                    format!(
                        "device \"{}\" needs exactly one adapter table: [device.simulated], [device.ble], [device.serial] or [device.hl7_tcp] (found {n})",
                        self.id
                    ),
                ));
                None
            }
        };
        let device = source.map(|source| DeviceConfig { id: self.id, kind, patient_id: self.patient_id, source });
        if let Some(d) = &device {
            if d.patients_from_messages() && d.patient_id.is_some() {
                errs.push((
                    "patient_id".into(),
                    "patient_id is not used when patients come from the messages' PID-3 (patient_from = \"pid\"): remove it".into(),
                ));
            }
            if d.patient_id.as_deref().is_some_and(|p| p.chars().any(char::is_control)) {
                errs.push(("patient_id".into(), "patient_id must not contain control characters (tab, newline, escape, NUL...)".into()));
            }
        }
        match device {
            Some(d) if errs.is_empty() => Ok(d),
            _ => Err(errs),
        }
    }
}

/// Every `[[device]]`, each checked alone and then against the others: ids
/// used twice, and a device whose beds (`<id>/<bed>`, patients from PID-3)
/// another device's id could be taken for. Keys are `device.<index>...`.
pub(crate) fn validate_all(raw: Vec<RawDevice>) -> Result<Vec<DeviceConfig>, Vec<Problem>> {
    let mut errs = Vec::new();
    let ids: Vec<String> = raw.iter().map(|d| d.id.clone()).collect();
    let mut seen = std::collections::HashSet::new();
    let mut devices = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let at = |key: &str| if key.is_empty() { format!("device.{i}") } else { format!("device.{i}.{key}") };
        let id = d.id.clone();
        let checkable = !id.trim().is_empty() && id.len() <= MAX_DEVICE_ID_BYTES && !id.chars().any(char::is_control);
        if checkable && !seen.insert(id.clone()) {
            errs.push((at("id"), format!("device id \"{id}\" is used twice; every device needs its own id")));
        }
        match d.validate() {
            Ok(d) => {
                if d.patients_from_messages() {
                    // Its beds are devices `<id>/<bed>`: no configured device may look like one.
                    let prefix = format!("{}/", d.id);
                    if let Some(other) = ids.iter().find(|o| o.starts_with(&prefix)) {
                        errs.push((
                            at("id"),
                            format!(
                                "device \"{}\" takes patients from PID-3 and names its beds \"{}<bed>\", which device \"{}\" could be mistaken for; rename one of them",
                                d.id, prefix, other
                            ),
                        ));
                    }
                }
                devices.push(d);
            }
            Err(e) => errs.extend(e.into_iter().map(|(k, m)| (at(&k), m))),
        }
    }
    if errs.is_empty() {
        Ok(devices)
    } else {
        Err(errs)
    }
}
