//! `[device.ble]`: how a BLE device is found and read.

use super::units;
use serde::Deserialize;
use std::time::Duration;

/// Selects one BLE device by address, by name pattern, or (explicitly) any
/// device that offers the kind's service, and tunes its supervision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleDeviceConfig {
    /// `AA:BB:CC:DD:EE:FF`
    #[serde(default)]
    pub address: Option<String>,
    /// Glob on the advertised name, e.g. `Polar H10 *` (`*` any run, `?` one character).
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// Accept the first device offering the service (opt-in: a ward has many).
    #[serde(default)]
    pub any_device: bool,
    /// A device that sends nothing for this long is treated as lost, even if
    /// BlueZ still reports it connected (default `5s`).
    #[serde(default = "default_silence", with = "units::duration")]
    pub silence_timeout: Duration,
    /// Upper bound of the reconnect backoff (default `30s`; it starts at 0.5 s
    /// and doubles).
    #[serde(default = "default_reconnect_max", with = "units::duration")]
    pub reconnect_max: Duration,
    /// Use manufacturer+serial from Device Information (else the address) as
    /// the device id instead of the configured `id`. Useful with `any_device`,
    /// so that a swapped strap is not taken for the previous one.
    #[serde(default)]
    pub id_from_device: bool,
}

fn default_silence() -> Duration {
    Duration::from_secs(5)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

impl Default for BleDeviceConfig {
    fn default() -> Self {
        BleDeviceConfig {
            address: None,
            name_pattern: None,
            any_device: false,
            silence_timeout: default_silence(),
            reconnect_max: default_reconnect_max(),
            id_from_device: false,
        }
    }
}
