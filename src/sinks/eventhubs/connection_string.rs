//! Event Hubs connection strings:
//! `Endpoint=sb://{ns}.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`.
//!
//! Source: Azure docs "Get an Event Hubs connection string" and "Authenticate
//! access to Event Hubs resources using shared access signatures". The
//! connection string is split on `;`, then each part on its FIRST `=` only:
//! keys are base64-looking text that can end in `=` padding. Hand-written
//! (a dozen lines) because the IoT Hub parser knows other keys (`HostName`,
//! `DeviceId`) and the Azure Rust SDK for Event Hubs is pre-1.0 and AMQP-only.
//!
//! The key is never printed: `Debug` redacts it and no error carries it.

use std::fmt;

/// A parsed Event Hubs (namespace or event hub) connection string.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct EventHubsConnectionString {
    /// The namespace host, without scheme, port or path, e.g.
    /// `contoso.servicebus.windows.net` (from `Endpoint=sb://…/`).
    pub(crate) namespace_host: String,
    /// A port written in the endpoint (`sb://host:port/`), for an emulator.
    pub(crate) port: Option<u16>,
    /// The SAS policy name (`skn` of tokens).
    pub(crate) key_name: String,
    /// The SAS key, used as its UTF-8 bytes (not base64-decoded).
    pub(crate) key: String,
    /// The event hub name from `EntityPath`, present in hub-level strings.
    pub(crate) entity_path: Option<String>,
}

impl fmt::Debug for EventHubsConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHubsConnectionString")
            .field("namespace_host", &self.namespace_host)
            .field("port", &self.port)
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("entity_path", &self.entity_path)
            .finish()
    }
}

/// Why a connection string was refused. Names the part; never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("Event Hubs connection string part {0} has no `=` (expected `Name=value` pairs separated by `;`)")]
    NoEquals(usize),
    #[error("Event Hubs connection string lacks `{0}`")]
    Missing(&'static str),
    #[error("Event Hubs connection string gives `{0}` an empty value")]
    Empty(&'static str),
    #[error("Event Hubs connection string gives `{0}` twice")]
    Duplicate(String),
    #[error("Event Hubs connection string has an unknown key `{0}` (known: Endpoint, SharedAccessKeyName, SharedAccessKey, EntityPath)")]
    UnknownKey(String),
    #[error("Event Hubs connection string's Endpoint must look like `sb://NAMESPACE.servicebus.windows.net/`: {0}")]
    BadEndpoint(&'static str),
    #[error("Event Hubs connection string carries a ready-made SharedAccessSignature; this gateway needs SharedAccessKeyName and SharedAccessKey so it can renew tokens")]
    SignatureOnly,
    #[error(
        "the event hub name is given twice and differs: EntityPath `{entity_path}` in the connection string, `{configured}` in the configuration"
    )]
    HubNameConflict { entity_path: String, configured: String },
    #[error("no event hub name: add `;EntityPath=HUB` to the connection string or set the hub name in the configuration")]
    NoHubName,
}

impl EventHubsConnectionString {
    /// Parses a connection string. Key names are matched case-insensitively
    /// (the .NET parser does the same); values are trimmed.
    ///
    /// Errors: [`ConnectionStringError`] naming the missing, empty, repeated
    /// or malformed part.
    pub(crate) fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let (mut endpoint, mut key_name, mut key, mut entity) = (None, None, None, None);
        let mut seen: Vec<String> = Vec::new();
        let mut signature = false;
        for (i, part) in s.trim().split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').ok_or(ConnectionStringError::NoEquals(i + 1))?;
            let (k, v) = (k.trim(), v.trim().to_string());
            if seen.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                return Err(ConnectionStringError::Duplicate(shown_name(k)));
            }
            seen.push(k.to_string());
            match k.to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v),
                "sharedaccesskeyname" => key_name = Some(v),
                "sharedaccesskey" => key = Some(v),
                "entitypath" => entity = Some(v),
                "sharedaccesssignature" => signature = true,
                _ => return Err(ConnectionStringError::UnknownKey(shown_name(k))),
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::Missing("Endpoint"))?;
        if key.is_none() && key_name.is_none() && signature {
            return Err(ConnectionStringError::SignatureOnly);
        }
        let key_name = non_empty(key_name, "SharedAccessKeyName")?;
        let key = non_empty(key, "SharedAccessKey")?;
        let entity_path = match entity {
            Some(e) if e.is_empty() => return Err(ConnectionStringError::Empty("EntityPath")),
            Some(e) => Some(e),
            None => None,
        };
        let (namespace_host, port) = parse_endpoint(&endpoint)?;
        Ok(EventHubsConnectionString { namespace_host, port, key_name, key, entity_path })
    }

    /// The event hub name: `EntityPath`, else `configured`; both given and
    /// different is an error (a typo would send readings to the wrong hub).
    pub(crate) fn hub_name<'a>(&'a self, configured: Option<&'a str>) -> Result<&'a str, ConnectionStringError> {
        match (self.entity_path.as_deref(), configured.filter(|c| !c.is_empty())) {
            (Some(e), Some(c)) if e != c => Err(ConnectionStringError::HubNameConflict { entity_path: e.to_string(), configured: c.to_string() }),
            (Some(e), _) => Ok(e),
            (None, Some(c)) => Ok(c),
            (None, None) => Err(ConnectionStringError::NoHubName),
        }
    }
}

/// A key name as an error may show it: names are short words; anything else
/// may be a pasted key (`KEYVALUE=` parses as the name `KEYVALUE`), so it is
/// not echoed.
fn shown_name(k: &str) -> String {
    if k.len() <= 24 && k.chars().all(|c| c.is_ascii_alphabetic()) {
        k.to_string()
    } else {
        "(a name that may be a key; not shown)".to_string()
    }
}

fn non_empty(v: Option<String>, name: &'static str) -> Result<String, ConnectionStringError> {
    match v {
        None => Err(ConnectionStringError::Missing(name)),
        Some(v) if v.is_empty() => Err(ConnectionStringError::Empty(name)),
        Some(v) => Ok(v),
    }
}

/// `sb://host[:port][/]` -> (host, port). The scheme may also be `https://`
/// or `amqps://` (seen in tooling output); anything after the first `/` of the
/// path must be empty.
fn parse_endpoint(e: &str) -> Result<(String, Option<u16>), ConnectionStringError> {
    if e.is_empty() {
        return Err(ConnectionStringError::Empty("Endpoint"));
    }
    let lower = e.to_ascii_lowercase();
    let rest = ["sb://", "https://", "amqps://"]
        .iter()
        .find(|p| lower.starts_with(*p))
        .map(|p| &e[p.len()..])
        .ok_or(ConnectionStringError::BadEndpoint("it does not start with sb://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() {
        return Err(ConnectionStringError::BadEndpoint("it has a path after the host; the event hub goes in EntityPath"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| ConnectionStringError::BadEndpoint("its port is not a number"))?)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(ConnectionStringError::BadEndpoint("it has no host name"));
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(ConnectionStringError::BadEndpoint("its host name has characters other than letters, digits, `-` and `.`"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "3r0W9jqQ7l1rM5Qm0yHc0lW3JbV5C5dX2nZ6rUeTfJo=";

    #[test]
    fn parses_a_portal_connection_string_keeping_key_padding() {
        let cs = EventHubsConnectionString::parse(&format!(
            "Endpoint=sb://contoso-ns.servicebus.windows.net/;SharedAccessKeyName=send-only;SharedAccessKey={KEY};EntityPath=vitals"
        ))
        .unwrap();
        assert_eq!(cs.namespace_host, "contoso-ns.servicebus.windows.net");
        assert_eq!(cs.port, None);
        assert_eq!(cs.key_name, "send-only");
        assert_eq!(cs.key, KEY);
        assert_eq!(cs.entity_path.as_deref(), Some("vitals"));
        assert_eq!(cs.hub_name(None), Ok("vitals"));
        assert_eq!(cs.hub_name(Some("vitals")), Ok("vitals"));
        assert!(matches!(cs.hub_name(Some("other")), Err(ConnectionStringError::HubNameConflict { .. })));
    }

    #[test]
    fn namespace_string_takes_the_hub_from_config_and_an_emulator_port() {
        let cs =
            EventHubsConnectionString::parse(&format!(" endpoint=sb://127.0.0.1:5671 ; sharedaccesskeyname=k ; sharedaccesskey={KEY} ;")).unwrap();
        assert_eq!((cs.namespace_host.as_str(), cs.port), ("127.0.0.1", Some(5671)));
        assert_eq!(cs.hub_name(Some("vitals")), Ok("vitals"));
        assert_eq!(cs.hub_name(None), Err(ConnectionStringError::NoHubName));
    }

    #[test]
    fn each_error_names_the_part_and_never_the_key() {
        let p = EventHubsConnectionString::parse;
        assert_eq!(p(&format!("SharedAccessKeyName=k;SharedAccessKey={KEY}")), Err(ConnectionStringError::Missing("Endpoint")));
        assert_eq!(p(&format!("Endpoint=sb://a.b/;SharedAccessKey={KEY}")), Err(ConnectionStringError::Missing("SharedAccessKeyName")));
        assert_eq!(p("Endpoint=sb://a.b/;SharedAccessKeyName=k"), Err(ConnectionStringError::Missing("SharedAccessKey")));
        assert_eq!(p("Endpoint=sb://a.b/;SharedAccessKeyName=k;SharedAccessKey="), Err(ConnectionStringError::Empty("SharedAccessKey")));
        assert_eq!(
            p(&format!("Endpoint=sb://a.b/;SharedAccessKeyName=k;SharedAccessKey={KEY};EntityPath=")),
            Err(ConnectionStringError::Empty("EntityPath"))
        );
        assert_eq!(p("Endpoint=sb://a.b/;Nonsense"), Err(ConnectionStringError::NoEquals(2)));
        assert_eq!(p("Endpoint=sb://a.b/;endpoint=sb://c.d/"), Err(ConnectionStringError::Duplicate("endpoint".into())));
        assert_eq!(p("Endpoint=sb://a.b/;HostName=x"), Err(ConnectionStringError::UnknownKey("HostName".into())));
        // A key pasted without its name parses as an unknown name: not echoed.
        let e = p(&format!("Endpoint=sb://a.b/;SharedAccessKeyName=k;{KEY}")).unwrap_err();
        assert!(matches!(e, ConnectionStringError::UnknownKey(_)) && !e.to_string().contains(KEY.trim_end_matches('=')), "{e}");
        assert!(matches!(p(&format!("Endpoint=a.b;SharedAccessKeyName=k;SharedAccessKey={KEY}")), Err(ConnectionStringError::BadEndpoint(_))));
        assert!(matches!(
            p(&format!("Endpoint=sb://a.b/hub;SharedAccessKeyName=k;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::BadEndpoint(_))
        ));
        assert!(matches!(
            p(&format!("Endpoint=sb://a.b:x/;SharedAccessKeyName=k;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::BadEndpoint(_))
        ));
        assert_eq!(p("Endpoint=sb://a.b/;SharedAccessSignature=SharedAccessSignature sr=x"), Err(ConnectionStringError::SignatureOnly));
        // A bad endpoint next to a real key: the message names Endpoint, not the key.
        let e = p(&format!("Endpoint=sb://a b/;SharedAccessKeyName=k;SharedAccessKey={KEY}")).unwrap_err();
        assert!(!e.to_string().contains(KEY), "{e}");
    }

    #[test]
    fn debug_redacts_the_key() {
        let cs = EventHubsConnectionString::parse(&format!("Endpoint=sb://a.b/;SharedAccessKeyName=k;SharedAccessKey={KEY}")).unwrap();
        let d = format!("{cs:?}");
        assert!(!d.contains(KEY) && d.contains("<redacted>"), "{d}");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_never_echoes_the_key(s in ".{0,200}", key in "[A-Za-z0-9+/]{32,43}={0,1}") {
            let _ = EventHubsConnectionString::parse(&s);
            let with_key = format!("{s};SharedAccessKey={key}");
            if let Err(e) = EventHubsConnectionString::parse(&with_key) {
                prop_assert!(!e.to_string().contains(&key));
            }
            let bare = format!("{s};{key}");
            if let Err(e) = EventHubsConnectionString::parse(&bare) {
                prop_assert!(!e.to_string().contains(key.trim_end_matches('=')));
            }
        }
    }
}
