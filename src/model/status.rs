//! The gateway's status as one typed document: the status file that
//! `iomt-edge status` reads, the twin's reported properties and the
//! `getStatus` direct method all carry a [`GatewayStatus`] (JSON,
//! camelCase). It lives in `model` because every stage that shows it (the
//! IoT Hub sink, the service, the CLI) sits above it.
//!
//! No patient ids: the association lives in the desired properties the ward
//! system wrote, and in each message body.

use serde::{Deserialize, Serialize};

/// Where a device is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkState {
    /// Configured, not yet seen.
    Scanning,
    Connecting,
    /// Connected and sending data.
    Streaming,
    /// Was streaming, now gone or silent; the adapter is trying to get it back.
    Lost,
}

/// What bounds the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum BoundBy {
    /// `max_bytes` from the config.
    #[default]
    MaxBytes,
    /// The free space on the state filesystem (minus the reserve).
    FreeSpace,
}

/// The status document. Fields marked "file only" are set in the status file
/// (they say which process wrote it) and absent from the twin and
/// `getStatus`; `batching` is the other way round. Every field a newer
/// version added is optional or defaulted, so `iomt-edge status` reads the
/// files of older versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// The crate version of the gateway that wrote it.
    #[serde(default)]
    pub(crate) gateway_version: String,
    /// File only: `[gateway] id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gateway_id: Option<String>,
    /// File only: the sink's name (`iothub`, `eventhubs`, `file`, `stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sink: Option<String>,
    /// File only: the daemon's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// File only: false in the last write, at a clean stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) running: Option<bool>,
    /// File only: when it was written (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) written_at: Option<String>,
    /// Readings queued in the outbox.
    #[serde(default)]
    pub(crate) outbox_depth: u64,
    /// Bytes they take, as the bound counts them.
    #[serde(default)]
    pub(crate) outbox_bytes: u64,
    /// The bound in force (max_bytes, or less on a small state filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outbox_bound: Option<Bound>,
    /// The bound as one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outbox_bound_text: Option<String>,
    #[serde(default)]
    pub(crate) dropped: Dropped,
    /// Readings the destination refused even alone: kept apart in the
    /// outbox, not dropped (`iomt-edge outbox dead-letters list|retry|export`).
    #[serde(default)]
    pub(crate) dead_letters: DeadLetters,
    #[serde(default)]
    pub(crate) delivered: Delivered,
    #[serde(default)]
    pub(crate) devices: Vec<DeviceReport>,
    /// The twin and `getStatus` only: the batching in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) batching: Option<Batching>,
    /// The twin and `getStatus` only: the IoT Hub link's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) iothub: Option<IotHubLink>,
}

/// The IoT Hub sink's link, as the twin reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IotHubLink {
    /// Successful MQTT connections since the start.
    pub(crate) connects: u64,
    /// Connections the hub refused.
    pub(crate) refusals: u64,
    /// Connections that dropped.
    pub(crate) drops: u64,
    /// SAS tokens renewed.
    pub(crate) token_renewals: u64,
    /// Messages sent and not yet confirmed.
    pub(crate) in_flight: u64,
    /// The `$version` of the desired properties applied (`None` before any).
    pub(crate) desired_version: Option<u64>,
    pub(crate) desired_ignored: DesiredIgnored,
}

/// Desired-properties documents not applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DesiredIgnored {
    /// Older than the version in force.
    pub(crate) stale: u64,
    /// Without a `$version`.
    pub(crate) unversioned: u64,
}

/// The outbox's bound and why, as `outbox stats`, `status` and
/// `check-config` show it (computed in `outbox::space`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bound {
    /// Bytes of stored records the outbox may hold (what `max_bytes` counts).
    pub(crate) bytes: u64,
    pub(crate) by: BoundBy,
    /// `max_bytes` from the config.
    pub(crate) max_bytes: u64,
    /// Size of the state filesystem, bytes (0 if unknown).
    pub(crate) fs_bytes: u64,
    /// Free space on it for the service (f_bavail), bytes.
    pub(crate) fs_free: u64,
    /// The reserve kept free, bytes.
    pub(crate) reserve: u64,
    /// Whether the bound was tightened below the model because the store's
    /// files grew while the free space was under the reserve
    /// (`outbox::space::Feedback`).
    #[serde(default)]
    pub(crate) tightened: bool,
}

/// Readings that left the outbox without being delivered, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Dropped {
    /// `drop_oldest` made room.
    #[serde(default)]
    pub(crate) full: u64,
    /// Older than `max_age`.
    #[serde(default)]
    pub(crate) too_old: u64,
    /// `refuse_newest` refused them.
    #[serde(default)]
    pub(crate) refused: u64,
    /// Older versions only: readings removed when the destination refused
    /// them even alone. They are dead letters now ([`DeadLetters`]); the
    /// field is read so that `iomt-edge status` still counts them in an
    /// older version's file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) rejected_by_sink: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The outbox's dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetters {
    /// Readings held there.
    #[serde(default)]
    pub(crate) readings: u64,
    /// Bytes they take.
    #[serde(default)]
    pub(crate) bytes: u64,
    /// How many this run of the daemon moved there.
    #[serde(default)]
    pub(crate) moved_this_run: u64,
}

impl Dropped {
    pub(crate) fn total(&self) -> u64 {
        self.full + self.too_old + self.refused + self.rejected_by_sink
    }
}

/// What the destination confirmed since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Delivered {
    #[serde(default)]
    pub(crate) readings: u64,
    #[serde(default)]
    pub(crate) messages: u64,
}

/// One device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceReport {
    /// The configured device id.
    pub(crate) id: String,
    /// `state` is `streaming`.
    #[serde(default)]
    pub(crate) connected: bool,
    /// The link state; `None` in documents that do not say.
    #[serde(default)]
    pub(crate) state: Option<LinkState>,
    /// The state with the share of recent values that could not be decoded,
    /// e.g. `streaming, 100% undecodable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state_text: Option<String>,
    /// Battery level, percent.
    #[serde(default)]
    pub(crate) battery: Option<f64>,
    /// When the last value arrived (RFC 3339, UTC).
    #[serde(default)]
    pub(crate) last_seen: Option<String>,
    /// Readings stored.
    #[serde(default)]
    pub(crate) readings: u64,
    /// Values received (decodable or not).
    #[serde(default)]
    pub(crate) values: u64,
    /// Values that gave no reading at all.
    #[serde(default)]
    pub(crate) input_errors: u64,
    /// Percent of the last values that could not be decoded (`None` before the first).
    #[serde(default)]
    pub(crate) undecodable_percent: Option<u8>,
    /// Bytes ignored after complete fields.
    #[serde(default)]
    pub(crate) extra_bytes: u64,
    /// Stored readings flagged `outOfRange` (see [`crate::model::PLAUSIBLE_RANGES`]).
    #[serde(default)]
    pub(crate) out_of_range: u64,
}

/// The batching in force (changed by the twin's desired `batching`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Batching {
    pub(crate) max_readings: u64,
    pub(crate) max_delay_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_and_keeps_its_camel_case_names() {
        let doc = GatewayStatus {
            gateway_version: "0.1.0".into(),
            gateway_id: Some("gw-1".into()),
            running: Some(true),
            outbox_depth: 3,
            dropped: Dropped { full: 2, ..Dropped::default() },
            dead_letters: DeadLetters { readings: 1, bytes: 300, moved_this_run: 1 },
            devices: vec![DeviceReport { id: "strap-1".into(), state: Some(LinkState::Streaming), connected: true, ..DeviceReport::default() }],
            ..GatewayStatus::default()
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["outboxDepth"], 3);
        assert_eq!(v["dropped"]["full"], 2);
        assert!(v["dropped"].get("rejectedBySink").is_none(), "not written any more");
        assert_eq!(v["deadLetters"]["movedThisRun"], 1);
        assert_eq!(v["devices"][0]["state"], "streaming");
        assert!(v.get("batching").is_none(), "absent, not null");
        assert_eq!(serde_json::from_value::<GatewayStatus>(v).unwrap(), doc);
    }

    #[test]
    fn an_older_file_without_the_newer_fields_is_read() {
        let old = r#"{"gatewayVersion":"0.0.9","gatewayId":"gw","running":false,"pid":42,
            "outboxDepth":1,"outboxBytes":200,"devices":[{"id":"d","state":"lost"}]}"#;
        let s: GatewayStatus = serde_json::from_str(old).unwrap();
        assert_eq!(s.outbox_bound, None);
        assert_eq!(s.devices[0].state, Some(LinkState::Lost));
        assert_eq!(s.dropped.total(), 0);
    }
}
