//! `[sink]`: where delivered messages go.
//!
//! Written as one destination table under `[sink]` (`[sink.file]`,
//! `[sink.stdout]`, `[sink.iothub]`, `[sink.eventhubs]`); validated into the
//! one [`SinkConfig`] variant. A new destination is one variant here, one
//! table field in [`RawSink`] and its folder under `src/sinks/`
//! (docs/design.md, "Adding a device source or a sink").

use super::eventhubs::{EventHubsSinkConfig, RawEventHubs};
use super::iothub::{IotHubIdentity, IotHubSinkConfig, RawIotHub};
use super::secret::Secret;
use super::Problem;
use serde::Deserialize;
use std::path::PathBuf;

/// The validated `[sink]`: exactly one destination.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// `[sink.file]` (src/sinks/file.rs).
    File(FileSinkConfig),
    /// `[sink.stdout]` (src/sinks/stdout.rs).
    Stdout(StdoutSinkConfig),
    /// `[sink.iothub]`: Azure IoT Hub over MQTT (src/sinks/iothub/).
    IotHub(IotHubSinkConfig),
    /// `[sink.eventhubs]`: Azure Event Hubs over HTTPS (src/sinks/eventhubs/).
    EventHubs(EventHubsSinkConfig),
}

impl SinkConfig {
    /// Every secret the sink reads, with its config key.
    pub(crate) fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut out = Vec::new();
        match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) => {}
            SinkConfig::IotHub(h) => {
                match &h.identity {
                    IotHubIdentity::ConnectionString(s) => out.push(("sink.iothub.connection_string", s)),
                    IotHubIdentity::Dps(d) => out.push((d.key.config_key(), d.key.secret())),
                }
                if let Some(s) = h.proxy.as_ref().and_then(|p| p.credentials.as_ref()) {
                    out.push(("sink.iothub.proxy_credentials", s));
                }
            }
            SinkConfig::EventHubs(h) => out.extend(h.identity.secret()),
        }
        out
    }
}

/// `[sink.file]`: NDJSON, one message per line, fsync'd before confirming.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub(crate) path: PathBuf,
}

/// `[sink.stdout]`: one message per line on standard output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Pretty-print (several lines per message).
    #[serde(default)]
    pub(crate) pretty: bool,
}

/// `[sink]` as written: each destination table optional here; exactly one
/// must be present ([`RawSink::validate`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    #[serde(default)]
    pub(crate) file: Option<FileSinkConfig>,
    #[serde(default)]
    pub(crate) stdout: Option<StdoutSinkConfig>,
    #[serde(default)]
    pub(crate) iothub: Option<RawIotHub>,
    #[serde(default)]
    pub(crate) eventhubs: Option<RawEventHubs>,
}

impl RawSink {
    /// The one destination, checked. `gateway_id` is the DPS registration
    /// id's default. Keys are full paths (`sink.iothub.keep_alive`).
    pub(crate) fn validate(self, gateway_id: &str) -> Result<SinkConfig, Vec<Problem>> {
        let within = |table: &str, errs: Vec<Problem>| -> Vec<Problem> { errs.into_iter().map(|(k, m)| (format!("sink.{table}.{k}"), m)).collect() };
        match (self.file, self.stdout, self.iothub, self.eventhubs) {
            (Some(f), None, None, None) => Ok(SinkConfig::File(f)),
            (None, Some(s), None, None) => Ok(SinkConfig::Stdout(s)),
            (None, None, Some(h), None) => h.validate(gateway_id).map(SinkConfig::IotHub).map_err(|e| within("iothub", e)),
            (None, None, None, Some(h)) => h.validate().map(SinkConfig::EventHubs).map_err(|e| within("eventhubs", e)),
            (file, stdout, iothub, eventhubs) => {
                let n = file.is_some() as u8 + stdout.is_some() as u8 + iothub.is_some() as u8 + eventhubs.is_some() as u8;
                Err(vec![(
                    "sink".into(),
                    format!("[sink] needs exactly one destination table: [sink.file], [sink.stdout], [sink.iothub] or [sink.eventhubs] (found {n})"),
                )])
            }
        }
    }
}
