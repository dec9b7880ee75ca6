//! No-code device profiles: a TOML file that says how a monitor's text output
//! becomes readings, and the engine that applies it to one line at a time.
//!
//! Why this exists: serial monitors print one line per second in a layout of
//! their own (Masimo "ASCII 1", Nonin ASCII, Nellcor printer lines), and the
//! layout changes between models and firmware (the Radical-7 adds `SPHB=`,
//! `PVI=`, `EXC1=` to the Rad-8's line). Writing code per model does not scale
//! and a hospital cannot wait for a release to connect a monitor; OpenICE's
//! per-device `.spec` files (a regex per line, groups mapped to fields, a date
//! format, enum maps) showed that data is enough. A profile here says:
//!
//! - `[port]`: serial settings (baud, data bits, parity, stop bits, flow
//!   control), with which the adapter opens the port;
//! - `[framing]`: terminator, start/end bytes, maximum length, lines to skip
//!   (power-up headers, column headings);
//! - `[parse]`: how fields are found: `regex` (named groups), `kv`
//!   (`KEY=VALUE` tokens after an optional prefix regex; extra keys tolerated,
//!   so one profile reads several models), or `delimited` (named columns);
//!   required fields; suffixes to strip; invalid-value patterns such as `---`;
//! - `[time]`: which fields hold the monitor's clock and its format;
//! - `[[reading]]`: field -> reading type and value name, with the UCUM unit
//!   (checked against the type's unit), scale, offset and sentinel numbers
//!   (Nonin 127/511) that mean "no value";
//! - `[[status]]`: hex bit-fields (Masimo EXC), status codes (Nellcor `SO`) or
//!   line patterns mapped to named device status and reading flags.
//!
//! Everything is checked when the profile is loaded ([`Profile::from_toml`]),
//! with errors naming the key (`reading[2].unit`), so a mistake is found at
//! start-up, not at 3 a.m. on the ward. Shipped profiles live in
//! `devices/serial/` and are compiled in; any other is loaded by path.
//!
//! Rules the engine keeps (docs/serial.md):
//! - a line that does not match, lacks a required field or holds a field that
//!   is neither a number nor an invalid-value pattern is bad input: counted,
//!   no reading from it (a line garbled by noise must not give a number);
//! - a value matching an invalid pattern or a sentinel is unavailable: the
//!   reading carries `valueUnavailable` and no number (or is omitted, when the
//!   profile says so for parameters the monitor may not have);
//! - status flags apply to every reading of the line; a profile maps a device
//!   condition that leaves the value valid (low perfusion) to a flag in
//!   [`crate::model::CHARTABLE_FLAGS`], and every condition that makes it "not
//!   a valid measurement" (sensor off, no value, interference, unknown bits)
//!   to one that is not, so the shipped MedTech mapping keeps it off the chart
//!   (a test checks the shipped profiles);
//! - time: the reading is timed on arrival (gateway UTC); the monitor's clock
//!   from the line is kept as `deviceTime` (rule in
//!   [`crate::adapters::device_clock`]).

use super::framing::{LineFramer, LineFraming, Terminator};
use super::{BadInput, Decoded, Decoder, Record};
use crate::adapters::device_clock::{self, DeviceClock, GatewayZone, TimeContext};
use crate::model::{DeviceKind, Flag, Reading, ReadingType};
use chrono::{DateTime, NaiveDateTime, Utc};
use regex::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Profiles shipped in `devices/serial/`, by name.
pub(crate) const SHIPPED: [(&str, &str); 3] = [
    ("masimo-ascii1", include_str!("../../../devices/serial/masimo-ascii1.toml")),
    ("nonin-ascii", include_str!("../../../devices/serial/nonin-ascii.toml")),
    ("nellcor-n595", include_str!("../../../devices/serial/nellcor-n595.toml")),
];

/// A profile that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{problem}", if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
pub struct ProfileError {
    /// The profile's name or path.
    pub(crate) origin: String,
    /// The offending key (`reading[2].unit`), empty for file-level problems.
    pub(crate) key: String,
    pub(crate) problem: String,
}

// ---- The TOML shape (serde) -------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    /// For the reader of the profile file; the gateway does not use it.
    #[serde(default, rename = "description")]
    _description: String,
    /// Where the format comes from (manual, page); for the reader too.
    #[serde(default, rename = "source")]
    _source: String,
    device_kind: String,
    #[serde(default)]
    port: PortSettings,
    #[serde(default)]
    framing: RawFraming,
    parse: RawParse,
    #[serde(default)]
    time: Option<RawTime>,
    #[serde(default)]
    reading: Vec<RawReading>,
    #[serde(default)]
    status: Vec<RawStatus>,
}

/// `[port]`: serial line settings the monitor uses (the adapter opens the
/// port with them; a device's `[device.serial]` may override each).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PortSettings {
    pub(crate) baud: u32,
    pub(crate) data_bits: u8,
    pub(crate) parity: Parity,
    pub(crate) stop_bits: u8,
    pub(crate) flow_control: FlowControl,
}

impl Default for PortSettings {
    fn default() -> PortSettings {
        PortSettings { baud: 9600, data_bits: 8, parity: Parity::None, stop_bits: 1, flow_control: FlowControl::None }
    }
}

/// Parity and flow control are the config's own types: a profile's `[port]`,
/// a device's `[device.serial]` overrides and `serial record`'s options all
/// spell them the same way.
pub(crate) use crate::config::serial::{SerialFlowControl as FlowControl, SerialParity as Parity};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFraming {
    terminator: Terminator,
    start_byte: Option<u8>,
    end_byte: Option<u8>,
    max_length: usize,
    skip: Vec<String>,
}

impl Default for RawFraming {
    fn default() -> RawFraming {
        RawFraming { terminator: Terminator::Any, start_byte: None, end_byte: None, max_length: 1024, skip: Vec::new() }
    }
}

/// How fields are found in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ParseMode {
    /// `pattern` must match the whole line; its named groups are the fields.
    Regex,
    /// Whitespace-separated `KEY=VALUE` tokens (a bare token is a field whose
    /// value is empty), after an optional `pattern` matched at the start of
    /// the line (its named groups are fields too).
    Kv,
    /// Columns split by `separator`, named by `columns`.
    Delimited,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParse {
    mode: ParseMode,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    separator: Option<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    strip: Vec<String>,
    #[serde(default)]
    decimal_comma: bool,
    #[serde(default)]
    invalid: Vec<String>,
    #[serde(default)]
    serial_field: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    fields: Vec<String>,
    format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IfUnavailable {
    /// A reading with `valueUnavailable` and no number (explains the gap).
    #[default]
    Flag,
    /// No reading (for parameters the monitor may not measure at all, such as
    /// Masimo SpCO without a rainbow sensor).
    Omit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReading {
    field: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<String>,
    unit: String,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    #[serde(default)]
    sentinels: Vec<f64>,
    #[serde(default)]
    if_unavailable: IfUnavailable,
    #[serde(default)]
    value_if_present: BTreeMap<String, String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    radix: Option<u32>,
    #[serde(default)]
    bits: Vec<RawBit>,
    #[serde(default)]
    codes: Vec<RawCode>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    flag: Option<String>,
    #[serde(default)]
    unknown_flag: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBit {
    mask: u64,
    name: String,
    #[serde(default)]
    flag: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCode {
    code: String,
    name: String,
    #[serde(default)]
    flag: Option<String>,
}

// ---- The validated profile --------------------------------------------------

/// One field -> one value of a reading.
#[derive(Debug, Clone)]
pub(crate) struct FieldMapping {
    pub(crate) field: String,
    pub(crate) kind: ReadingType,
    /// The value name (`spo2`, `systolic`).
    pub(crate) value: String,
    pub(crate) scale: f64,
    pub(crate) offset: f64,
    /// Device numbers (before scale) that mean "no value".
    pub(crate) sentinels: Vec<f64>,
    pub(crate) if_unavailable: IfUnavailable,
    /// Another value name used when a field is present (Nonin ` F` marks the
    /// fast-responding values: `spo2Fast`).
    pub(crate) value_if_present: Vec<(String, String)>,
}

/// Where a device status comes from.
#[derive(Debug, Clone)]
pub(crate) enum StatusSource {
    /// A bit-field (hex by default) in `field`.
    Bits { field: String, radix: u32, bits: Vec<(u64, String, Option<Flag>)> },
    /// Space- or comma-separated codes in `field`.
    Codes { field: String, codes: Vec<(String, String, Option<Flag>)> },
    /// The line matches a pattern.
    Pattern { pattern: Regex, name: String, flag: Option<Flag> },
}

/// A device status rule; `unknown_flag` is set for bits or codes not listed.
#[derive(Debug, Clone)]
pub(crate) struct StatusRule {
    pub(crate) source: StatusSource,
    pub(crate) unknown_flag: Option<Flag>,
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) name: String,
    pub(crate) device_kind: DeviceKind,
    pub(crate) port: PortSettings,
    pub(crate) framing: LineFraming,
    pub(crate) skip: Vec<Regex>,
    pub(crate) mode: ParseMode,
    pub(crate) pattern: Option<Regex>,
    pub(crate) separator: Option<String>,
    pub(crate) columns: Vec<String>,
    pub(crate) required: Vec<String>,
    pub(crate) strip: Vec<String>,
    pub(crate) decimal_comma: bool,
    pub(crate) invalid: Vec<Regex>,
    pub(crate) serial_field: Option<String>,
    /// Fields holding the monitor's clock, joined by a space, and their
    /// chrono format.
    pub(crate) time: Option<(Vec<String>, String)>,
    pub(crate) readings: Vec<FieldMapping>,
    pub(crate) status: Vec<StatusRule>,
}

fn parse_flag(s: &str) -> Result<Flag, String> {
    serde_json::from_value::<Flag>(serde_json::Value::String(s.to_string())).map_err(|_| {
        let names: Vec<String> = Flag::ALL.iter().filter_map(|f| serde_json::to_value(f).ok()?.as_str().map(String::from)).collect();
        format!("unknown flag `{s}`; flags: {}", names.join(", "))
    })
}

fn parse_device_kind(s: &str) -> Option<DeviceKind> {
    let folded: String = s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
    [DeviceKind::HeartRateStrap, DeviceKind::PulseOximeter, DeviceKind::BedsideMonitor, DeviceKind::Other]
        .into_iter()
        .find(|k| k.name().to_ascii_lowercase() == folded)
}

impl Profile {
    /// A shipped profile's name (`masimo-ascii1`) or a path to a profile file
    /// (anything containing `/` or ending in `.toml`).
    pub(crate) fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some((name, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            return Profile::from_toml(text, name);
        }
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let text = std::fs::read_to_string(Path::new(name_or_path)).map_err(|e| ProfileError {
                origin: name_or_path.to_string(),
                key: String::new(),
                problem: format!("cannot read the profile: {e}"),
            })?;
            return Profile::from_toml(&text, name_or_path);
        }
        let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
        Err(ProfileError {
            origin: name_or_path.to_string(),
            key: String::new(),
            problem: format!(
                "no such profile; shipped profiles: {}; built-in drivers: {}; or give a path to a .toml file",
                names.join(", "),
                super::Driver::BUILT_IN.join(", ")
            ),
        })
    }

    /// Parses and validates a profile; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let err = |key: &str, problem: String| ProfileError { origin: origin.to_string(), key: key.to_string(), problem };
        let raw: RawProfile = toml::from_str(text).map_err(|e| err("", e.to_string().trim().to_string()))?;
        let compile = |key: &str, p: &str| Regex::new(p).map_err(|e| err(key, format!("not a valid regex: {e}")));

        if raw.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let device_kind = parse_device_kind(&raw.device_kind).ok_or_else(|| {
            err("device_kind", format!("unknown kind `{}`; kinds: pulseOximeter, bedsideMonitor, heartRateStrap, other", raw.device_kind))
        })?;
        let p = &raw.port;
        if p.baud == 0 {
            return Err(err("port.baud", "must be more than 0".into()));
        }
        if !(5..=8).contains(&p.data_bits) {
            return Err(err("port.data_bits", format!("{} is not 5, 6, 7 or 8", p.data_bits)));
        }
        if !(1..=2).contains(&p.stop_bits) {
            return Err(err("port.stop_bits", format!("{} is not 1 or 2", p.stop_bits)));
        }
        let f = &raw.framing;
        if !(1..=1_048_576).contains(&f.max_length) {
            return Err(err("framing.max_length", format!("{} is not between 1 and 1048576", f.max_length)));
        }
        if f.start_byte.is_some() && f.start_byte == f.end_byte {
            return Err(err("framing.end_byte", "must differ from framing.start_byte".into()));
        }
        let skip = f.skip.iter().enumerate().map(|(i, s)| compile(&format!("framing.skip[{i}]"), s)).collect::<Result<Vec<_>, _>>()?;

        let pr = &raw.parse;
        let pattern = match &pr.pattern {
            Some(s) => Some(compile("parse.pattern", s)?),
            None => None,
        };
        let group_names: Vec<String> = pattern.as_ref().map(|r| r.capture_names().flatten().map(String::from).collect()).unwrap_or_default();
        match pr.mode {
            ParseMode::Regex => {
                if pattern.is_none() {
                    return Err(err("parse.pattern", "mode = \"regex\" needs a pattern with named groups".into()));
                }
                if group_names.is_empty() {
                    return Err(err("parse.pattern", "has no named group (?P<name>...)".into()));
                }
            }
            ParseMode::Kv => {}
            ParseMode::Delimited => {
                if pr.columns.is_empty() {
                    return Err(err("parse.columns", "mode = \"delimited\" needs the column names".into()));
                }
                if pattern.is_some() {
                    return Err(err("parse.pattern", "is not used with mode = \"delimited\"".into()));
                }
            }
        }
        let separator = match (&pr.separator, pr.mode) {
            (Some(s), ParseMode::Delimited) if s.chars().count() == 1 => Some(s.clone()),
            (Some(_), ParseMode::Delimited) => return Err(err("parse.separator", "must be one character".into())),
            (Some(_), _) => return Err(err("parse.separator", "is only used with mode = \"delimited\"".into())),
            (None, ParseMode::Delimited) => Some(",".into()),
            (None, _) => None,
        };
        // Fields a line can have, when the profile says so (regex, delimited;
        // kv also has fields from its tokens, so anything goes there).
        let known: Option<Vec<String>> = match pr.mode {
            ParseMode::Regex => Some(group_names.clone()),
            ParseMode::Delimited => Some(pr.columns.clone()),
            ParseMode::Kv => None,
        };
        let check_field = |key: &str, field: &str| -> Result<(), ProfileError> {
            if field.trim().is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
            match &known {
                Some(k) if !k.iter().any(|n| n == field) => {
                    Err(err(key, format!("`{field}` is not a field of this line (fields: {})", k.join(", "))))
                }
                _ => Ok(()),
            }
        };
        for (i, r) in pr.required.iter().enumerate() {
            check_field(&format!("parse.required[{i}]"), r)?;
        }
        if let Some(s) = &pr.serial_field {
            check_field("parse.serial_field", s)?;
        }
        let invalid = pr.invalid.iter().enumerate().map(|(i, s)| compile(&format!("parse.invalid[{i}]"), s)).collect::<Result<Vec<_>, _>>()?;
        if pr.strip.iter().any(|s| s.is_empty()) {
            return Err(err("parse.strip", "holds an empty suffix".into()));
        }

        let time = match &raw.time {
            None => None,
            Some(t) => {
                if t.fields.is_empty() {
                    return Err(err("time.fields", "must name at least one field".into()));
                }
                for (i, f) in t.fields.iter().enumerate() {
                    check_field(&format!("time.fields[{i}]"), f)?;
                }
                if t.format.trim().is_empty() || !reads_date_and_time(&t.format) {
                    return Err(err("time.format", format!("`{}` does not read a whole date and time (example: %m/%d/%y %H:%M:%S)", t.format)));
                }
                Some((t.fields.clone(), t.format.clone()))
            }
        };

        let mut readings = Vec::new();
        for (i, r) in raw.reading.iter().enumerate() {
            let key = |k: &str| format!("reading[{i}].{k}");
            check_field(&key("field"), &r.field)?;
            let kind = ReadingType::from_name(&r.kind).filter(|k| *k != ReadingType::DeviceEvent).ok_or_else(|| {
                let names: Vec<&str> = ReadingType::ALL.iter().filter(|t| **t != ReadingType::DeviceEvent).map(|t| t.name()).collect();
                err(&key("type"), format!("unknown reading type `{}`; types: {}", r.kind, names.join(", ")))
            })?;
            let default_value = kind.value_units().first().map(|(n, _)| n.to_string()).unwrap_or_default();
            let value = r.value.clone().unwrap_or(default_value);
            let Some(unit) = kind.unit_of(&value) else {
                let names: Vec<&str> = kind.value_units().iter().map(|(n, _)| *n).collect();
                return Err(err(&key("value"), format!("`{value}` is not a value of {kind} (values: {})", names.join(", "))));
            };
            if r.unit != unit {
                return Err(err(&key("unit"), format!("`{}` is not the unit of {kind}.{value} (`{unit}`); convert with scale and offset", r.unit)));
            }
            if !r.scale.is_finite() || r.scale == 0.0 {
                return Err(err(&key("scale"), "must be a finite number other than 0".into()));
            }
            if !r.offset.is_finite() {
                return Err(err(&key("offset"), "must be a finite number".into()));
            }
            if r.sentinels.iter().any(|s| !s.is_finite()) {
                return Err(err(&key("sentinels"), "must be finite numbers".into()));
            }
            let mut value_if_present = Vec::new();
            for (field, alt) in &r.value_if_present {
                check_field(&key("value_if_present"), field)?;
                if kind.unit_of(alt).is_none() {
                    return Err(err(&key("value_if_present"), format!("`{alt}` is not a value of {kind}")));
                }
                value_if_present.push((field.clone(), alt.clone()));
            }
            if let Some(j) = readings.iter().position(|m: &FieldMapping| m.kind == kind && m.value == value) {
                return Err(err(&key("value"), format!("{kind}.{value} is already mapped by reading[{j}]")));
            }
            readings.push(FieldMapping {
                field: r.field.clone(),
                kind,
                value,
                scale: r.scale,
                offset: r.offset,
                sentinels: r.sentinels.clone(),
                if_unavailable: r.if_unavailable,
                value_if_present,
            });
        }

        let mut status = Vec::new();
        for (i, s) in raw.status.iter().enumerate() {
            let key = |k: &str| format!("status[{i}].{k}");
            let flag_of = |k: &str, f: &Option<String>| f.as_deref().map(parse_flag).transpose().map_err(|e| err(k, e));
            let unknown_flag = flag_of(&key("unknown_flag"), &s.unknown_flag)?;
            // A bit-field rule has `bits` or at least a `radix` (a field whose
            // bits are all unknown, marked by `unknown_flag`).
            let is_bits = !s.bits.is_empty() || s.radix.is_some();
            let kinds = usize::from(is_bits) + usize::from(!s.codes.is_empty()) + usize::from(s.pattern.is_some());
            if kinds != 1 {
                return Err(err(&format!("status[{i}]"), "needs exactly one of `bits` (or `radix`), `codes` or `pattern`".into()));
            }
            let source = if let Some(p) = &s.pattern {
                if s.field.is_some() || s.radix.is_some() || s.unknown_flag.is_some() {
                    return Err(err(&format!("status[{i}]"), "a `pattern` rule takes only `name` and `flag`".into()));
                }
                let name = s.name.clone().filter(|n| !n.trim().is_empty()).ok_or_else(|| err(&key("name"), "is required with `pattern`".into()))?;
                StatusSource::Pattern { pattern: compile(&key("pattern"), p)?, name, flag: flag_of(&key("flag"), &s.flag)? }
            } else {
                if s.name.is_some() || s.flag.is_some() {
                    return Err(err(&format!("status[{i}]"), "`name` and `flag` go on each bit or code".into()));
                }
                let field = s.field.clone().ok_or_else(|| err(&key("field"), "is required with `bits` or `codes`".into()))?;
                check_field(&key("field"), &field)?;
                if is_bits {
                    let radix = s.radix.unwrap_or(16);
                    if !(2..=16).contains(&radix) {
                        return Err(err(&key("radix"), format!("{radix} is not between 2 and 16")));
                    }
                    let mut bits = Vec::new();
                    for (j, b) in s.bits.iter().enumerate() {
                        if b.mask == 0 {
                            return Err(err(&key(&format!("bits[{j}].mask")), "must not be 0".into()));
                        }
                        bits.push((b.mask, b.name.clone(), flag_of(&key(&format!("bits[{j}].flag")), &b.flag)?));
                    }
                    StatusSource::Bits { field, radix, bits }
                } else {
                    let mut codes = Vec::new();
                    for (j, c) in s.codes.iter().enumerate() {
                        if c.code.trim().is_empty() {
                            return Err(err(&key(&format!("codes[{j}].code")), "must not be empty".into()));
                        }
                        codes.push((c.code.clone(), c.name.clone(), flag_of(&key(&format!("codes[{j}].flag")), &c.flag)?));
                    }
                    StatusSource::Codes { field, codes }
                }
            };
            status.push(StatusRule { source, unknown_flag });
        }
        if readings.is_empty() {
            return Err(err("reading", "the profile maps no field to a reading".into()));
        }

        Ok(Profile {
            name: raw.name,
            device_kind,
            port: raw.port,
            framing: LineFraming {
                terminator: raw.framing.terminator,
                start_byte: raw.framing.start_byte,
                end_byte: raw.framing.end_byte,
                max_length: raw.framing.max_length,
            },
            skip,
            mode: pr.mode,
            pattern,
            separator,
            columns: pr.columns.clone(),
            required: pr.required.clone(),
            strip: pr.strip.clone(),
            decimal_comma: pr.decimal_comma,
            invalid,
            serial_field: pr.serial_field.clone(),
            time,
            readings,
            status,
        })
    }

    /// The fields of one line, or why it does not have the profile's shape.
    fn fields<'a>(&self, line: &'a str) -> Result<HashMap<String, &'a str>, BadInput> {
        let mut fields = HashMap::new();
        match self.mode {
            ParseMode::Regex => {
                let re = self.pattern.as_ref().ok_or_else(|| BadInput::NoMatch("no pattern".into()))?;
                let caps = re.captures(line).ok_or_else(|| BadInput::NoMatch("the line does not match the pattern".into()))?;
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        fields.insert(name.to_string(), m.as_str());
                    }
                }
            }
            ParseMode::Kv => {
                let mut rest = line;
                if let Some(re) = &self.pattern {
                    let caps = re.captures(line).filter(|c| c.get(0).is_some_and(|m| m.start() == 0));
                    let caps = caps.ok_or_else(|| BadInput::NoMatch("the line does not start as the pattern says".into()))?;
                    for name in re.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            fields.insert(name.to_string(), m.as_str());
                        }
                    }
                    rest = caps.get(0).map_or(line, |m| &line[m.end()..]);
                }
                for token in rest.split_whitespace() {
                    let (k, v) = token.split_once('=').unwrap_or((token, ""));
                    if k.is_empty() {
                        return Err(BadInput::NoMatch(format!("a token without a key: `{token}`")));
                    }
                    fields.entry(k.to_string()).or_insert(v);
                }
            }
            ParseMode::Delimited => {
                let sep = self.separator.as_deref().unwrap_or(",");
                let cells: Vec<&str> = if sep == " " { line.split_whitespace().collect() } else { line.split(sep).map(str::trim).collect() };
                for (name, cell) in self.columns.iter().zip(cells) {
                    if !name.is_empty() && name != "_" {
                        fields.insert(name.clone(), cell);
                    }
                }
            }
        }
        for r in &self.required {
            if !fields.contains_key(r) {
                return Err(BadInput::NoMatch(format!("no field `{r}`")));
            }
        }
        Ok(fields)
    }

    /// A field's text with the profile's suffixes stripped; `None` when it
    /// matches an invalid-value pattern.
    fn clean<'a>(&self, raw: &'a str) -> Option<&'a str> {
        let mut v = raw.trim();
        loop {
            let before = v.len();
            for s in &self.strip {
                v = v.strip_suffix(s.as_str()).unwrap_or(v).trim_end();
            }
            if v.len() == before {
                break;
            }
        }
        if v.is_empty() || self.invalid.iter().any(|re| re.is_match(v)) {
            None
        } else {
            Some(v)
        }
    }

    fn number(&self, field: &str, raw: &str) -> Result<Option<f64>, BadInput> {
        let Some(v) = self.clean(raw) else { return Ok(None) };
        let text = if self.decimal_comma { v.replace(',', ".") } else { v.to_string() };
        let ok_chars = text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
        match text.parse::<f64>() {
            Ok(n) if ok_chars && n.is_finite() => Ok(Some(n)),
            _ => Err(BadInput::BadField { field: field.to_string(), problem: format!("`{raw}` is not a number") }),
        }
    }

    /// Decodes one framed line received at `arrival`: `Ok(None)` for a line
    /// the profile skips (header, blank), a record, or bad input.
    pub(crate) fn decode_line(&self, line: &[u8], device_id: &str, arrival: DateTime<Utc>) -> Result<Option<Record>, BadInput> {
        let line = std::str::from_utf8(line).map_err(|_| BadInput::NotText)?;
        let line = line.trim_matches(|c: char| c == '\r' || c == '\n');
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(BadInput::NoMatch("control characters in the line".into()));
        }
        if line.trim().is_empty() || self.skip.iter().any(|re| re.is_match(line)) {
            return Ok(None);
        }
        let fields = self.fields(line)?;
        let mut rec = Record::new(line);

        // Status first: its flags go on every reading.
        let mut flags: Vec<Flag> = Vec::new();
        let add = |flags: &mut Vec<Flag>, f: Option<Flag>| {
            if let Some(f) = f {
                if !flags.contains(&f) {
                    flags.push(f);
                }
            }
        };
        for rule in &self.status {
            match &rule.source {
                StatusSource::Bits { field, radix, bits } => {
                    let Some(raw) = fields.get(field) else { continue };
                    let Some(text) = self.clean(raw) else { continue };
                    let word = u64::from_str_radix(text, *radix)
                        .map_err(|_| BadInput::BadField { field: field.clone(), problem: format!("`{raw}` is not a base-{radix} number") })?;
                    let mut known = 0u64;
                    for (mask, name, flag) in bits {
                        known |= mask;
                        if word & mask == *mask {
                            rec.device_status.push(name.clone());
                            add(&mut flags, *flag);
                        }
                    }
                    let unknown = word & !known;
                    if unknown != 0 {
                        rec.device_status.push(format!("{field}:unknown:{unknown:#x}"));
                        add(&mut flags, rule.unknown_flag);
                    }
                }
                StatusSource::Codes { field, codes } => {
                    let Some(raw) = fields.get(field) else { continue };
                    for code in raw.split(|c: char| c.is_whitespace() || c == ',').filter(|c| !c.is_empty()) {
                        match codes.iter().find(|(c, _, _)| c == code) {
                            Some((_, name, flag)) => {
                                rec.device_status.push(name.clone());
                                add(&mut flags, *flag);
                            }
                            None => {
                                rec.device_status.push(format!("{field}:unknown:{code}"));
                                add(&mut flags, rule.unknown_flag);
                            }
                        }
                    }
                }
                StatusSource::Pattern { pattern, name, flag } => {
                    if pattern.is_match(line) {
                        rec.device_status.push(name.clone());
                        add(&mut flags, *flag);
                    }
                }
            }
        }

        // Values (a garbled number rejects the whole line before any reading).
        let mut values: Vec<(&FieldMapping, String, Option<f64>)> = Vec::new();
        for m in &self.readings {
            let Some(raw) = fields.get(&m.field) else { continue };
            let n = self.number(&m.field, raw)?;
            let n = n.filter(|n| !m.sentinels.contains(n)).map(|n| n * m.scale + m.offset);
            let name = m.value_if_present.iter().find(|(f, _)| fields.contains_key(f)).map_or_else(|| m.value.clone(), |(_, alt)| alt.clone());
            values.push((m, name, n));
        }

        rec.serial = self.serial_field.as_ref().and_then(|f| fields.get(f)).and_then(|s| self.clean(s)).map(String::from);
        let mut clock = DeviceClock::default();
        if let Some((names, format)) = &self.time {
            let parts: Option<Vec<&str>> = names.iter().map(|n| fields.get(n).copied()).collect();
            if let Some(parts) = parts {
                match NaiveDateTime::parse_from_str(&parts.join(" "), format) {
                    Ok(t) => {
                        rec.device_clock = Some(t);
                        clock.timestamp = Some(t);
                    }
                    Err(_) => clock.clock_not_set = true,
                }
            }
        }
        let timing = device_clock::resolve(&clock, &TimeContext::new(arrival, GatewayZone::Local));

        // One reading per type, in the order the profile maps them.
        let mut order: Vec<ReadingType> = Vec::new();
        for (m, _, _) in &values {
            if !order.contains(&m.kind) {
                order.push(m.kind);
            }
        }
        for kind in order {
            let mut r = Reading::new(device_id, self.device_kind, kind).at(timing.time);
            r.device_time = timing.device_time;
            let mut any = false;
            for (m, name, n) in values.iter().filter(|(m, _, _)| m.kind == kind) {
                match n {
                    Some(v) => {
                        r.set_value(name, *v);
                        any = true;
                    }
                    None if m.if_unavailable == IfUnavailable::Flag => {
                        r.add_flag(Flag::ValueUnavailable);
                        any = true;
                    }
                    None => {}
                }
            }
            if !any {
                continue;
            }
            for f in flags.iter().chain(&timing.flags) {
                r.add_flag(*f);
            }
            rec.readings.push(r);
        }
        Ok(Some(rec))
    }
}

/// Whether a chrono format reads a whole date and time: it formats a known
/// date-time without error and parses it back.
fn reads_date_and_time(format: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return false;
    }
    let Some(probe) = chrono::NaiveDate::from_ymd_opt(2016, 2, 22).and_then(|d| d.and_hms_opt(22, 47, 45)) else {
        return false;
    };
    let mut text = String::new();
    if write!(text, "{}", probe.format_with_items(items.iter())).is_err() {
        return false;
    }
    NaiveDateTime::parse_from_str(&text, format) == Ok(probe)
}

/// A [`Decoder`] for a profile: line framing, then [`Profile::decode_line`].
#[derive(Debug, Clone)]
pub(crate) struct LineDecoder {
    profile: Profile,
    framer: LineFramer,
    device_id: String,
}

impl LineDecoder {
    pub(crate) fn new(profile: Profile, device_id: &str) -> LineDecoder {
        let framer = LineFramer::new(profile.framing.clone());
        LineDecoder { profile, framer, device_id: device_id.to_string() }
    }

    fn lines(&self, frames: Vec<Result<Vec<u8>, BadInput>>, arrival: DateTime<Utc>, out: &mut Decoded) {
        for f in frames {
            match f {
                Ok(line) => match self.profile.decode_line(&line, &self.device_id, arrival) {
                    Ok(Some(rec)) => out.push(Ok(rec)),
                    Ok(None) => {}
                    Err(e) => out.push(Err(e)),
                },
                Err(e) => out.push(Err(e)),
            }
        }
    }
}

impl Decoder for LineDecoder {
    fn push(&mut self, bytes: &[u8], arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut frames = Vec::new();
        self.framer.push(bytes, &mut frames);
        self.lines(frames, arrival, out);
    }

    fn finish(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        let mut frames = Vec::new();
        self.framer.finish(&mut frames);
        self.lines(frames, arrival, out);
    }
}
