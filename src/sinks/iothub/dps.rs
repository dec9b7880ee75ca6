//! Device Provisioning Service over MQTT with symmetric keys (individual or
//! group enrollment), and an [`IdentitySource`] that caches the assigned hub
//! in the state directory and provisions again when the hub refuses it.

use super::connection_string::split_host_port;
use super::error::IotHubError;
use super::sas;
use super::session::{Credential, Identity, IdentitySource};
use super::topics::decode_bag;
use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// File name of the cached assignment inside the state directory.
pub const CACHE_FILE: &str = "iothub-dps.json";

/// The DPS API version spoken.
pub(crate) const API_VERSION: &str = "2019-03-31";

/// What DPS assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Assignment {
    pub(crate) id_scope: String,
    pub(crate) registration_id: String,
    pub(crate) assigned_hub: String,
    pub(crate) device_id: String,
}

/// Settings for one registration.
#[derive(Clone)]
pub(crate) struct DpsSettings {
    /// `host[:port]` of DPS.
    pub(crate) endpoint: String,
    pub(crate) id_scope: String,
    pub(crate) registration_id: String,
    /// The device key (already derived for group enrollment).
    pub(crate) device_key: String,
    pub(crate) tls: Arc<ClientConfig>,
    /// Overall limit for one registration.
    pub(crate) timeout: Duration,
}

/// The MQTT username for DPS (no `?`).
pub(crate) fn username(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}/api-version={API_VERSION}")
}

/// The SAS resource for DPS.
pub(crate) fn resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// A DPS answer: status code, request id, retry-after, JSON body.
fn parse_response(topic: &str) -> Option<(u16, String, Option<u64>)> {
    let rest = topic.strip_prefix("$dps/registrations/res/")?;
    let (status, q) = rest.split_once("/?")?;
    let bag = decode_bag(q)?;
    let get = |n: &str| bag.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Some((status.parse().ok()?, get("$rid")?, get("retry-after").and_then(|v| v.parse().ok())))
}

/// Registers once and returns the assignment.
pub(crate) async fn register(s: &DpsSettings) -> Result<Assignment, IotHubError> {
    tokio::time::timeout(s.timeout, register_inner(s)).await.map_err(|e| provisioning(format!("DPS registration timed out: {e}")))?
}

/// A provisioning failure with this text.
fn provisioning(text: impl std::fmt::Display) -> IotHubError {
    IotHubError::Provisioning(text.to_string())
}

async fn register_inner(s: &DpsSettings) -> Result<Assignment, IotHubError> {
    let (host, port) = split_host_port(&s.endpoint, 8883);
    let mut o = MqttOptions::new(s.registration_id.clone(), host, port);
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(s.tls.clone())));
    o.set_clean_session(true);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let expiry = sas::now_unix() + 3600;
    let token = sas::token(&s.device_key, &resource(&s.id_scope, &s.registration_id), expiry, Some("registration"))?;
    o.set_credentials(username(&s.id_scope, &s.registration_id), token);
    let (client, mut ev) = AsyncClient::new(o, 16);
    let mut rid: u64 = 1;
    let mut subscribed = false;
    let result = loop {
        let e = match ev.poll().await {
            Ok(e) => e,
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                break Err(IotHubError::Refused(format!(
                    "DPS refused the registration credentials ({code:?}); check the ID scope, registration id and key"
                )))
            }
            Err(e) => break Err(provisioning(format!("DPS connection failed: {e}"))),
        };
        match e {
            Event::Incoming(Incoming::ConnAck(_)) if !subscribed => {
                subscribed = true;
                client.subscribe("$dps/registrations/res/#", QoS::AtLeastOnce).await.map_err(provisioning)?;
                let body = serde_json::json!({ "registrationId": s.registration_id });
                client
                    .publish(
                        format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}"),
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&body).map_err(provisioning)?,
                    )
                    .await
                    .map_err(provisioning)?;
            }
            Event::Incoming(Incoming::Publish(p)) => {
                let Some((status, r, retry_after)) = parse_response(&p.topic) else { continue };
                if r != rid.to_string() {
                    continue;
                }
                let body: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                let wait = Duration::from_secs(retry_after.unwrap_or(2).clamp(1, 30));
                let op = body.get("operationId").and_then(|v| v.as_str()).map(str::to_string);
                match status {
                    200 | 202 => {
                        let st = body.get("status").and_then(|v| v.as_str()).unwrap_or("");
                        if st == "assigned" {
                            let rs = body.get("registrationState").cloned().unwrap_or_default();
                            let hub = rs.get("assignedHub").and_then(|v| v.as_str()).ok_or_else(|| provisioning("DPS answer lacks assignedHub"))?;
                            let dev = rs.get("deviceId").and_then(|v| v.as_str()).ok_or_else(|| provisioning("DPS answer lacks deviceId"))?;
                            break Ok(Assignment {
                                id_scope: s.id_scope.clone(),
                                registration_id: s.registration_id.clone(),
                                assigned_hub: hub.to_string(),
                                device_id: dev.to_string(),
                            });
                        }
                        if matches!(st, "failed" | "disabled" | "unassigned") {
                            break Err(provisioning(format!(
                                "DPS registration {st}: {}",
                                body.get("registrationState").and_then(|r| r.get("errorMessage")).and_then(|m| m.as_str()).unwrap_or("no detail")
                            )));
                        }
                        let Some(op) = op else { break Err(provisioning("DPS answer lacks operationId")) };
                        tokio::time::sleep(wait).await;
                        rid += 1;
                        client
                            .publish(
                                format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={}", urlencoding::encode(&op)),
                                QoS::AtLeastOnce,
                                false,
                                Vec::new(),
                            )
                            .await
                            .map_err(provisioning)?;
                    }
                    429 | 500..=599 => {
                        tokio::time::sleep(wait).await;
                        rid += 1;
                        let body = serde_json::json!({ "registrationId": s.registration_id });
                        client
                            .publish(
                                format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}"),
                                QoS::AtLeastOnce,
                                false,
                                serde_json::to_vec(&body).map_err(provisioning)?,
                            )
                            .await
                            .map_err(provisioning)?;
                    }
                    other => {
                        break Err(provisioning(format!(
                            "DPS answered {other}: {}",
                            body.get("message").and_then(|m| m.as_str()).unwrap_or("no detail")
                        )))
                    }
                }
            }
            _ => {}
        }
    };
    let _ = client.try_disconnect();
    result
}

/// Where the device key comes from: the config's DPS key (an individual
/// enrollment's key, or a group key the device key is derived from with the
/// registration id).
pub(crate) use crate::config::iothub::DpsKey as KeySource;

/// An [`IdentitySource`] that provisions through DPS, caching the assignment.
pub(crate) struct DpsIdentity {
    pub(crate) endpoint: String,
    pub(crate) id_scope: String,
    pub(crate) registration_id: String,
    pub(crate) key: KeySource,
    pub(crate) tls: Arc<ClientConfig>,
    /// Connect via this host instead of the assigned hub (IoT Edge parent, emulator).
    pub(crate) gateway_host_name: Option<String>,
    pub(crate) default_port: u16,
    pub(crate) cache_path: PathBuf,
    cached: Mutex<Option<Assignment>>,
    /// A refusal was logged and the hub has not accepted an identity since.
    rejected: crate::logging::SharedEpisode,
}

impl DpsIdentity {
    /// Creates the source; reads the cached assignment if it matches.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        endpoint: String,
        id_scope: String,
        registration_id: String,
        key: KeySource,
        tls: Arc<ClientConfig>,
        gateway_host_name: Option<String>,
        default_port: u16,
        state_dir: &std::path::Path,
    ) -> DpsIdentity {
        let cache_path = state_dir.join(CACHE_FILE);
        let cached = std::fs::read(&cache_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Assignment>(&b).ok())
            .filter(|a| a.id_scope == id_scope && a.registration_id == registration_id);
        DpsIdentity {
            endpoint,
            id_scope,
            registration_id,
            key,
            tls,
            gateway_host_name,
            default_port,
            cache_path,
            cached: Mutex::new(cached),
            rejected: Default::default(),
        }
    }

    fn device_key(&self) -> Result<String, IotHubError> {
        Ok(match &self.key {
            KeySource::Individual(s) => {
                s.resolve().map_err(|cause| IotHubError::ReadSecret { what: "the DPS key (sink.iothub.dps.symmetric_key)", cause })?
            }
            KeySource::Group(s) => {
                let group = s.resolve().map_err(|cause| IotHubError::ReadSecret { what: "the DPS group key (sink.iothub.dps.group_key)", cause })?;
                sas::derive_device_key(&group, &self.registration_id)?
            }
        })
    }

    /// The cached assignment, if any.
    pub(crate) fn cached(&self) -> Option<Assignment> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl IdentitySource for DpsIdentity {
    async fn current(&self) -> Result<Identity, IotHubError> {
        let key = self.device_key()?;
        let a = match self.cached() {
            Some(a) => a,
            None => {
                tracing::info!("provisioning through DPS (scope {}, registration {})", self.id_scope, self.registration_id);
                let a = register(&DpsSettings {
                    endpoint: self.endpoint.clone(),
                    id_scope: self.id_scope.clone(),
                    registration_id: self.registration_id.clone(),
                    device_key: key.clone(),
                    tls: self.tls.clone(),
                    timeout: Duration::from_secs(60),
                })
                .await?;
                tracing::info!("DPS assigned hub {} as device {}", a.assigned_hub, a.device_id);
                if let Err(e) = crate::fsutil::write_durable(&self.cache_path, &serde_json::to_vec_pretty(&a).map_err(provisioning)?) {
                    tracing::warn!("cannot cache the DPS assignment in {}: {e}", self.cache_path.display());
                }
                *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.clone());
                a
            }
        };
        if a.assigned_hub.is_empty() || a.device_id.is_empty() {
            return Err(provisioning("the DPS assignment is incomplete"));
        }
        let (connect_host, connect_port) = split_host_port(self.gateway_host_name.as_deref().unwrap_or(&a.assigned_hub), self.default_port);
        Ok(Identity {
            connect_host,
            connect_port,
            hub_host: a.assigned_hub.split(':').next().unwrap_or(&a.assigned_hub).to_string(),
            device_id: a.device_id,
            module_id: None,
            credential: Credential::Key { key, key_name: None },
        })
    }

    async fn rejected(&self) {
        if self.rejected.occurred() {
            tracing::warn!("the assigned hub refused this identity; provisioning again through DPS (logged once until the hub accepts it)");
        } else {
            tracing::debug!("the assigned hub refused this identity again; provisioning again through DPS");
        }
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = std::fs::remove_file(&self.cache_path);
    }

    fn connected(&self) {
        self.rejected.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_names() {
        assert_eq!(username("0ne0001", "reg-1"), "0ne0001/registrations/reg-1/api-version=2019-03-31");
        assert_eq!(parse_response("$dps/registrations/res/202/?$rid=1&retry-after=3"), Some((202, "1".into(), Some(3))));
        assert_eq!(parse_response("$dps/registrations/res/200/?$rid=2"), Some((200, "2".into(), None)));
        assert_eq!(parse_response("$iothub/twin/res/200/?$rid=2"), None);
    }
}
