//! The whole pipeline for a set of messages: normalize, group, transform. This
//! is what `iomt-edge medtech preview` prints and what the demo calls.
//!
//! ```no_run
//! use iomt_edge::medtech::{shipped_mappings, MedTech, PreviewOptions, summary_lines};
//! let (dev, fhir) = shipped_mappings();
//! let engine = MedTech::new(dev, fhir).expect("shipped mappings are valid");
//! let messages: Vec<serde_json::Value> = Vec::new(); // Message bodies as JSON
//! let preview = engine.preview(&messages, &PreviewOptions::default());
//! for line in summary_lines(&preview) { println!("{line}"); }
//! ```

use super::device_mapping::DeviceMapping;
use super::fhir::{build_observation, Resolved, ValueNote, ValueProblem};
use super::fhir_mapping::{FhirMapping, PeriodInterval, ValueKind};
use super::fields::MappingError;
use super::group;
use super::ids;
use super::normalize::{envelope, normalize_event, Measurement, TemplateStats};
use super::skip::{Skip, SkipKind, Warning, WarningKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// How Patient and Device are resolved (the service's `ResourceIdentityServiceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdentityMode {
    /// Create Patient/Device when missing: ids are deterministic and computed here.
    #[default]
    Create,
    /// Look the Device up by identifier on the FHIR server: references cannot be
    /// known offline and are shown as conditional references.
    Lookup,
}

/// Options for a preview.
#[derive(Debug, Clone, Default)]
pub struct PreviewOptions {
    pub identity: IdentityMode,
    /// Application properties of every event (`$.Properties`).
    pub properties: Map<String, Value>,
    /// System properties of every event (`$.SystemProperties`).
    pub system_properties: Map<String, Value>,
    /// `IngestionTimeUtc` of every measurement (default: now).
    pub ingestion_time: Option<DateTime<Utc>>,
    /// `Observation.issued` (default: now).
    pub issued: Option<DateTime<Utc>>,
    /// The inputs are already `{Body, Properties, SystemProperties}` envelopes.
    pub inputs_are_envelopes: bool,
    /// `DefaultDeviceIdentifierSystem` of the service (empty by default).
    pub device_identifier_system: Option<String>,
}

/// What the service would do with a set of messages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    /// Normalized measurements, in the service's field names.
    pub measurements: Vec<Measurement>,
    /// FHIR R4 Observations as the service would write them.
    pub observations: Vec<Value>,
    /// Everything the service would drop, with the reason.
    pub skipped: Vec<Skip>,
    /// Values the service would store differently from what was sent (or
    /// that readers would misread), with the reason. Nothing here is dropped.
    pub(crate) warnings: Vec<Warning>,
    /// Readings the device marked as not valid (a flag outside
    /// [`crate::model::CHARTABLE_FLAGS`]) that the mappings keep out of the
    /// chart, as intended: not a loss (the message still carries them).
    pub excluded: Vec<super::status::StatusExclusion>,
    /// Readings the device marked as not valid that the mappings chart anyway.
    #[serde(rename = "chartedInvalid")]
    pub charted_invalid: Vec<super::status::StatusExclusion>,
}

impl Preview {
    /// Something would be dropped, retried, or stored differently from what
    /// was sent, or a reading the device marked not valid would be charted:
    /// what `preview` and `check` exit 3 for.
    pub(crate) fn has_problems(&self) -> bool {
        !self.skipped.is_empty() || !self.charted_invalid.is_empty() || self.warnings.iter().any(|w| w.kind.alters_data())
    }
}

/// Per-template counts, for `medtech check`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// One entry per device template, in mapping order.
    pub device_templates: Vec<TemplateStats>,
    /// Observations per FHIR template, in mapping order.
    pub(crate) fhir_observations: Vec<usize>,
}

/// Compiled mappings, reusable for many previews.
#[derive(Debug, Clone)]
pub struct MedTech {
    pub device: DeviceMapping,
    pub fhir: FhirMapping,
}

impl MedTech {
    /// Parses both mappings (JSON text).
    pub fn new(device_mapping_json: &str, fhir_mapping_json: &str) -> Result<MedTech, MappingError> {
        Ok(MedTech { device: DeviceMapping::parse(device_mapping_json)?, fhir: FhirMapping::parse(fhir_mapping_json)? })
    }

    /// The shipped mappings (devices/medtech/).
    pub fn shipped() -> Result<MedTech, MappingError> {
        let (d, f) = super::shipped_mappings();
        MedTech::new(d, f)
    }

    /// Runs the pipeline on `messages` (bodies, or envelopes if the options say so).
    pub fn preview(&self, messages: &[Value], opts: &PreviewOptions) -> Preview {
        self.preview_with_stats(messages, opts).0
    }

    /// [`MedTech::preview`] plus per-template counts.
    pub(crate) fn preview_with_stats(&self, messages: &[Value], opts: &PreviewOptions) -> (Preview, Stats) {
        let now = Utc::now();
        let ingestion = opts.ingestion_time.unwrap_or(now);
        let mut stats = Stats {
            device_templates: vec![TemplateStats::default(); self.device.templates.len()],
            fhir_observations: vec![0; self.fhir.templates.len()],
        };
        let mut p = Preview::default();
        for (i, msg) in messages.iter().enumerate() {
            let env = if opts.inputs_are_envelopes { msg.clone() } else { envelope(msg.clone(), &opts.properties, &opts.system_properties) };
            let mut out = normalize_event(&self.device, &env, ingestion, i, Some(&mut stats.device_templates));
            let review = super::status::review(env.get("Body").unwrap_or(&Value::Null), i, &out.matched, &self.device, &self.fhir);
            if review.all_excluded_or_unmapped {
                // Nothing matched because the device-status rule kept every reading out.
                out.skipped.retain(|s| s.kind != SkipKind::NoTemplateMatched);
            }
            p.excluded.extend(review.excluded);
            p.charted_invalid.extend(review.charted);
            p.measurements.extend(out.measurements);
            p.skipped.extend(out.skipped);
            p.warnings.extend(out.warnings);
        }
        let (obs, skipped, warnings) = self.transform(&p.measurements, opts, opts.issued.unwrap_or(now), &mut stats.fhir_observations);
        p.observations = obs;
        p.skipped.extend(skipped);
        p.warnings.extend(warnings);
        (p, stats)
    }

    /// Groups and transforms measurements into Observations.
    fn transform(
        &self,
        measurements: &[Measurement],
        opts: &PreviewOptions,
        issued: DateTime<Utc>,
        per_template: &mut [usize],
    ) -> (Vec<Value>, Vec<Skip>, Vec<Warning>) {
        let mut observations: Vec<Value> = Vec::new();
        let mut skipped = Vec::new();
        let mut warnings = Vec::new();
        let mut seen_identifiers: std::collections::HashMap<String, usize> = Default::default();
        for kg in group::by_key(measurements) {
            let Some(first) = kg.measurements.first() else { continue };
            let count = kg.measurements.len();
            let input = kg.measurements.iter().map(|m| m.input).min();
            let skip = |kind: SkipKind, template: Option<String>, reason: String| Skip {
                kind,
                input,
                template,
                type_name: Some(first.type_name.clone()),
                count,
                reason,
            };
            // Identity first (the service resolves Patient/Device before looking up the template).
            let ids = match opts.identity {
                IdentityMode::Create => match &first.patient_id {
                    Some(pid) => {
                        Some((ids::patient_resource_id(pid), ids::device_resource_id(opts.device_identifier_system.as_deref(), &first.device_id)))
                    }
                    None => {
                        skipped.push(skip(
                            SkipKind::PatientIdMissing,
                            None,
                            format!(
                                "{count} measurement(s) of type {:?} from device {:?} have no patient id; in Create mode the service cannot create the Device \
                                 without a Patient (ResourceIdentityNotDefinedException) and drops them, unless the Device already exists in FHIR linked to a Patient",
                                first.type_name, first.device_id
                            ),
                        ));
                        continue;
                    }
                },
                IdentityMode::Lookup => None,
            };
            let Some(template) = self.fhir.lookup(&first.type_name) else {
                skipped.push(skip(
                    SkipKind::NoFhirTemplate,
                    None,
                    format!(
                        "{count} measurement(s) of type {:?}: the FHIR mapping has no CodeValueFhir template with this typeName (TemplateNotFoundException); the service drops them",
                        first.type_name
                    ),
                ));
                continue;
            };
            let tlabel = format!("{} {}", template.path, template.type_name);
            if template.period == PeriodInterval::CorrelationId && first.correlation_id.is_none() {
                skipped.push(skip(
                    SkipKind::CorrelationIdMissing,
                    Some(tlabel),
                    format!(
                        "{count} measurement(s): periodInterval -1 groups by correlation id, and these have none (CorrelationIdNotDefinedException)"
                    ),
                ));
                continue;
            }
            let (groups, dropped) = group::split(&kg, template.period);
            for d in dropped {
                skipped.push(Skip {
                    kind: SkipKind::DuplicateTimestamp,
                    input: Some(d.input),
                    template: Some(tlabel.clone()),
                    type_name: Some(d.type_name.clone()),
                    count: 1,
                    reason: format!(
                        "value {:?}={} at {} dropped: the group already has a value at that exact time ({}); the service keeps one value per time",
                        d.value_name,
                        d.dropped,
                        super::times::json_net(&d.time),
                        d.kept
                    ),
                });
            }
            let tindex = self.fhir.templates.iter().position(|t| std::ptr::eq(t, template));
            let value_replaced_on_merge = template
                .value
                .iter()
                .chain(template.components.iter().map(|c| &c.value))
                .any(|v| matches!(v.kind, ValueKind::Quantity { .. } | ValueKind::String));
            for g in groups {
                let segment = g.id_segment();
                let resolved = match &ids {
                    Some((pres, dres)) => {
                        let value = ids::observation_identifier(pres, dres, &g.type_name, &segment);
                        Resolved {
                            observation_id: Some(ids::observation_id(&value)),
                            identifier_value: value,
                            subject: json!({"reference": format!("Patient/{pres}")}),
                            device: json!({"reference": format!("Device/{dres}")}),
                        }
                    }
                    None => {
                        let dev_ident = match &opts.device_identifier_system {
                            Some(s) => format!("{s}|{}", g.device_id),
                            None => g.device_id.clone(),
                        };
                        Resolved {
                            observation_id: None,
                            identifier_value: format!("{{Patient id}}.{{Device id}}.{}.{segment}", g.type_name),
                            subject: json!({"display": format!("the Patient referenced by the Device with identifier {dev_ident} (Lookup mode)")}),
                            device: json!({"reference": format!("Device?identifier={}", urlencoding::encode(&dev_ident))}),
                        }
                    }
                };
                let n_values: usize = g.values.values().map(Vec::len).sum();
                let first_input = g.inputs.iter().next().copied();
                match build_observation(&g, template, &resolved, issued) {
                    Ok((obs, all_notes)) => {
                        let (slot, notes): (Vec<ValueNote>, Vec<ValueNote>) =
                            all_notes.into_iter().partition(|n| matches!(n, ValueNote::SlotOverwritten { .. }));
                        let slot_notes: Vec<String> = slot
                            .into_iter()
                            .filter_map(|n| match n {
                                ValueNote::SlotOverwritten { value_name, overwritten } => Some(format!(
                                    "{overwritten} value(s) of {value_name:?} fell into a SampledData slot that a later value also used; only the latest per slot is kept (defaultPeriod too long for this rate)"
                                )),
                                _ => None,
                            })
                            .collect();
                        warnings.extend(notes.into_iter().filter_map(|n| note_warning(n, &kg, &tlabel, &g.type_name)));
                        for n in slot_notes {
                            skipped.push(Skip {
                                kind: SkipKind::SampledDataSlotOverwritten,
                                input: first_input,
                                template: Some(tlabel.clone()),
                                type_name: Some(g.type_name.clone()),
                                count: 1,
                                reason: n,
                            });
                        }
                        let identifier = obs.pointer("/identifier/0/value").and_then(Value::as_str).map(str::to_string);
                        // In Lookup mode the identifier shows placeholders for the
                        // resolved ids (the Device decides the Patient there), so the
                        // device id completes the key.
                        let merge_key = identifier.as_ref().map(|id| format!("{}|{id}", g.device_id));
                        let replaces = merge_key.as_ref().and_then(|k| seen_identifiers.get(k).copied()).filter(|_| value_replaced_on_merge);
                        if let Some(prev) = replaces {
                            // The service finds the Observation it just wrote by this
                            // identifier and merges into it: a Quantity or String value
                            // is replaced, the period widened.
                            if let Some(earlier) = observations.get_mut(prev) {
                                let lost = short_value(earlier);
                                let mut merged = obs.clone();
                                if let (Some(s0), Some(s1)) =
                                    (earlier.pointer("/effectivePeriod/start").cloned(), merged.pointer_mut("/effectivePeriod/start"))
                                {
                                    if s0.as_str() < s1.as_str() {
                                        *s1 = s0;
                                    }
                                }
                                *earlier = merged;
                                skipped.push(Skip {
                                    kind: SkipKind::ObservationReplaced,
                                    input: first_input,
                                    template: Some(tlabel.clone()),
                                    type_name: Some(g.type_name.clone()),
                                    count: n_values,
                                    reason: format!(
                                        "value {lost} is replaced by {}: both groups get the Observation identifier {:?} (its time segment has whole seconds), so the service merges the later into the earlier and keeps one value",
                                        short_value(&obs),
                                        identifier.as_deref().unwrap_or("")
                                    ),
                                });
                            }
                            continue;
                        }
                        if let Some(k) = merge_key {
                            seen_identifiers.insert(k, observations.len());
                        }
                        if let Some(c) = tindex.and_then(|i| per_template.get_mut(i)) {
                            *c += 1;
                        }
                        observations.push(obs);
                    }
                    Err(problem) => {
                        let (kind, reason) = match problem {
                            ValueProblem::Several { value_name, count } => {
                                let vt = if matches!(template.value.as_ref().map(|v| &v.kind), Some(ValueKind::String)) { "String" } else { "Quantity" };
                                (
                                    SkipKind::SeveralValuesInGroup,
                                    format!(
                                        "{count} values of {value_name:?} fall into one {vt} Observation (periodInterval {}); the service requires exactly one (InvalidQuantityFhirValueException) and drops the whole group; use periodInterval 0 or SampledData",
                                        period_number(template.period)
                                    ),
                                )
                            }
                            ValueProblem::NotANumber { value_name, value, why } => (
                                SkipKind::NotANumber,
                                format!(
                                    "{value_name:?} value {value:?} is not a number to the service: decimal.Parse(value, CultureInfo.InvariantCulture) throws {why}; \
                                     no Quantity can be made (InvalidQuantityFhirValueException) and the group is dropped"
                                ),
                            ),
                        };
                        skipped.push(Skip {
                            kind,
                            input: first_input,
                            template: Some(tlabel.clone()),
                            type_name: Some(g.type_name.clone()),
                            count: n_values,
                            reason,
                        });
                    }
                }
            }
        }
        (observations, skipped, warnings)
    }
}

/// The input message a value came from: the first measurement of the key group
/// with that value name and value.
fn input_of(kg: &group::KeyGroup<'_>, value_name: &str, value: &str) -> Option<usize> {
    kg.measurements.iter().find(|m| m.properties.iter().any(|(n, v)| n == value_name && v == value)).map(|m| m.input)
}

/// A value note of the FHIR stage as a [`Warning`] (slot overwrites are skips, not warnings).
fn note_warning(n: ValueNote, kg: &group::KeyGroup<'_>, tlabel: &str, type_name: &str) -> Option<Warning> {
    let w = |kind, value_name: String, sent: String, stored: Option<String>, reason: String| Warning {
        kind,
        input: input_of(kg, &value_name, &sent),
        template: Some(tlabel.to_string()),
        type_name: Some(type_name.to_string()),
        value_name: Some(value_name),
        sent,
        stored,
        reason,
    };
    Some(match n {
        ValueNote::SlotOverwritten { .. } => return None,
        ValueNote::QuantityCoerced { value_name, sent, stored, reading } => {
            let (kind, why) = if reading.group_separators > 0 {
                (
                    WarningKind::GroupSeparatorRead,
                    format!(
                        "the service's decimal.Parse (invariant culture) reads ',' as a thousands separator and skips it, so {sent:?} is stored as {stored}; \
                         if the sender meant a decimal comma, the stored value is off by a factor of {}: a probable unit/locale error. \
                         Send numbers as JSON numbers, or strings with '.' as the decimal point",
                        10u64.pow(sent.rsplit(',').next().map(|t| t.chars().take_while(char::is_ascii_digit).count()).unwrap_or(1) as u32)
                    ),
                )
            } else if reading.trailing_sign {
                (
                    WarningKind::TrailingSignRead,
                    format!("decimal.Parse (NumberStyles.Number) accepts a sign after the digits, so {sent:?} is stored as {stored}"),
                )
            } else {
                (
                    WarningKind::DecimalRounded,
                    format!("{sent:?} has more digits than a .NET decimal holds (96-bit mantissa, 28 fraction digits); the service stores {stored}"),
                )
            };
            w(kind, value_name.clone(), sent, Some(stored), format!("{value_name:?}: {why}"))
        }
        ValueNote::SampledNotDecimal { value_name, value } => w(
            WarningKind::SampledDataNotDecimal,
            value_name.clone(),
            value.clone(),
            Some(value.clone()),
            format!(
                "{value_name:?} value {value:?} is not a decimal; the service does not parse SampledData values and writes it into SampledData.data as is, \
                 where FHIR allows only decimals and E/L/U, so readers will misread it or reject the Observation"
            ),
        ),
        ValueNote::SampledSplit { value_name, value } => w(
            WarningKind::SampledDataValueSplit,
            value_name.clone(),
            value.clone(),
            None,
            format!(
                "{value_name:?} value {value:?} contains a space; SampledData.data is space-separated, so it becomes several data points and every later sample \
                 of this Observation is read one or more periods late"
            ),
        ),
    })
}

fn period_number(p: PeriodInterval) -> i32 {
    match p {
        PeriodInterval::Instance => 0,
        PeriodInterval::Hour => 60,
        PeriodInterval::Day => 1440,
        PeriodInterval::CorrelationId => -1,
    }
}

fn short_value(obs: &Value) -> String {
    if let Some(q) = obs.get("valueQuantity") {
        let v = q.get("value").map(|v| v.to_string()).unwrap_or_default();
        let u = q.get("code").or_else(|| q.get("unit")).and_then(Value::as_str).unwrap_or("");
        return format!("{v} {u}").trim().to_string();
    }
    if let Some(sd) = obs.get("valueSampledData") {
        let data = sd.get("data").and_then(Value::as_str).unwrap_or("");
        let vals: Vec<&str> = data.split(' ').filter(|t| *t != "E").collect();
        let unit = sd.pointer("/origin/unit").and_then(Value::as_str).unwrap_or("");
        let last = vals.last().copied().unwrap_or("-");
        return format!("{last} {unit} ({} sample(s))", vals.len()).replace("  ", " ");
    }
    if let Some(s) = obs.get("valueString").and_then(Value::as_str) {
        return format!("{s:?}");
    }
    if let Some(c) = obs.get("valueCodeableConcept") {
        return c.get("text").and_then(Value::as_str).unwrap_or("(coded)").to_string();
    }
    if let Some(comps) = obs.get("component").and_then(Value::as_array) {
        return comps
            .iter()
            .map(|c| {
                let name = c.pointer("/code/text").and_then(Value::as_str).unwrap_or("?");
                format!("{name} {}", short_value(c))
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    "(no value)".to_string()
}

/// One line per Observation, e.g.
/// `heartRate 72 /min -> Observation 8867-4 Heart rate 3a136fc4… [2020-10-22T01:00:00Z]`.
pub fn summary_line(obs: &Value) -> String {
    let type_name = obs.pointer("/code/text").and_then(Value::as_str).unwrap_or("?");
    let first = obs.pointer("/code/coding/0");
    let code = first.and_then(|c| c.get("code")).and_then(Value::as_str).unwrap_or("?");
    let display = first.and_then(|c| c.get("display")).and_then(Value::as_str).unwrap_or("");
    let id = obs.get("id").and_then(Value::as_str).map(|s| format!(" id {}…", s.get(..8).unwrap_or(s))).unwrap_or_default();
    let start = obs.pointer("/effectivePeriod/start").and_then(Value::as_str).unwrap_or("");
    format!("{type_name} {} -> Observation {code} {display}{id} [{start}]", short_value(obs)).replace("  ", " ")
}

/// [`summary_line`] for every Observation, then one line per skip, one per
/// group of readings excluded by device status, one per reading charted
/// although the device marked it not valid, then one per warning
/// (`WARNING (...): message 0: ...`).
pub fn summary_lines(p: &Preview) -> Vec<String> {
    let mut out: Vec<String> = p.observations.iter().map(summary_line).collect();
    out.extend(p.skipped.iter().map(|s| format!("skipped ({}): {}", s.kind.title(), s.reason)));
    out.extend(super::status::excluded_summary(&p.excluded));
    out.extend(super::status::charted_lines(&p.charted_invalid));
    out.extend(p.warnings.iter().map(warning_line));
    out
}

/// One line for a warning: `WARNING (title): message N: reason`.
pub(crate) fn warning_line(w: &Warning) -> String {
    let at = w.input.map(|i| format!("message {i}: ")).unwrap_or_default();
    let loud = if w.kind.alters_data() { "WARNING" } else { "note" };
    format!("{loud} ({}): {at}{}", w.kind.title(), w.reason)
}
