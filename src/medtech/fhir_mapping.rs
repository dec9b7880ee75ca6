//! The FHIR destination mapping (`fhirmapping.json`): a `CollectionFhir` of
//! `CodeValueFhir` templates, parsed strictly (unknown fields and duplicate type
//! names are rejected with their path).

use super::fields::{err, template_type_is, MappingError, Obj};
use serde_json::Value;
use std::collections::HashMap;

/// How measurements are windowed into Observations (`periodInterval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeriodInterval {
    /// `0`: one Observation per distinct timestamp.
    Instance,
    /// `60`: the UTC clock hour.
    Hour,
    /// `1440`: the UTC day.
    Day,
    /// `-1`: by correlation id.
    CorrelationId,
}

/// A FHIR Coding from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Code {
    pub(crate) code: String,
    pub(crate) system: Option<String>,
    pub(crate) display: Option<String>,
}

/// A category: text and codings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Category {
    pub(crate) text: Option<String>,
    pub(crate) codes: Vec<Code>,
}

/// The value type of a value or component.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueKind {
    SampledData { default_period_ms: f64, unit: Option<String> },
    Quantity { unit: Option<String>, system: Option<String>, code: Option<String> },
    String,
    CodeableConcept { text: Option<String>, codes: Vec<Code> },
}

/// A value template: which measurement property, written how.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueTemplate {
    pub(crate) value_name: String,
    pub(crate) kind: ValueKind,
}

/// A component of the Observation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Component {
    pub(crate) codes: Vec<Code>,
    pub(crate) value: ValueTemplate,
}

/// One `CodeValueFhir` template.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeValueTemplate {
    pub(crate) path: String,
    pub(crate) type_name: String,
    pub(crate) period: PeriodInterval,
    pub(crate) category: Vec<Category>,
    pub(crate) codes: Vec<Code>,
    pub(crate) value: Option<ValueTemplate>,
    pub(crate) components: Vec<Component>,
}

/// A parsed FHIR mapping, looked up by type name case-insensitively.
#[derive(Debug, Clone)]
pub struct FhirMapping {
    pub templates: Vec<CodeValueTemplate>,
    by_type: HashMap<String, usize>,
}

impl FhirMapping {
    /// Parses the JSON text of a FHIR mapping.
    pub fn parse(text: &str) -> Result<FhirMapping, MappingError> {
        let v: Value = serde_json::from_str(text).map_err(|e| err("(file)", format!("not valid JSON: {e}")))?;
        FhirMapping::from_value(&v)
    }

    /// Parses a FHIR mapping already read as JSON.
    pub(crate) fn from_value(v: &Value) -> Result<FhirMapping, MappingError> {
        let root = Obj::new(v, "")?;
        root.only(&["templateType", "template"])?;
        let tt = root.req_str("templateType")?;
        if !template_type_is(&tt, "CollectionFhir") {
            return Err(err("templateType", format!("is {tt:?}; a FHIR mapping must be \"CollectionFhir\"")));
        }
        let (items, items_path) = root.opt_array("template")?.ok_or_else(|| err("template", "is required"))?;
        root.finish()?;
        let mut templates = Vec::new();
        let mut by_type: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{items_path}[{i}]");
            let t = parse_template(item, &path)?;
            let key = t.type_name.to_lowercase();
            if let Some(prev) = by_type.get(&key) {
                return Err(err(
                    &format!("{path}.template.typeName"),
                    format!("duplicate typeName {:?} (already used by template[{prev}]); MedTech rejects the mapping", t.type_name),
                ));
            }
            by_type.insert(key, templates.len());
            templates.push(t);
        }
        Ok(FhirMapping { templates, by_type })
    }

    /// The template for a measurement type (case-insensitive), if any.
    pub(crate) fn lookup(&self, type_name: &str) -> Option<&CodeValueTemplate> {
        self.by_type.get(&type_name.to_lowercase()).and_then(|i| self.templates.get(*i))
    }
}

fn parse_template(v: &Value, path: &str) -> Result<CodeValueTemplate, MappingError> {
    let o = Obj::new(v, path)?;
    o.only(&["templateType", "template"])?;
    let tt = o.req_str("templateType")?;
    if !template_type_is(&tt, "CodeValueFhir") {
        return Err(err(&o.field_path("templateType"), format!("unknown template type {tt:?} (only CodeValueFhir)")));
    }
    let (inner, inner_path) = o.get("template").ok_or_else(|| err(&o.field_path("template"), "is required"))?;
    o.finish()?;
    let t = Obj::new(inner, &inner_path)?;
    t.only(&["typeName", "periodInterval", "category", "codes", "value", "components"])?;
    let type_name = t.req_str("typeName")?;
    let period = match t.get("periodInterval") {
        None => PeriodInterval::Instance,
        Some((v, p)) => match v.as_i64() {
            Some(0) => PeriodInterval::Instance,
            Some(60) => PeriodInterval::Hour,
            Some(1440) => PeriodInterval::Day,
            Some(-1) => PeriodInterval::CorrelationId,
            _ => return Err(err(&p, format!("{v} is not a supported periodInterval (0, 60, 1440 or -1)"))),
        },
    };
    let mut category = Vec::new();
    if let Some((arr, ap)) = t.opt_array("category")? {
        for (i, c) in arr.iter().enumerate() {
            let co = Obj::new(c, &format!("{ap}[{i}]"))?;
            co.only(&["text", "codes"])?;
            let text = co.opt_str("text")?;
            let codes = parse_codes(&co, false)?;
            co.finish()?;
            category.push(Category { text, codes });
        }
    }
    let codes = parse_codes(&t, true)?;
    let value = match t.get("value") {
        Some((v, p)) => Some(parse_value(v, &p)?),
        None => None,
    };
    let mut components = Vec::new();
    if let Some((arr, ap)) = t.opt_array("components")? {
        for (i, c) in arr.iter().enumerate() {
            let co = Obj::new(c, &format!("{ap}[{i}]"))?;
            co.only(&["codes", "value"])?;
            let codes = parse_codes(&co, true)?;
            let (vv, vp) = co.get("value").ok_or_else(|| err(&co.field_path("value"), "is required"))?;
            let value = parse_value(vv, &vp)?;
            co.finish()?;
            components.push(Component { codes, value });
        }
    }
    t.finish()?;
    Ok(CodeValueTemplate { path: path.to_string(), type_name, period, category, codes, value, components })
}

fn parse_codes(o: &Obj<'_>, required: bool) -> Result<Vec<Code>, MappingError> {
    let Some((arr, ap)) = o.opt_array("codes")? else {
        return if required { Err(err(&o.field_path("codes"), "is required")) } else { Ok(Vec::new()) };
    };
    let mut out = Vec::new();
    for (i, c) in arr.iter().enumerate() {
        let co = Obj::new(c, &format!("{ap}[{i}]"))?;
        co.only(&["code", "system", "display"])?;
        let code = co.req_str("code")?;
        let system = co.opt_str("system")?;
        let display = co.opt_str("display")?;
        co.finish()?;
        out.push(Code { code, system, display });
    }
    Ok(out)
}

fn parse_value(v: &Value, path: &str) -> Result<ValueTemplate, MappingError> {
    let o = Obj::new(v, path)?;
    let vt = o.req_str("valueType")?;
    let extra: &[&str] = match vt.to_ascii_lowercase().as_str() {
        "sampleddata" => &["defaultPeriod", "unit"],
        "quantity" => &["unit", "system", "code"],
        "codeableconcept" => &["text", "codes"],
        _ => &[],
    };
    let mut allowed = vec!["valueType", "valueName"];
    allowed.extend_from_slice(extra);
    o.only(&allowed)?;
    let value_name = o.req_str("valueName")?;
    let kind = match vt.to_ascii_lowercase().as_str() {
        "sampleddata" => {
            let (dp, dpp) = o.get("defaultPeriod").ok_or_else(|| err(&o.field_path("defaultPeriod"), "is required for SampledData"))?;
            let default_period_ms = match dp {
                Value::Number(n) => n.as_f64().unwrap_or(0.0),
                Value::String(s) => s.trim().parse::<f64>().map_err(|_| err(&dpp, "must be a number of milliseconds"))?,
                _ => return Err(err(&dpp, "must be a number of milliseconds")),
            };
            if default_period_ms <= 0.0 || !default_period_ms.is_finite() {
                return Err(err(&dpp, "must be a positive number of milliseconds"));
            }
            ValueKind::SampledData { default_period_ms, unit: o.opt_str("unit")? }
        }
        "quantity" => ValueKind::Quantity { unit: o.opt_str("unit")?, system: o.opt_str("system")?, code: o.opt_str("code")? },
        "string" => ValueKind::String,
        "codeableconcept" => {
            let text = o.opt_str("text")?;
            let codes = parse_codes(&o, false)?;
            ValueKind::CodeableConcept { text, codes }
        }
        _ => return Err(err(&o.field_path("valueType"), format!("{vt:?} is not a value type (SampledData, Quantity, String or CodeableConcept)"))),
    };
    o.finish()?;
    Ok(ValueTemplate { value_name, kind })
}
