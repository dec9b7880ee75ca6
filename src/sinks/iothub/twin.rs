//! Device twin and direct methods on an open [`HubSession`]: fetches the twin on
//! each new connection and applies its desired properties, applies desired
//! patches as they arrive, reports the gateway's status, answers `getStatus`
//! and `flush`.
//!
//! Order of the reconnection flow (Azure IoT Hub device twin guide, "Device
//! reconnection flow"): the session subscribes to desired notifications
//! before it reports `Connected`, then this task asks for the full twin; a
//! notification still in flight may arrive after the full twin and is then
//! ignored by version ([`DesiredStore::apply`]).

use super::control::GatewayControl;
use super::desired::{DesiredStore, Outcome, Source};
use super::session::{HubSession, MqttLinkState};
use super::topics::{parse_hub_topic, HubTopic};
use crate::model::status::{DesiredIgnored, GatewayStatus, IotHubLink};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Runs until the session closes. `report_every`: how often to refresh reported properties.
pub async fn run(session: Arc<HubSession>, control: Arc<dyn GatewayControl>, store: Arc<DesiredStore>, report_every: Duration) {
    let Some(mut incoming) = session.take_incoming() else { return };
    let mut state = session.state();
    // The session may already be connected when this task starts (a loaded
    // machine): handle the current state as a change, so the twin is fetched
    // on the first connection too.
    state.mark_changed();
    let mut rid: u64 = 0;
    let mut get_rid: Option<String> = None;
    let mut tick = tokio::time::interval(report_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() { break; }
                let s = state.borrow_and_update().clone();
                match s {
                    MqttLinkState::Connected { .. } => {
                        rid += 1;
                        get_rid = Some(rid.to_string());
                        let _ = session.publish(format!("$iothub/twin/GET/?$rid={rid}"), Vec::new());
                    }
                    MqttLinkState::Closed => break,
                    _ => {}
                }
            }
            msg = incoming.recv() => {
                let Some(p) = msg else { break };
                match parse_hub_topic(&p.topic) {
                    HubTopic::TwinResponse { status, rid: r, .. } => {
                        if Some(&r) == get_rid.as_ref() {
                            get_rid = None;
                            if status == 200 {
                                match serde_json::from_slice::<Value>(&p.payload) {
                                    Ok(twin) => {
                                        if let Some(d) = twin.get("desired") {
                                            store.apply(d, Source::FullTwin, control.as_ref());
                                        }
                                    }
                                    Err(e) => tracing::warn!("the hub sent an unreadable twin ({e}); keeping the saved settings"),
                                }
                            } else {
                                tracing::warn!("twin request answered with status {status}");
                            }
                            rid += 1;
                            report(&session, &control, &store, rid);
                        } else if !(200..300).contains(&status) {
                            tracing::warn!("twin update answered with status {status}");
                        }
                    }
                    HubTopic::DesiredPatch { version } => match serde_json::from_slice::<Value>(&p.payload) {
                        Ok(patch) => {
                            let r = store.apply(&patch, Source::Patch { topic_version: version }, control.as_ref());
                            if r.outcome == Outcome::Unversioned && get_rid.is_none() {
                                // The change cannot be ordered; the full twin carries it with its version.
                                rid += 1;
                                if session.publish(format!("$iothub/twin/GET/?$rid={rid}"), Vec::new()).is_ok() {
                                    get_rid = Some(rid.to_string());
                                }
                            }
                            rid += 1;
                            report(&session, &control, &store, rid);
                        }
                        Err(e) => tracing::warn!("ignoring an unreadable desired-properties patch ({e})"),
                    },
                    HubTopic::MethodRequest { name, rid: r } => {
                        let (status, body) = match name.as_str() {
                            "getStatus" => (200, serde_json::to_value(status_doc(&session, &control, &store)).unwrap_or_default()),
                            "flush" => (200, control.flush_now().await),
                            other => (404, json!({"message": format!("unknown method `{other}`; this gateway offers getStatus and flush")})),
                        };
                        let _ = session.publish(format!("$iothub/methods/res/{status}/?$rid={r}"), serde_json::to_vec(&body).unwrap_or_default());
                    }
                    HubTopic::Other => tracing::debug!("ignoring a message from the hub on an unexpected topic"),
                }
            }
            _ = tick.tick() => {
                if matches!(*state.borrow(), MqttLinkState::Connected { .. }) {
                    rid += 1;
                    report(&session, &control, &store, rid);
                }
            }
        }
    }
}

/// The status document: the gateway's status plus the link counters and the
/// desired-properties version applied (`desiredVersion`, `null` before any)
/// with the count of desired documents ignored as stale or unversioned.
pub(crate) fn status_doc(session: &HubSession, control: &Arc<dyn GatewayControl>, store: &DesiredStore) -> GatewayStatus {
    let s = session.stats();
    GatewayStatus {
        iothub: Some(IotHubLink {
            connects: s.connects.load(Ordering::Relaxed),
            refusals: s.refusals.load(Ordering::Relaxed),
            drops: s.drops.load(Ordering::Relaxed),
            token_renewals: s.renewals.load(Ordering::Relaxed),
            in_flight: session.in_flight() as u64,
            desired_version: store.state().version,
            desired_ignored: DesiredIgnored {
                stale: store.counters().stale.load(Ordering::Relaxed),
                unversioned: store.counters().unversioned.load(Ordering::Relaxed),
            },
        }),
        ..control.status()
    }
}

fn report(session: &HubSession, control: &Arc<dyn GatewayControl>, store: &DesiredStore, rid: u64) {
    let body = serde_json::to_vec(&status_doc(session, control, store)).unwrap_or_default();
    if session.publish(format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"), body).is_err() {
        tracing::debug!("reported properties skipped: request queue full");
    }
}
