//! The device mapping (`devicecontent.json`): a `CollectionContent` of
//! `JsonPathContent`, `IotJsonPathContent`, `IotCentralJsonPathContent` and
//! `CalculatedContent` templates, parsed strictly.

use super::expr::{Expression, Language};
use super::fields::{err, template_type_is, MappingError, Obj};
use serde_json::Value;

/// Which template kind, which decides what the expressions run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentKind {
    /// Expressions after the type match run on the matched token.
    JsonPath,
    /// Device id and time come from IoT Hub properties of the matched token.
    IotJsonPath,
    /// Device id `$.deviceId`, time `$.enqueuedTime` of the matched token.
    IotCentralJsonPath,
    /// Expressions run on the envelope plus `matchedToken`; JSONPath or JMESPath.
    Calculated,
}

impl ContentKind {
    /// The name used in mappings.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ContentKind::JsonPath => "JsonPathContent",
            ContentKind::IotJsonPath => "IotJsonPathContent",
            ContentKind::IotCentralJsonPath => "IotCentralJsonPathContent",
            ContentKind::Calculated => "CalculatedContent",
        }
    }
}

/// One value a template extracts.
#[derive(Debug, Clone)]
pub(crate) struct ValueTemplate {
    pub(crate) name: String,
    pub(crate) expression: Expression,
    pub(crate) required: bool,
}

/// One content template.
#[derive(Debug, Clone)]
pub struct ContentTemplate {
    pub(crate) kind: ContentKind,
    /// Path in the mapping (`template[3]`), for reports.
    pub(crate) path: String,
    pub(crate) type_name: String,
    pub(crate) type_match: Expression,
    /// Tried in order; the first that yields a token wins.
    pub(crate) device_id: Vec<Expression>,
    /// Tried in order; the first that yields a token wins.
    pub(crate) timestamp: Vec<Expression>,
    pub(crate) patient_id: Option<Expression>,
    pub(crate) encounter_id: Option<Expression>,
    pub(crate) correlation_id: Option<Expression>,
    pub(crate) values: Vec<ValueTemplate>,
}

/// A parsed device mapping.
#[derive(Debug, Clone)]
pub struct DeviceMapping {
    pub templates: Vec<ContentTemplate>,
    /// Things that are legal but probably not meant (plain words).
    pub(crate) warnings: Vec<String>,
}

impl DeviceMapping {
    /// Parses the JSON text of a device mapping.
    pub fn parse(text: &str) -> Result<DeviceMapping, MappingError> {
        let v: Value = serde_json::from_str(text).map_err(|e| err("(file)", format!("not valid JSON: {e}")))?;
        DeviceMapping::from_value(&v)
    }

    /// Parses a device mapping already read as JSON.
    pub(crate) fn from_value(v: &Value) -> Result<DeviceMapping, MappingError> {
        let root = Obj::new(v, "")?;
        root.only(&["templateType", "template"])?;
        let tt = root.req_str("templateType")?;
        if !template_type_is(&tt, "CollectionContent") {
            return Err(err("templateType", format!("is {tt:?}; a device mapping must be \"CollectionContent\"")));
        }
        let (items, items_path) = root.opt_array("template")?.ok_or_else(|| err("template", "is required"))?;
        root.finish()?;
        let mut templates = Vec::new();
        let mut warnings = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{items_path}[{i}]");
            templates.push(parse_template(item, &path)?);
        }
        if templates.is_empty() {
            warnings.push("the mapping has no templates: every message would be dropped".to_string());
        }
        Ok(DeviceMapping { templates, warnings })
    }
}

fn parse_template(v: &Value, path: &str) -> Result<ContentTemplate, MappingError> {
    let o = Obj::new(v, path)?;
    o.only(&["templateType", "template"])?;
    let tt = o.req_str("templateType")?;
    let kind = [ContentKind::JsonPath, ContentKind::IotJsonPath, ContentKind::IotCentralJsonPath, ContentKind::Calculated]
        .into_iter()
        .find(|k| template_type_is(&tt, k.name()))
        .ok_or_else(|| {
            err(
                &o.field_path("templateType"),
                format!("unknown template type {tt:?} (JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent or CalculatedContent)"),
            )
        })?;
    let (inner, inner_path) = o.get("template").ok_or_else(|| err(&o.field_path("template"), "is required"))?;
    o.finish()?;
    let t = Obj::new(inner, &inner_path)?;
    let mut allowed = vec!["typeName", "typeMatchExpression", "patientIdExpression", "encounterIdExpression", "correlationIdExpression", "values"];
    if matches!(kind, ContentKind::JsonPath | ContentKind::Calculated) {
        allowed.extend(["deviceIdExpression", "timestampExpression"]);
    }
    if kind == ContentKind::Calculated {
        allowed.push("defaultExpressionLanguage");
    }
    t.only(&allowed)?;

    let default_lang = if kind == ContentKind::Calculated {
        match t.opt_str("defaultExpressionLanguage")? {
            None => Language::JsonPath,
            Some(s) => Language::from_name(&s)
                .ok_or_else(|| err(&t.field_path("defaultExpressionLanguage"), format!("{s:?} is neither JsonPath nor JmesPath")))?,
        }
    } else {
        Language::JsonPath
    };
    let expr = |name: &str, required: bool| -> Result<Option<Expression>, MappingError> {
        match t.get(name) {
            None if required => Err(err(&t.field_path(name), "is required")),
            None => Ok(None),
            Some((v, p)) => compile(v, &p, kind, default_lang).map(Some),
        }
    };

    let type_name = t.req_str("typeName")?;
    let type_match = expr("typeMatchExpression", true)?.ok_or_else(|| err(path, "typeMatchExpression is required"))?;
    let fixed = |s: &str| Expression::compile(s, Language::JsonPath).map_err(|e| err(path, e));
    let (device_id, timestamp) = match kind {
        ContentKind::JsonPath | ContentKind::Calculated => {
            let d = expr("deviceIdExpression", true)?.into_iter().collect();
            let ts = expr("timestampExpression", true)?.into_iter().collect();
            (d, ts)
        }
        ContentKind::IotJsonPath => (
            vec![fixed("$.SystemProperties.iothub-connection-device-id")?],
            vec![fixed("$.Properties.iothub-creation-time-utc")?, fixed("$.SystemProperties.iothub-enqueuedtime")?],
        ),
        ContentKind::IotCentralJsonPath => (vec![fixed("$.deviceId")?], vec![fixed("$.enqueuedTime")?]),
    };
    let patient_id = expr("patientIdExpression", false)?;
    let encounter_id = expr("encounterIdExpression", false)?;
    let correlation_id = expr("correlationIdExpression", false)?;
    let mut values = Vec::new();
    if let Some((arr, arr_path)) = t.opt_array("values")? {
        for (i, v) in arr.iter().enumerate() {
            let vp = format!("{arr_path}[{i}]");
            let vo = Obj::new(v, &vp)?;
            vo.only(&["valueName", "valueExpression", "required"])?;
            let name = vo.req_str("valueName")?;
            let (ev, ep) = vo.get("valueExpression").ok_or_else(|| err(&vo.field_path("valueExpression"), "is required"))?;
            let expression = compile(ev, &ep, kind, default_lang)?;
            let required = match vo.get("required") {
                None => false,
                Some((Value::Bool(b), _)) => *b,
                Some((Value::String(s), p)) => match s.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(err(&p, format!("{s:?} is not true or false"))),
                },
                Some((_, p)) => return Err(err(&p, "must be true or false")),
            };
            vo.finish()?;
            values.push(ValueTemplate { name, expression, required });
        }
    }
    t.finish()?;
    Ok(ContentTemplate {
        kind,
        path: path.to_string(),
        type_name,
        type_match,
        device_id,
        timestamp,
        patient_id,
        encounter_id,
        correlation_id,
        values,
    })
}

/// An expression field: a string, or (CalculatedContent) `{"value", "language"}`.
fn compile(v: &Value, path: &str, kind: ContentKind, default_lang: Language) -> Result<Expression, MappingError> {
    match v {
        Value::String(s) => Expression::compile(s, default_lang).map_err(|e| err(path, e)),
        Value::Object(_) if kind == ContentKind::Calculated => {
            let o = Obj::new(v, path)?;
            o.only(&["value", "language"])?;
            let text = o.req_str("value")?;
            let lang = match o.opt_str("language")? {
                None => default_lang,
                Some(l) => {
                    Language::from_name(&l).ok_or_else(|| err(&o.field_path("language"), format!("{l:?} is neither JsonPath nor JmesPath")))?
                }
            };
            o.finish()?;
            Expression::compile(&text, lang).map_err(|e| err(path, e))
        }
        _ => Err(err(path, "must be an expression string")),
    }
}
