//! `[sink.eventhubs]`: Azure Event Hubs over HTTPS (see src/sinks/eventhubs/
//! and docs/eventhubs.md).
//!
//! Exactly one identity:
//! - `connection_string` (SAS: `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`);
//! - Microsoft Entra ID client credentials: `namespace`, `tenant`,
//!   `client_id` and either `client_secret` or `client_certificate_file` +
//!   `client_key_file` (for namespaces with local authentication disabled);
//! - `token_file`: a bearer token another process (a managed identity
//!   helper) keeps current, with `namespace`.
//!
//! Secrets come from a file, an environment variable or (for trials) the
//! file itself, as for IoT Hub ([`Secret`]).
//!
//! The keys are written side by side ([`RawEventHubs`]); validation turns
//! them into one [`EventHubsIdentity`], so the sink never decides again which
//! identity a table meant.

use super::secret::{RawSecret, Secret};
use super::units::{self, ByteSize};
use super::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The validated `[sink.eventhubs]` table.
#[derive(Debug, Clone)]
pub struct EventHubsSinkConfig {
    /// Who the gateway is to the namespace, and which event hub it sends to.
    pub(crate) identity: EventHubsIdentity,
    /// An extra CA certificate file (PEM) to trust besides the system roots
    /// (a TLS-inspecting proxy's CA, or the local emulator's CA).
    pub ca_file: Option<PathBuf>,
    /// The namespace's tier, which sets the publication limit: `standard`
    /// (also premium and dedicated: 1 MB) or `basic` (256 KB).
    pub(crate) tier: EventHubsTier,
    /// A lower limit on one request's body than the tier's (4 KiB up to the tier's limit).
    pub(crate) max_request_bytes: Option<ByteSize>,
    /// Application properties (`UserProperties`) added to every event.
    pub user_properties: BTreeMap<String, String>,
    /// Lifetime of each SAS token; a new one is made at 80 % of it (and at
    /// least 2 min before expiry for long tokens).
    pub(crate) token_ttl: Duration,
    /// How long one request may take before it is abandoned and retried.
    pub(crate) request_timeout: Duration,
    /// Requests awaiting their answer at once (each on its own kept-alive
    /// connection; 1 keeps one connection).
    pub max_in_flight: usize,
    /// Events (messages, one device each) one batch request may carry, 1 to
    /// [`MAX_EVENTS_PER_REQUEST`]; default [`DEFAULT_EVENTS_PER_REQUEST`].
    /// Several go together only when several full messages of one device
    /// wait (a backlog drain); the request stays within the size limit.
    pub max_events_per_request: usize,
}

/// The one identity of a valid table.
#[derive(Debug, Clone)]
pub(crate) enum EventHubsIdentity {
    /// `connection_string`: a namespace or event hub connection string with a
    /// SharedAccessKey (policy with the Send right); the namespace comes from
    /// its `Endpoint`, the event hub from its `EntityPath` or `event_hub`.
    SharedAccessKey { connection_string: Secret, event_hub: Option<String> },
    /// Microsoft Entra ID client credentials (`tenant`, `client_id`, and a
    /// client secret or certificate).
    Entra {
        target: EventHubsTarget,
        /// The tenant (directory id or domain).
        tenant: String,
        /// The application (client) id.
        client_id: String,
        /// `https://login.microsoftonline.com` by default;
        /// `https://login.microsoftonline.us` and others for sovereign clouds.
        authority_host: String,
        credential: EntraClientCredential,
    },
    /// `token_file`: a file holding a current Entra ID access token (re-read
    /// when it changes), kept current by another process.
    TokenFile { target: EventHubsTarget, token_file: PathBuf },
}

/// Where events go when the identity does not name it: `namespace` (host,
/// optionally `host:port`) and `event_hub`.
#[derive(Debug, Clone)]
pub(crate) struct EventHubsTarget {
    pub(crate) namespace: String,
    pub(crate) event_hub: String,
}

/// How the gateway proves itself to Microsoft Entra ID.
#[derive(Debug, Clone)]
pub(crate) enum EntraClientCredential {
    /// `client_secret`.
    Secret(Secret),
    /// `client_certificate_file` (PEM, uploaded to the app registration) and
    /// `client_key_file` (its RSA private key, PEM).
    Certificate { cert_file: PathBuf, key_file: PathBuf },
}

impl EventHubsIdentity {
    /// The secret this identity reads, with its config key.
    pub(crate) fn secret(&self) -> Option<(&'static str, &Secret)> {
        match self {
            EventHubsIdentity::SharedAccessKey { connection_string, .. } => Some(("sink.eventhubs.connection_string", connection_string)),
            EventHubsIdentity::Entra { credential: EntraClientCredential::Secret(s), .. } => Some(("sink.eventhubs.client_secret", s)),
            EventHubsIdentity::Entra { .. } | EventHubsIdentity::TokenFile { .. } => None,
        }
    }
}

/// The `[sink.eventhubs]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEventHubs {
    #[serde(default)]
    pub(crate) connection_string: Option<RawSecret>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) event_hub: Option<String>,
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    #[serde(default)]
    pub(crate) client_secret: Option<RawSecret>,
    #[serde(default)]
    pub(crate) client_certificate_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) client_key_file: Option<PathBuf>,
    #[serde(default = "default_authority_host")]
    pub(crate) authority_host: String,
    #[serde(default)]
    pub(crate) token_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) tier: EventHubsTier,
    #[serde(default)]
    pub(crate) max_request_bytes: Option<ByteSize>,
    #[serde(default)]
    pub(crate) user_properties: BTreeMap<String, String>,
    #[serde(default = "default_token_ttl", with = "units::duration")]
    pub(crate) token_ttl: Duration,
    #[serde(default = "default_request_timeout", with = "units::duration")]
    pub(crate) request_timeout: Duration,
    #[serde(default = "default_max_in_flight")]
    pub(crate) max_in_flight: usize,
    #[serde(default = "default_max_events_per_request")]
    pub(crate) max_events_per_request: usize,
}

/// The namespace tier (Azure docs "Event Hubs quotas and limits").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventHubsTier {
    /// Standard, Premium, Dedicated: 1 MB per publication.
    #[default]
    Standard,
    /// Basic: 256 KB per publication.
    Basic,
}

/// Which kind of identity a valid table describes.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventHubsAuth {
    SharedAccessKey,
    EntraSecret,
    EntraCertificate,
    TokenFile,
}

/// Microsoft Entra ID's authority host in the public cloud.
pub(crate) const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Publication limits (Azure docs "Event Hubs quotas and limits").
pub(crate) const STANDARD_TIER_LIMIT: usize = 1024 * 1024;
pub(crate) const BASIC_TIER_LIMIT: usize = 256 * 1024;

fn default_authority_host() -> String {
    DEFAULT_AUTHORITY_HOST.to_string()
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_in_flight() -> usize {
    1
}

/// Default events per batch request. Ten cut a backlog drain's round trips
/// about tenfold while each event stays one message (at most
/// `[forwarder] batch_max_readings` and `batch_max_bytes`, 64 KiB by
/// default) for consumers such as MedTech;
/// the event count and the bill (per event, in 64 KB units) are the same
/// whichever way the events are grouped. IoT Edge's hub sends upstream in
/// batches of 10 too (`MaxUpstreamBatchSize`).
pub(crate) const DEFAULT_EVENTS_PER_REQUEST: usize = 10;
/// Most events per batch request the option allows (the tier's byte limit
/// applies in any case; a throughput unit takes 1000 events/s).
pub(crate) const MAX_EVENTS_PER_REQUEST: usize = 100;

fn default_max_events_per_request() -> usize {
    DEFAULT_EVENTS_PER_REQUEST
}

impl EventHubsSinkConfig {
    /// A config around one SAS connection string (for tests and tools).
    pub fn with_connection_string(cs: &str) -> EventHubsSinkConfig {
        EventHubsSinkConfig {
            identity: EventHubsIdentity::SharedAccessKey { connection_string: Secret::Value(cs.to_string()), event_hub: None },
            ca_file: None,
            tier: EventHubsTier::Standard,
            max_request_bytes: None,
            user_properties: BTreeMap::new(),
            token_ttl: default_token_ttl(),
            request_timeout: default_request_timeout(),
            max_in_flight: default_max_in_flight(),
            max_events_per_request: default_max_events_per_request(),
        }
    }

    /// The kind of identity this table describes.
    #[cfg(test)]
    pub(crate) fn auth(&self) -> EventHubsAuth {
        match &self.identity {
            EventHubsIdentity::SharedAccessKey { .. } => EventHubsAuth::SharedAccessKey,
            EventHubsIdentity::TokenFile { .. } => EventHubsAuth::TokenFile,
            EventHubsIdentity::Entra { credential: EntraClientCredential::Secret(_), .. } => EventHubsAuth::EntraSecret,
            EventHubsIdentity::Entra { credential: EntraClientCredential::Certificate { .. }, .. } => EventHubsAuth::EntraCertificate,
        }
    }

    /// The largest request body: the tier's limit, or `max_request_bytes`.
    pub(crate) fn max_request_bytes(&self) -> usize {
        let tier = match self.tier {
            EventHubsTier::Standard => STANDARD_TIER_LIMIT,
            EventHubsTier::Basic => BASIC_TIER_LIMIT,
        };
        self.max_request_bytes.map_or(tier, |b| (b.bytes() as usize).min(tier))
    }
}

impl RawEventHubs {
    /// The table checked and converted into its one identity. Problems' keys
    /// are relative to `sink.eventhubs`.
    pub(crate) fn validate(self) -> Result<EventHubsSinkConfig, Vec<Problem>> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        // `problems` found none: each key the identity needs is there. A key
        // missing all the same is named, never assumed.
        let missing = |key: &str| vec![(key.to_string(), format!("set `{key}`"))];
        let identity = if let Some(cs) = self.connection_string {
            let connection_string = Secret::try_from(cs).map_err(|e| vec![("connection_string".to_string(), e.to_string())])?;
            EventHubsIdentity::SharedAccessKey { connection_string, event_hub: self.event_hub }
        } else {
            let target = EventHubsTarget {
                namespace: self.namespace.ok_or_else(|| missing("namespace"))?,
                event_hub: self.event_hub.ok_or_else(|| missing("event_hub"))?,
            };
            if let Some(token_file) = self.token_file {
                EventHubsIdentity::TokenFile { target, token_file }
            } else {
                let credential = match (self.client_secret, self.client_certificate_file, self.client_key_file) {
                    (Some(s), None, None) => {
                        EntraClientCredential::Secret(Secret::try_from(s).map_err(|e| vec![("client_secret".to_string(), e.to_string())])?)
                    }
                    (None, Some(cert_file), Some(key_file)) => EntraClientCredential::Certificate { cert_file, key_file },
                    _ => return Err(missing("client_secret")),
                };
                EventHubsIdentity::Entra {
                    target,
                    tenant: self.tenant.ok_or_else(|| missing("tenant"))?,
                    client_id: self.client_id.ok_or_else(|| missing("client_id"))?,
                    authority_host: self.authority_host,
                    credential,
                }
            }
        };
        Ok(EventHubsSinkConfig {
            identity,
            ca_file: self.ca_file,
            tier: self.tier,
            max_request_bytes: self.max_request_bytes,
            user_properties: self.user_properties,
            token_ttl: self.token_ttl,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            max_events_per_request: self.max_events_per_request,
        })
    }

    /// Problems with this table, as `(key path relative to sink.eventhubs,
    /// explanation)`, in the order they are reported.
    fn problems(&self) -> Vec<Problem> {
        let mut errs = Vec::new();
        let mut push = |k: &str, m: String| errs.push((k.to_string(), m));
        let entra = self.tenant.is_some() || self.client_id.is_some() || self.client_secret.is_some() || self.client_certificate_file.is_some();
        let identities = self.connection_string.is_some() as u8 + entra as u8 + self.token_file.is_some() as u8;
        if identities == 0 {
            push(
                "connection_string",
                "set one identity: `connection_string` (SAS key), `tenant` + `client_id` + `client_secret` or `client_certificate_file` \
                 (Microsoft Entra ID), or `token_file`"
                    .into(),
            );
        } else if identities > 1 {
            let at = if self.token_file.is_some() { "token_file" } else { "tenant" };
            push(at, "set only one identity: `connection_string`, the Entra ID keys (`tenant`, `client_id`, ...) or `token_file`".into());
        }
        if let Some(cs) = &self.connection_string {
            if Secret::try_from(cs.clone()).is_err() {
                push("connection_string", "set exactly one of `file`, `env` or `value` for the connection string".into());
            }
            if self.namespace.is_some() {
                push("namespace", "the namespace comes from the connection string's Endpoint; remove `namespace`".into());
            }
        }
        if (entra || self.token_file.is_some()) && self.connection_string.is_none() {
            match &self.namespace {
                None => push(
                    if self.token_file.is_some() { "token_file" } else { "tenant" },
                    "Microsoft Entra ID and `token_file` need `namespace` (such as \"contoso.servicebus.windows.net\")".into(),
                ),
                Some(n) if !valid_namespace(n) => push(
                    "namespace",
                    "the namespace is a host name such as \"contoso.servicebus.windows.net\" (optionally with `:port`), without scheme or path"
                        .into(),
                ),
                _ => {}
            }
            if self.event_hub.as_deref().is_none_or(|h| h.trim().is_empty()) {
                push("event_hub", "set `event_hub`, the event hub's name".into());
            }
        }
        if entra && identities == 1 {
            if self.tenant.as_deref().is_none_or(|t| t.trim().is_empty()) {
                push("tenant", "Microsoft Entra ID needs `tenant` (the directory id or domain)".into());
            }
            if self.client_id.as_deref().is_none_or(|t| t.trim().is_empty()) {
                push("client_id", "Microsoft Entra ID needs `client_id` (the app registration's application id)".into());
            }
            match (&self.client_secret, &self.client_certificate_file) {
                (Some(_), Some(_)) => push("client_secret", "set either `client_secret` or `client_certificate_file`, not both".into()),
                (None, None) => push("client_id", "Microsoft Entra ID needs `client_secret` or `client_certificate_file` + `client_key_file`".into()),
                (Some(s), None) => {
                    if Secret::try_from(s.clone()).is_err() {
                        push("client_secret", "set exactly one of `file`, `env` or `value` for the client secret".into());
                    }
                }
                (None, Some(_)) => {}
            }
            if let Some(t) = &self.tenant {
                if !t.trim().is_empty() && !t.trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                    push("tenant", "a tenant is a directory id (GUID) or a domain: letters, digits, `-` and `.`".into());
                }
            }
            let host = self.authority_host.trim().trim_end_matches('/');
            if host.strip_prefix("https://").is_none_or(|h| !valid_namespace(h)) {
                push(
                    "authority_host",
                    "the authority host is `https://` and a host name only, such as \"https://login.microsoftonline.com\" \
                     (\"https://login.microsoftonline.us\" for US Government)"
                        .into(),
                );
            }
        }
        if self.client_certificate_file.is_some() != self.client_key_file.is_some() {
            push("client_certificate_file", "a certificate credential needs both `client_certificate_file` and `client_key_file`".into());
        }
        if let Some(h) = &self.event_hub {
            if h.trim().is_empty() || h.len() > 256 || h.chars().any(|c| c.is_control() || c == '/' || c == '?' || c == '#') {
                push("event_hub", "an event hub name is letters, digits, `.`, `_` and `-` (no `/`)".into());
            }
        }
        if let Some(b) = self.max_request_bytes {
            let (tier, name) = match self.tier {
                EventHubsTier::Basic => (256 * 1024, "basic"),
                EventHubsTier::Standard => (1024 * 1024, "standard"),
            };
            let default = units::format_bytes(tier);
            if let Some(m) = units::out_of_range("max_request_bytes", b.bytes().into(), 4096, tier, units::Unit::Bytes, &default) {
                push("max_request_bytes", format!("{m} (the {name} tier accepts at most {default} per request)"));
            }
        }
        const DAY: u128 = 86_400_000;
        if let Some(m) = units::out_of_range("token_ttl", self.token_ttl.as_millis(), 2000, 365 * DAY, units::Unit::Duration, "1h") {
            push("token_ttl", m);
        }
        if let Some(m) = units::out_of_range("request_timeout", self.request_timeout.as_millis(), 1000, 600_000, units::Unit::Duration, "60s") {
            push("request_timeout", m);
        }
        if let Some(m) = units::out_of_range("max_in_flight", self.max_in_flight as u128, 1, 64, units::Unit::Count, "1") {
            push("max_in_flight", m);
        }
        let (most, default) = (MAX_EVENTS_PER_REQUEST as u128, DEFAULT_EVENTS_PER_REQUEST.to_string());
        if let Some(m) = units::out_of_range("max_events_per_request", self.max_events_per_request as u128, 1, most, units::Unit::Count, &default) {
            push("max_events_per_request", m);
        }
        for (k, v) in &self.user_properties {
            if k.is_empty() || k.chars().chain(v.chars()).any(char::is_control) {
                push("user_properties", "user property names must be non-empty, and names and values without control characters".into());
                break;
            }
        }
        errs
    }
}

/// `host` or `host:port`: letters, digits, `-`, `.`.
fn valid_namespace(n: &str) -> bool {
    let (host, port) = match n.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (n, None),
    };
    !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RawEventHubs {
        toml::from_str(s).unwrap()
    }
    /// The keys of the problems of a table as written (none: it converts).
    fn keys(c: &RawEventHubs) -> Vec<String> {
        c.clone().validate().err().unwrap_or_default().into_iter().map(|(k, _)| k).collect()
    }
    fn valid(c: &RawEventHubs) -> EventHubsSinkConfig {
        c.clone().validate().unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn each_identity_validates_alone() {
        let sas = parse("connection_string = { env = \"EH_CS\" }\nevent_hub = \"vitals\"\ntier = \"basic\"\nuser_properties = { site = \"ward-3\" }");
        assert!(keys(&sas).is_empty(), "{:?}", keys(&sas));
        assert_eq!((valid(&sas).auth(), valid(&sas).max_request_bytes()), (EventHubsAuth::SharedAccessKey, 256 * 1024));
        let secret = parse(
            "namespace = \"ns.servicebus.windows.net\"\nevent_hub = \"vitals\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = { file = \"/etc/s\" }",
        );
        assert!(keys(&secret).is_empty(), "{:?}", keys(&secret));
        assert_eq!(valid(&secret).auth(), EventHubsAuth::EntraSecret);
        let cert = parse(
            "namespace = \"ns.servicebus.windows.net\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"app\"\nclient_certificate_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"\nauthority_host = \"https://login.microsoftonline.us\"",
        );
        assert!(keys(&cert).is_empty(), "{:?}", keys(&cert));
        assert_eq!(valid(&cert).auth(), EventHubsAuth::EntraCertificate);
        let file = parse("namespace = \"127.0.0.1:8443\"\nevent_hub = \"v\"\ntoken_file = \"/run/t\"\nmax_request_bytes = \"64KiB\"");
        assert!(keys(&file).is_empty(), "{:?}", keys(&file));
        assert_eq!((valid(&file).auth(), valid(&file).max_request_bytes()), (EventHubsAuth::TokenFile, 65536));
    }

    #[test]
    fn mistakes_are_named_by_key() {
        assert_eq!(keys(&parse("event_hub = \"v\"")), ["connection_string"]);
        assert!(keys(&parse("connection_string = { env = \"A\" }\ntoken_file = \"/t\"\nnamespace = \"n\"\nevent_hub = \"v\""))
            .contains(&"token_file".into()));
        assert_eq!(keys(&parse("token_file = \"/t\"\nevent_hub = \"v\"")), ["token_file"]);
        assert_eq!(keys(&parse("token_file = \"/t\"\nnamespace = \"sb://n/\"\nevent_hub = \"v\"")), ["namespace"]);
        assert_eq!(keys(&parse("namespace = \"n\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"")), ["client_id"]);
        assert_eq!(
            keys(&parse("namespace = \"n\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = { env = \"S\" }\nauthority_host = \"http://x\"")),
            ["authority_host"]
        );
        assert_eq!(
            keys(&parse("namespace = \"n\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_certificate_file = \"/c\"")),
            ["client_certificate_file"]
        );
        let cs = "connection_string = { value = \"Endpoint=sb://n.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=a2V5\" }";
        assert!(keys(&parse(&format!("{cs}\nevent_hub = \"v\""))).is_empty());
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nmax_request_bytes = \"2MiB\""))), ["max_request_bytes"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nmax_in_flight = 0"))), ["max_in_flight"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nmax_events_per_request = 0"))), ["max_events_per_request"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nmax_events_per_request = 101"))), ["max_events_per_request"]);
        assert_eq!(valid(&parse(&format!("{cs}\nevent_hub = \"v\""))).max_events_per_request, 10);
        assert_eq!(valid(&parse(&format!("{cs}\nevent_hub = \"v\"\nmax_events_per_request = 1"))).max_events_per_request, 1);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\ntoken_ttl = \"1s\""))), ["token_ttl"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nrequest_timeout = \"20min\""))), ["request_timeout"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"a/b\""))), ["event_hub"]);
        assert_eq!(keys(&parse(&format!("{cs}\nevent_hub = \"v\"\nuser_properties = {{ \"\" = \"x\" }}"))), ["user_properties"]);
        assert!(toml::from_str::<RawEventHubs>("tier = \"gold\"").is_err());
        assert!(toml::from_str::<RawEventHubs>("bogus = 1").is_err());
    }
}
