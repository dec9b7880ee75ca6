//! The simulator's shared state: the adapter, each simulated device with its
//! GATT layout (handles as BlueZ numbers them) and the scripted fault switches.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The state every exported object reads and the scripts change.
pub(crate) type Shared = Arc<Mutex<SimState>>;

/// What kind of peripheral a simulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimKind {
    /// Heart Rate Service 0x180D (+ Battery 0x180F, Device Information 0x180A).
    HeartRateStrap,
    /// Pulse Oximeter Service 0x1822 (+ 0x180F, 0x180A).
    PulseOximeter,
}

impl SimKind {
    /// GAP appearance: 0x0341 heart-rate belt, 0x0C41 fingertip oximeter.
    pub(crate) fn appearance(self) -> u16 {
        match self {
            SimKind::HeartRateStrap => 0x0341,
            SimKind::PulseOximeter => 0x0C41,
        }
    }
    /// The measurement service's 16-bit UUID.
    pub(crate) fn service16(self) -> u16 {
        match self {
            SimKind::HeartRateStrap => 0x180D,
            SimKind::PulseOximeter => 0x1822,
        }
    }
}

/// One simulated peripheral as configured.
#[derive(Debug, Clone)]
pub struct SimDeviceSpec {
    pub(crate) kind: SimKind,
    /// `C0:FF:EE:00:00:01`
    pub address: String,
    /// Advertised name (`HRM-SIM`).
    pub(crate) name: String,
    pub(crate) manufacturer: String,
    pub(crate) model: String,
    pub(crate) serial: String,
    pub(crate) firmware: String,
}

impl SimDeviceSpec {
    /// A heart-rate strap with the given address and serial.
    pub fn strap(address: &str, serial: &str) -> SimDeviceSpec {
        SimDeviceSpec {
            kind: SimKind::HeartRateStrap,
            address: address.to_string(),
            name: "HRM-SIM".into(),
            manufacturer: "Acme Medical".into(),
            model: "HR-100".into(),
            serial: serial.to_string(),
            firmware: "1.0.0".into(),
        }
    }
    /// A pulse oximeter with the given address and serial.
    pub fn oximeter(address: &str, serial: &str) -> SimDeviceSpec {
        SimDeviceSpec {
            kind: SimKind::PulseOximeter,
            address: address.to_string(),
            name: "PLX-SIM".into(),
            manufacturer: "Acme Medical".into(),
            model: "OX-200".into(),
            serial: serial.to_string(),
            firmware: "2.1.0".into(),
        }
    }
}

/// One characteristic of a simulated device.
#[derive(Debug, Clone)]
pub(crate) struct CharState {
    pub(crate) uuid16: u16,
    pub(crate) handle: u16,
    /// The handle of its CCCD (0x2902) descriptor, for notify/indicate.
    pub(crate) cccd: Option<u16>,
    pub(crate) flags: Vec<&'static str>,
    pub(crate) value: Vec<u8>,
    pub(crate) notifying: bool,
}

/// One service and the indices (into `DevState::chars`) of its characteristics.
#[derive(Debug, Clone)]
pub(crate) struct ServiceLayout {
    pub(crate) uuid16: u16,
    pub(crate) handle: u16,
    pub(crate) chars: Vec<usize>,
}

/// A device's GATT tree, for exporting and removing its objects.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) services: Vec<ServiceLayout>,
    pub(crate) chars: Vec<CharState>,
}

impl Layout {
    /// The object path of characteristic `ci` under `device_path`.
    pub(crate) fn char_path(&self, device_path: &str, ci: usize) -> Option<String> {
        let svc = self.services.iter().find(|s| s.chars.contains(&ci))?;
        let c = self.chars.get(ci)?;
        Some(format!("{device_path}/service{:04x}/char{:04x}", svc.handle, c.handle))
    }
}

/// One simulated device's live state.
#[derive(Debug, Clone)]
pub(crate) struct DevState {
    pub(crate) spec: SimDeviceSpec,
    /// `/org/bluez/hci0/dev_C0_FF_EE_00_00_01`
    pub(crate) path: String,
    /// Its `Device1` object is exported (it was discovered).
    pub(crate) exported: bool,
    pub(crate) connected: bool,
    pub(crate) services_resolved: bool,
    pub(crate) rssi: i16,
    pub(crate) chars: Vec<CharState>,
    services: Vec<ServiceLayout>,
    /// Scripted: notifications stop although the link stays up (until the next
    /// disconnect/connect).
    pub(crate) muted: bool,
    /// Scripted: the device is out of range until then.
    pub(crate) unreachable_until: Option<Instant>,
    /// Scripted: oximeter finger out (SpO2/PR NaN + sensor disconnected).
    pub(crate) finger_out: bool,
    /// Measurement counter for the value generator.
    pub(crate) tick: u64,
    /// Links established so far (successful `Connect`s).
    pub(crate) links: u32,
    /// Scripted: for this many next links the measurement service is not
    /// exported at all (a stale or incomplete GATT cache).
    pub(crate) hide_service_links: u32,
    /// Scripted, one-shot: on the next link the measurement service is
    /// exported this long after `ServicesResolved` (BlueZ can announce
    /// resolution before every object is on the bus).
    pub(crate) late_service: Option<std::time::Duration>,
}

impl DevState {
    /// A device in its power-on state, with its GATT layout.
    pub(crate) fn new(spec: SimDeviceSpec) -> DevState {
        let path = format!("/org/bluez/hci0/dev_{}", spec.address.replace(':', "_"));
        let mut chars = Vec::new();
        let mut services = Vec::new();
        let add = |chars: &mut Vec<CharState>, uuid16: u16, handle: u16, flags: &[&'static str], value: Vec<u8>| {
            let notifies = flags.iter().any(|f| *f == "notify" || *f == "indicate");
            chars.push(CharState {
                uuid16,
                handle,
                cccd: if notifies { Some(handle + 1) } else { None },
                flags: flags.to_vec(),
                value,
                notifying: false,
            });
            chars.len() - 1
        };
        match spec.kind {
            SimKind::HeartRateStrap => {
                let a = add(&mut chars, 0x2A37, 0x000b, &["notify"], Vec::new());
                let b = add(&mut chars, 0x2A38, 0x000e, &["read"], vec![0x01]);
                services.push(ServiceLayout { uuid16: 0x180D, handle: 0x000a, chars: vec![a, b] });
            }
            SimKind::PulseOximeter => {
                let a = add(&mut chars, 0x2A5E, 0x000b, &["indicate"], Vec::new());
                let b = add(&mut chars, 0x2A5F, 0x000e, &["notify"], Vec::new());
                let c = add(&mut chars, 0x2A60, 0x0011, &["read"], vec![0x03, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0x00]);
                services.push(ServiceLayout { uuid16: 0x1822, handle: 0x000a, chars: vec![a, b, c] });
            }
        }
        let bat = add(&mut chars, 0x2A19, 0x0013, &["read", "notify"], vec![90]);
        services.push(ServiceLayout { uuid16: 0x180F, handle: 0x0012, chars: vec![bat] });
        let m = add(&mut chars, 0x2A29, 0x0017, &["read"], spec.manufacturer.as_bytes().to_vec());
        let n = add(&mut chars, 0x2A24, 0x0019, &["read"], spec.model.as_bytes().to_vec());
        let s = add(&mut chars, 0x2A25, 0x001b, &["read"], spec.serial.as_bytes().to_vec());
        let f = add(&mut chars, 0x2A26, 0x001d, &["read"], spec.firmware.as_bytes().to_vec());
        services.push(ServiceLayout { uuid16: 0x180A, handle: 0x0016, chars: vec![m, n, s, f] });
        DevState {
            spec,
            path,
            exported: false,
            connected: false,
            services_resolved: false,
            rssi: -55,
            chars,
            services,
            muted: false,
            unreachable_until: None,
            finger_out: false,
            tick: 0,
            links: 0,
            hide_service_links: 0,
            late_service: None,
        }
    }

    /// The advertised service UUIDs (lowercase 128-bit).
    pub(crate) fn uuids(&self) -> Vec<String> {
        [self.spec.kind.service16(), 0x180F, 0x180A].iter().map(|u| super::sig_uuid_string(*u)).collect()
    }

    /// In range (not in a scripted outage).
    pub(crate) fn reachable(&self) -> bool {
        self.unreachable_until.map(|t| Instant::now() >= t).unwrap_or(true)
    }

    /// A snapshot of the GATT tree.
    pub(crate) fn layout(&self) -> Layout {
        Layout { services: self.services.clone(), chars: self.chars.clone() }
    }

    /// Whether a characteristic is notifying.
    pub(crate) fn notifying(&self, uuid16: u16) -> bool {
        self.chars.iter().any(|c| c.uuid16 == uuid16 && c.notifying)
    }
}

/// `Adapter1` state.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdapterState {
    pub(crate) powered: bool,
    pub(crate) discovering: bool,
    pub(crate) filter_uuids: Vec<String>,
}

/// One notification the simulator emitted, for tests to compare with what
/// the gateway recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub address: String,
    pub uuid16: u16,
    pub bytes: Vec<u8>,
    /// When the simulator emitted it (for latency measurements).
    pub at: Instant,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) adapter: AdapterState,
    pub(crate) devices: Vec<DevState>,
    /// Every notification emitted, in order.
    pub(crate) sent: Vec<Sent>,
    /// One-shot values to emit on the next tick: (device index, uuid16, bytes).
    pub(crate) inject: Vec<(usize, u16, Vec<u8>)>,
    /// How many times a client called `Adapter1.RemoveDevice`.
    pub(crate) removed: u32,
}

impl SimState {
    /// Power-on state for these devices.
    pub(crate) fn new(specs: Vec<SimDeviceSpec>) -> SimState {
        SimState {
            adapter: AdapterState { powered: true, ..AdapterState::default() },
            devices: specs.into_iter().map(DevState::new).collect(),
            sent: Vec::new(),
            inject: Vec::new(),
            removed: 0,
        }
    }

    /// The device at this object path.
    pub(crate) fn device_by_path(&self, path: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.path == path)
    }

    /// The device with this address (case-insensitive).
    pub(crate) fn device_by_address(&self, address: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.spec.address.eq_ignore_ascii_case(address))
    }

    /// What bluetoothd forgets when it restarts: links, exported objects,
    /// discovery. Scripted switches, values and the sent log stay.
    pub(crate) fn reset_links(&mut self) {
        self.adapter.discovering = false;
        self.adapter.filter_uuids.clear();
        for d in self.devices.iter_mut() {
            d.exported = false;
            d.connected = false;
            d.services_resolved = false;
            d.muted = false;
            for c in d.chars.iter_mut() {
                c.notifying = false;
            }
        }
        self.inject.clear();
    }
}
