//! `[sink.iothub]`: Azure IoT Hub over MQTT (see src/sinks/iothub/).
//!
//! The identity comes either from a device connection string or from DPS
//! (`[sink.iothub.dps]`), with an individual or a group key: written as
//! optional keys side by side ([`RawIotHub`]), validated into one
//! [`IotHubIdentity`]. Everything else has a default that suits a bedside
//! gateway.

use super::secret::{RawSecret, Secret};
use super::units;
use super::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The validated `[sink.iothub]` table.
#[derive(Debug, Clone)]
pub struct IotHubSinkConfig {
    /// Who the gateway is to the hub.
    pub identity: IotHubIdentity,
    /// `mqtt` (TLS on 8883, default) or `websocket` (WSS on 443, for networks
    /// that only let HTTPS out).
    pub transport: IotHubTransport,
    /// Connect via this host (`host` or `host:port`: an IoT Edge parent, the
    /// local emulator) instead of the hub; tokens are still signed for the hub.
    /// Overrides a connection string's `GatewayHostName`.
    pub gateway_host_name: Option<String>,
    /// `proxy` (and `proxy_credentials`): an HTTP CONNECT proxy; websocket only.
    pub proxy: Option<IotHubProxy>,
    /// An extra CA certificate file (PEM) to trust besides the system roots: an
    /// IoT Edge parent's root CA, or the local emulator's CA.
    pub ca_file: Option<PathBuf>,
    /// `cert_file` and `key_file`: X.509 authentication.
    pub client_certificate: Option<ClientCertificate>,
    /// Lifetime of each SAS token; the gateway reconnects with a fresh one well
    /// before it expires (at 80 % of it, and at least 2 min early for long tokens).
    pub token_ttl: Duration,
    /// Application properties added to every telemetry message (ASCII).
    pub application_properties: BTreeMap<String, String>,
    /// Messages awaiting their PUBACK at once.
    pub max_in_flight: usize,
    /// MQTT keep-alive; IoT Hub allows at most 1177 s.
    pub keep_alive: Duration,
    /// How long to wait for a PUBACK before reconnecting and resending.
    pub ack_timeout: Duration,
}

/// The gateway's IoT Hub identity: one of the two ways.
#[derive(Debug, Clone)]
pub enum IotHubIdentity {
    /// `connection_string`: a device connection string
    /// (`HostName=...;DeviceId=...;SharedAccessKey=...`), read anew before
    /// each connection.
    ConnectionString(Secret),
    /// `[sink.iothub.dps]`: provisioned through the Device Provisioning Service.
    Dps(DpsConfig),
}

/// `proxy` and its credentials.
#[derive(Debug, Clone)]
pub struct IotHubProxy {
    /// `host:port` or `http://host:port`.
    pub address: String,
    /// `proxy_credentials`: Basic credentials, `user:password` (read at start).
    pub credentials: Option<Secret>,
}

impl IotHubProxy {
    /// A proxy without credentials.
    pub fn new(address: impl Into<String>) -> IotHubProxy {
        IotHubProxy { address: address.into(), credentials: None }
    }
}

/// X.509 authentication: `cert_file`, the device certificate chain (PEM),
/// and `key_file`, its private key (PEM); one is never set without the other.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The `[sink.iothub]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIotHub {
    #[serde(default)]
    pub(crate) connection_string: Option<RawSecret>,
    #[serde(default)]
    pub(crate) dps: Option<RawDps>,
    #[serde(default)]
    pub(crate) transport: IotHubTransport,
    #[serde(default)]
    pub(crate) gateway_host_name: Option<String>,
    #[serde(default)]
    pub(crate) proxy: Option<String>,
    #[serde(default)]
    pub(crate) proxy_credentials: Option<RawSecret>,
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) cert_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) key_file: Option<PathBuf>,
    #[serde(default = "default_token_ttl", with = "units::duration")]
    pub(crate) token_ttl: Duration,
    #[serde(default)]
    pub(crate) application_properties: BTreeMap<String, String>,
    #[serde(default = "default_max_in_flight")]
    pub(crate) max_in_flight: usize,
    #[serde(default = "default_keep_alive", with = "units::duration")]
    pub(crate) keep_alive: Duration,
    #[serde(default = "default_ack_timeout", with = "units::duration")]
    pub(crate) ack_timeout: Duration,
}

/// How the gateway reaches the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IotHubTransport {
    /// MQTT 3.1.1 over TLS, port 8883.
    #[default]
    Mqtt,
    /// MQTT over secure WebSockets, port 443, path `/$iothub/websocket`.
    Websocket,
}

/// `[sink.iothub.dps]`, validated: symmetric-key provisioning.
#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// The DPS ID scope (`0ne...`).
    pub(crate) id_scope: String,
    /// The registration id (lowercase letters, digits and `-`); left out of
    /// the file, the gateway id in lowercase, so that with a group enrollment
    /// one config serves every gateway (`[gateway] id = { from = "hostname" }`).
    pub registration_id: String,
    /// DPS endpoint (default `global.azure-devices-provisioning.net`), optionally `host:port`.
    pub(crate) endpoint: String,
    /// The enrollment's key.
    pub key: DpsKey,
}

/// The DPS enrollment's key: one of the two.
#[derive(Debug, Clone)]
pub enum DpsKey {
    /// `symmetric_key`: individual enrollment, the device's own key.
    Individual(Secret),
    /// `group_key`: group enrollment; the device key is derived from it and
    /// the registration id.
    Group(Secret),
}

impl DpsKey {
    /// Its config key, for messages.
    pub(crate) fn config_key(&self) -> &'static str {
        match self {
            DpsKey::Individual(_) => "sink.iothub.dps.symmetric_key",
            DpsKey::Group(_) => "sink.iothub.dps.group_key",
        }
    }

    /// Where the key is read from.
    pub(crate) fn secret(&self) -> &Secret {
        match self {
            DpsKey::Individual(s) | DpsKey::Group(s) => s,
        }
    }
}

/// `[sink.iothub.dps]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDps {
    pub(crate) id_scope: String,
    #[serde(default)]
    pub(crate) registration_id: String,
    #[serde(default = "default_dps_endpoint")]
    pub(crate) endpoint: String,
    #[serde(default)]
    pub(crate) symmetric_key: Option<RawSecret>,
    #[serde(default)]
    pub(crate) group_key: Option<RawSecret>,
}

fn default_dps_endpoint() -> String {
    "global.azure-devices-provisioning.net".into()
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_in_flight() -> usize {
    16
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(60)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(30)
}

/// IoT Hub's ceiling on the MQTT keep-alive.
pub(crate) const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1177);

impl IotHubSinkConfig {
    /// A config with defaults around one connection string (for tests and tools).
    pub fn with_connection_string(cs: &str) -> IotHubSinkConfig {
        IotHubSinkConfig {
            identity: IotHubIdentity::ConnectionString(Secret::Value(cs.to_string())),
            transport: IotHubTransport::Mqtt,
            gateway_host_name: None,
            proxy: None,
            ca_file: None,
            client_certificate: None,
            token_ttl: default_token_ttl(),
            application_properties: BTreeMap::new(),
            max_in_flight: default_max_in_flight(),
            keep_alive: default_keep_alive(),
            ack_timeout: default_ack_timeout(),
        }
    }
}

impl RawIotHub {
    /// The table checked and converted; `gateway_id` is the DPS registration
    /// id's default. Problems' keys are relative to `sink.iothub`.
    pub(crate) fn validate(self, gateway_id: &str) -> Result<IotHubSinkConfig, Vec<Problem>> {
        let mut errs = Vec::new();
        let mut push = |k: &str, m: &str| errs.push((k.to_string(), m.to_string()));
        let identity = match (self.connection_string, self.dps) {
            (Some(_), Some(_)) => {
                push("dps", "set either `connection_string` or `[sink.iothub.dps]`, not both");
                None
            }
            (None, None) => {
                push("connection_string", "set `connection_string` (or a `[sink.iothub.dps]` table)");
                None
            }
            (Some(cs), None) => match Secret::try_from(cs) {
                Ok(s) => Some(IotHubIdentity::ConnectionString(s)),
                Err(_) => {
                    push("connection_string", "set exactly one of `file`, `env` or `value` for the connection string");
                    None
                }
            },
            (None, Some(d)) => {
                let key = match (d.symmetric_key, d.group_key) {
                    (Some(k), None) => Some(Secret::try_from(k).map(DpsKey::Individual)),
                    (None, Some(k)) => Some(Secret::try_from(k).map(DpsKey::Group)),
                    _ => None,
                };
                let key = match key {
                    Some(Ok(key)) => Some(key),
                    Some(Err(_)) => {
                        push("dps", "set exactly one of `file`, `env` or `value` for the DPS key");
                        None
                    }
                    None => {
                        push("dps", "set exactly one of `symmetric_key` (individual enrollment) or `group_key` (group enrollment)");
                        None
                    }
                };
                if d.id_scope.trim().is_empty() {
                    push("dps.id_scope", "the ID scope is empty");
                }
                let registration_id = if d.registration_id.is_empty() { gateway_id.to_ascii_lowercase() } else { d.registration_id };
                if registration_id.is_empty() || !registration_id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                    push(
                        "dps.registration_id",
                        "use lowercase letters, digits and `-` only (left out, it is the gateway id: then give the gateway such an id)",
                    );
                }
                key.map(|key| IotHubIdentity::Dps(DpsConfig { id_scope: d.id_scope, registration_id, endpoint: d.endpoint, key }))
            }
        };
        let client_certificate = match (self.cert_file, self.key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCertificate { cert_file, key_file }),
            (None, None) => None,
            _ => {
                push("cert_file", "X.509 authentication needs both `cert_file` and `key_file`");
                None
            }
        };
        if self.proxy.is_some() && self.transport != IotHubTransport::Websocket {
            push("proxy", "a proxy is used only with transport = \"websocket\"");
        }
        let proxy_credentials = match self.proxy_credentials {
            None => None,
            Some(_) if self.proxy.is_none() => {
                push("proxy_credentials", "proxy_credentials needs a `proxy`");
                None
            }
            Some(c) => match Secret::try_from(c) {
                Ok(s) => Some(s),
                Err(_) => {
                    push("proxy_credentials", "set exactly one of `file`, `env` or `value` for the proxy credentials");
                    None
                }
            },
        };
        let max_keep_alive = MAX_KEEP_ALIVE.as_millis();
        if let Some(m) = units::out_of_range("keep_alive", self.keep_alive.as_millis(), 5000, max_keep_alive, units::Unit::Duration, "60s") {
            push("keep_alive", &format!("{m} (1177s is IoT Hub's limit)"));
        }
        // Ranges (see config/iomt-edge.toml); the upper bounds also keep token
        // expiry times and PUBACK deadlines far from overflowing.
        const DAY: u128 = 86_400_000;
        if let Some(m) = units::out_of_range("token_ttl", self.token_ttl.as_millis(), 2000, 365 * DAY, units::Unit::Duration, "1h") {
            push("token_ttl", &m);
        }
        if let Some(m) = units::out_of_range("ack_timeout", self.ack_timeout.as_millis(), 500, 600_000, units::Unit::Duration, "30s") {
            push("ack_timeout", &format!("{m} (a message without PUBACK is resent after this long)"));
        }
        if let Some(m) = units::out_of_range("max_in_flight", self.max_in_flight as u128, 1, 1000, units::Unit::Count, "16") {
            push("max_in_flight", &m);
        }
        for (k, v) in &self.application_properties {
            if !k.is_ascii() || !v.is_ascii() || k.is_empty() {
                push("application_properties", "application property names and values must be non-empty ASCII");
                break;
            }
        }
        match identity {
            Some(identity) if errs.is_empty() => Ok(IotHubSinkConfig {
                identity,
                transport: self.transport,
                gateway_host_name: self.gateway_host_name,
                proxy: self.proxy.map(|address| IotHubProxy { address, credentials: proxy_credentials }),
                ca_file: self.ca_file,
                client_certificate,
                token_ttl: self.token_ttl,
                application_properties: self.application_properties,
                max_in_flight: self.max_in_flight,
                keep_alive: self.keep_alive,
                ack_timeout: self.ack_timeout,
            }),
            _ => Err(errs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of a table as written (none: it converts).
    fn problems(c: &RawIotHub) -> Vec<Problem> {
        c.clone().validate("gw").err().unwrap_or_default()
    }

    #[test]
    fn parses_full_table_and_validates() {
        let c: RawIotHub = toml::from_str(
            r#"
            transport = "websocket"
            proxy = "proxy.local:3128"
            token_ttl = "30m"
            max_in_flight = 8
            application_properties = { site = "ward-3" }
            [dps]
            id_scope = "0ne00000000"
            registration_id = "gw-007"
            group_key = { env = "GROUP_KEY" }
            "#,
        )
        .unwrap();
        assert_eq!(c.transport, IotHubTransport::Websocket);
        assert_eq!(c.token_ttl, Duration::from_secs(1800));
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let bad: RawIotHub = toml::from_str("keep_alive = \"2h\"").unwrap();
        let errs = problems(&bad);
        assert!(errs.iter().any(|(k, _)| k == "keep_alive"));
        assert!(errs.iter().any(|(k, _)| k == "connection_string"));
        assert!(toml::from_str::<RawIotHub>("bogus = 1").is_err());
    }

    #[test]
    fn proxy_credentials_need_a_proxy() {
        let c: RawIotHub = toml::from_str("connection_string = { env = \"CS\" }\nproxy_credentials = { file = \"/etc/p\" }").unwrap();
        assert!(problems(&c).iter().any(|(k, _)| k == "proxy_credentials"));
        let c: RawIotHub = toml::from_str(
            "connection_string = { env = \"CS\" }\ntransport = \"websocket\"\nproxy = \"p:3128\"\nproxy_credentials = { file = \"/etc/p\" }",
        )
        .unwrap();
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }
}
