//! `[device.ble]`: how a BLE device is found and read.
//!
//! The table as written ([`RawBle`]: `address`, `name_pattern` and
//! `any_device` side by side) becomes a [`BleDeviceConfig`] whose
//! [`BleSelector`] is exactly one of them, in [`RawBle::validate`]; the BLE
//! adapter only ever sees the validated form.

use super::units::{self, Unit};
use super::{DeviceKindConfig, Problem};
use serde::Deserialize;
use std::time::Duration;

/// Which device in range is this `[[device]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BleSelector {
    /// `address = "AA:BB:CC:DD:EE:FF"`, kept in upper case (the form BlueZ
    /// reports addresses in).
    Address(String),
    /// `name_pattern`: glob on the advertised name, e.g. `Polar H10 *` (`*`
    /// any run, `?` one character).
    NamePattern(String),
    /// `any_device = true`: the first device offering the kind's service
    /// (opt-in: a ward has many).
    AnyDevice,
}

/// A validated `[device.ble]`: one device and its supervision.
#[derive(Debug, Clone)]
pub struct BleDeviceConfig {
    pub selector: BleSelector,
    /// A device that sends nothing for this long is treated as lost, even if
    /// BlueZ still reports it connected (default `5s`; 200 ms to 10 min).
    pub silence_timeout: Duration,
    /// Upper bound of the reconnect backoff (default `30s`, 500 ms to 1 h; it
    /// starts at 0.5 s and doubles).
    pub reconnect_max: Duration,
    /// Use manufacturer+serial from Device Information (else the address) as
    /// the device id instead of the configured `id`. Useful with `any_device`,
    /// so that a swapped strap is not taken for the previous one.
    pub id_from_device: bool,
}

impl BleDeviceConfig {
    /// `selector` with the default timers (for tests and tools).
    pub fn new(selector: BleSelector) -> BleDeviceConfig {
        BleDeviceConfig { selector, silence_timeout: default_silence(), reconnect_max: default_reconnect_max(), id_from_device: false }
    }
}

/// `[device.ble]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBle {
    #[serde(default)]
    pub(crate) address: Option<String>,
    #[serde(default)]
    pub(crate) name_pattern: Option<String>,
    #[serde(default)]
    pub(crate) any_device: bool,
    #[serde(default = "default_silence", with = "units::duration")]
    pub(crate) silence_timeout: Duration,
    #[serde(default = "default_reconnect_max", with = "units::duration")]
    pub(crate) reconnect_max: Duration,
    #[serde(default)]
    pub(crate) id_from_device: bool,
}

/// An empty table: no selector yet, the default timers.
impl Default for RawBle {
    fn default() -> Self {
        RawBle {
            address: None,
            name_pattern: None,
            any_device: false,
            silence_timeout: default_silence(),
            reconnect_max: default_reconnect_max(),
            id_from_device: false,
        }
    }
}

fn default_silence() -> Duration {
    Duration::from_secs(5)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

impl RawBle {
    /// The table of a device of `kind`, checked: ranges, one selector, the
    /// address's form, a kind BLE reads. Problems' keys are relative to the
    /// `[[device]]` (`ble.address`, `kind`).
    pub(crate) fn validate(self, kind: DeviceKindConfig) -> Result<BleDeviceConfig, Vec<Problem>> {
        let mut errs = Vec::new();
        let mut range = |key: &str, value: u128, lo: u128, hi: u128, default: &str| {
            if let Some(m) = units::out_of_range(key, value, lo, hi, Unit::Duration, default) {
                errs.push((format!("ble.{key}"), m));
            }
        };
        range("silence_timeout", self.silence_timeout.as_millis(), 200, 600_000, "5s");
        range("reconnect_max", self.reconnect_max.as_millis(), 500, 3_600_000, "30s");
        let bad_address = self.address.as_deref().is_some_and(|a| !is_ble_address(a));
        let selector = match (self.address, self.name_pattern, self.any_device) {
            (Some(a), None, false) => Some(BleSelector::Address(a.trim().to_ascii_uppercase())),
            (None, Some(p), false) => Some(BleSelector::NamePattern(p)),
            (None, None, true) => Some(BleSelector::AnyDevice),
            _ => {
                errs.push(("ble".into(), "set exactly one of `address`, `name_pattern` or `any_device = true`".into()));
                None
            }
        };
        if bad_address {
            errs.push((
                "ble.address".into(),
                "a BLE address is six two-digit hex numbers separated by colons, like \"AA:BB:CC:DD:EE:FF\" (`iomt-edge scan ble` lists the devices in range)".into(),
            ));
        }
        if !matches!(kind, DeviceKindConfig::HeartRateStrap | DeviceKindConfig::PulseOximeter) {
            errs.push(("kind".into(), "a [device.ble] device is a heart_rate_strap or a pulse_oximeter".into()));
        }
        match selector {
            Some(selector) if errs.is_empty() => Ok(BleDeviceConfig {
                selector,
                silence_timeout: self.silence_timeout,
                reconnect_max: self.reconnect_max,
                id_from_device: self.id_from_device,
            }),
            _ => Err(errs),
        }
    }
}

/// `AA:BB:CC:DD:EE:FF` (either case): the form BlueZ reports addresses in.
fn is_ble_address(a: &str) -> bool {
    let parts: Vec<&str> = a.trim().split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
