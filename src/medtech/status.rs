//! Readings the device itself marks as not valid: which of them the mappings
//! leave out ("excluded by device status") and which they would chart anyway.
//!
//! Why this exists: the rule lives in the device mapping (each clinical
//! template's type match lets a reading through only if every flag it carries
//! is in [`crate::model::CHARTABLE_FLAGS`]), and the service says nothing about
//! readings no template matched. The preview looks at each `iomt-edge/…`
//! message's readings itself, so a user sees how many readings were kept out
//! of the chart and why, and `check` fails loudly when a mapping (an older or
//! hand-written one) would chart a reading the device flagged as not valid.

use super::device_mapping::DeviceMapping;
use super::fhir_mapping::FhirMapping;
use crate::model::CHARTABLE_FLAGS;
use serde::Serialize;
use serde_json::Value;

/// One reading kept out of the chart (or, for
/// [`super::Preview::charted_invalid`], charted despite) its device status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusExclusion {
    /// Index of the input message (0-based).
    pub input: usize,
    /// Index of the reading in the message's `readings`.
    pub(crate) reading: usize,
    /// The reading's `type`.
    pub type_name: String,
    /// The reading's `time`, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) time: Option<String>,
    /// The flags that are not in the chartable list (why it is excluded).
    pub flags: Vec<String>,
    /// The device templates that turn it into a measurement anyway (empty for
    /// an excluded reading).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) templates: Vec<String>,
}

/// The wire names of [`CHARTABLE_FLAGS`] (`lowPerfusion`, ...).
pub(crate) fn chartable_flag_names() -> Vec<String> {
    CHARTABLE_FLAGS.iter().filter_map(|f| serde_json::to_value(f).ok()?.as_str().map(str::to_string)).collect()
}

/// What the mappings do with one message's flagged readings.
#[derive(Debug, Default)]
pub(crate) struct MessageReview {
    /// Readings with a flag outside the list that no template charts.
    pub(crate) excluded: Vec<StatusExclusion>,
    /// Readings with a flag outside the list that a template charts anyway.
    pub(crate) charted: Vec<StatusExclusion>,
    /// The message has readings and every one of them is excluded by device
    /// status or of a type that is deliberately unmapped (so "no template
    /// matched" is the rule working, not a loss).
    pub(crate) all_excluded_or_unmapped: bool,
}

/// Whether `needle` is `hay` or a value somewhere inside it.
fn within(hay: &Value, needle: &Value) -> bool {
    if hay == needle {
        return true;
    }
    match hay {
        Value::Object(m) => m.values().any(|v| within(v, needle)),
        Value::Array(a) => a.iter().any(|v| within(v, needle)),
        _ => false,
    }
}

/// Reviews the readings of one message body. `matched` holds, for every
/// measurement the device mapping produced from this message, the index of
/// its template and the token its type match selected.
pub(crate) fn review(body: &Value, input: usize, matched: &[(usize, Value)], device: &DeviceMapping, fhir: &FhirMapping) -> MessageReview {
    let mut out = MessageReview::default();
    let is_gateway_message = body.get("schema").and_then(Value::as_str).is_some_and(|s| s.starts_with("iomt-edge/"));
    let Some(readings) = body.get("readings").and_then(Value::as_array).filter(|_| is_gateway_message) else { return out };
    let allowed = chartable_flag_names();
    let unmapped: Vec<&str> = super::UNMAPPED_READING_TYPES.iter().map(|(t, _)| t.name()).collect();
    let mut excluded_or_unmapped = 0;
    for (i, r) in readings.iter().enumerate() {
        let type_name = r.get("type").and_then(Value::as_str).unwrap_or("?").to_string();
        let bad: Vec<String> = match r.get("flags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => {
                a.iter().map(|f| f.as_str().map(str::to_string).unwrap_or_else(|| f.to_string())).filter(|f| !allowed.contains(f)).collect()
            }
            // Not a list: nothing can vouch for the reading.
            Some(other) => vec![other.to_string()],
        };
        if bad.is_empty() {
            if unmapped.contains(&type_name.as_str()) {
                excluded_or_unmapped += 1;
            }
            continue;
        }
        excluded_or_unmapped += 1;
        let templates: Vec<String> = matched
            .iter()
            .filter(|(_, tok)| within(r, tok))
            .filter_map(|(ti, _)| device.templates.get(*ti))
            .filter(|t| fhir.lookup(&t.type_name).is_some())
            .map(|t| format!("{} {}", t.path, t.type_name))
            .collect();
        let entry =
            StatusExclusion { input, reading: i, type_name, time: r.get("time").and_then(Value::as_str).map(str::to_string), flags: bad, templates };
        if entry.templates.is_empty() {
            out.excluded.push(entry);
        } else {
            out.charted.push(entry);
        }
    }
    out.all_excluded_or_unmapped = !readings.is_empty() && excluded_or_unmapped == readings.len() && !out.excluded.is_empty();
    out
}

/// One line per (type, flags) group of excluded readings, e.g.
/// `excluded by device status: 3 heartRate reading(s) flagged sensorContactLost`.
pub(crate) fn excluded_summary(excluded: &[StatusExclusion]) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for e in excluded {
        *groups.entry((e.type_name.clone(), e.flags.join(", "))).or_default() += 1;
    }
    groups.into_iter().map(|((t, f), n)| format!("excluded by device status: {n} {t} reading(s) flagged {f}")).collect()
}

/// One line per reading a mapping charts although the device marked it not valid.
pub(crate) fn charted_lines(charted: &[StatusExclusion]) -> Vec<String> {
    charted
        .iter()
        .map(|c| {
            format!(
                "CHARTED ALTHOUGH NOT VALID: message {} reading {} ({} at {}) is flagged {} by the device, yet {} turns it into a measurement",
                c.input,
                c.reading,
                c.type_name,
                c.time.as_deref().unwrap_or("?"),
                c.flags.join(", "),
                c.templates.join(" and ")
            )
        })
        .collect()
}
