//! What the IoT Hub sink needs from the rest of the gateway for the device
//! twin and direct methods, as a small trait the runtime implements
//! ([`GatewayControl`]), plus [`SimpleControl`], an in-memory version for
//! tests and the emulator demo (it records versions but does not enforce
//! them: [`super::desired::DesiredStore`] does).

use crate::model::status::{DeviceReport, GatewayStatus};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The gateway as the cloud sees it through the twin and direct methods.
#[async_trait]
pub trait GatewayControl: Send + Sync {
    /// A snapshot for reported properties and `getStatus` (its JSON keys
    /// contain no `.`, `$` or spaces, as twin property names must not).
    fn status(&self) -> GatewayStatus;

    /// Associates a device with a patient (`None` removes the association).
    /// Readings taken from now on carry this patient id. `twin_version` is the
    /// `$version` of the desired properties the change came from (`None`:
    /// unknown); an implementation that persists associations keeps it and
    /// refuses a later change from an older version.
    fn set_patient(&self, device_id: &str, patient_id: Option<&str>, twin_version: Option<u64>);

    /// Applies batching settings from the twin (the `batching` object of the
    /// desired properties, e.g. `{"maxReadings": 200, "maxDelayMs": 2000}`).
    /// Returns an explanation when the settings are refused.
    fn set_batching(&self, settings: &Value) -> Result<(), String>;

    /// Sends everything queued now; answers with a short JSON summary.
    async fn flush_now(&self) -> Value;
}

/// An in-memory [`GatewayControl`]: remembers associations and batching, counts flushes.
#[derive(Default)]
pub struct SimpleControl {
    patients: Mutex<BTreeMap<String, String>>,
    versions: Mutex<BTreeMap<String, Option<u64>>>,
    batching: Mutex<Option<Value>>,
    flushes: AtomicU64,
}

impl SimpleControl {
    /// The current associations.
    pub fn patients(&self) -> BTreeMap<String, String> {
        self.patients.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The twin version of the last change of each device's association.
    #[cfg(test)]
    pub(crate) fn patient_versions(&self) -> BTreeMap<String, Option<u64>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The last batching settings applied.
    pub fn batching(&self) -> Option<Value> {
        self.batching.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// How many times `flush_now` ran.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl GatewayControl for SimpleControl {
    fn status(&self) -> GatewayStatus {
        GatewayStatus {
            gateway_version: env!("CARGO_PKG_VERSION").to_string(),
            devices: self.patients().into_keys().map(|id| DeviceReport { id, ..DeviceReport::default() }).collect(),
            ..GatewayStatus::default()
        }
    }

    fn set_patient(&self, device_id: &str, patient_id: Option<&str>, twin_version: Option<u64>) {
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).insert(device_id.to_string(), twin_version);
        let mut p = self.patients.lock().unwrap_or_else(|e| e.into_inner());
        match patient_id {
            Some(pid) => p.insert(device_id.to_string(), pid.to_string()),
            None => p.remove(device_id),
        };
    }

    fn set_batching(&self, settings: &Value) -> Result<(), String> {
        if !settings.is_object() {
            return Err("batching must be an object".into());
        }
        *self.batching.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings.clone());
        Ok(())
    }

    async fn flush_now(&self) -> Value {
        let n = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        json!({"flushed": true, "flushes": n})
    }
}
