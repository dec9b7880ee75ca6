//! The gateway as the cloud sees it: the runtime's implementation of the IoT Hub
//! sink's [`GatewayControl`] (twin reported properties, desired patient
//! associations and batching, direct methods `getStatus` and `flush`).

use super::associations::Associations;
use crate::adapters::DeviceRegistry;
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
    /// No patient ids here (see [`super::status`]).
    fn status(&self) -> Value {
        let mut doc = super::status::document(&self.outbox, &self.registry, &self.stats);
        if let Some(o) = doc.as_object_mut() {
            o.insert(
                "batching".into(),
                json!({ "maxReadings": self.batching.max_readings(), "maxDelayMs": self.batching.max_age().as_millis() as u64 }),
            );
        }
        doc
    }

    /// A change from an older twin version than the association in force is
    /// refused by [`Associations::set`] (and logged there).
    fn set_patient(&self, device_id: &str, patient_id: Option<&str>, twin_version: Option<u64>) {
        if let Err(e) = self.associations.set(device_id, patient_id.map(str::to_string), twin_version) {
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
        tracing::info!("batching changed from the cloud: {} readings, {} ms", self.batching.max_readings(), self.batching.max_age().as_millis());
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
