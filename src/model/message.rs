//! The JSON message that leaves the gateway: one device's batch of readings.
//!
//! See docs/message-format.md and docs/message.schema.json. The body carries
//! everything MedTech's CalculatedContent templates need (device id, patient id,
//! each reading's own time and values), so nothing depends on which IoT Hub
//! identity sent it or when it arrived.

use super::reading::{DeviceEvent, DeviceKind, DeviceTime, Flag, Reading, ReadingType};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The value of the `schema` field of every message.
pub(crate) const MESSAGE_SCHEMA: &str = "iomt-edge/1";

/// One message: a batch of readings of one device (and one patient association).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub(crate) schema: String,
    /// Deterministic: the same readings always travel under the same id.
    pub message_id: String,
    pub(crate) gateway_id: String,
    pub device_id: String,
    pub(crate) device_kind: DeviceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// Value name -> UCUM unit, for every value name used in `readings`. Units
    /// are fixed per value name, so they travel once per message rather than
    /// once per reading (IoT Hub bills by 4 KB).
    #[serde(default)]
    pub(crate) units: BTreeMap<String, String>,
    pub(crate) readings: Vec<WireReading>,
}

/// A reading inside a message: the per-device fields are hoisted to the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireReading {
    pub(crate) seq: u64,
    #[serde(rename = "type")]
    pub(crate) kind: ReadingType,
    #[serde(with = "crate::model::time::serde_ms")]
    pub(crate) time: DateTime<Utc>,
    /// See [`Reading::device_time`].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "super::reading::device_time_compat::deserialize")]
    pub(crate) device_time: Option<DeviceTime>,
    /// Value name -> number; the units are in the message's `units`.
    #[serde(default)]
    pub(crate) values: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) flags: Vec<Flag>,
    /// See [`Reading::spot_check`]; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) spot_check: bool,
    /// See [`Reading::slot_taken`]; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) slot_taken: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<DeviceEvent>,
}

impl From<&Reading> for WireReading {
    fn from(r: &Reading) -> WireReading {
        WireReading {
            seq: r.seq,
            kind: r.kind,
            time: r.time,
            device_time: r.device_time,
            values: r.values.clone(),
            flags: r.flags.clone(),
            spot_check: r.spot_check,
            slot_taken: r.slot_taken,
            event: r.event,
        }
    }
}

/// The deterministic message id for the readings `first_seq..=last_seq` of a
/// gateway's outbox: `{8 hex of sha256(gateway id)}-{outbox epoch}-{first}-{last}`.
///
/// The outbox epoch is chosen once when an outbox is created, so a fresh outbox
/// (after a corrupt one was moved aside) never reuses an id. At most 60 ASCII
/// characters, well inside IoT Hub's 128 for `$.mid`.
pub(crate) fn message_id(gateway_id: &str, epoch: &str, first_seq: u64, last_seq: u64) -> String {
    let digest = Sha256::digest(gateway_id.as_bytes());
    format!("{}-{}-{}-{}", hex::encode(&digest[..4]), epoch, first_seq, last_seq)
}

impl Message {
    /// Builds the message for a batch. All readings must share device id and
    /// patient id (the forwarder guarantees it); the batch must not be empty.
    pub fn from_batch(gateway_id: &str, epoch: &str, readings: &[Reading]) -> Option<Message> {
        let first = readings.first()?;
        let last_seq = readings.iter().map(|r| r.seq).max().unwrap_or(first.seq);
        let first_seq = readings.iter().map(|r| r.seq).min().unwrap_or(first.seq);
        Some(Message {
            schema: MESSAGE_SCHEMA.to_string(),
            message_id: message_id(gateway_id, epoch, first_seq, last_seq),
            gateway_id: gateway_id.to_string(),
            device_id: first.device_id.clone(),
            device_kind: first.device_kind,
            patient_id: first.patient_id.clone(),
            units: readings.iter().flat_map(|r| r.units.iter().map(|(k, v)| (k.clone(), v.clone()))).collect(),
            readings: readings.iter().map(WireReading::from).collect(),
        })
    }

    /// The earliest reading time (IoT Hub's `iothub-creation-time-utc`).
    pub(crate) fn earliest_time(&self) -> Option<DateTime<Utc>> {
        self.readings.iter().map(|r| r.time).min()
    }

    /// The sequence numbers this message carries.
    #[cfg(test)]
    pub(crate) fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.readings.iter().map(|r| r.seq)
    }

    /// Serialized body (UTF-8 JSON, no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_deterministic_and_short() {
        let a = message_id("ward-3-bed-12", "0a1b2c3d", 10, 20);
        assert_eq!(a, message_id("ward-3-bed-12", "0a1b2c3d", 10, 20));
        assert_ne!(a, message_id("ward-3-bed-12", "0a1b2c3d", 10, 21));
        assert_ne!(a, message_id("ward-3-bed-13", "0a1b2c3d", 10, 20));
        assert!(message_id("g", "ffffffff", u64::MAX, u64::MAX).len() <= 128);
    }

    #[test]
    fn message_hoists_device_fields() {
        let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0);
        r.seq = 7;
        r.patient_id = Some("P1".into());
        let m = Message::from_batch("gw", "00000001", &[r]).expect("non-empty");
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).expect("json");
        assert_eq!(v["deviceId"], "strap-1");
        assert_eq!(v["patientId"], "P1");
        assert_eq!(v["readings"][0]["seq"], 7);
        assert_eq!(v["readings"][0]["type"], "heartRate");
        assert_eq!(v["readings"][0]["values"]["heartRate"], 60.0);
        assert_eq!(v["units"]["heartRate"], "/min");
        assert!(v["readings"][0].get("units").is_none(), "units travel once per message");
        assert!(v["readings"][0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(v["readings"][0].get("deviceId").is_none());
    }
}
