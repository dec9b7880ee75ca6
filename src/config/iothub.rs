//! `[sink.iothub]`: Azure IoT Hub over MQTT.

use super::secret::SecretSource;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IotHubSinkConfig {
    /// The device connection string, from a file or an environment variable.
    pub connection_string: SecretSource,
}
