//! Device connection strings: `HostName=...;DeviceId=...;SharedAccessKey=...`.
//!
//! Split on `;`, then on the first `=` only (keys end with `=` padding).

use std::fmt;

/// A parsed device (or module) connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The hub's host name (`{hub}.azure-devices.net`); tokens are signed for it.
    pub(crate) host_name: String,
    /// The device identity.
    pub(crate) device_id: String,
    /// Module identity (IoT Edge modules), if any.
    pub(crate) module_id: Option<String>,
    /// Base64 device key (absent for X.509 or a pre-made signature).
    pub(crate) shared_access_key: Option<String>,
    /// Policy name, when a hub policy key signs the token (`skn`).
    pub(crate) shared_access_key_name: Option<String>,
    /// A ready-made SAS token (cannot be renewed).
    pub(crate) shared_access_signature: Option<String>,
    /// Connect here (IoT Edge parent, emulator) but sign for `host_name`. May carry `:port`.
    pub(crate) gateway_host_name: Option<String>,
    /// `x509=true`: authenticate with a client certificate.
    pub(crate) x509: bool,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("shared_access_key", &self.shared_access_key.as_ref().map(|_| "<redacted>"))
            .field("gateway_host_name", &self.gateway_host_name)
            .field("x509", &self.x509)
            .finish()
    }
}

/// Why a connection string was refused. Never contains the key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string part {0} has no `=` (expected `Name=value` pairs separated by `;`)")]
    NoEquals(usize),
    #[error("connection string lacks `{0}`")]
    Missing(&'static str),
    #[error("connection string has an unknown key `{0}`")]
    UnknownKey(String),
    #[error("connection string gives `{0}` twice")]
    Duplicate(String),
    #[error("connection string needs one of SharedAccessKey, SharedAccessSignature or x509=true")]
    NoCredential,
    #[error("SharedAccessKey is not valid base64")]
    BadKey,
}

impl ConnectionString {
    /// Parses a device connection string.
    pub fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        use base64::Engine;
        let mut cs = ConnectionString {
            host_name: String::new(),
            device_id: String::new(),
            module_id: None,
            shared_access_key: None,
            shared_access_key_name: None,
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        };
        let mut seen: Vec<String> = Vec::new();
        for (i, part) in s.trim().split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').ok_or(ConnectionStringError::NoEquals(i + 1))?;
            let (k, v) = (k.trim(), v.trim().to_string());
            if seen.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                return Err(ConnectionStringError::Duplicate(k.to_string()));
            }
            seen.push(k.to_string());
            match k {
                "HostName" => cs.host_name = v,
                "DeviceId" => cs.device_id = v,
                "ModuleId" => cs.module_id = Some(v),
                "SharedAccessKey" => cs.shared_access_key = Some(v),
                "SharedAccessKeyName" => cs.shared_access_key_name = Some(v),
                "SharedAccessSignature" => cs.shared_access_signature = Some(v),
                "GatewayHostName" => cs.gateway_host_name = Some(v),
                "x509" => cs.x509 = v.eq_ignore_ascii_case("true"),
                other => return Err(ConnectionStringError::UnknownKey(other.to_string())),
            }
        }
        if cs.host_name.is_empty() {
            return Err(ConnectionStringError::Missing("HostName"));
        }
        if cs.device_id.is_empty() {
            return Err(ConnectionStringError::Missing("DeviceId"));
        }
        if cs.shared_access_key.is_none() && cs.shared_access_signature.is_none() && !cs.x509 {
            return Err(ConnectionStringError::NoCredential);
        }
        if let Some(k) = &cs.shared_access_key {
            if base64::engine::general_purpose::STANDARD.decode(k).is_err() {
                return Err(ConnectionStringError::BadKey);
            }
        }
        Ok(cs)
    }

    /// `host:port` to connect to: `GatewayHostName` if set, else `HostName`.
    /// A port written in the name wins over `default_port`.
    pub(crate) fn connect_address(&self, default_port: u16) -> (String, u16) {
        split_host_port(self.gateway_host_name.as_deref().unwrap_or(&self.host_name), default_port)
    }

    /// The host name without a port (what tokens and the username name).
    pub(crate) fn hub_host(&self) -> &str {
        self.host_name.split(':').next().unwrap_or(&self.host_name)
    }

    /// The MQTT client id: `deviceId`, or `deviceId/moduleId`.
    #[cfg(test)]
    pub(crate) fn client_id(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{}", self.device_id, m),
            None => self.device_id.clone(),
        }
    }

    /// The MQTT username: `{hub}/{device}[/{module}]/?api-version=2021-04-12`.
    #[cfg(test)]
    pub(crate) fn username(&self) -> String {
        format!("{}/{}/?api-version=2021-04-12&DeviceClientType=iomt-edge%2F{}", self.hub_host(), self.client_id(), env!("CARGO_PKG_VERSION"))
    }

    /// The resource URI tokens are signed for: `{hub}/devices/{id}[/modules/{m}]`.
    #[cfg(test)]
    pub(crate) fn resource_uri(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/devices/{}/modules/{}", self.hub_host(), self.device_id, m),
            None => format!("{}/devices/{}", self.hub_host(), self.device_id),
        }
    }
}

/// Splits `host[:port]`; the port defaults to `default_port`.
pub(crate) fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), port),
            Err(_) => (s.to_string(), default_port),
        },
        _ => (s.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_splits_on_first_equals_only() {
        let cs = ConnectionString::parse(
            "HostName=pontifex.azure-devices.net;DeviceId=FirstDevice;SharedAccessKey=O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=",
        )
        .unwrap();
        assert_eq!(cs.shared_access_key.as_deref(), Some("O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc="));
        assert_eq!(cs.client_id(), "FirstDevice");
        assert_eq!(cs.resource_uri(), "pontifex.azure-devices.net/devices/FirstDevice");
        assert!(cs.username().starts_with("pontifex.azure-devices.net/FirstDevice/?api-version="));
        assert_eq!(cs.connect_address(8883), ("pontifex.azure-devices.net".into(), 8883));
        assert!(!format!("{cs:?}").contains("O+H9"));
    }

    #[test]
    fn module_and_gateway() {
        let cs = ConnectionString::parse("HostName=h.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=AAAA;GatewayHostName=127.0.0.1:18883")
            .unwrap();
        assert_eq!(cs.client_id(), "d/m");
        assert_eq!(cs.resource_uri(), "h.azure-devices.net/devices/d/modules/m");
        assert_eq!(cs.connect_address(8883), ("127.0.0.1".into(), 18883));
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(ConnectionString::parse("HostName=h;SharedAccessKey=AAAA"), Err(ConnectionStringError::Missing("DeviceId")));
        assert_eq!(ConnectionString::parse("HostName=h;DeviceId=d"), Err(ConnectionStringError::NoCredential));
        assert_eq!(ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=!!"), Err(ConnectionStringError::BadKey));
        assert_eq!(ConnectionString::parse("HostName=h;DeviceId"), Err(ConnectionStringError::NoEquals(2)));
        assert!(matches!(ConnectionString::parse("HostName=h;Foo=1"), Err(ConnectionStringError::UnknownKey(_))));
        assert!(ConnectionString::parse("HostName=h;DeviceId=d;x509=true").unwrap().x509);
    }
}
