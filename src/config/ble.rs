//! `[device.ble]`: how a BLE device is found and read.

use serde::Deserialize;

/// Selects one BLE device by address, by name pattern, or (explicitly) any
/// device that offers the kind's service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleDeviceConfig {
    /// `AA:BB:CC:DD:EE:FF`
    #[serde(default)]
    pub address: Option<String>,
    /// Glob on the advertised name, e.g. `Polar H10 *`.
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// Accept the first device offering the service (opt-in: a ward has many).
    #[serde(default)]
    pub any_device: bool,
}
