//! HL7 v2 ORU^R01 observation messages from bedside monitors and central
//! stations: parser, reading mapping and the ACK, all pure.
//!
//! Why hand-written: the HL7 crates are transports or full message models;
//! what the gateway needs is small and specific: find the OBX observations,
//! map their IEEE 11073 codes to our reading types, honour OBX-11 status and
//! OBX-14 time with its zone, and answer with an ACK. About 400 lines keep
//! every rule visible and testable.
//!
//! Grammar (HL7 v2.6 chapter 2, "Control"): segments end with CR (LF and CR LF
//! are accepted too, as exported files use them); MSH-1 is the field
//! separator (the 4th character) and MSH-2 the encoding characters
//! (component, repetition, escape, subcomponent; usually `^~\&`), honoured as
//! sent; escape sequences `\F\ \S\ \T\ \R\ \E\ \Xhh\` are decoded (2.7
//! "Use of escape sequences in text fields"); only the first repetition and
//! component of a field is read where one value is expected.
//!
//! Observations (HL7 v2.6 chapter 7, OBX; codes from ISO/IEEE 11073-10101 as
//! used in the IHE PCD-01 technical framework examples):
//! - OBX-3 code -> reading: [`MDC_CODES`], plus a configurable map for LOINC
//!   or vendor codes ([`CodeMapping`], e.g. a `99COMEN` code), tried first;
//!   codes in neither are listed in [`Record::ignored`], not errors.
//! - OBX-5 empty, or OBX-11 `X` (cannot be obtained), `N` (not asked), `I`
//!   (pending) -> the reading has no number and `valueUnavailable`; `D`, `W`
//!   (deleted, wrong) -> `invalid`; `P` (preliminary) -> `earlyEstimate`.
//! - OBX-6 unit: MDC unit codes or UCUM/plain strings, converted to the
//!   type's unit (°F and kPa are converted); an empty unit is taken as the
//!   type's unit; an unknown unit leaves the observation ignored (listed).
//! - NIBP systolic, diastolic and mean (MDC 150021-150023, and the cuff
//!   pressure codes 150301-150303 some vendors send) of one time become one
//!   `bloodPressure` reading.
//! - Time: OBX-14 (else OBR-7) with its zone (else MSH-7's zone) is the
//!   measurement time (`deviceTime.timeFrom = deviceZone`); a time later than
//!   arrival + 2 s cannot be right: arrival and `timeUnknown`. Without any
//!   zone the monitor's local clock is kept beside the arrival time, as for
//!   serial lines.
//!
//! ACK (chapter 2, "Acknowledgment messages"; MSA-1 codes AA/AE/AR):
//! [`build_ack`] makes the message; the TCP listener ([`super::tcp`]) sends
//! AA only after the readings are committed, AE/AR with the reason otherwise.

use super::framing::MllpFramer;
use super::{BadInput, Decoded, Decoder, Record};
use crate::adapters::device_clock::{self, DeviceClock, GatewayZone, TimeContext, FUTURE_TOLERANCE_SECONDS};
use crate::model::{DeviceKind, DeviceTime, Flag, Reading, ReadingType, TimeFrom};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;

/// IEEE 11073-10101 codes (MDC, partition 2 codes as sent in OBX-3) mapped to
/// a reading type and value name.
pub(crate) const MDC_CODES: [(&str, ReadingType, &str); 12] = [
    ("147842", ReadingType::HeartRate, "heartRate"),             // MDC_ECG_HEART_RATE
    ("149530", ReadingType::PulseRate, "pulseRate"),             // MDC_PULS_OXIM_PULS_RATE
    ("149522", ReadingType::PulseRate, "pulseRate"),             // MDC_PULS_RATE (generic pulse rate)
    ("150456", ReadingType::Spo2, "spo2"),                       // MDC_PULS_OXIM_SAT_O2
    ("150021", ReadingType::BloodPressure, "systolic"),          // MDC_PRESS_BLD_NONINV_SYS
    ("150022", ReadingType::BloodPressure, "diastolic"),         // MDC_PRESS_BLD_NONINV_DIA
    ("150023", ReadingType::BloodPressure, "mean"),              // MDC_PRESS_BLD_NONINV_MEAN
    ("150301", ReadingType::BloodPressure, "systolic"),          // MDC_PRESS_CUFF_SYS
    ("150302", ReadingType::BloodPressure, "diastolic"),         // MDC_PRESS_CUFF_DIA
    ("150303", ReadingType::BloodPressure, "mean"),              // MDC_PRESS_CUFF_MEAN
    ("150344", ReadingType::BodyTemperature, "bodyTemperature"), // MDC_TEMP
    ("151562", ReadingType::RespirationRate, "respirationRate"), // MDC_RESP_RATE
];

/// A code (LOINC, vendor) mapped to a reading, in addition to [`MDC_CODES`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeMapping {
    /// OBX-3.1 identifier (`8867-4`, `2453`).
    pub(crate) code: String,
    /// OBX-3.3 coding system (`LN`, `99COMEN`); absent matches any.
    #[serde(default)]
    pub(crate) system: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: ReadingType,
    /// Value name; default the type's first.
    #[serde(default)]
    pub(crate) value: Option<String>,
}

/// Options of the `hl7` driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7Options {
    /// Longest message in bytes.
    pub(crate) max_length: usize,
    /// Extra codes, tried before [`MDC_CODES`].
    pub(crate) codes: Vec<CodeMapping>,
    /// Where the readings' patient comes from (the adapters apply it; the
    /// decoder itself never sets a patient).
    pub(crate) patient_from: PatientFrom,
}

impl Default for Hl7Options {
    fn default() -> Hl7Options {
        Hl7Options { max_length: 1 << 20, codes: Vec::new(), patient_from: PatientFrom::Device }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeMapFile {
    #[serde(default)]
    code: Vec<CodeMapping>,
}

impl Hl7Options {
    /// Reads extra code mappings from TOML (`[[code]] code = "..." system =
    /// "..." type = "heartRate"`), checking each value name.
    pub(crate) fn with_code_map(mut self, toml_text: &str) -> Result<Hl7Options, String> {
        let file: CodeMapFile = toml::from_str(toml_text).map_err(|e| e.to_string().trim().to_string())?;
        for (i, c) in file.code.iter().enumerate() {
            if c.kind == ReadingType::DeviceEvent {
                return Err(format!("code[{i}].type: deviceEvent carries no value"));
            }
            if let Some(v) = &c.value {
                if c.kind.unit_of(v).is_none() {
                    return Err(format!("code[{i}].value: `{v}` is not a value of {}", c.kind));
                }
            }
            if c.code.trim().is_empty() {
                return Err(format!("code[{i}].code: must not be empty"));
            }
        }
        self.codes.extend(file.code);
        Ok(self)
    }

    fn lookup(&self, code: &str, system: &str) -> Option<(ReadingType, String)> {
        for c in &self.codes {
            if c.code == code && c.system.as_deref().is_none_or(|s| s == system) {
                let value = c.value.clone().or_else(|| c.kind.value_units().first().map(|(n, _)| n.to_string()))?;
                return Some((c.kind, value));
            }
        }
        if system.is_empty() || system == "MDC" {
            return MDC_CODES.iter().find(|(c, _, _)| *c == code).map(|(_, k, v)| (*k, v.to_string()));
        }
        None
    }
}

/// The parts of an MSH segment the parser and the ACK need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) field_sep: char,
    /// MSH-2 as sent (component, repetition, escape, subcomponent).
    pub(crate) encoding: String,
    pub(crate) sending_application: String,
    pub(crate) sending_facility: String,
    pub(crate) receiving_application: String,
    pub(crate) receiving_facility: String,
    /// MSH-7 as sent.
    pub(crate) time: String,
    /// MSH-9 as sent (`ORU^R01^ORU_R01`).
    pub(crate) message_type: String,
    /// MSH-10.
    pub(crate) control_id: String,
    /// MSH-11.
    pub(crate) processing_id: String,
    /// MSH-12.
    pub(crate) version: String,
}

impl Header {
    fn component(&self) -> char {
        self.encoding.chars().next().unwrap_or('^')
    }
    fn repetition(&self) -> char {
        self.encoding.chars().nth(1).unwrap_or('~')
    }
    fn escape(&self) -> Option<char> {
        self.encoding.chars().nth(2)
    }
    fn subcomponent(&self) -> char {
        self.encoding.chars().nth(3).unwrap_or('&')
    }
}

/// A message the driver cannot use, with the ACK code it deserves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Hl7Error {
    /// `AR` for what the gateway does not accept (not ORU^R01, no MSH), `AE`
    /// for what it cannot process.
    pub code: AckCode,
    pub reason: String,
}

impl From<Hl7Error> for BadInput {
    fn from(e: Hl7Error) -> BadInput {
        BadInput::Hl7(e.reason)
    }
}

/// MSA-1 acknowledgment codes (HL7 table 0008, original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application Accept: stored.
    AA,
    /// Application Error: could not be processed; the sender may retry.
    AE,
    /// Application Reject: not accepted (type, version, processing id).
    AR,
}

impl AckCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

fn segments(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\r', '\n']).map(|s| s.trim_matches(|c: char| c == ' ' || c == '\t')).filter(|s| !s.is_empty())
}

/// Parses the MSH segment at the start of a message (best effort, for the
/// ACK of a message that fails later).
pub fn header(message: &[u8]) -> Result<Header, Hl7Error> {
    let text = String::from_utf8_lossy(message);
    let msh = segments(&text).next().unwrap_or("");
    let reject = |reason: String| Hl7Error { code: AckCode::AR, reason };
    if !msh.starts_with("MSH") {
        return Err(reject("the message does not start with an MSH segment".into()));
    }
    let mut chars = msh.chars().skip(3);
    let fs = chars.next().ok_or_else(|| reject("MSH has no field separator".into()))?;
    if fs.is_alphanumeric() || fs.is_whitespace() {
        return Err(reject(format!("MSH field separator `{fs}` is not a delimiter")));
    }
    let fields: Vec<&str> = msh.split(fs).collect();
    let encoding = fields.get(1).copied().unwrap_or("");
    let enc: Vec<char> = encoding.chars().collect();
    let distinct = enc.iter().enumerate().all(|(i, c)| !enc[..i].contains(c) && *c != fs && !c.is_alphanumeric());
    if !(2..=5).contains(&enc.len()) || !distinct {
        return Err(reject(format!("MSH-2 encoding characters `{encoding}` are not valid")));
    }
    let f = |n: usize| fields.get(n - 1).map(|s| s.to_string()).unwrap_or_default();
    Ok(Header {
        field_sep: fs,
        encoding: encoding.to_string(),
        sending_application: f(3),
        sending_facility: f(4),
        receiving_application: f(5),
        receiving_facility: f(6),
        time: f(7),
        message_type: f(9),
        control_id: f(10),
        processing_id: f(11),
        version: f(12),
    })
}

/// Decodes escape sequences (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\Xhh..\`);
/// formatting escapes (`\H\`, `\N\`, `\.br\`...) are dropped.
pub(crate) fn unescape(s: &str, h: &Header) -> String {
    let Some(esc) = h.escape() else { return s.to_string() };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(esc) {
        out.push_str(&rest[..i]);
        let after = &rest[i + esc.len_utf8()..];
        let Some(j) = after.find(esc) else {
            // A lone escape character: keep it as text.
            out.push_str(&rest[i..]);
            return out;
        };
        let seq = &after[..j];
        match seq {
            "F" => out.push(h.field_sep),
            "S" => out.push(h.component()),
            "T" => out.push(h.subcomponent()),
            "R" => out.push(h.repetition()),
            "E" => out.push(esc),
            _ if seq.starts_with('X') && seq.len() % 2 == 1 => {
                let bytes = hex::decode(&seq[1..]).unwrap_or_default();
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
            _ => {}
        }
        rest = &after[j + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Parses an HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`), to
/// the minute at least: the local date-time and its zone, when sent.
pub(crate) fn parse_dtm(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    let s = s.trim();
    let (main, zone) = match s.find(['+', '-']) {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let (digits, fraction) = main.split_once('.').unwrap_or((main, ""));
    if digits.len() < 12 || digits.len() > 14 || digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 4 {
        return None;
    }
    let n = |a: usize, b: usize| digits.get(a..b).and_then(|x| x.parse::<u32>().ok());
    let year = digits.get(0..4)?.parse::<i32>().ok()?;
    let secs = if digits.len() == 14 { n(12, 14)? } else { 0 };
    let millis = if fraction.is_empty() { 0 } else { format!("{fraction:0<3}").get(0..3)?.parse::<u32>().ok()? };
    let local = NaiveDate::from_ymd_opt(year, n(4, 6)?, n(6, 8)?)?.and_hms_milli_opt(n(8, 10)?, n(10, 12)?, secs, millis)?;
    let zone = match zone {
        None => None,
        Some(z) => {
            if z.len() != 5 || !z[1..].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i32 = z[1..3].parse().ok()?;
            let m: i32 = z[3..5].parse().ok()?;
            if h > 14 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) * if z.starts_with('-') { -1 } else { 1 };
            Some(FixedOffset::east_opt(secs)?)
        }
    };
    Some((local, zone))
}

/// A unit as sent in OBX-6 -> (scale, offset) into the type's unit.
fn convert_unit(kind: ReadingType, unit_id: &str, unit_text: &str) -> Option<(f64, f64)> {
    let u = |s: &str| s.trim().to_ascii_lowercase();
    let (id, text) = (u(unit_id), u(unit_text));
    let is = |names: &[&str]| names.iter().any(|n| *n == id || (!text.is_empty() && *n == text)) || (id.is_empty() && text.is_empty());
    match kind {
        ReadingType::Spo2 | ReadingType::PerfusionIndex | ReadingType::BatteryLevel | ReadingType::Spco | ReadingType::Spmet | ReadingType::Pvi => {
            is(&["262688", "mdc_dim_percent", "%"]).then_some((1.0, 0.0))
        }
        // g/dL only by its UCUM or plain name (a code-mapped SpHb); no MDC unit code is assumed.
        ReadingType::Sphb => is(&["g/dl"]).then_some((1.0, 0.0)),
        ReadingType::HeartRate | ReadingType::PulseRate | ReadingType::RespirationRate => is(&[
            "264864",
            "mdc_dim_beat_per_min",
            "264928",
            "mdc_dim_resp_per_min",
            "/min",
            "1/min",
            "bpm",
            "{beats}/min",
            "{breaths}/min",
            "rpm",
            "brpm",
        ])
        .then_some((1.0, 0.0)),
        ReadingType::BloodPressure => {
            if is(&["266016", "mdc_dim_mmhg", "mm[hg]", "mmhg"]) {
                Some((1.0, 0.0))
            } else if is(&["265987", "mdc_dim_kilo_pascal", "kpa"]) {
                Some((760.0 / 101.325, 0.0))
            } else {
                None
            }
        }
        ReadingType::BodyTemperature => {
            if is(&["268192", "mdc_dim_degc", "cel", "degc", "°c"]) {
                Some((1.0, 0.0))
            } else if is(&["266560", "mdc_dim_fahr", "[degf]", "degf", "°f"]) {
                Some((5.0 / 9.0, -32.0 * 5.0 / 9.0))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Decodes one HL7 message (without MLLP bytes) received at `arrival`.
pub fn decode_message(message: &[u8], opts: &Hl7Options, device_id: &str, arrival: DateTime<Utc>) -> Result<Record, Hl7Error> {
    let h = header(message)?;
    let text = String::from_utf8_lossy(message);
    let comp = |field: &str, n: usize| -> String {
        let first_rep = field.split(h.repetition()).next().unwrap_or("");
        unescape(first_rep.split(h.component()).nth(n).unwrap_or(""), &h)
    };
    let mtype = (comp(&h.message_type, 0), comp(&h.message_type, 1));
    if mtype.0 != "ORU" || mtype.1 != "R01" {
        return Err(Hl7Error { code: AckCode::AR, reason: format!("message type {}^{} is not supported (only ORU^R01)", mtype.0, mtype.1) });
    }
    let msh_zone = parse_dtm(&comp(&h.time, 0)).and_then(|(_, z)| z);
    let mut rec = Record::new(format!("HL7 ORU^R01 {}", h.control_id));
    let mut obr_time: Option<String> = None;
    let mut obx_count = 0;
    // (kind, time text) -> index in rec.readings
    let mut groups: Vec<(ReadingType, String, usize)> = Vec::new();
    for seg in segments(&text) {
        let fields: Vec<&str> = seg.split(h.field_sep).collect();
        let f = |n: usize| fields.get(n).copied().unwrap_or("");
        match fields.first().copied() {
            Some("OBR") => obr_time = Some(comp(f(7), 0)).filter(|t| !t.is_empty()),
            Some("OBX") => {
                obx_count += 1;
                let label = format!("OBX {obx_count}");
                let (code, code_text, system) = (comp(f(3), 0), comp(f(3), 1), comp(f(3), 2));
                let mapped = opts.lookup(&code, &system).or_else(|| {
                    let (alt, alt_sys) = (comp(f(3), 3), comp(f(3), 5));
                    (!alt.is_empty()).then(|| opts.lookup(&alt, &alt_sys)).flatten()
                });
                let Some((kind, value_name)) = mapped else {
                    rec.ignored.push(format!("{label}: code {code} {code_text} ({system}) is not mapped"));
                    continue;
                };
                let status = comp(f(11), 0);
                let raw = comp(f(5), 0);
                let mut flags = Vec::new();
                let mut value = None;
                match status.as_str() {
                    "X" | "N" | "I" => flags.push(Flag::ValueUnavailable),
                    "D" | "W" => flags.push(Flag::Invalid),
                    "P" => flags.push(Flag::EarlyEstimate),
                    _ => {}
                }
                if !flags.contains(&Flag::ValueUnavailable) {
                    if raw.trim().is_empty() {
                        flags.push(Flag::ValueUnavailable);
                    } else {
                        let Ok(n) = raw.trim().parse::<f64>() else {
                            rec.ignored.push(format!("{label}: {code} value `{raw}` is not a number"));
                            continue;
                        };
                        let Some((scale, offset)) = convert_unit(kind, &comp(f(6), 0), &comp(f(6), 1)) else {
                            rec.ignored.push(format!("{label}: {code} unit `{}` is not a unit of {kind}", comp(f(6), 0)));
                            continue;
                        };
                        value = Some(n * scale + offset);
                    }
                }
                let time_text = Some(comp(f(14), 0)).filter(|t| !t.is_empty()).or_else(|| obr_time.clone()).unwrap_or_default();
                let slot = groups
                    .iter()
                    .find(|(k, t, i)| {
                        *k == kind
                            && *t == time_text
                            && match value {
                                // Same value name again: merge only the same number.
                                Some(v) => rec.readings[*i].values.get(&value_name).is_none_or(|old| *old == v),
                                None => !rec.readings[*i].values.contains_key(&value_name),
                            }
                    })
                    .map(|(_, _, i)| *i);
                let i = match slot {
                    Some(i) => i,
                    None => {
                        let (time, device_time, time_flags) = timing(&time_text, msh_zone, arrival);
                        let mut r = Reading::new(device_id, DeviceKind::BedsideMonitor, kind).at(time);
                        r.device_time = device_time;
                        for fl in time_flags {
                            r.add_flag(fl);
                        }
                        rec.readings.push(r);
                        groups.push((kind, time_text.clone(), rec.readings.len() - 1));
                        rec.readings.len() - 1
                    }
                };
                let r = &mut rec.readings[i];
                if let Some(v) = value {
                    r.set_value(&value_name, v);
                }
                for fl in flags {
                    r.add_flag(fl);
                }
            }
            _ => {}
        }
    }
    // A panel missing one of its values says so.
    for r in &mut rec.readings {
        if r.kind == ReadingType::BloodPressure && !r.values.is_empty() && r.values.len() < 3 {
            r.add_flag(Flag::ValueUnavailable);
        }
    }
    Ok(rec)
}

/// Where a message's readings take their patient from (`patient_from` in
/// the device's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PatientFrom {
    /// The device's patient association (config `patient_id` or the twin),
    /// as for every other device; a message naming another patient in PID-3
    /// than the first one since the association was set is refused
    /// ([`super::patient_guards`]).
    #[default]
    Device,
    /// Each message's PID-3; the readings' device id is the device's id plus
    /// the bed ([`Routing::location`], [`bed_device_id`]). For a central
    /// station's feed of several beds.
    Pid,
}

/// One patient identifier from PID-3 (HL7 v2.6 chapter 3, PID-3 "Patient
/// Identifier List", data type CX, chapter 2A): CX.1 the ID number, CX.4 the
/// assigning authority (data type HD: its subcomponents as sent, unescaped,
/// joined with `&`), CX.5 the identifier type code (`MR`: medical record
/// number, table 0203). Patient data: never log it above debug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatientIdent {
    pub(crate) id: String,
    pub(crate) authority: String,
    pub(crate) id_type: String,
}

impl PatientIdent {
    /// The same patient: the same ID number from the same assigning
    /// authority (the type code is not compared).
    pub(crate) fn same_patient(&self, other: &PatientIdent) -> bool {
        self.id == other.id && self.authority == other.authority
    }

    /// `id` or `id^^^authority`, for hashing into logs ([`crate::redact::patient`]).
    pub(crate) fn key(&self) -> String {
        if self.authority.is_empty() {
            self.id.clone()
        } else {
            format!("{}^^^{}", self.id, self.authority)
        }
    }
}

/// Who and where a message is about: PID-3 and the bed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// From PID-3: the repetition whose CX.5 is `MR` (medical record number),
    /// else the first repetition with a CX.1; `None` without a PID segment or
    /// an ID number in PID-3.
    pub(crate) patient: Option<PatientIdent>,
    /// The bed: PV1-3 "Assigned Patient Location" (data type PL: point of
    /// care, room, bed; the parts sent, each part's subcomponents joined,
    /// parts joined with `-`), else the first OBX-18 "Equipment Instance
    /// Identifier" (EI.1); `None` when neither is sent. Raw text, unescaped.
    pub location: Option<String>,
}

/// Splits one field into repetitions, components and subcomponents, and
/// unescapes each piece (after splitting, so an escaped separator such as
/// `\S\` stays text and does not split).
fn field_parts(field: &str, h: &Header) -> Vec<Vec<Vec<String>>> {
    field
        .split(h.repetition())
        .map(|rep| rep.split(h.component()).map(|c| c.split(h.subcomponent()).map(|s| unescape(s, h)).collect()).collect())
        .collect()
}

/// Finds PID-3, PV1-3 and OBX-18 of a message (see [`Routing`]). Errors:
/// what [`header`] refuses (AR), and a message whose PID segments name more
/// than one patient (AR: one ORU^R01 may carry several patients' results,
/// HL7 v2.6 chapter 7 `PATIENT_RESULT` groups; the gateway takes one patient
/// per message, so their readings cannot be mixed up).
pub fn routing(message: &[u8]) -> Result<Routing, Hl7Error> {
    let h = header(message)?;
    let text = String::from_utf8_lossy(message);
    let mut patients: Vec<PatientIdent> = Vec::new();
    let mut pv1_location: Option<String> = None;
    let mut equipment: Option<String> = None;
    for seg in segments(&text) {
        let fields: Vec<&str> = seg.split(h.field_sep).collect();
        let f = |n: usize| fields.get(n).copied().unwrap_or("");
        match fields.first().copied() {
            Some("PID") => {
                let reps = field_parts(f(3), &h);
                let cx: Vec<PatientIdent> = reps
                    .iter()
                    .map(|comps| {
                        let part = |n: usize| comps.get(n).map(|s| s.join("&")).unwrap_or_default();
                        PatientIdent { id: part(0).trim().to_string(), authority: part(3).trim().to_string(), id_type: part(4).trim().to_string() }
                    })
                    .filter(|c| !c.id.is_empty())
                    .collect();
                let chosen = cx.iter().find(|c| c.id_type.eq_ignore_ascii_case("MR")).or_else(|| cx.first()).cloned();
                if let Some(p) = chosen {
                    if !patients.iter().any(|q| q.same_patient(&p)) {
                        patients.push(p);
                    }
                }
            }
            Some("PV1") if pv1_location.is_none() => {
                let reps = field_parts(f(3), &h);
                let parts: Vec<String> = reps
                    .first()
                    .map(|comps| {
                        comps
                            .iter()
                            .take(3)
                            .map(|subs| subs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-"))
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                pv1_location = Some(parts.join("-")).filter(|s| !s.is_empty());
            }
            Some("OBX") if equipment.is_none() => {
                let reps = field_parts(f(18), &h);
                equipment = reps.first().and_then(|c| c.first()).map(|s| s.join("&").trim().to_string()).filter(|s| !s.is_empty());
            }
            _ => {}
        }
    }
    if patients.len() > 1 {
        return Err(Hl7Error {
            code: AckCode::AR,
            reason: format!("the message carries results of {} patients (PID segments); send one patient per message", patients.len()),
        });
    }
    Ok(Routing { patient: patients.pop(), location: pv1_location.or(equipment) })
}

/// The device id of one bed of a feed whose patients come from PID-3:
/// `<device id>/<bed>`, the bed made safe for an id (letters, digits, `-`,
/// `_`, `.`, `:` kept; anything else becomes `_`). Errors (AE): the id would
/// be longer than 128 bytes (the limit of every device id, as an Azure IoT
/// Hub device id's).
pub fn bed_device_id(device_id: &str, location: &str) -> Result<String, Hl7Error> {
    let bed: String = location.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') { c } else { '_' }).collect();
    let id = format!("{device_id}/{bed}");
    if id.len() > 128 {
        return Err(Hl7Error {
            code: AckCode::AE,
            reason: format!("the bed location makes the device id {} bytes long; at most 128 (shorten the location sent in PV1-3)", id.len()),
        });
    }
    Ok(id)
}

/// What the right-patient guard decided about one message
/// ([`super::patient_guards::PatientGuards::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GuardVerdict {
    /// Store it: no PID-3, or the patient already charted.
    Accept,
    /// Store it: the first patient named since the association was set; from
    /// now on only this patient is accepted (recorded durably before this
    /// answer).
    Learned,
    /// Refuse it (AE): it names another patient than `charted`.
    Other { charted: PatientIdent },
    /// Refuse it (AE): the record of the charted patient was lost (damaged
    /// file at start) and no one has changed the device's association since.
    Unknown,
    /// Refuse it (AE): it would teach the guard its patient, but the record
    /// could not be written (the reason); nothing is learned, the sender
    /// resends.
    NotSaved(String),
}

/// Time of one observation: (time, deviceTime, flags). See the module docs.
fn timing(text: &str, msh_zone: Option<FixedOffset>, arrival: DateTime<Utc>) -> (DateTime<Utc>, Option<DeviceTime>, Vec<Flag>) {
    let Some((local, zone)) = parse_dtm(text) else {
        return (arrival, None, Vec::new());
    };
    match zone.or(msh_zone) {
        Some(z) => {
            let offset = i64::from(z.local_minus_utc());
            match z.from_local_datetime(&local).single().map(|t| t.with_timezone(&Utc)) {
                Some(t) if t <= arrival + chrono::Duration::seconds(FUTURE_TOLERANCE_SECONDS) => {
                    (t, Some(DeviceTime { local, time_from: TimeFrom::DeviceZone, utc_offset_seconds: Some(offset) }), Vec::new())
                }
                _ => (arrival, Some(DeviceTime { local, time_from: TimeFrom::Unknown, utc_offset_seconds: Some(offset) }), vec![Flag::TimeUnknown]),
            }
        }
        None => {
            let clock = DeviceClock { timestamp: Some(local), clock_not_set: false, stored: false };
            let t = device_clock::resolve(&clock, &TimeContext::new(arrival, GatewayZone::Local));
            (t.time, t.device_time, t.flags)
        }
    }
}

/// Escapes text for an HL7 field (the reverse of [`unescape`]).
fn escape(s: &str, h: &Header) -> String {
    let Some(esc) = h.escape() else { return s.replace(['\r', '\n'], " ") };
    let mut out = String::new();
    for c in s.chars() {
        match c {
            c if c == esc => out.push_str(&format!("{esc}E{esc}")),
            c if c == h.field_sep => out.push_str(&format!("{esc}F{esc}")),
            c if c == h.component() => out.push_str(&format!("{esc}S{esc}")),
            c if c == h.subcomponent() => out.push_str(&format!("{esc}T{esc}")),
            c if c == h.repetition() => out.push_str(&format!("{esc}R{esc}")),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Builds the ACK for a message (segments ended by CR, no MLLP bytes; wrap
/// with [`super::framing::mllp_wrap`]): MSH with sender and receiver swapped,
/// the original's separators, version and processing id, then `MSA|code|
/// original control id|reason`. `original` is `None` when the message had no
/// usable MSH (the ACK then uses `|^~\&`, version 2.6 and an empty MSA-2).
/// `control_id` is the ACK's own MSH-10; `now` its MSH-7 (UTC).
pub fn build_ack(original: Option<&Header>, code: AckCode, reason: Option<&str>, now: DateTime<Utc>, control_id: &str) -> String {
    let default = Header {
        field_sep: '|',
        encoding: "^~\\&".into(),
        sending_application: String::new(),
        sending_facility: String::new(),
        receiving_application: String::new(),
        receiving_facility: String::new(),
        time: String::new(),
        message_type: String::new(),
        control_id: String::new(),
        processing_id: "P".into(),
        version: "2.6".into(),
    };
    let h = original.unwrap_or(&default);
    let fs = h.field_sep;
    let c = h.component();
    let event = h.message_type.split(c).nth(1).unwrap_or("R01");
    let processing = if h.processing_id.is_empty() { "P" } else { &h.processing_id };
    let version = if h.version.is_empty() { "2.6" } else { &h.version };
    let receiving_app = if h.sending_application.is_empty() { String::new() } else { h.sending_application.clone() };
    let msh = [
        "MSH".to_string(),
        h.encoding.clone(),
        "iomt-edge".into(),
        h.receiving_facility.clone(),
        receiving_app,
        h.sending_facility.clone(),
        now.format("%Y%m%d%H%M%S+0000").to_string(),
        String::new(),
        format!("ACK{c}{event}{c}ACK"),
        escape(control_id, h),
        processing.to_string(),
        version.to_string(),
    ]
    .join(&fs.to_string());
    let mut msa = vec!["MSA".to_string(), code.as_str().to_string(), h.control_id.clone()];
    if let Some(r) = reason {
        msa.push(escape(r, h));
    }
    format!("{msh}\r{}\r", msa.join(&fs.to_string()))
}

/// One HL7 message cut from a byte stream (without MLLP bytes), and whether
/// it came in an MLLP block. Only an MLLP block has an end the sender marked
/// (`0x1C 0x0D`), so only it is answered with an ACK on a serial line; a bare
/// message ends where the next one starts or after an idle gap, which a
/// sender waiting for its ACK would never produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Framed {
    pub(crate) bytes: Vec<u8>,
    pub(crate) mllp: bool,
}

/// Output of [`Hl7Framer`]: messages, or counted bad input.
pub(crate) type FramedOut = Vec<Result<Framed, BadInput>>;

#[derive(Debug, Clone)]
enum Mode {
    Undecided,
    Mllp(MllpFramer),
    Bare { line: Vec<u8>, message: Vec<u8>, noise: usize, too_long: bool },
}

fn bare() -> Mode {
    Mode::Bare { line: Vec::new(), message: Vec::new(), noise: 0, too_long: false }
}

/// Cuts HL7 messages from a byte stream: MLLP blocks or bare segments (a
/// message starts at each `MSH` segment and ends at the next one or at
/// [`Decoder::finish`]). The stream is taken for MLLP when its first byte
/// that is not whitespace is `0x0B`, else for bare segments until a `0x0B`
/// arrives: a port opened in the middle of an MLLP
/// stream (the tail of a block first) still finds the blocks, and their ACKs.
/// Pure: bytes in, messages out; the serial adapter uses it directly (it
/// answers each MLLP message), [`Hl7Decoder`] decodes what it cuts.
#[derive(Debug, Clone)]
pub(crate) struct Hl7Framer {
    max_length: usize,
    mode: Mode,
}

impl Hl7Framer {
    pub(crate) fn new(max_length: usize) -> Hl7Framer {
        Hl7Framer { max_length, mode: Mode::Undecided }
    }

    fn mllp_frames(f: &mut MllpFramer, bytes: &[u8], out: &mut FramedOut) {
        let mut frames = Vec::new();
        f.push(bytes, &mut frames);
        out.extend(frames.into_iter().map(|fr| fr.map(|bytes| Framed { bytes, mllp: true })));
    }

    /// Ends the current bare line: a line starting with `MSH` ends the message
    /// before it (and starts the next), other lines join the message or, with
    /// no message open, are noise.
    fn bare_line(&mut self, out: &mut FramedOut) {
        let max = self.max_length;
        let Mode::Bare { line, message, noise, too_long } = &mut self.mode else { return };
        let l = std::mem::take(line);
        let trimmed = String::from_utf8_lossy(&l);
        let trimmed = trimmed.trim();
        if trimmed.is_empty() {
            return;
        }
        let mut done = None;
        if trimmed.starts_with("MSH") {
            if *noise > 0 {
                out.push(Err(BadInput::Noise { bytes: *noise }));
                *noise = 0;
            }
            if *too_long {
                out.push(Err(BadInput::TooLong { max }));
            } else if !message.is_empty() {
                done = Some(std::mem::take(message));
            }
            message.clear();
            *too_long = false;
        } else if message.is_empty() && !*too_long {
            *noise += l.len();
            return;
        }
        if !*too_long {
            message.extend_from_slice(trimmed.as_bytes());
            message.push(b'\r');
            if message.len() > max {
                message.clear();
                *too_long = true;
            }
        }
        if let Some(m) = done {
            out.push(Ok(Framed { bytes: m, mllp: false }));
        }
    }

    /// End of a bare stream: the line, noise and message still pending.
    fn end_bare(&mut self, out: &mut FramedOut) {
        self.bare_line(out);
        if let Mode::Bare { message, noise, too_long, .. } = &mut self.mode {
            if *noise > 0 {
                out.push(Err(BadInput::Noise { bytes: *noise }));
                *noise = 0;
            }
            if *too_long {
                out.push(Err(BadInput::TooLong { max: self.max_length }));
                *too_long = false;
            }
            let m = std::mem::take(message);
            if !m.is_empty() {
                out.push(Ok(Framed { bytes: m, mllp: false }));
            }
        }
    }

    /// Feeds bytes; appends the messages (and bad input) they completed.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut FramedOut) {
        let mut rest = bytes;
        if let Mode::Undecided = self.mode {
            let Some(first) = rest.iter().position(|b| !b.is_ascii_whitespace()) else { return };
            self.mode = if rest[first] == super::framing::MLLP_START { Mode::Mllp(MllpFramer::new(self.max_length)) } else { bare() };
            rest = &rest[first..];
        }
        match &mut self.mode {
            Mode::Mllp(f) => Self::mllp_frames(f, rest, out),
            Mode::Bare { .. } => {
                for (i, &b) in rest.iter().enumerate() {
                    if b == super::framing::MLLP_START {
                        // An MLLP sender after all (the port was opened in
                        // the middle of a block): what came before ends here.
                        self.end_bare(out);
                        let mut f = MllpFramer::new(self.max_length);
                        Self::mllp_frames(&mut f, &rest[i..], out);
                        self.mode = Mode::Mllp(f);
                        return;
                    }
                    // MLLP block bytes never occur in HL7 text: they end a line.
                    if matches!(b, b'\r' | b'\n' | super::framing::MLLP_START | super::framing::MLLP_END) {
                        self.bare_line(out);
                    } else if let Mode::Bare { line, .. } = &mut self.mode {
                        // A line longer than a message cannot belong to one.
                        if line.len() <= self.max_length {
                            line.push(b);
                        }
                    }
                }
            }
            Mode::Undecided => {}
        }
    }

    /// End of input: an MLLP block still open is reported cut; a bare
    /// message is complete (end of a file) and is returned.
    pub(crate) fn finish(&mut self, out: &mut FramedOut) {
        match &mut self.mode {
            Mode::Mllp(f) => {
                let mut frames = Vec::new();
                f.finish(&mut frames);
                out.extend(frames.into_iter().map(|fr| fr.map(|bytes| Framed { bytes, mllp: true })));
            }
            Mode::Bare { .. } => self.end_bare(out),
            Mode::Undecided => {}
        }
    }

    /// The stream broke: like `finish`, except that a bare message is never
    /// returned (its last segment, or whole segments after it, may be missing).
    pub(crate) fn abort(&mut self, out: &mut FramedOut) {
        match &mut self.mode {
            Mode::Bare { line, message, noise, too_long } => {
                if *noise > 0 {
                    out.push(Err(BadInput::Noise { bytes: *noise }));
                }
                if *too_long {
                    out.push(Err(BadInput::TooLong { max: self.max_length }));
                }
                if !message.is_empty() || (!line.is_empty() && !String::from_utf8_lossy(line).trim().is_empty()) {
                    out.push(Err(BadInput::Truncated("the stream broke inside a bare HL7 message".into())));
                }
                *line = Vec::new();
                *message = Vec::new();
                *noise = 0;
                *too_long = false;
            }
            _ => self.finish(out),
        }
    }

    /// The line has been idle: ends a bare message whose last segment was
    /// ended (no partial line pending); one whose last segment is still open
    /// keeps waiting.
    pub(crate) fn idle(&mut self, out: &mut FramedOut) {
        if let Mode::Bare { line, message, .. } = &mut self.mode {
            if line.is_empty() && !message.is_empty() {
                out.push(Ok(Framed { bytes: std::mem::take(message), mllp: false }));
            }
        }
    }
}

/// A [`Decoder`] for HL7 over a byte stream (serial port, TCP, a file): an
/// [`Hl7Framer`] whose messages are decoded with [`decode_message`].
#[derive(Debug, Clone)]
pub(crate) struct Hl7Decoder {
    opts: Hl7Options,
    device_id: String,
    framer: Hl7Framer,
}

impl Hl7Decoder {
    pub(crate) fn new(opts: Hl7Options, device_id: &str) -> Hl7Decoder {
        let framer = Hl7Framer::new(opts.max_length);
        Hl7Decoder { opts, device_id: device_id.to_string(), framer }
    }

    fn decode(&self, framed: FramedOut, arrival: DateTime<Utc>, out: &mut Decoded) {
        for f in framed {
            out.push(f.and_then(|m| decode_message(&m.bytes, &self.opts, &self.device_id, arrival).map_err(BadInput::from)));
        }
    }
}

impl Decoder for Hl7Decoder {
    fn push(&mut self, bytes: &[u8], arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut framed = Vec::new();
        self.framer.push(bytes, &mut framed);
        self.decode(framed, arrival, out);
    }

    fn finish(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut framed = Vec::new();
        self.framer.finish(&mut framed);
        self.decode(framed, arrival, out);
    }

    /// Like `finish`, except that a bare message is never decoded: its last
    /// segment, or whole segments after it, may be missing.
    fn abort(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut framed = Vec::new();
        self.framer.abort(&mut framed);
        self.decode(framed, arrival, out);
    }

    /// Ends a bare message whose last segment was ended (no partial line
    /// pending); a message whose last segment is still open keeps waiting.
    fn idle(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut framed = Vec::new();
        self.framer.idle(&mut framed);
        self.decode(framed, arrival, out);
    }
}
