//! What the IoT Hub sink needs from the rest of the gateway for the device
//! twin and direct methods, as a small trait the runtime implements
//! ([`GatewayControl`]), plus [`SimpleControl`], an in-memory version for
//! tests and the emulator demo (it records versions but does not enforce
//! them: [`super::desired::DesiredStore`] does).

use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The gateway as the cloud sees it through the twin and direct methods.
#[async_trait]
pub trait GatewayControl: Send + Sync {
    /// A snapshot for reported properties and `getStatus`: a JSON object such as
    /// `{"gatewayVersion", "outboxDepth", "dropped": {...}, "devices": [{"id",
    /// "battery", "lastSeen", "connected"}]}`. Keys must not contain `.`, `$` or spaces.
    fn status(&self) -> Value;

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
    /// Extra fields merged into `status()` (tests set outbox depth etc.).
    pub extra: Mutex<serde_json::Map<String, Value>>,
}

impl SimpleControl {
    /// The current associations.
    pub fn patients(&self) -> BTreeMap<String, String> {
        self.patients.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The twin version of the last change of each device's association.
    pub fn patient_versions(&self) -> BTreeMap<String, Option<u64>> {
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
    fn status(&self) -> Value {
        let patients = self.patients();
        let mut v = json!({
            "gatewayVersion": env!("CARGO_PKG_VERSION"),
            "outboxDepth": 0,
            "dropped": {},
            "devices": patients.keys().map(|d| json!({"id": d, "battery": null, "lastSeen": null, "connected": false})).collect::<Vec<_>>(),
        });
        if let Some(obj) = v.as_object_mut() {
            for (k, x) in self.extra.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
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
