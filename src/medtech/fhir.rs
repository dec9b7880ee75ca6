//! Building the FHIR R4 Observation for one observation group, as
//! `CodeValueFhirTemplateProcessor` and the value processors do.

use super::fhir_mapping::{Code, CodeValueTemplate, ValueKind, ValueTemplate};
use super::group::ObservationGroup;
use super::ids::SERVICE_SYSTEM;
use super::times;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// References and ids resolved for a group.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Observation logical id, when it can be computed (Create mode).
    pub(crate) observation_id: Option<String>,
    /// The identifier value.
    pub(crate) identifier_value: String,
    /// `Patient/{id}` or a placeholder reference.
    pub(crate) subject: Value,
    /// `Device/{id}` or a placeholder reference.
    pub(crate) device: Value,
}

/// Why a value could not be written (the group is dropped).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueProblem {
    /// Quantity/String got several values (`values.Single()` throws).
    Several { value_name: String, count: usize },
    /// Quantity value that `decimal.Parse` (invariant culture) refuses; `why` is
    /// the .NET exception in plain words.
    NotANumber { value_name: String, value: String, why: String },
}

/// Notes about values that were written but lose data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueNote {
    /// Two values in one SampledData slot: the later overwrote the earlier.
    SlotOverwritten { value_name: String, overwritten: usize },
    /// A SampledData value that is not a FHIR decimal (or E/L/U): the service
    /// writes it into `data` unchanged, where readers cannot take it as a number.
    SampledNotDecimal { value_name: String, value: String },
    /// A SampledData value containing a space: it becomes several data points
    /// and shifts every later slot of the Observation.
    SampledSplit { value_name: String, value: String },
    /// A Quantity value `decimal.Parse` accepted but read differently from how
    /// it is written ([`super::dotnet::DecimalReading`]).
    QuantityCoerced { value_name: String, sent: String, stored: String, reading: super::dotnet::DecimalReading },
}

fn coding(c: &Code) -> Value {
    let mut m = Map::new();
    if let Some(s) = &c.system {
        m.insert("system".into(), json!(s));
    }
    m.insert("code".into(), json!(c.code));
    if let Some(d) = &c.display {
        m.insert("display".into(), json!(d));
    }
    Value::Object(m)
}

/// `ResolveCode`: the template's codes plus the service's own coding.
fn code_concept(text: &str, codes: &[Code]) -> Value {
    let mut coding_list: Vec<Value> = codes.iter().map(coding).collect();
    coding_list.push(json!({"system": SERVICE_SYSTEM, "code": text, "display": text}));
    json!({"coding": coding_list, "text": text})
}

/// The `SampledData.data` string: one token per `period` ms slot from `start`
/// while the slot start is not after `end`; `E` for an empty slot; the latest
/// value in a slot wins. Returns the data and how many values were overwritten.
pub(crate) fn sampled_data(values: &[(DateTime<Utc>, String)], start: DateTime<Utc>, end: DateTime<Utc>, period_ms: f64) -> (String, usize) {
    let span_ms = (end - start).num_nanoseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    let slots = (span_ms / period_ms).floor().max(0.0) as usize + 1;
    // Sparse: only filled slots are kept, so a tiny defaultPeriod costs output size, not a slot table.
    let mut filled: std::collections::BTreeMap<usize, &str> = std::collections::BTreeMap::new();
    let mut overwritten = 0;
    for (t, v) in values {
        let off_ms = (*t - start).num_nanoseconds().unwrap_or(0) as f64 / 1e6;
        if off_ms < 0.0 {
            continue;
        }
        let idx = (off_ms / period_ms).floor() as usize;
        if idx < slots && filled.insert(idx, v.as_str()).is_some() {
            overwritten += 1;
        }
    }
    let mut s = String::with_capacity(slots.saturating_mul(2).min(1 << 24));
    let mut next = filled.iter().peekable();
    for i in 0..slots {
        if i > 0 {
            s.push(' ');
        }
        match next.peek() {
            Some((idx, v)) if **idx == i => {
                s.push_str(v);
                next.next();
            }
            _ => s.push('E'),
        }
    }
    (s, overwritten)
}

/// Builds `value[x]` for a value template: `(field name, value)`.
fn build_value(
    vt: &ValueTemplate,
    values: &[(DateTime<Utc>, String)],
    group: &ObservationGroup,
    notes: &mut Vec<ValueNote>,
) -> Result<(&'static str, Value), ValueProblem> {
    match &vt.kind {
        ValueKind::SampledData { default_period_ms, unit } => {
            let (data, overwritten) = sampled_data(values, group.start, group.end, *default_period_ms);
            if overwritten > 0 {
                notes.push(ValueNote::SlotOverwritten { value_name: vt.value_name.clone(), overwritten });
            }
            // The service appends each string unparsed (SampledDataProcessor.BuildSampledData).
            for (_, v) in values {
                if v.contains(' ') {
                    notes.push(ValueNote::SampledSplit { value_name: vt.value_name.clone(), value: v.clone() });
                } else if !super::dotnet::is_fhir_sampled_token(v) {
                    notes.push(ValueNote::SampledNotDecimal { value_name: vt.value_name.clone(), value: v.clone() });
                }
            }
            let mut origin = Map::new();
            origin.insert("value".into(), json!(0));
            if let Some(u) = unit {
                origin.insert("unit".into(), json!(u));
            }
            let period = if default_period_ms.fract() == 0.0 { json!(*default_period_ms as i64) } else { json!(default_period_ms) };
            Ok(("valueSampledData", json!({"origin": origin, "period": period, "dimensions": 1, "data": data})))
        }
        ValueKind::Quantity { unit, system, code } => {
            let [(_, v)] = values else {
                return Err(ValueProblem::Several { value_name: vt.value_name.clone(), count: values.len() });
            };
            // QuantityFhirValueProcessor: decimal.Parse(value, CultureInfo.InvariantCulture).
            let reading = super::dotnet::parse_decimal(v).map_err(|e| ValueProblem::NotANumber {
                value_name: vt.value_name.clone(),
                value: v.clone(),
                why: e.to_string(),
            })?;
            if reading.group_separators > 0 || reading.trailing_sign || reading.rounded {
                notes.push(ValueNote::QuantityCoerced {
                    value_name: vt.value_name.clone(),
                    sent: v.clone(),
                    stored: reading.value.to_string(),
                    reading: reading.clone(),
                });
            }
            let mut q = Map::new();
            q.insert("value".into(), reading.value.to_json());
            if let Some(u) = unit {
                q.insert("unit".into(), json!(u));
            }
            if let Some(s) = system {
                q.insert("system".into(), json!(s));
            }
            if let Some(c) = code {
                q.insert("code".into(), json!(c));
            }
            Ok(("valueQuantity", Value::Object(q)))
        }
        ValueKind::String => {
            let [(_, v)] = values else {
                return Err(ValueProblem::Several { value_name: vt.value_name.clone(), count: values.len() });
            };
            Ok(("valueString", json!(v)))
        }
        ValueKind::CodeableConcept { text, codes } => {
            let mut m = Map::new();
            m.insert("coding".into(), Value::Array(codes.iter().map(coding).collect()));
            if let Some(t) = text {
                m.insert("text".into(), json!(t));
            }
            Ok(("valueCodeableConcept", Value::Object(m)))
        }
    }
}

/// Builds the Observation. `issued` is the service's `DateTimeOffset.UtcNow`.
pub(crate) fn build_observation(
    group: &ObservationGroup,
    template: &CodeValueTemplate,
    resolved: &Resolved,
    issued: DateTime<Utc>,
) -> Result<(Value, Vec<ValueNote>), ValueProblem> {
    let mut notes = Vec::new();
    let mut o = Map::new();
    o.insert("resourceType".into(), json!("Observation"));
    if let Some(id) = &resolved.observation_id {
        o.insert("id".into(), json!(id));
    }
    o.insert("identifier".into(), json!([{"system": SERVICE_SYSTEM, "value": resolved.identifier_value}]));
    o.insert("status".into(), json!("final"));
    if !template.category.is_empty() {
        let cats: Vec<Value> = template
            .category
            .iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert("coding".into(), Value::Array(c.codes.iter().map(coding).collect()));
                if let Some(t) = &c.text {
                    m.insert("text".into(), json!(t));
                }
                Value::Object(m)
            })
            .collect();
        o.insert("category".into(), Value::Array(cats));
    }
    o.insert("code".into(), code_concept(&template.type_name, &template.codes));
    o.insert("subject".into(), resolved.subject.clone());
    o.insert("device".into(), resolved.device.clone());
    o.insert("effectivePeriod".into(), json!({"start": times::round_trip(&group.start), "end": times::round_trip(&group.end)}));
    o.insert("issued".into(), json!(issued.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)));
    if let Some(vt) = &template.value {
        if let Some(values) = group.values.get(&vt.value_name) {
            let (field, v) = build_value(vt, values, group, &mut notes)?;
            o.insert(field.into(), v);
        }
    }
    let mut comps = Vec::new();
    for c in &template.components {
        if let Some(values) = group.values.get(&c.value.value_name) {
            let (field, v) = build_value(&c.value, values, group, &mut notes)?;
            let mut cm = Map::new();
            cm.insert("code".into(), code_concept(&c.value.value_name, &c.codes));
            cm.insert(field.into(), v);
            comps.push(Value::Object(cm));
        }
    }
    if !comps.is_empty() {
        o.insert("component".into(), Value::Array(comps));
    }
    Ok((Value::Object(o), notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn sampled_data_slots() {
        let start = Utc.with_ymd_and_hms(2020, 10, 22, 1, 0, 0).unwrap();
        let end = start + Duration::hours(1) - Duration::nanoseconds(100);
        let v = vec![(start + Duration::seconds(7), "80".to_string()), (start + Duration::seconds(9), "81".to_string())];
        let (data, over) = sampled_data(&v, start, end, 5000.0);
        let toks: Vec<&str> = data.split(' ').collect();
        assert_eq!(toks.len(), 720);
        assert_eq!(&toks[..3], &["E", "81", "E"]);
        assert_eq!(over, 1);
        let (one, _) = sampled_data(&v[..1], v[0].0, v[0].0, 1000.0);
        assert_eq!(one, "80");
    }
}
