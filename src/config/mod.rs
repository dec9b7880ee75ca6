//! Configuration: one TOML file, typed per component, validated before anything starts.
//!
//! `load` turns a file into a [`Config`] or a [`ConfigError`] that names the file,
//! line and column and says how to fix it. Every option is documented, with its
//! default, in config/iomt-edge.toml.
//!
//! Two forms of each table that holds a choice: as written (`Raw*`, crate
//! private: serde reads the file into it, with its optional keys side by
//! side) and validated (an enum per choice: [`DeviceSource`], [`SinkConfig`],
//! [`Secret`], [`ble::BleSelector`], [`iothub::IotHubIdentity`],
//! [`eventhubs::EventHubsIdentity`]). Each table's `validate()` sits beside
//! it and is the only way from one to the other; it runs once, in
//! [`load`]/[`parse_str`] (or `ConfigDraft::validate`, for the demo), which place its
//! problems at their line. What is built from a [`Config`] (adapters, sinks)
//! trusts it and checks nothing again.

/// `[gateway] id` written out or derived from the host name or machine id
/// (one image for many Pis, docs/raspberry-pi.md).
pub(crate) mod gateway_id;
mod load;
pub(crate) mod secret;
pub mod units;

pub mod ble;
mod device;
pub mod eventhubs;
pub mod iothub;
pub(crate) mod serial;
mod sink;

pub(crate) use device::RawDevice;
pub(crate) use device::{DeviceConfig, DeviceKindConfig};
pub use device::{DeviceSource, SimulatedDeviceConfig};
pub use load::parse_str;
pub(crate) use load::ConfigDraft;
pub(crate) use load::{load, load_with_text, read_text, ConfigError};
pub use secret::Secret;
pub(crate) use sink::FileSinkConfig;
pub(crate) use sink::RawSink;
pub use sink::SinkConfig;

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use units::ByteSize;

/// A problem found in validation: (key path such as `sink.iothub.keep_alive`
/// or `device.2.ble`, what is wrong and how to fix it).
pub(crate) type Problem = (String, String);

/// The whole configuration file, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) gateway: GatewayConfig,
    pub outbox: OutboxConfig,
    pub forwarder: ForwarderConfig,
    /// `[[device]]`, in the file's order.
    pub devices: Vec<DeviceConfig>,
    pub sink: SinkConfig,
}

/// The whole file as written (see [`ConfigDraft`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) gateway: GatewayConfig,
    #[serde(default)]
    pub(crate) outbox: OutboxConfig,
    #[serde(default)]
    pub(crate) forwarder: ForwarderConfig,
    #[serde(default, rename = "device")]
    pub(crate) devices: Vec<device::RawDevice>,
    pub(crate) sink: sink::RawSink,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayConfig {
    /// Names this gateway in every message (`gatewayId`) and in message ids.
    /// Written out, or derived at load time from this machine (`{ from =
    /// "hostname" }`, `{ from = "machine-id" }`; see [`gateway_id`]).
    #[serde(deserialize_with = "gateway_id::deserialize")]
    pub(crate) id: String,
    /// Where the outbox and persisted settings live.
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/iomt-edge")
}

/// What to do when the outbox reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Remove the oldest readings to make room (default): the newest data is
    /// the most useful clinically, and the drop is counted and logged.
    DropOldest,
    /// Keep what is queued and refuse new readings (counted and logged).
    RefuseNewest,
}

/// `[outbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Group-commit window: readings arriving within it share one flush.
    /// 0 flushes every reading on its own.
    pub flush_interval_ms: u64,
    /// Upper bound on the stored readings' size.
    pub max_bytes: ByteSize,
    /// Readings older than this are dropped (counted and logged).
    #[serde(with = "units::duration")]
    pub max_age: Duration,
    pub when_full: WhenFull,
    /// sled page cache size. Small on purpose: a Raspberry Pi has little RAM.
    pub cache_bytes: ByteSize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            flush_interval_ms: 100,
            max_bytes: ByteSize(256 * 1024 * 1024),
            max_age: Duration::from_secs(7 * 24 * 3600),
            when_full: WhenFull::DropOldest,
            cache_bytes: ByteSize(4 * 1024 * 1024),
        }
    }
}

/// `[forwarder]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwarderConfig {
    /// A message carries at most this many readings.
    pub batch_max_readings: usize,
    /// ... and at most this many bytes of body (the sink's own limit also applies).
    pub batch_max_bytes: ByteSize,
    /// A device's first pending reading waits at most this long for company.
    pub batch_max_age_ms: u64,
    /// First retry delay after a failed send; doubles up to `retry_max_ms`, with jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Delay between retries when the destination refused our credentials.
    pub auth_retry_ms: u64,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            batch_max_readings: 500,
            batch_max_bytes: ByteSize(64 * 1024),
            batch_max_age_ms: 1000,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            auth_retry_ms: 300_000,
        }
    }
}
