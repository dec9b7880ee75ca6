//! Pure decoders for the GATT characteristics the BLE adapter reads: bytes in,
//! a typed value (and from it, [`Reading`]s) or a typed [`GattError`] out.
//!
//! No I/O here: the adapter, the `decode ble` CLI, the property test and the
//! benchmark all call [`decode`]. Every field is length-checked, so any byte
//! sequence (empty, truncated, random) gives a result or an error, never a panic.
//!
//! Conventions (Bluetooth SIG, little-endian throughout):
//! - Heart Rate Measurement 0x2A37: flags, HR (u8/u16), Energy Expended (u16 kJ),
//!   RR intervals (u16, 1/1024 s) filling the rest of the value.
//! - PLX Spot-check 0x2A5E / Continuous 0x2A5F: IEEE 11073-20601 SFLOAT fields.
//!   NaN, NRes, +-INF and the reserved value are "unavailable": the reading
//!   keeps no number and carries [`Flag::ValueUnavailable`].
//! - Sentinels: a heart rate of 0 means "no signal", an Energy Expended of
//!   0xFFFF means "at least 65535 kJ, reset needed" (HRS 1.0, Energy Expended),
//!   an RR interval of 0 is not a beat: all become [`Flag::ValueUnavailable`].
//! - Plausibility: a well-formed number no body can have (SpO2 1000 %, pulse
//!   rate -1 /min, heart rate 65535 /min) is kept as sent and its reading is
//!   flagged [`Flag::OutOfRange`] by [`Reading::set_value`] (table and sources:
//!   [`crate::model::PLAUSIBLE_RANGES`]).
//! - What a cut-off or over-long value keeps (the table in docs/ble.md): a cut
//!   core field (flags, heart rate, SpO2/PR pair) or a cut field that qualifies
//!   the values (a status word, a timestamp, a PLX Features support field) rejects
//!   the value; a cut value field that qualifies nothing after it (an RR interval,
//!   Energy Expended, PAI, a Fast/Slow pair with no status after it) is dropped
//!   and the fields before it are kept. Bytes after the last complete field are
//!   reported as [`ExtraBytes`] for the adapter to count, never silently.
//! - Time: a decoder never reads a clock; [`Decoded::to_readings`] takes a
//!   [`TimeContext`] (arrival time, measured device-clock offset, gateway zone)
//!   and applies the rule of [`crate::adapters::device_clock`].

use crate::adapters::device_clock::{self, DeviceClock, TimeContext};
use crate::model::{DeviceKind, Flag, Reading, ReadingType};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;

/// The characteristics we decode, by their 16-bit SIG UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Characteristic {
    /// 0x2A37, notify.
    HeartRateMeasurement,
    /// 0x2A38, read.
    BodySensorLocation,
    /// 0x2A5E, indicate.
    PlxSpotCheck,
    /// 0x2A5F, notify.
    PlxContinuous,
    /// 0x2A60, read.
    PlxFeatures,
    /// 0x2A19, read/notify.
    BatteryLevel,
    /// 0x2A29 Manufacturer Name String.
    ManufacturerName,
    /// 0x2A24 Model Number String.
    ModelNumber,
    /// 0x2A25 Serial Number String.
    SerialNumber,
    /// 0x2A26 Firmware Revision String.
    FirmwareRevision,
}

impl Characteristic {
    /// Every characteristic we decode.
    pub(crate) const ALL: [Characteristic; 10] = [
        Characteristic::HeartRateMeasurement,
        Characteristic::BodySensorLocation,
        Characteristic::PlxSpotCheck,
        Characteristic::PlxContinuous,
        Characteristic::PlxFeatures,
        Characteristic::BatteryLevel,
        Characteristic::ManufacturerName,
        Characteristic::ModelNumber,
        Characteristic::SerialNumber,
        Characteristic::FirmwareRevision,
    ];

    /// The 16-bit SIG UUID.
    pub(crate) fn uuid16(self) -> u16 {
        match self {
            Characteristic::HeartRateMeasurement => 0x2A37,
            Characteristic::BodySensorLocation => 0x2A38,
            Characteristic::PlxSpotCheck => 0x2A5E,
            Characteristic::PlxContinuous => 0x2A5F,
            Characteristic::PlxFeatures => 0x2A60,
            Characteristic::BatteryLevel => 0x2A19,
            Characteristic::ManufacturerName => 0x2A29,
            Characteristic::ModelNumber => 0x2A24,
            Characteristic::SerialNumber => 0x2A25,
            Characteristic::FirmwareRevision => 0x2A26,
        }
    }

    /// The kebab-case name accepted by `decode ble` (`heart-rate-measurement`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Characteristic::HeartRateMeasurement => "heart-rate-measurement",
            Characteristic::BodySensorLocation => "body-sensor-location",
            Characteristic::PlxSpotCheck => "plx-spot-check",
            Characteristic::PlxContinuous => "plx-continuous",
            Characteristic::PlxFeatures => "plx-features",
            Characteristic::BatteryLevel => "battery-level",
            Characteristic::ManufacturerName => "manufacturer-name",
            Characteristic::ModelNumber => "model-number",
            Characteristic::SerialNumber => "serial-number",
            Characteristic::FirmwareRevision => "firmware-revision",
        }
    }

    /// The full 128-bit UUID (`0000xxxx-0000-1000-8000-00805f9b34fb`).
    pub(crate) fn uuid(self) -> uuid::Uuid {
        sig_uuid(self.uuid16())
    }

    /// The characteristic with this 16-bit UUID, if we decode it.
    pub fn from_uuid16(u: u16) -> Option<Characteristic> {
        Characteristic::ALL.into_iter().find(|c| c.uuid16() == u)
    }

    /// The characteristic with this 128-bit UUID, if it is a SIG one we decode.
    pub(crate) fn from_uuid(u: &uuid::Uuid) -> Option<Characteristic> {
        let short = sig_uuid16(u)?;
        Characteristic::from_uuid16(short)
    }

    /// Parses `2a37`, `0x2A37`, `00002a37-0000-1000-8000-00805f9b34fb` or a name
    /// such as `heart-rate-measurement` (underscores and case are ignored).
    pub(crate) fn parse(s: &str) -> Option<Characteristic> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        if let Some(c) = Characteristic::ALL.into_iter().find(|c| c.name() == t) {
            return Some(c);
        }
        let hex = t.strip_prefix("0x").unwrap_or(&t);
        if hex.len() == 4 {
            return u16::from_str_radix(hex, 16).ok().and_then(Characteristic::from_uuid16);
        }
        uuid::Uuid::parse_str(&t).ok().and_then(|u| Characteristic::from_uuid(&u))
    }
}

impl std::fmt::Display for Characteristic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.uuid16())
    }
}

const SIG_BASE_LOW: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// The 128-bit form of a 16-bit SIG UUID.
pub(crate) fn sig_uuid(short: u16) -> uuid::Uuid {
    uuid::Uuid::from_u128(SIG_BASE_LOW | ((short as u128) << 96))
}

/// The 16-bit form of a SIG-base UUID, if it is one.
pub(crate) fn sig_uuid16(u: &uuid::Uuid) -> Option<u16> {
    let v = u.as_u128();
    let mask: u128 = !(0xFFFF_FFFFu128 << 96);
    if v & mask == SIG_BASE_LOW && (v >> 112) == 0 {
        Some((v >> 96) as u16)
    } else {
        None
    }
}

/// Why a value could not be decoded. Carries what a field engineer needs to
/// see what is wrong with a captured notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GattError {
    #[error("{characteristic}: the value is empty")]
    Empty { characteristic: Characteristic },
    #[error("{characteristic}: truncated: field `{field}` needs {need} byte(s) at offset {offset}, but the value has {len}")]
    Truncated { characteristic: Characteristic, field: &'static str, offset: usize, need: usize, len: usize },
    #[error("{characteristic}: `{field}` is {value}, outside {allowed}")]
    OutOfRange { characteristic: Characteristic, field: &'static str, value: u32, allowed: &'static str },
    #[error("{characteristic}: not valid UTF-8 text")]
    NotUtf8 { characteristic: Characteristic },
}

/// Bytes of a value the decoder could not use, after keeping its complete
/// fields: a cut-off last field, or bytes after every field the flags announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExtraBytes {
    /// How many bytes were not used.
    pub(crate) count: usize,
    /// The field those bytes began but did not complete (`rrInterval`,
    /// `pulseAmplitudeIndex`...); absent for bytes after every announced field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cut_field: Option<&'static str>,
}

/// A field that was cut off: where, and how many bytes it needed.
#[derive(Debug, Clone, Copy)]
struct Cut {
    field: &'static str,
    offset: usize,
    need: usize,
}

/// Bounds-checked little-endian reader over one characteristic value.
struct Cursor<'a> {
    ch: Characteristic,
    buf: &'a [u8],
    pos: usize,
    /// The first optional value field that was cut off; nothing after it is read.
    cut: Option<Cut>,
}

impl<'a> Cursor<'a> {
    fn new(ch: Characteristic, buf: &'a [u8]) -> Result<Cursor<'a>, GattError> {
        if buf.is_empty() {
            return Err(GattError::Empty { characteristic: ch });
        }
        Ok(Cursor { ch, buf, pos: 0, cut: None })
    }

    /// An optional value field that qualifies nothing before it: `None` when it
    /// is cut off (its bytes become [`ExtraBytes`], and every later optional
    /// field is absent too).
    fn opt(&mut self, field: &'static str, n: usize) -> Option<&'a [u8]> {
        if self.cut.is_some() {
            return None;
        }
        match self.take(field, n) {
            Ok(s) => Some(s),
            Err(_) => {
                self.cut = Some(Cut { field, offset: self.pos, need: n });
                None
            }
        }
    }

    fn opt_sfloat(&mut self, field: &'static str) -> Option<SFloat> {
        match self.opt(field, 2)? {
            [a, b] => Some(SFloat::from_raw(u16::from_le_bytes([*a, *b]))),
            _ => None,
        }
    }

    /// A field that qualifies the values (a status word, a timestamp): if an
    /// earlier optional field was cut off, this one is missing too, and the
    /// value is rejected with the cut field's error.
    fn qualifier_ok(&self) -> Result<(), GattError> {
        match self.cut {
            Some(c) => Err(GattError::Truncated { characteristic: self.ch, field: c.field, offset: c.offset, need: c.need, len: self.buf.len() }),
            None => Ok(()),
        }
    }

    /// What was left unused, if anything.
    fn extra(&self) -> Option<ExtraBytes> {
        let count = self.remaining();
        (count > 0).then_some(ExtraBytes { count, cut_field: self.cut.map(|c| c.field) })
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], GattError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(GattError::Truncated { characteristic: self.ch, field, offset: self.pos, need: n, len: self.buf.len() }),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, GattError> {
        let b = self.take(field, 1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, GattError> {
        match self.take(field, 2)? {
            [a, b] => Ok(u16::from_le_bytes([*a, *b])),
            _ => Ok(0),
        }
    }

    fn u24(&mut self, field: &'static str) -> Result<u32, GattError> {
        match self.take(field, 3)? {
            [a, b, c] => Ok(u32::from_le_bytes([*a, *b, *c, 0])),
            _ => Ok(0),
        }
    }

    fn sfloat(&mut self, field: &'static str) -> Result<SFloat, GattError> {
        Ok(SFloat::from_raw(self.u16(field)?))
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// An IEEE 11073-20601 16-bit SFLOAT: 4-bit exponent, 12-bit mantissa.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum SFloat {
    /// A number, `mantissa * 10^exponent`.
    Value(f64),
    /// 0x07FF, Not a Number.
    Nan,
    /// 0x0800, Not at this Resolution.
    Nres,
    /// 0x07FE.
    PositiveInfinity,
    /// 0x0802.
    NegativeInfinity,
    /// 0x0801, reserved for future use.
    Reserved,
}

impl SFloat {
    /// Decodes the raw 16-bit value (special values are checked before
    /// sign-extending the mantissa).
    pub(crate) fn from_raw(raw: u16) -> SFloat {
        match raw {
            0x07FF => return SFloat::Nan,
            0x0800 => return SFloat::Nres,
            0x07FE => return SFloat::PositiveInfinity,
            0x0802 => return SFloat::NegativeInfinity,
            0x0801 => return SFloat::Reserved,
            _ => {}
        }
        let mut mantissa = (raw & 0x0FFF) as i32;
        if mantissa >= 0x0800 {
            mantissa -= 0x1000;
        }
        let mut exponent = ((raw >> 12) & 0x0F) as i32;
        if exponent >= 0x8 {
            exponent -= 0x10;
        }
        // Divide for negative exponents so 975e-1 is exactly 97.5.
        let value = if exponent < 0 { mantissa as f64 / 10f64.powi(-exponent) } else { mantissa as f64 * 10f64.powi(exponent) };
        SFloat::Value(value)
    }

    /// The number, if this is one.
    pub fn value(self) -> Option<f64> {
        match self {
            SFloat::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Heart Rate Measurement sensor-contact state (flags bits 1-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum SensorContact {
    /// The strap does not report contact.
    NotSupported,
    /// Supported, and the strap is touching skin.
    Detected,
    /// Supported, and the strap reports no skin contact.
    NotDetected,
}

/// A decoded Heart Rate Measurement (0x2A37).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartRateMeasurement {
    /// Beats per minute, as sent; 0 means "no signal" (the reading gets no
    /// value and [`Flag::ValueUnavailable`]).
    pub heart_rate: u16,
    /// Whether the value was sent as uint16.
    pub(crate) uint16_format: bool,
    pub(crate) sensor_contact: SensorContact,
    /// kJ since the strap's last reset; 0xFFFF means "65535 or more, reset
    /// needed" (HRS 1.0, Energy Expended) and gives no value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) energy_expended_kj: Option<u16>,
    /// RR intervals in milliseconds (raw 1/1024 s converted), oldest first.
    pub(crate) rr_intervals_ms: Vec<f64>,
}

/// Body Sensor Location (0x2A38).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BodySensorLocation {
    Other,
    Chest,
    Wrist,
    Finger,
    Hand,
    EarLobe,
    Foot,
    /// A value the SIG reserves (7-255).
    Reserved(u8),
}

/// PLX Measurement Status (u16), the named bits that are set.
pub(crate) const MEASUREMENT_STATUS_BITS: [(u8, &str); 11] = [
    (5, "measurementOngoing"),
    (6, "earlyEstimatedData"),
    (7, "validatedData"),
    (8, "fullyQualifiedData"),
    (9, "dataFromMeasurementStorage"),
    (10, "dataForDemonstration"),
    (11, "dataForTesting"),
    (12, "calibrationOngoing"),
    (13, "measurementUnavailable"),
    (14, "questionableMeasurementDetected"),
    (15, "invalidMeasurementDetected"),
];

/// PLX Device and Sensor Status (u24), the named bits.
pub(crate) const DEVICE_SENSOR_STATUS_BITS: [(u8, &str); 16] = [
    (0, "extendedDisplayUpdateOngoing"),
    (1, "equipmentMalfunctionDetected"),
    (2, "signalProcessingIrregularityDetected"),
    (3, "inadequateSignalDetected"),
    (4, "poorSignalDetected"),
    (5, "lowPerfusionDetected"),
    (6, "erraticSignalDetected"),
    (7, "nonpulsatileSignalDetected"),
    (8, "questionablePulseDetected"),
    (9, "signalAnalysisOngoing"),
    (10, "sensorInterferenceDetected"),
    (11, "sensorUnconnectedToUser"),
    (12, "unknownSensorConnected"),
    (13, "sensorDisplaced"),
    (14, "sensorMalfunctioning"),
    (15, "sensorDisconnected"),
];

fn bit_names(value: u32, table: &[(u8, &'static str)]) -> Vec<&'static str> {
    table.iter().filter(|(bit, _)| value & (1u32 << bit) != 0).map(|(_, n)| *n).collect()
}

/// A raw status word plus the names of its set bits, for JSON output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct StatusBits {
    pub(crate) raw: u32,
    pub(crate) set: Vec<&'static str>,
}

impl StatusBits {
    fn measurement(raw: u16) -> StatusBits {
        StatusBits { raw: raw as u32, set: bit_names(raw as u32, &MEASUREMENT_STATUS_BITS) }
    }
    fn device_sensor(raw: u32) -> StatusBits {
        StatusBits { raw, set: bit_names(raw, &DEVICE_SENSOR_STATUS_BITS) }
    }
}

/// An SpO2 / pulse-rate pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpO2Pr {
    /// %.
    pub spo2: SFloat,
    /// beats per minute.
    pub(crate) pulse_rate: SFloat,
}

/// A decoded PLX Continuous Measurement (0x2A5F).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlxContinuous {
    pub normal: SpO2Pr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fast: Option<SpO2Pr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow: Option<SpO2Pr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) measurement_status: Option<StatusBits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) device_and_sensor_status: Option<StatusBits>,
    /// Pulse amplitude index, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pulse_amplitude_index: Option<SFloat>,
}

/// The Date Time fields of a spot-check: the device's local clock, no zone
/// (GATT Specification Supplement, Date Time: year 1582-9999, month 1-12, day
/// 1-31, 0 meaning "not known"; hours 0-23, minutes and seconds 0-59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct DateTimeFields {
    pub(crate) year: u16,
    pub(crate) month: u8,
    pub(crate) day: u8,
    pub(crate) hours: u8,
    pub(crate) minutes: u8,
    pub(crate) seconds: u8,
}

impl DateTimeFields {
    /// The device's local date and time, if every field is a valid, known value;
    /// `None` for "not known" (0) or out-of-range fields.
    pub(crate) fn local(self) -> Option<NaiveDateTime> {
        if !(1582..=9999).contains(&self.year) {
            return None;
        }
        NaiveDate::from_ymd_opt(self.year as i32, self.month as u32, self.day as u32)
            .and_then(|d| d.and_hms_opt(self.hours as u32, self.minutes as u32, self.seconds as u32))
    }
}

/// A decoded PLX Spot-check Measurement (0x2A5E).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlxSpotCheck {
    pub(crate) measurement: SpO2Pr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<DateTimeFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) measurement_status: Option<StatusBits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) device_and_sensor_status: Option<StatusBits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pulse_amplitude_index: Option<SFloat>,
    pub(crate) device_clock_not_set: bool,
}

/// A decoded PLX Features (0x2A60).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlxFeatures {
    pub(crate) raw: u16,
    pub(crate) measurement_status_support: bool,
    pub(crate) device_and_sensor_status_support: bool,
    pub(crate) spot_check_measurement_storage: bool,
    pub(crate) spot_check_timestamp: bool,
    pub(crate) spo2pr_fast: bool,
    pub(crate) spo2pr_slow: bool,
    pub(crate) pulse_amplitude_index: bool,
    pub(crate) multiple_bonds: bool,
    /// Which Measurement Status bits the device can set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) supported_measurement_status: Option<StatusBits>,
    /// Which Device and Sensor Status bits the device can set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) supported_device_and_sensor_status: Option<StatusBits>,
}

/// The decoded value of one characteristic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "characteristic")]
pub enum Decoded {
    HeartRateMeasurement(HeartRateMeasurement),
    BodySensorLocation {
        location: BodySensorLocation,
    },
    PlxSpotCheck(PlxSpotCheck),
    PlxContinuous(PlxContinuous),
    PlxFeatures(PlxFeatures),
    BatteryLevel {
        percent: u8,
    },
    /// One of the Device Information strings.
    DeviceInformation {
        field: Characteristic,
        text: String,
    },
}

/// A decoded value and the bytes it could not use (see [`ExtraBytes`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Decoding {
    pub(crate) decoded: Decoded,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) extra_bytes: Option<ExtraBytes>,
}

/// Decodes one characteristic value (see [`decode_value`]; this drops the
/// [`ExtraBytes`] report).
pub fn decode(ch: Characteristic, bytes: &[u8]) -> Result<Decoded, GattError> {
    decode_value(ch, bytes).map(|d| d.decoded)
}

/// Decodes one characteristic value, keeping every complete field, and reports
/// the bytes it could not use. Errors when a field the values depend on is cut
/// off (module docs; the table in docs/ble.md).
pub(crate) fn decode_value(ch: Characteristic, bytes: &[u8]) -> Result<Decoding, GattError> {
    let (decoded, extra_bytes) = match ch {
        Characteristic::HeartRateMeasurement => {
            let (m, extra) = heart_rate_fields(bytes)?;
            (Decoded::HeartRateMeasurement(m), extra)
        }
        Characteristic::BodySensorLocation => {
            let mut c = Cursor::new(ch, bytes)?;
            let location = match c.u8("location")? {
                0 => BodySensorLocation::Other,
                1 => BodySensorLocation::Chest,
                2 => BodySensorLocation::Wrist,
                3 => BodySensorLocation::Finger,
                4 => BodySensorLocation::Hand,
                5 => BodySensorLocation::EarLobe,
                6 => BodySensorLocation::Foot,
                n => BodySensorLocation::Reserved(n),
            };
            (Decoded::BodySensorLocation { location }, c.extra())
        }
        Characteristic::PlxSpotCheck => {
            let (m, extra) = plx_spot_check_fields(bytes)?;
            (Decoded::PlxSpotCheck(m), extra)
        }
        Characteristic::PlxContinuous => {
            let (m, extra) = plx_continuous_fields(bytes)?;
            (Decoded::PlxContinuous(m), extra)
        }
        Characteristic::PlxFeatures => {
            let (m, extra) = plx_features_fields(bytes)?;
            (Decoded::PlxFeatures(m), extra)
        }
        Characteristic::BatteryLevel => {
            let mut c = Cursor::new(ch, bytes)?;
            let percent = c.u8("batteryLevel")?;
            if percent > 100 {
                return Err(GattError::OutOfRange { characteristic: ch, field: "batteryLevel", value: percent as u32, allowed: "0-100 %" });
            }
            (Decoded::BatteryLevel { percent }, c.extra())
        }
        Characteristic::ManufacturerName | Characteristic::ModelNumber | Characteristic::SerialNumber | Characteristic::FirmwareRevision => {
            // Strings have no terminating NUL per spec; some devices add one anyway.
            let text = std::str::from_utf8(bytes).map_err(|_| GattError::NotUtf8 { characteristic: ch })?;
            (Decoded::DeviceInformation { field: ch, text: text.trim_end_matches('\0').to_string() }, None)
        }
    };
    Ok(Decoding { decoded, extra_bytes })
}

fn le16(b: &[u8]) -> Option<u16> {
    match b {
        [a, b] => Some(u16::from_le_bytes([*a, *b])),
        _ => None,
    }
}

/// Decodes a Heart Rate Measurement (0x2A37).
#[cfg(test)]
pub(crate) fn decode_heart_rate(bytes: &[u8]) -> Result<HeartRateMeasurement, GattError> {
    heart_rate_fields(bytes).map(|(m, _)| m)
}

/// Flags and heart rate are required; Energy Expended and RR intervals are
/// kept while complete (HRS 1.0: the RR intervals fill the rest of the value,
/// so a cut last interval is a stray byte, not a reason to lose the beat).
fn heart_rate_fields(bytes: &[u8]) -> Result<(HeartRateMeasurement, Option<ExtraBytes>), GattError> {
    let ch = Characteristic::HeartRateMeasurement;
    let mut c = Cursor::new(ch, bytes)?;
    let flags = c.u8("flags")?;
    let uint16_format = flags & 0x01 != 0;
    let heart_rate = if uint16_format { c.u16("heartRate")? } else { c.u8("heartRate")? as u16 };
    let sensor_contact = match (flags & 0x04 != 0, flags & 0x02 != 0) {
        (false, _) => SensorContact::NotSupported,
        (true, true) => SensorContact::Detected,
        (true, false) => SensorContact::NotDetected,
    };
    let energy_expended_kj = if flags & 0x08 != 0 { c.opt("energyExpended", 2).and_then(le16) } else { None };
    let mut rr_intervals_ms = Vec::new();
    if flags & 0x10 != 0 {
        while c.remaining() > 0 {
            let Some(raw) = c.opt("rrInterval", 2).and_then(le16) else { break };
            rr_intervals_ms.push(raw as f64 * 1000.0 / 1024.0);
        }
    }
    let m = HeartRateMeasurement { heart_rate, uint16_format, sensor_contact, energy_expended_kj, rr_intervals_ms };
    Ok((m, c.extra()))
}

/// Decodes a PLX Continuous Measurement (0x2A5F).
#[cfg(test)]
pub(crate) fn decode_plx_continuous(bytes: &[u8]) -> Result<PlxContinuous, GattError> {
    plx_continuous_fields(bytes).map(|(m, _)| m)
}

fn opt_pair(c: &mut Cursor<'_>, field: &'static str) -> Option<SpO2Pr> {
    match c.opt(field, 4)? {
        [a, b, d, e] => {
            Some(SpO2Pr { spo2: SFloat::from_raw(u16::from_le_bytes([*a, *b])), pulse_rate: SFloat::from_raw(u16::from_le_bytes([*d, *e])) })
        }
        _ => None,
    }
}

/// Flags and the normal SpO2/PR pair are required; the Fast and Slow pairs are
/// kept while complete unless a status field follows them (a cut pair then
/// means the status that qualifies the values is missing: rejected); the
/// status fields are required when announced; PAI is kept when complete.
fn plx_continuous_fields(bytes: &[u8]) -> Result<(PlxContinuous, Option<ExtraBytes>), GattError> {
    let mut c = Cursor::new(Characteristic::PlxContinuous, bytes)?;
    let flags = c.u8("flags")?;
    let normal = SpO2Pr { spo2: c.sfloat("spo2")?, pulse_rate: c.sfloat("pulseRate")? };
    let fast = if flags & 0x01 != 0 { opt_pair(&mut c, "spo2PrFast") } else { None };
    let slow = if flags & 0x02 != 0 { opt_pair(&mut c, "spo2PrSlow") } else { None };
    let measurement_status = if flags & 0x04 != 0 {
        c.qualifier_ok()?;
        Some(StatusBits::measurement(c.u16("measurementStatus")?))
    } else {
        None
    };
    let device_and_sensor_status = if flags & 0x08 != 0 {
        c.qualifier_ok()?;
        Some(StatusBits::device_sensor(c.u24("deviceAndSensorStatus")?))
    } else {
        None
    };
    let pulse_amplitude_index = if flags & 0x10 != 0 { c.opt_sfloat("pulseAmplitudeIndex") } else { None };
    let m = PlxContinuous { normal, fast, slow, measurement_status, device_and_sensor_status, pulse_amplitude_index };
    Ok((m, c.extra()))
}

/// Decodes a PLX Spot-check Measurement (0x2A5E).
#[cfg(test)]
pub(crate) fn decode_plx_spot_check(bytes: &[u8]) -> Result<PlxSpotCheck, GattError> {
    plx_spot_check_fields(bytes).map(|(m, _)| m)
}

/// Flags, the SpO2/PR pair, the timestamp and the status fields are required
/// when announced (a spot-check without its time or its status cannot be
/// placed or trusted); PAI is kept when complete.
fn plx_spot_check_fields(bytes: &[u8]) -> Result<(PlxSpotCheck, Option<ExtraBytes>), GattError> {
    let mut c = Cursor::new(Characteristic::PlxSpotCheck, bytes)?;
    let flags = c.u8("flags")?;
    let measurement = SpO2Pr { spo2: c.sfloat("spo2")?, pulse_rate: c.sfloat("pulseRate")? };
    let timestamp = if flags & 0x01 != 0 {
        Some(DateTimeFields {
            year: c.u16("timestamp.year")?,
            month: c.u8("timestamp.month")?,
            day: c.u8("timestamp.day")?,
            hours: c.u8("timestamp.hours")?,
            minutes: c.u8("timestamp.minutes")?,
            seconds: c.u8("timestamp.seconds")?,
        })
    } else {
        None
    };
    let measurement_status = if flags & 0x02 != 0 { Some(StatusBits::measurement(c.u16("measurementStatus")?)) } else { None };
    let device_and_sensor_status = if flags & 0x04 != 0 { Some(StatusBits::device_sensor(c.u24("deviceAndSensorStatus")?)) } else { None };
    let pulse_amplitude_index = if flags & 0x08 != 0 { c.opt_sfloat("pulseAmplitudeIndex") } else { None };
    let m = PlxSpotCheck {
        measurement,
        timestamp,
        measurement_status,
        device_and_sensor_status,
        pulse_amplitude_index,
        device_clock_not_set: flags & 0x10 != 0,
    };
    Ok((m, c.extra()))
}

/// Decodes PLX Features (0x2A60).
#[cfg(test)]
pub(crate) fn decode_plx_features(bytes: &[u8]) -> Result<PlxFeatures, GattError> {
    plx_features_fields(bytes).map(|(m, _)| m)
}

/// Every announced field is required (a cut support field would misstate what
/// the device can report); bytes after them are extra.
fn plx_features_fields(bytes: &[u8]) -> Result<(PlxFeatures, Option<ExtraBytes>), GattError> {
    let mut c = Cursor::new(Characteristic::PlxFeatures, bytes)?;
    let raw = c.u16("supportedFeatures")?;
    let bit = |n: u16| raw & (1 << n) != 0;
    let supported_measurement_status = if bit(0) { Some(StatusBits::measurement(c.u16("measurementStatusSupport")?)) } else { None };
    let supported_device_and_sensor_status = if bit(1) { Some(StatusBits::device_sensor(c.u24("deviceAndSensorStatusSupport")?)) } else { None };
    let m = PlxFeatures {
        raw,
        measurement_status_support: bit(0),
        device_and_sensor_status_support: bit(1),
        spot_check_measurement_storage: bit(2),
        spot_check_timestamp: bit(3),
        spo2pr_fast: bit(4),
        spo2pr_slow: bit(5),
        pulse_amplitude_index: bit(6),
        multiple_bonds: bit(7),
        supported_measurement_status,
        supported_device_and_sensor_status,
    };
    Ok((m, c.extra()))
}

/// The flag a PLX Measurement Status bit sets (Pulse Oximeter Service 1.0 /
/// GATT Specification Supplement, PLX Continuous and Spot-check Measurement,
/// "Measurement Status" field), `None` for bits that do not say the value is
/// not a valid measurement of this patient now: 5 Measurement Ongoing (the
/// device is measuring), 7 Validated Data, 8 Fully Qualified Data (both
/// positive), 9 Data from Measurement Storage (handled by the time rule), and
/// the reserved bits 0-4.
pub(crate) fn measurement_status_flag(bit: u8) -> Option<Flag> {
    match bit {
        6 => Some(Flag::EarlyEstimate),
        10 | 11 => Some(Flag::TestData),
        12 => Some(Flag::CalibrationOngoing),
        13 => Some(Flag::ValueUnavailable),
        14 => Some(Flag::Questionable),
        15 => Some(Flag::Invalid),
        _ => None,
    }
}

/// The flag a PLX Device and Sensor Status bit sets (same sources, "Device and
/// Sensor Status" field), `None` for bit 0 (Extended Display Update Ongoing:
/// about the display, not the value) and the reserved bits 16-23.
pub(crate) fn device_sensor_status_flag(bit: u8) -> Option<Flag> {
    match bit {
        1 | 14 => Some(Flag::DeviceMalfunction),
        2 | 3 | 4 | 6 | 7 | 10 => Some(Flag::SignalIrregular),
        5 => Some(Flag::LowPerfusion),
        8 | 12 | 13 => Some(Flag::Questionable),
        9 => Some(Flag::EarlyEstimate),
        11 | 15 => Some(Flag::SensorDisconnected),
        _ => None,
    }
}

/// PLX Measurement Status bit 9, "Data from Measurement Storage".
const MS_FROM_STORAGE: u32 = 1 << 9;

/// Quality flags implied by PLX status words.
fn plx_flags(ms: Option<&StatusBits>, dss: Option<&StatusBits>) -> Vec<Flag> {
    let mut flags = Vec::new();
    for (word, flag_of) in [(ms, measurement_status_flag as fn(u8) -> Option<Flag>), (dss, device_sensor_status_flag)] {
        let Some(word) = word else { continue };
        for bit in 0..24u8 {
            if word.raw & (1u32 << bit) == 0 {
                continue;
            }
            if let Some(f) = flag_of(bit) {
                if !flags.contains(&f) {
                    flags.push(f);
                }
            }
        }
    }
    flags
}

fn from_storage(ms: Option<&StatusBits>) -> bool {
    ms.is_some_and(|s| s.raw & MS_FROM_STORAGE != 0)
}

/// What a spot-check says about its own time.
fn spot_check_clock(m: &PlxSpotCheck) -> DeviceClock {
    let local = m.timestamp.and_then(DateTimeFields::local);
    DeviceClock {
        timestamp: local,
        // A timestamp that is not a valid, known date and time (year 0...) is a
        // clock that is not set, whatever the flag says.
        clock_not_set: m.device_clock_not_set || (m.timestamp.is_some() && local.is_none()),
        stored: from_storage(m.measurement_status.as_ref()),
    }
}

/// Builds one reading with an optional number, flags applied; a missing
/// number (a sentinel, or "measurement unavailable") is flagged.
fn reading(device_id: &str, kind: DeviceKind, rtype: ReadingType, value: Option<f64>, flags: &[Flag], time: DateTime<Utc>) -> Reading {
    let mut r = Reading::new(device_id, kind, rtype).at(time);
    let unavailable = flags.contains(&Flag::ValueUnavailable);
    match (value, rtype.value_units().first()) {
        (Some(v), Some((name, _))) if !unavailable => r.set_value(name, v),
        _ => r.add_flag(Flag::ValueUnavailable),
    }
    for f in flags {
        r.add_flag(*f);
    }
    r
}

fn pair_readings(out: &mut Vec<Reading>, device_id: &str, kind: DeviceKind, pair: &SpO2Pr, flags: &[Flag], time: DateTime<Utc>) {
    out.push(reading(device_id, kind, ReadingType::Spo2, pair.spo2.value(), flags, time));
    out.push(reading(device_id, kind, ReadingType::PulseRate, pair.pulse_rate.value(), flags, time));
}

impl Decoded {
    /// The readings this value carries, in a stable order. Their time follows
    /// the rule of [`crate::adapters::device_clock`]: the arrival time
    /// (`ctx.arrival`) for live values, the device's converted clock for stored
    /// ones. Metadata characteristics (location, features, Device Information)
    /// carry none.
    pub fn to_readings(&self, device_id: &str, kind: DeviceKind, ctx: &TimeContext) -> Vec<Reading> {
        let time = ctx.arrival;
        let mut out = Vec::new();
        match self {
            Decoded::HeartRateMeasurement(m) => {
                let flags: Vec<Flag> = if m.sensor_contact == SensorContact::NotDetected { vec![Flag::SensorContactLost] } else { vec![] };
                // 0 /min is "no signal" (a strap off the chest), not a heart that stopped.
                let hr = (m.heart_rate != 0).then_some(m.heart_rate as f64);
                out.push(reading(device_id, kind, ReadingType::HeartRate, hr, &flags, time));
                if let Some(ee) = m.energy_expended_kj {
                    // 0xFFFF: "65535 kJ or more", the strap waits for a reset.
                    let v = (ee != u16::MAX).then_some(ee as f64);
                    out.push(reading(device_id, kind, ReadingType::EnergyExpended, v, &flags, time));
                }
                // Each beat gets its own time (MedTech keeps one value per timestamp).
                let beats = crate::model::rr_beat_times(time, &m.rr_intervals_ms);
                for (rr, t) in m.rr_intervals_ms.iter().zip(beats) {
                    // An interval of 0 is not a beat.
                    let v = (*rr > 0.0).then_some(*rr);
                    out.push(reading(device_id, kind, ReadingType::RrInterval, v, &flags, t));
                }
            }
            Decoded::PlxContinuous(m) => {
                let mut flags = plx_flags(m.measurement_status.as_ref(), m.device_and_sensor_status.as_ref());
                // No timestamp: a continuous value from storage has no known time.
                let clock = DeviceClock { stored: from_storage(m.measurement_status.as_ref()), ..DeviceClock::default() };
                let timing = device_clock::resolve(&clock, ctx);
                flags.extend(timing.flags);
                // Fast and Slow averages are other views of the same measurement:
                // extra values of the normal readings (`spo2Fast`, `pulseRateSlow`...),
                // not readings of their own with the same time.
                let first = out.len();
                pair_readings(&mut out, device_id, kind, &m.normal, &flags, timing.time);
                for (pair, suffix) in [(&m.fast, "Fast"), (&m.slow, "Slow")] {
                    let Some(pair) = pair else { continue };
                    for (r, v) in out[first..].iter_mut().zip([pair.spo2.value(), pair.pulse_rate.value()]) {
                        if let Some(v) = v {
                            let name = format!("{}{suffix}", r.kind.name());
                            r.set_value(&name, v);
                        }
                    }
                }
                if let Some(pai) = m.pulse_amplitude_index {
                    out.push(reading(device_id, kind, ReadingType::PerfusionIndex, pai.value(), &flags, timing.time));
                }
            }
            Decoded::PlxSpotCheck(m) => {
                let mut flags = plx_flags(m.measurement_status.as_ref(), m.device_and_sensor_status.as_ref());
                let timing = device_clock::resolve(&spot_check_clock(m), ctx);
                flags.extend(timing.flags);
                let start = out.len();
                pair_readings(&mut out, device_id, kind, &m.measurement, &flags, timing.time);
                if let Some(pai) = m.pulse_amplitude_index {
                    out.push(reading(device_id, kind, ReadingType::PerfusionIndex, pai.value(), &flags, timing.time));
                }
                for r in out.iter_mut().skip(start) {
                    r.device_time = timing.device_time;
                    r.spot_check = true;
                }
            }
            Decoded::BatteryLevel { percent } => {
                out.push(reading(device_id, kind, ReadingType::BatteryLevel, Some(*percent as f64), &[], time));
            }
            Decoded::BodySensorLocation { .. } | Decoded::PlxFeatures(_) | Decoded::DeviceInformation { .. } => {}
        }
        out
    }

    /// The device-clock offset (device clock minus `arrival`, whole seconds)
    /// this value measures: `Some` only for a live spot-check with a valid
    /// timestamp and a set clock. The adapter keeps the latest per device and
    /// passes it back in [`TimeContext::measured_offset`].
    pub(crate) fn clock_offset(&self, arrival: DateTime<Utc>) -> Option<i64> {
        match self {
            Decoded::PlxSpotCheck(m) => device_clock::measured_offset(&spot_check_clock(m), arrival),
            _ => None,
        }
    }
}

/// Parses hex bytes as a field engineer types them: `16 4B 2E 03`,
/// `164b2e03`, `0x16,0x4b`, split across several arguments or not.
pub(crate) fn parse_hex(parts: &[String]) -> Result<Vec<u8>, String> {
    let mut digits = String::new();
    for part in parts {
        for token in part.split(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == '-') {
            let t = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")).unwrap_or(token);
            if t.len() == 1 {
                // A lone nibble written as one token ("6") is a byte 0x06.
                digits.push('0');
            }
            digits.push_str(t);
        }
    }
    if digits.is_empty() {
        return Err("no bytes given".into());
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("`{bad}` is not a hex digit"));
    }
    if digits.len() % 2 != 0 {
        return Err(format!("{} hex digits is an odd count; write each byte as two digits", digits.len()));
    }
    hex::decode(&digits).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
