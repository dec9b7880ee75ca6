//! The gateway as the cloud sees it: the runtime's implementation of the IoT Hub
//! sink's [`GatewayControl`] (twin reported properties, desired patient
//! associations and batching, direct methods `getStatus` and `flush`).

use super::associations::Associations;
use crate::adapters::{DeviceRegistry, LinkState};
use crate::forwarder::{FlushHandle, ForwarderStats, LiveBatching};
use crate::outbox::Outbox;
use crate::sinks::iothub::control::GatewayControl;
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub struct RuntimeControl {
    pub outbox: Arc<Outbox>,
    pub registry: Arc<DeviceRegistry>,
    pub associations: Arc<Associations>,
    pub stats: Arc<ForwarderStats>,
    pub flush: FlushHandle,
    pub batching: Arc<LiveBatching>,
}

#[async_trait]
impl GatewayControl for RuntimeControl {
    /// No patient ids here: the association lives in the desired properties
    /// the ward system wrote, and in each message body.
    fn status(&self) -> Value {
        let s = self.outbox.stats();
        let devices: Vec<Value> = self
            .registry
            .snapshot()
            .into_iter()
            .map(|d| {
                json!({
                    "id": d.device_id,
                    "connected": d.state == LinkState::Streaming,
                    "state": d.state,
                    "battery": d.battery,
                    "lastSeen": d.last_seen.map(|t| crate::model::time::format(&t)),
                    "readings": d.readings,
                    "inputErrors": d.input_errors,
                })
            })
            .collect();
        json!({
            "gatewayVersion": env!("CARGO_PKG_VERSION"),
            "outboxDepth": s.queued,
            "outboxBytes": s.queued_bytes,
            "dropped": { "full": s.dropped_full, "tooOld": s.dropped_age, "refused": s.refused,
                         "rejectedBySink": self.stats.rejected_readings.load(Ordering::Relaxed) },
            "delivered": { "readings": self.stats.delivered_readings.load(Ordering::Relaxed),
                           "messages": self.stats.delivered_messages.load(Ordering::Relaxed) },
            "batching": { "maxReadings": self.batching.max_readings(), "maxDelayMs": self.batching.max_age().as_millis() as u64 },
            "devices": devices,
        })
    }

    fn set_patient(&self, device_id: &str, patient_id: Option<&str>) {
        if let Err(e) = self.associations.set(device_id, patient_id.map(str::to_string)) {
            tracing::error!("cannot persist the new patient association: {e}");
        }
    }

    fn set_batching(&self, settings: &Value) -> Result<(), String> {
        let obj = settings.as_object().ok_or("batching must be an object")?;
        for k in obj.keys() {
            if k != "maxReadings" && k != "maxDelayMs" {
                return Err(format!("unknown batching setting `{k}` (use maxReadings, maxDelayMs)"));
            }
        }
        let num = |k: &str| -> Result<Option<u64>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or(format!("{k} must be a whole number")),
            }
        };
        self.batching.set(num("maxReadings")?, num("maxDelayMs")?)?;
        tracing::info!(
            "batching changed from the cloud: {} readings, {} ms",
            self.batching.max_readings(),
            self.batching.max_age().as_millis()
        );
        Ok(())
    }

    async fn flush_now(&self) -> Value {
        let before = self.stats.delivered_readings.load(Ordering::Relaxed);
        let queued = self.outbox.len();
        self.flush.flush_now();
        // Give the forwarder a moment so the answer says something useful.
        tokio::time::sleep(Duration::from_millis(500)).await;
        json!({
            "queuedBefore": queued,
            "deliveredSince": self.stats.delivered_readings.load(Ordering::Relaxed).saturating_sub(before),
            "queuedNow": self.outbox.len(),
        })
    }
}
