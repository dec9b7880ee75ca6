//! One measurement from one device, as adapters produce it and the outbox stores it.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a reading measures. Serialized in camelCase (`heartRate`), which is also
/// the MedTech type name our shipped mappings use.
///
/// Adding a variant here without a template in `devices/medtech/` fails the
/// test suite (tests/integration/medtech_shipped.rs), so every type that can leave the gateway is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadingType {
    /// Heart rate, `/min`. Value name `heartRate`.
    HeartRate,
    /// One beat-to-beat (RR) interval, `ms`. Value name `rrInterval`.
    RrInterval,
    /// Energy expended since the strap's last reset, `kJ`. Value name `energyExpended`.
    EnergyExpended,
    /// Peripheral oxygen saturation, `%`. Value name `spo2`; a PLX oximeter's
    /// Fast and Slow averages, when sent, as `spo2Fast` and `spo2Slow`.
    Spo2,
    /// Pulse rate from an oximeter or monitor, `/min`. Value name `pulseRate`
    /// (and `pulseRateFast`, `pulseRateSlow`).
    PulseRate,
    /// Perfusion index (pulse amplitude index), `%`. Value name `perfusionIndex`.
    PerfusionIndex,
    /// Respiration rate, `/min`. Value name `respirationRate`.
    RespirationRate,
    /// Body temperature, `Cel`. Value name `bodyTemperature`.
    BodyTemperature,
    /// Blood pressure panel: `systolic`, `diastolic` and `mean`, `mm[Hg]`.
    BloodPressure,
    /// Device battery, `%`. Value name `batteryLevel`.
    BatteryLevel,
    /// Carboxyhaemoglobin by pulse CO-oximetry (Masimo rainbow SpCO), `%` of
    /// total haemoglobin. Value name `spco`.
    Spco,
    /// Methaemoglobin by pulse CO-oximetry (Masimo rainbow SpMet), `%` of
    /// total haemoglobin. Value name `spmet`.
    Spmet,
    /// Total haemoglobin by pulse CO-oximetry (Masimo rainbow SpHb), `g/dL`.
    /// Value name `sphb`.
    Sphb,
    /// Pleth variability index (Masimo PVI): the respiratory variation of the
    /// perfusion index, `%`. Value name `pvi`.
    Pvi,
    /// A change of the device's link state (connected, disconnected, lost...),
    /// so the cloud sees gaps explained. No values; see [`Reading::event`].
    DeviceEvent,
}

impl ReadingType {
    /// Every reading type, for exhaustive checks (mappings, schema, docs).
    pub const ALL: [ReadingType; 15] = [
        ReadingType::HeartRate,
        ReadingType::RrInterval,
        ReadingType::EnergyExpended,
        ReadingType::Spo2,
        ReadingType::PulseRate,
        ReadingType::PerfusionIndex,
        ReadingType::RespirationRate,
        ReadingType::BodyTemperature,
        ReadingType::BloodPressure,
        ReadingType::BatteryLevel,
        ReadingType::Spco,
        ReadingType::Spmet,
        ReadingType::Sphb,
        ReadingType::Pvi,
        ReadingType::DeviceEvent,
    ];

    /// The wire name (`heartRate`).
    pub fn name(self) -> &'static str {
        match self {
            ReadingType::HeartRate => "heartRate",
            ReadingType::RrInterval => "rrInterval",
            ReadingType::EnergyExpended => "energyExpended",
            ReadingType::Spo2 => "spo2",
            ReadingType::PulseRate => "pulseRate",
            ReadingType::PerfusionIndex => "perfusionIndex",
            ReadingType::RespirationRate => "respirationRate",
            ReadingType::BodyTemperature => "bodyTemperature",
            ReadingType::BloodPressure => "bloodPressure",
            ReadingType::BatteryLevel => "batteryLevel",
            ReadingType::Spco => "spco",
            ReadingType::Spmet => "spmet",
            ReadingType::Sphb => "sphb",
            ReadingType::Pvi => "pvi",
            ReadingType::DeviceEvent => "deviceEvent",
        }
    }

    /// The value names this type carries and their UCUM units.
    pub fn value_units(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ReadingType::HeartRate => &[("heartRate", "/min")],
            ReadingType::RrInterval => &[("rrInterval", "ms")],
            ReadingType::EnergyExpended => &[("energyExpended", "kJ")],
            ReadingType::Spo2 => &[("spo2", "%"), ("spo2Fast", "%"), ("spo2Slow", "%")],
            ReadingType::PulseRate => &[("pulseRate", "/min"), ("pulseRateFast", "/min"), ("pulseRateSlow", "/min")],
            ReadingType::PerfusionIndex => &[("perfusionIndex", "%")],
            ReadingType::RespirationRate => &[("respirationRate", "/min")],
            ReadingType::BodyTemperature => &[("bodyTemperature", "Cel")],
            ReadingType::BloodPressure => &[("systolic", "mm[Hg]"), ("diastolic", "mm[Hg]"), ("mean", "mm[Hg]")],
            ReadingType::BatteryLevel => &[("batteryLevel", "%")],
            ReadingType::Spco => &[("spco", "%")],
            ReadingType::Spmet => &[("spmet", "%")],
            ReadingType::Sphb => &[("sphb", "g/dL")],
            ReadingType::Pvi => &[("pvi", "%")],
            ReadingType::DeviceEvent => &[],
        }
    }

    /// Whether a device can send this type as a spot-check (one deliberate
    /// measurement, such as a PLX Spot-check) as well as continuously.
    pub fn has_spot_checks(self) -> bool {
        matches!(self, ReadingType::Spo2 | ReadingType::PulseRate | ReadingType::PerfusionIndex)
    }

    /// The UCUM unit of one value name of this type.
    pub(crate) fn unit_of(self, value_name: &str) -> Option<&'static str> {
        self.value_units().iter().find(|(n, _)| *n == value_name).map(|(_, u)| *u)
    }

    /// Parses a wire name (`heartRate`) or a snake_case alias (`heart_rate`).
    pub(crate) fn from_name(s: &str) -> Option<ReadingType> {
        let folded: String = s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
        ReadingType::ALL.into_iter().find(|t| t.name().to_ascii_lowercase() == folded)
    }
}

impl std::fmt::Display for ReadingType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Quality flags. A flagged reading is still delivered: the cloud decides what to
/// do with it, and a gap is better explained than silent.
///
/// Each flag says in what way the value may not be a valid measurement of this
/// patient now; which flags still count as a valid measurement is decided by the
/// consumer (the shipped MedTech mapping keeps an allowlist). docs/message-format.md
/// lists which device bit sets which flag, with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Flag {
    /// The strap reports it has no skin contact (HRS contact status "not detected").
    SensorContactLost,
    /// The oximeter's sensor is off or disconnected (finger out), or not
    /// connected to the user (PLX Device and Sensor Status bits 11 and 15).
    SensorDisconnected,
    /// The device sent a value marked as unavailable (SFLOAT NaN/NRes/INF, a heart
    /// rate of 0, a saturated Energy Expended, PLX "measurement unavailable"); the
    /// value is omitted from `values` rather than sent as a number.
    ValueUnavailable,
    /// The device says its own clock is not set (PLX flag, or a Date Time with
    /// year/month/day 0); its timestamp is not used.
    DeviceClockNotSet,
    /// The device marked the measurement as questionable (PLX Measurement Status
    /// bit 14), or reports a questionable pulse, an unknown or displaced sensor.
    Questionable,
    /// The device marked the measurement as invalid (PLX Measurement Status bit
    /// 15, "Invalid Measurement Detected"). Kept apart from `questionable`.
    Invalid,
    /// Low perfusion reported by the device.
    LowPerfusion,
    /// Early estimate (PLX) or otherwise provisional value (signal analysis ongoing).
    EarlyEstimate,
    /// The device reports a signal-processing irregularity or interference.
    SignalIrregular,
    /// The device is in a test or demonstration mode: not a patient value.
    TestData,
    /// The device is calibrating (PLX Measurement Status bit 12): not a patient value.
    CalibrationOngoing,
    /// The device reports an equipment or sensor malfunction (PLX Device and
    /// Sensor Status bits 1 and 14).
    DeviceMalfunction,
    /// When this was measured is not known: a stored measurement (PLX "data from
    /// measurement storage") without a usable device time. `time` is then only the
    /// arrival time and must not be charted as the measurement time.
    TimeUnknown,
    /// A value is outside what a body (or the device) can have, e.g. a heart
    /// rate of 65535 /min or an SpO2 of 1000 % ([`crate::model::PLAUSIBLE_RANGES`],
    /// with the source of each bound). The value is kept as sent, not clamped.
    OutOfRange,
}

impl Flag {
    /// Every flag, for exhaustive checks (schema, docs, mappings).
    pub(crate) const ALL: [Flag; 14] = [
        Flag::SensorContactLost,
        Flag::SensorDisconnected,
        Flag::ValueUnavailable,
        Flag::DeviceClockNotSet,
        Flag::Questionable,
        Flag::Invalid,
        Flag::LowPerfusion,
        Flag::EarlyEstimate,
        Flag::SignalIrregular,
        Flag::TestData,
        Flag::CalibrationOngoing,
        Flag::DeviceMalfunction,
        Flag::TimeUnknown,
        Flag::OutOfRange,
    ];
}

/// How a reading's `time` was derived from the device's clock (see [`DeviceTime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TimeFrom {
    /// A live reading: `time` is when the gateway received it (gateway clock,
    /// UTC). The device clock was compared with it to measure the offset.
    Arrival,
    /// A stored reading: `time` = device clock minus the offset measured on this
    /// device's live timestamped readings.
    MeasuredOffset,
    /// A stored reading before any offset was measured: the device clock was read
    /// in the gateway's local time zone.
    GatewayZone,
    /// A stored reading whose device clock could not be turned into UTC (a local
    /// time that does not exist or is ambiguous in the gateway's zone, or a result
    /// later than the arrival time); the reading carries [`Flag::TimeUnknown`].
    Unknown,
    /// The device sent its clock with its UTC offset (an HL7 v2 DTM with a
    /// `+ZZZZ` zone, e.g. OBX-14 `20250610015127+0800`): `time` = that
    /// instant in UTC, the measurement time. `utcOffsetSeconds` = the offset
    /// sent.
    DeviceZone,
}

/// The device's own clock reading, labelled for what it is. A BLE Date Time has
/// no zone: it is the device's local clock, not UTC (GATT Specification
/// Supplement, Date Time), so it travels without a `Z`, with how `time` was
/// derived from it. JSON: `{"local": "2025-03-04T05:06:07", "timeFrom":
/// "measuredOffset", "utcOffsetSeconds": 3600}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTime {
    /// The device clock as sent, `YYYY-MM-DDTHH:MM:SS`, no zone.
    #[serde(with = "local_time")]
    pub(crate) local: NaiveDateTime,
    pub time_from: TimeFrom,
    /// Device clock minus UTC in seconds (`local` = UTC + this), as measured
    /// (`arrival`, `measuredOffset`) or from the gateway's zone (`gatewayZone`);
    /// absent when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_seconds: Option<i64>,
}

/// serde for [`DeviceTime::local`]: `2025-03-04T05:06:07`, never a zone.
mod local_time {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
    pub(crate) fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format(FORMAT).to_string())
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveDateTime::parse_from_str(&s, FORMAT).map_err(serde::de::Error::custom)
    }
}

/// Reads `deviceTime` as written now (an object) or as written before it was
/// labelled (a string with `Z` holding the device's local clock, while `time`
/// was the arrival time), so readings already in an outbox survive an upgrade.
pub(crate) mod device_time_compat {
    use super::{DeviceTime, TimeFrom};
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Labelled(DeviceTime),
        Legacy(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeviceTime>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Labelled(t)) => Ok(Some(t)),
            Some(Repr::Legacy(s)) => {
                let t = crate::model::time::parse(&s).map_err(serde::de::Error::custom)?;
                Ok(Some(DeviceTime { local: t.naive_utc(), time_from: TimeFrom::Arrival, utc_offset_seconds: None }))
            }
        }
    }
}

/// Link-state events that adapters record as `deviceEvent` readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceEvent {
    Connected,
    Disconnected,
    /// The device stopped sending data although the link was reported up.
    Silent,
    /// The gateway (re)started and the device is configured.
    GatewayStarted,
}

/// The kind of device a reading comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceKind {
    HeartRateStrap,
    PulseOximeter,
    BedsideMonitor,
    Other,
}

impl DeviceKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DeviceKind::HeartRateStrap => "heartRateStrap",
            DeviceKind::PulseOximeter => "pulseOximeter",
            DeviceKind::BedsideMonitor => "bedsideMonitor",
            DeviceKind::Other => "other",
        }
    }
}

/// One reading: what a device measured, when, and how trustworthy it is.
///
/// `seq` is 0 when an adapter creates the reading; the outbox assigns the
/// per-gateway sequence number when it commits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    /// Per-gateway sequence number, strictly increasing in commit order.
    #[serde(default)]
    pub seq: u64,
    /// The stable device id (configured alias, manufacturer+serial, or address).
    pub device_id: String,
    pub(crate) device_kind: DeviceKind,
    /// The patient the device was associated with when the reading was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: ReadingType,
    /// Measurement time in UTC: the gateway's receive time, or for a stored
    /// measurement the device's clock converted to UTC (see [`DeviceTime`] and
    /// docs/message-format.md, "Times").
    #[serde(with = "crate::model::time::serde_ms")]
    pub time: DateTime<Utc>,
    /// The device's own clock reading, when the device sent one.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "device_time_compat::deserialize")]
    pub device_time: Option<DeviceTime>,
    /// Value name -> number. A value the device marked unavailable is absent and
    /// the reading carries [`Flag::ValueUnavailable`].
    #[serde(default)]
    pub values: BTreeMap<String, f64>,
    /// Value name -> UCUM unit, for every entry of `values`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// The device took this as a spot-check (one deliberate measurement, e.g. a
    /// PLX Spot-check) rather than as part of its continuous stream. The shipped
    /// MedTech mappings make separate Observations of spot-checks, so the two
    /// never compete for one SampledData slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spot_check: bool,
    /// The hourly SampledData series this reading belongs to (shipped MedTech
    /// mappings) already holds an earlier reading of this device and type in
    /// the same slot (1000 ms; 250 ms for RR intervals), where MedTech would
    /// keep only one. Set by the outbox committer ([`crate::model::SeriesSlots`]);
    /// the shipped mappings make such a reading an Observation of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slot_taken: bool,
    /// For `deviceEvent` readings: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<DeviceEvent>,
}

impl Reading {
    /// A reading of `kind` with no values yet, timed now.
    pub fn new(device_id: impl Into<String>, device_kind: DeviceKind, kind: ReadingType) -> Reading {
        Reading {
            seq: 0,
            device_id: device_id.into(),
            device_kind,
            patient_id: None,
            kind,
            time: crate::model::time::now_ms(),
            device_time: None,
            values: BTreeMap::new(),
            units: BTreeMap::new(),
            flags: Vec::new(),
            spot_check: false,
            slot_taken: false,
            event: None,
        }
    }

    /// Sets a value by its name; the unit comes from the reading type's table.
    /// A non-finite number is recorded as unavailable instead; a number no
    /// body can have is kept and flagged [`Flag::OutOfRange`].
    pub fn with_value(mut self, name: &str, value: f64) -> Reading {
        self.set_value(name, value);
        self
    }

    /// See [`Reading::with_value`]. A number outside the type's plausible
    /// range ([`crate::model::PLAUSIBLE_RANGES`]) is kept as given and the
    /// reading is flagged [`Flag::OutOfRange`] (the flag stays if the value is
    /// later replaced: the device did send it).
    pub fn set_value(&mut self, name: &str, value: f64) {
        if !value.is_finite() {
            self.add_flag(Flag::ValueUnavailable);
            return;
        }
        if !crate::model::is_plausible(self.kind, value) {
            self.add_flag(Flag::OutOfRange);
        }
        let unit = self.kind.unit_of(name).unwrap_or("1");
        self.values.insert(name.to_string(), value);
        self.units.insert(name.to_string(), unit.to_string());
    }

    /// Adds a flag once.
    pub fn add_flag(&mut self, flag: Flag) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
    }

    pub(crate) fn with_flag(mut self, flag: Flag) -> Reading {
        self.add_flag(flag);
        self
    }

    pub fn at(mut self, time: DateTime<Utc>) -> Reading {
        self.time = time;
        self
    }

    /// A link-state event reading.
    pub fn event(device_id: impl Into<String>, device_kind: DeviceKind, event: DeviceEvent) -> Reading {
        let mut r = Reading::new(device_id, device_kind, ReadingType::DeviceEvent);
        r.event = Some(event);
        r
    }

    /// The primary value (the first in the type's table), if present.
    pub fn primary_value(&self) -> Option<f64> {
        let (name, _) = self.kind.value_units().first()?;
        self.values.get(*name).copied()
    }
}

/// Times for a run of RR intervals reported together (one BLE notification, one
/// simulated second): the last interval ends at `end`, each earlier one ends
/// where the next began. Each beat gets its own time, so MedTech (which keeps
/// one value per timestamp in a group) keeps every interval.
pub(crate) fn rr_beat_times(end: DateTime<Utc>, rr_ms: &[f64]) -> Vec<DateTime<Utc>> {
    let mut times = vec![end; rr_ms.len()];
    let mut t = end;
    for i in (0..rr_ms.len()).rev() {
        times[i] = t;
        let step = rr_ms[i].clamp(0.0, 60_000.0).round() as i64;
        t -= chrono::Duration::milliseconds(step.max(1));
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_beats_get_distinct_times_ending_at_the_notification() {
        let end = crate::model::time::parse("2026-11-21T10:00:01.000Z").unwrap();
        let t = rr_beat_times(end, &[800.0, 812.5, 790.0]);
        assert_eq!(t[2], end);
        assert_eq!(crate::model::time::format(&t[1]), "2026-11-21T10:00:00.210Z");
        assert_eq!(crate::model::time::format(&t[0]), "2026-11-21T09:59:59.397Z");
        assert!(rr_beat_times(end, &[f64::NAN, 0.0]).windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn type_names_round_trip() {
        for t in ReadingType::ALL {
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(ReadingType::from_name(t.name()), Some(t));
        }
        assert_eq!(ReadingType::from_name("heart_rate"), Some(ReadingType::HeartRate));
        assert_eq!(ReadingType::from_name("nonsense"), None);
    }

    /// The message schema's flag enum and docs/message-format.md list exactly
    /// the flags the gateway can send.
    #[test]
    fn schema_and_docs_list_every_flag() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../docs/message.schema.json")).expect("schema is JSON");
        let listed: Vec<String> = schema["$defs"]["reading"]["properties"]["flags"]["items"]["enum"]
            .as_array()
            .expect("flag enum")
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let ours: Vec<String> =
            Flag::ALL.iter().map(|f| serde_json::to_value(f).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).collect();
        assert_eq!(listed, ours);
        let doc = include_str!("../../docs/message-format.md");
        for f in &ours {
            assert!(doc.contains(&format!("`{f}`")), "docs/message-format.md does not explain `{f}`");
        }
        for (i, f) in Flag::ALL.iter().enumerate() {
            assert!(!Flag::ALL[..i].contains(f), "{f:?} listed twice");
        }
        // A new variant fails to compile here until it is added to Flag::ALL.
        let count = |f: Flag| match f {
            Flag::SensorContactLost
            | Flag::SensorDisconnected
            | Flag::ValueUnavailable
            | Flag::DeviceClockNotSet
            | Flag::Questionable
            | Flag::Invalid
            | Flag::LowPerfusion
            | Flag::EarlyEstimate
            | Flag::SignalIrregular
            | Flag::TestData
            | Flag::CalibrationOngoing
            | Flag::DeviceMalfunction
            | Flag::TimeUnknown
            | Flag::OutOfRange => 1,
        };
        assert_eq!(Flag::ALL.iter().map(|f| count(*f)).sum::<usize>(), 14);
    }

    #[test]
    fn non_finite_values_become_flags() {
        let r = Reading::new("ox", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", f64::NAN);
        assert!(r.values.is_empty());
        assert_eq!(r.flags, vec![Flag::ValueUnavailable]);
        let r = r.with_value("spo2", 97.0);
        assert_eq!(r.units.get("spo2").map(String::as_str), Some("%"));
    }

    #[test]
    fn reading_json_round_trip() {
        let r = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate)
            .with_value("heartRate", 72.0)
            .with_flag(Flag::SensorContactLost);
        let json = serde_json::to_string(&r).expect("serialize");
        let back: Reading = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, r);
    }
}
