//! [`GatewayHandle`]: the one handle on a running gateway. The status views
//! read it (the demo's live view, the status file, `STATUS=` for systemd),
//! and it is the runtime's [`GatewayControl`] (twin reported properties,
//! desired patient associations and batching, direct methods `getStatus` and
//! `flush`). Its own module so that `status` can read a gateway without
//! depending on `run`, which starts it.

use super::associations::Associations;
use crate::adapters::{DeviceRegistry, LinkState};
use crate::config::Config;
use crate::forwarder::{FlushHandle, ForwarderStats, LiveBatching};
use crate::model::status::{Batching, DeadLetters, Delivered, DeviceReport, Dropped, GatewayStatus};
use crate::outbox::Outbox;
use crate::sinks::iothub::control::GatewayControl;
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Shared handles on a running gateway. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GatewayHandle {
    pub(crate) config: Arc<Config>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) registry: Arc<DeviceRegistry>,
    pub(crate) associations: Arc<Associations>,
    /// The forwarder's delivery counters.
    pub(crate) forwarder: Arc<ForwarderStats>,
    pub(crate) flush: FlushHandle,
    pub(crate) batching: Arc<LiveBatching>,
    /// Set once the sink is built (the sink is built with this handle as its
    /// [`GatewayControl`], so the name comes after).
    sink_name: Arc<OnceLock<&'static str>>,
}

/// How long `flush` waits before answering, so the answer says something useful.
const FLUSH_ANSWER_AFTER: Duration = Duration::from_millis(500);

impl GatewayHandle {
    pub(crate) fn new(
        config: Arc<Config>,
        outbox: Arc<Outbox>,
        registry: Arc<DeviceRegistry>,
        associations: Arc<Associations>,
        forwarder: Arc<ForwarderStats>,
        flush: FlushHandle,
        batching: Arc<LiveBatching>,
    ) -> GatewayHandle {
        GatewayHandle { config, outbox, registry, associations, forwarder, flush, batching, sink_name: Arc::new(OnceLock::new()) }
    }

    /// Records the sink's name (once; later calls change nothing).
    pub(crate) fn set_sink_name(&self, name: &'static str) {
        let _ = self.sink_name.set(name);
    }

    /// The sink's name (`iothub`, `eventhubs`, `file`, `stdout`; `?` before it is built).
    pub(crate) fn sink_name(&self) -> &'static str {
        self.sink_name.get().copied().unwrap_or("?")
    }

    /// Devices, outbox and delivery counters (see [`GatewayStatus`]; the
    /// file-only fields are left empty).
    pub(crate) fn report(&self) -> GatewayStatus {
        let (outbox, stats) = (&self.outbox, &self.forwarder);
        let s = outbox.stats();
        let devices = self
            .registry
            .snapshot()
            .into_iter()
            .map(|d| DeviceReport {
                connected: d.state == LinkState::Streaming,
                state: Some(d.state),
                state_text: Some(d.state_text()),
                battery: d.battery,
                last_seen: d.last_seen.map(|t| crate::model::time::format(&t)),
                readings: d.readings,
                values: d.values,
                input_errors: d.input_errors,
                undecodable_percent: d.undecodable_percent(),
                extra_bytes: d.extra_bytes,
                out_of_range: d.out_of_range,
                id: d.device_id,
            })
            .collect();
        GatewayStatus {
            gateway_version: env!("CARGO_PKG_VERSION").to_string(),
            outbox_depth: s.queued,
            outbox_bytes: s.queued_bytes,
            outbox_bound: Some(s.bound),
            outbox_bound_text: Some(s.bound.describe(outbox.dir().parent().unwrap_or(outbox.dir()))),
            dropped: Dropped { full: s.dropped_full, too_old: s.dropped_age, refused: s.refused, rejected_by_sink: 0 },
            dead_letters: DeadLetters {
                readings: s.dead_letters,
                bytes: s.dead_letter_bytes,
                moved_this_run: stats.dead_lettered_readings.load(Ordering::Relaxed),
            },
            delivered: Delivered {
                readings: stats.delivered_readings.load(Ordering::Relaxed),
                messages: stats.delivered_messages.load(Ordering::Relaxed),
            },
            devices,
            ..GatewayStatus::default()
        }
    }

    /// One line for `systemctl status` and logs (no patient data).
    pub(crate) fn status_line(&self) -> String {
        let devices = self.registry.snapshot();
        let streaming = devices.iter().filter(|d| d.state == LinkState::Streaming).count();
        let delivered = self.forwarder.delivered_readings.load(Ordering::Relaxed);
        let mut line = format!(
            "{}/{} devices streaming, outbox {} readings, {} delivered to {}",
            streaming,
            devices.len(),
            self.outbox.len(),
            delivered,
            self.sink_name()
        );
        if self.forwarder.failing.is_open() {
            line.push_str(", delivery failing (retrying)");
        }
        line
    }
}

#[async_trait]
impl GatewayControl for GatewayHandle {
    /// No patient ids here (see [`crate::model::status`]).
    fn status(&self) -> GatewayStatus {
        GatewayStatus {
            batching: Some(Batching {
                max_readings: self.batching.max_readings() as u64,
                max_delay_ms: u64::try_from(self.batching.max_age().as_millis()).unwrap_or(u64::MAX),
            }),
            ..self.report()
        }
    }

    /// A change from an older twin version than the association in force is
    /// refused by [`Associations::set`] (and logged there).
    fn set_patient(&self, device_id: &str, patient_id: Option<&str>, twin_version: Option<u64>) {
        let before = self.associations.patient_of(device_id);
        if let Err(e) = self.associations.set(device_id, patient_id.map(str::to_string), twin_version) {
            tracing::error!("cannot persist the new patient association: {e}");
        }
        // The HL7 right-patient guard starts over when the patient changes
        // (durably: a restart does not bring the old charted patient back).
        let after = self.associations.patient_of(device_id);
        if after != before {
            if let Err(e) = self.registry.association_changed(device_id, after.flatten().as_deref()) {
                tracing::error!(
                    "cannot record that the HL7 patient guard of device {} starts over ({e}); it does, and after a restart it does too",
                    crate::redact::device(device_id)
                );
            }
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
        let before = self.forwarder.delivered_readings.load(Ordering::Relaxed);
        let queued = self.outbox.len();
        self.flush.flush_now();
        tokio::time::sleep(FLUSH_ANSWER_AFTER).await;
        json!({
            "queuedBefore": queued,
            "deliveredSince": self.forwarder.delivered_readings.load(Ordering::Relaxed).saturating_sub(before),
            "queuedNow": self.outbox.len(),
        })
    }
}
