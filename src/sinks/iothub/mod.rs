//! Azure IoT Hub sink: a small IoT Hub device layer on rumqttc.
//!
//! - [`connection_string`], [`sas`], [`topics`]: pure protocol pieces.
//! - [`session`]: the MQTT session (event loop task, PUBACK matching, token
//!   renewal, reconnects with jittered backoff).
//! - [`twin`], [`desired`], [`control`]: device twin and direct methods, and the
//!   [`GatewayControl`] interface the runtime provides.
//! - [`dps`]: Device Provisioning Service with symmetric keys.
//!
//! [`IotHubSink::send`] returns `Ok` only when the hub's PUBACK for that
//! message arrived. If the connection drops first, the message is published
//! again (same `$.mid`) once reconnected, so delivery is at-least-once and a
//! duplicate carries the same id.

pub mod connection_string;
pub(crate) mod control;
pub mod desired;
pub mod dps;
pub(crate) mod error;
pub mod sas;
pub mod session;
pub mod tls;
pub(crate) mod topics;
pub mod twin;

pub(crate) use control::GatewayControl;
pub use control::SimpleControl;

use crate::config::iothub::{IotHubIdentity, IotHubSinkConfig, IotHubTransport};
use crate::config::Secret;
use crate::model::Message;
use crate::sinks::{Sink, SinkError};
use async_trait::async_trait;
use connection_string::ConnectionString;
pub(crate) use error::IotHubError;
use session::{HubSession, Identity, IdentitySource, MqttLinkState, SessionOptions, TransportKind, Tuning};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// IoT Hub's limit on one message: body + property names and values.
pub(crate) const IOTHUB_MAX_MESSAGE: usize = 256 * 1024;
/// Room kept for the property bag and topic when telling the forwarder how
/// large a body may be (system properties, a 128-character id, creation time).
const BAG_RESERVE: usize = 1024;
/// How errors name the connection string and its setting.
const CONNECTION_STRING: &str = "the IoT Hub connection string (sink.iothub.connection_string)";

/// Publishes allowed for twin and method traffic on top of telemetry.
const CONTROL_SLOTS: usize = 8;

/// Builds the IoT Hub sink for the runtime from its config table.
pub(crate) async fn build(cfg: &IotHubSinkConfig, state_dir: &Path, control: Arc<dyn GatewayControl>) -> Result<Arc<dyn Sink>, IotHubError> {
    Ok(Arc::new(IotHubSink::start(cfg, state_dir, control, Tuning::default())?))
}

/// Reads the connection string anew before each connection attempt, so a
/// corrected file is picked up without a restart.
struct ConnStringIdentity {
    source: Secret,
    gateway: Option<String>,
    default_port: u16,
}

#[async_trait]
impl IdentitySource for ConnStringIdentity {
    async fn current(&self) -> Result<Identity, IotHubError> {
        let raw = self.source.resolve().map_err(|cause| IotHubError::ReadSecret { what: CONNECTION_STRING, cause })?;
        let mut cs = ConnectionString::parse(&raw).map_err(IotHubError::MalformedConnectionString)?;
        if let Some(g) = &self.gateway {
            cs.gateway_host_name = Some(g.clone());
        }
        Ok(Identity::from_connection_string(&cs, self.default_port))
    }
}

/// The IoT Hub sink.
pub struct IotHubSink {
    session: Arc<HubSession>,
    window: Semaphore,
    max_in_flight: usize,
    app_props: Vec<(String, String)>,
    ack_timeout: Duration,
    connect_wait: Duration,
    twin_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    max_body: usize,
    /// A PUBACK timeout was logged and no message was confirmed since: the
    /// concurrent sends that time out with it are logged at debug (one line per episode).
    ack_timeouts: crate::logging::SharedEpisode,
}

impl IotHubSink {
    /// Starts the session (it connects in the background) and the twin task.
    /// `cfg` is validated ([`crate::config`]); what can fail here is on this
    /// machine or in the secrets (a CA file, a connection string that does
    /// not parse).
    pub fn start(cfg: &IotHubSinkConfig, state_dir: &Path, control: Arc<dyn GatewayControl>, tuning: Tuning) -> Result<IotHubSink, IotHubError> {
        let client_auth = cfg.client_certificate.as_ref().map(|c| (c.cert_file.as_path(), c.key_file.as_path()));
        let tls = tls::client_config(true, cfg.ca_file.as_deref(), client_auth)?;
        let default_port = match cfg.transport {
            IotHubTransport::Mqtt => 8883,
            IotHubTransport::Websocket => 443,
        };
        let source: Arc<dyn IdentitySource> = match &cfg.identity {
            IotHubIdentity::Dps(d) => Arc::new(dps::DpsIdentity::new(
                d.endpoint.clone(),
                d.id_scope.clone(),
                d.registration_id.clone(),
                d.key.clone(),
                tls.clone(),
                cfg.gateway_host_name.clone(),
                default_port,
                state_dir,
            )),
            IotHubIdentity::ConnectionString(source) => {
                // Fail early on a malformed string; later reads happen before each connection.
                let raw = source.resolve().map_err(|cause| IotHubError::ReadSecret { what: CONNECTION_STRING, cause })?;
                ConnectionString::parse(&raw).map_err(IotHubError::MalformedConnectionString)?;
                Arc::new(ConnStringIdentity { source: source.clone(), gateway: cfg.gateway_host_name.clone(), default_port })
            }
        };
        let transport = match cfg.transport {
            IotHubTransport::Mqtt => TransportKind::Mqtt,
            IotHubTransport::Websocket => TransportKind::Websocket { proxy: proxy_settings(cfg)? },
        };
        let max_in_flight = cfg.max_in_flight.max(1);
        let opts = SessionOptions {
            transport,
            tls,
            keep_alive: cfg.keep_alive,
            token_ttl: cfg.token_ttl,
            max_in_flight: max_in_flight + CONTROL_SLOTS,
            tuning: tuning.clone(),
        };
        let session = Arc::new(HubSession::start(opts, source));
        let store = Arc::new(desired::DesiredStore::open(state_dir, control.as_ref()));
        let twin_task = tokio::spawn(twin::run(session.clone(), control, store, tuning.report_every));
        let app_props: Vec<(String, String)> = cfg.application_properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let app_len: usize = app_props.iter().map(|(k, v)| urlencoding::encode(k).len() + urlencoding::encode(v).len() + 2).sum();
        Ok(IotHubSink {
            session,
            window: Semaphore::new(max_in_flight),
            max_in_flight,
            app_props,
            ack_timeout: cfg.ack_timeout,
            connect_wait: tuning.connect_wait,
            twin_task: std::sync::Mutex::new(Some(twin_task)),
            max_body: IOTHUB_MAX_MESSAGE.saturating_sub(BAG_RESERVE + app_len),
            ack_timeouts: Default::default(),
        })
    }

    /// The MQTT session (for status and tests).
    pub fn session(&self) -> &Arc<HubSession> {
        &self.session
    }

    /// The property bag of a message, in wire order.
    pub fn properties(&self, m: &Message) -> Vec<(String, String)> {
        let mut p = vec![
            ("$.mid".to_string(), m.message_id.clone()),
            ("$.ct".to_string(), "application/json".to_string()),
            ("$.ce".to_string(), "utf-8".to_string()),
        ];
        if let Some(t) = m.earliest_time() {
            p.push(("iothub-creation-time-utc".to_string(), crate::model::time::format(&t)));
        }
        p.extend(self.app_props.iter().cloned());
        p
    }

    /// Waits until connected; on timeout, turns the link state into the error the forwarder should see.
    async fn wait_connected(&self) -> Result<u64, SinkError> {
        let mut rx = self.session.state();
        let res = tokio::time::timeout(self.connect_wait, async {
            loop {
                if let MqttLinkState::Connected { generation } = *rx.borrow_and_update() {
                    return Some(generation);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        if let Ok(Some(g)) = res {
            return Ok(g);
        }
        let state = rx.borrow().clone();
        Err(match state {
            MqttLinkState::Refused { detail } => SinkError::FatalAuth(detail),
            MqttLinkState::Down { detail, server_closed: true, retry_in } => SinkError::Throttled { retry_after: Some(retry_in), detail },
            MqttLinkState::Down { detail, .. } => SinkError::Retryable(detail),
            MqttLinkState::Closed => SinkError::Retryable("the IoT Hub sink is closed".into()),
            _ => SinkError::Retryable("not connected to IoT Hub yet".into()),
        })
    }
}

#[async_trait]
impl Sink for IotHubSink {
    fn name(&self) -> &'static str {
        "iothub"
    }

    fn max_message_bytes(&self) -> usize {
        self.max_body
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    async fn send(&self, message: &Message) -> Result<(), SinkError> {
        let body = message.to_json();
        let props = self.properties(message);
        let counted: usize = body.len()
            + props.iter().filter(|(k, _)| !k.starts_with("$.")).map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + props.iter().filter(|(k, _)| k.starts_with("$.")).map(|(_, v)| v.len()).sum::<usize>();
        if counted > IOTHUB_MAX_MESSAGE {
            return Err(SinkError::TooLarge(format!("{counted} bytes with properties; IoT Hub accepts {IOTHUB_MAX_MESSAGE}")));
        }
        let bag = topics::encode_bag(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let _permit = self.window.acquire().await.map_err(|_| SinkError::Retryable("sink closed".into()))?;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if attempts > 6 {
                return Err(SinkError::Retryable("no PUBACK after several reconnections".into()));
            }
            let generation = self.wait_connected().await?;
            let Some((device, module)) = self.session.identity() else { continue };
            let topic = format!("{}{}", topics::telemetry_prefix(&device, module.as_deref()), bag);
            let rx = match self.session.publish(topic, body.clone()) {
                Ok(rx) => rx,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(self.ack_timeout, rx).await {
                Ok(Ok(())) => {
                    self.ack_timeouts.end();
                    return Ok(());
                }
                Ok(Err(_)) => {
                    tracing::debug!("connection ended before the PUBACK of {}; resending", message.message_id);
                }
                Err(_) => {
                    if self.ack_timeouts.occurred() {
                        tracing::warn!("no PUBACK within {:?}; reconnecting to resend (logged once until the hub confirms again)", self.ack_timeout);
                    } else {
                        tracing::debug!("no PUBACK within {:?}; reconnecting to resend", self.ack_timeout);
                    }
                    self.session.force_reconnect(generation);
                }
            }
        }
    }

    async fn close(&self) {
        self.session.close().await;
        let t = self.twin_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            t.abort();
        }
    }
}

/// The proxy of a websocket config, with its credentials read now.
fn proxy_settings(cfg: &IotHubSinkConfig) -> Result<Option<session::ProxySettings>, IotHubError> {
    let Some(proxy) = &cfg.proxy else { return Ok(None) };
    let p = proxy.address.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = connection_string::split_host_port(p, 3128);
    let basic_auth = match &proxy.credentials {
        None => None,
        Some(src) => {
            let raw =
                src.resolve().map_err(|cause| IotHubError::ReadSecret { what: "the proxy credentials (sink.iothub.proxy_credentials)", cause })?;
            let (user, password) = raw.split_once(':').ok_or(IotHubError::ProxyCredentials)?;
            Some((user.to_string(), password.to_string()))
        }
    };
    Ok(Some(session::ProxySettings { host, port, basic_auth }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::iothub::IotHubProxy;

    fn with_proxy(proxy: &str, creds: Option<&str>) -> IotHubSinkConfig {
        let mut c = IotHubSinkConfig::with_connection_string("HostName=h;DeviceId=d;SharedAccessKey=a2V5");
        c.transport = IotHubTransport::Websocket;
        c.proxy = Some(IotHubProxy { address: proxy.into(), credentials: creds.map(|v| Secret::Value(v.into())) });
        c
    }

    #[test]
    fn proxy_settings_and_credentials() {
        let p = proxy_settings(&with_proxy("http://proxy.ward:8080/", None)).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port, p.basic_auth.is_none()), ("proxy.ward", 8080, true));
        let p = proxy_settings(&with_proxy("proxy.ward", Some("nurse:pa:ss"))).unwrap().unwrap();
        assert_eq!(p.port, 3128);
        assert_eq!(p.basic_auth, Some(("nurse".to_string(), "pa:ss".to_string())), "split at the first colon");
        assert!(!format!("{p:?}").contains("pa:ss"), "the password never appears in debug output");
        let e = proxy_settings(&with_proxy("proxy.ward", Some("no-colon"))).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
    }
}
