//! Normalization: run every device template on one event and produce the
//! measurements MedTech would emit (or say why it would not).
//!
//! Order and failure behaviour follow `MeasurementExtractor` /
//! `LegacyMeasurementExtractor`: templates run in mapping order; each match of
//! the type match becomes one measurement; the first error stops the event
//! (MedTech retries the whole event forever under the default `Retry` policy,
//! or drops the rest of it under `DiscardMatchAndExtractErrors`), and the
//! measurements made before the error have already been sent.

use super::device_mapping::{ContentKind, ContentTemplate, DeviceMapping};
use super::expr::{take_notes, token_string_rewritten, token_time, EvalError, Expression, TimeError, TokenString};
use super::skip::{Skip, SkipKind, Warning, WarningKind};
use super::times;
use chrono::{DateTime, Utc};
use serde::ser::SerializeStruct;
use serde::Serialize;
use serde_json::{Map, Value};

/// A normalized measurement (MedTech `Measurement`).
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub type_name: String,
    pub(crate) occurrence_time: DateTime<Utc>,
    pub(crate) ingestion_time: DateTime<Utc>,
    pub(crate) device_id: String,
    pub(crate) patient_id: Option<String>,
    pub(crate) encounter_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    /// `(Name, Value)` in template order; values are strings, as in the service.
    pub properties: Vec<(String, String)>,
    /// Which input message this came from (not part of the service's shape).
    pub(crate) input: usize,
}

impl Serialize for Measurement {
    /// The service's field names (Json.NET defaults: PascalCase, nulls written).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Prop<'a> {
            #[serde(rename = "Name")]
            name: &'a str,
            #[serde(rename = "Value")]
            value: &'a str,
        }
        let mut st = s.serialize_struct("Measurement", 8)?;
        st.serialize_field("Type", &self.type_name)?;
        st.serialize_field("OccurrenceTimeUtc", &times::json_net(&self.occurrence_time))?;
        st.serialize_field("IngestionTimeUtc", &times::json_net(&self.ingestion_time))?;
        st.serialize_field("DeviceId", &self.device_id)?;
        st.serialize_field("PatientId", &self.patient_id)?;
        st.serialize_field("EncounterId", &self.encounter_id)?;
        st.serialize_field("CorrelationId", &self.correlation_id)?;
        let props: Vec<Prop<'_>> = self.properties.iter().map(|(n, v)| Prop { name: n, value: v }).collect();
        st.serialize_field("Properties", &props)?;
        st.end()
    }
}

/// Wraps a message body as MedTech does before any template runs.
pub(crate) fn envelope(body: Value, properties: &Map<String, Value>, system_properties: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("Body".into(), body);
    m.insert("Properties".into(), Value::Object(properties.clone()));
    m.insert("SystemProperties".into(), Value::Object(system_properties.clone()));
    Value::Object(m)
}

/// Per-template counters for `medtech check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStats {
    /// Events in which the type match selected at least one token.
    pub events_matched: usize,
    /// Measurements produced.
    pub(crate) measurements: usize,
    /// Events this template failed on.
    pub errors: usize,
}

/// Result of normalizing one event.
#[derive(Debug, Default)]
pub(crate) struct EventOutcome {
    pub(crate) measurements: Vec<Measurement>,
    pub(crate) skipped: Vec<Skip>,
    pub(crate) warnings: Vec<Warning>,
    /// For each measurement, in order: the index of its template and the token
    /// the type match selected (to tell which message part it came from).
    pub(crate) matched: Vec<(usize, Value)>,
}

fn template_label(t: &ContentTemplate) -> String {
    format!("{} {} ({})", t.path, t.type_name, t.kind.name())
}

/// Normalizes one event (`envelope`) with every template of `mapping`.
/// `stats` (one per template) is updated when given.
pub(crate) fn normalize_event(
    mapping: &DeviceMapping,
    envelope: &Value,
    ingestion_time: DateTime<Utc>,
    input: usize,
    mut stats: Option<&mut [TemplateStats]>,
) -> EventOutcome {
    let mut out = EventOutcome::default();
    let mut any_match = false;
    let mut jmes_envelope = None;
    for (ti, t) in mapping.templates.iter().enumerate() {
        let result = run_template(t, envelope, &mut jmes_envelope, ingestion_time, input, &mut out.measurements, &mut out.warnings);
        out.matched.extend(result.tokens.iter().map(|tok| (ti, tok.clone())));
        if let Some(st) = stats.as_deref_mut().and_then(|s| s.get_mut(ti)) {
            if result.matched > 0 {
                st.events_matched += 1;
            }
            st.measurements += result.produced;
            if result.error.is_some() {
                st.errors += 1;
            }
        }
        any_match |= result.matched > 0;
        if let Some((kind, reason)) = result.error {
            out.skipped.push(Skip {
                kind,
                input: Some(input),
                template: Some(template_label(t)),
                type_name: Some(t.type_name.clone()),
                count: 1,
                reason: format!(
                    "{reason}. MedTech fails the whole event: under the default error policy (Retry) it retries it forever and \
                     blocks its partition; with DiscardMatchAndExtractErrors it drops the rest of the event"
                ),
            });
            let rest = mapping.templates.len() - ti - 1;
            if rest > 0 {
                out.skipped.push(Skip {
                    kind: SkipKind::TemplatesNotRun,
                    input: Some(input),
                    template: None,
                    type_name: None,
                    count: rest,
                    reason: format!("{rest} later template(s) did not run on this message because {} failed", template_label(t)),
                });
            }
            return out;
        }
    }
    if !any_match {
        out.skipped.push(Skip {
            kind: SkipKind::NoTemplateMatched,
            input: Some(input),
            template: None,
            type_name: None,
            count: 1,
            reason: "no template's typeMatchExpression selected anything in this message; MedTech drops it silently (DroppedEvent)".into(),
        });
    }
    out
}

struct TemplateResult {
    matched: usize,
    produced: usize,
    error: Option<(SkipKind, String)>,
    /// The type-match token of each measurement produced.
    tokens: Vec<Value>,
}

fn eval_err(e: EvalError, what: &str, expr: &Expression) -> (SkipKind, String) {
    match e {
        EvalError::SeveralTokens(n) => {
            (SkipKind::SeveralTokens, format!("{what} expression {:?} matched {n} tokens; it must match exactly one", expr.as_str()))
        }
        EvalError::JmesPath(m) => (SkipKind::ExpressionError, format!("{what} expression {:?} failed: {m}", expr.as_str())),
    }
}

/// Runs one template on an event. `jmes_envelope` caches the event's JMESPath
/// form across the templates of one event.
fn run_template(
    t: &ContentTemplate,
    envelope: &Value,
    jmes_envelope: &mut Option<jmespath::Rcvar>,
    ingestion_time: DateTime<Utc>,
    input: usize,
    out: &mut Vec<Measurement>,
    warnings: &mut Vec<Warning>,
) -> TemplateResult {
    let mut r = TemplateResult { matched: 0, produced: 0, error: None, tokens: Vec::new() };
    let matches = match t.type_match.select_tokens_cached(envelope, jmes_envelope) {
        Ok(m) => m,
        Err(e) => {
            r.error = Some(eval_err(e, "typeMatch", &t.type_match));
            return r;
        }
    };
    r.matched = matches.len();
    for token in matches {
        let matched_token = token.clone();
        // CalculatedContent evaluates on a copy of the envelope with matchedToken added;
        // the other kinds evaluate on the matched token only.
        let ctx = if t.kind == ContentKind::Calculated {
            let mut c = envelope.clone();
            if let Value::Object(m) = &mut c {
                m.insert("matchedToken".into(), token);
            }
            c
        } else {
            token
        };
        let mut w = Warnings { template: t, input, list: warnings };
        let _ = take_notes();
        match extract(t, &ctx, ingestion_time, input, &mut w) {
            Ok(m) => {
                out.push(m);
                r.produced += 1;
                r.tokens.push(matched_token);
            }
            Err(e) => {
                r.error = Some(e);
                return r;
            }
        }
    }
    r
}

/// Warnings for one measurement being extracted.
struct Warnings<'a> {
    template: &'a ContentTemplate,
    input: usize,
    list: &'a mut Vec<Warning>,
}

impl Warnings<'_> {
    fn push(&mut self, kind: WarningKind, value_name: &str, sent: String, stored: Option<String>, reason: String) {
        self.list.push(Warning {
            kind,
            input: Some(self.input),
            template: Some(template_label(self.template)),
            type_name: Some(self.template.type_name.clone()),
            value_name: Some(value_name.to_string()),
            sent,
            stored,
            reason,
        });
    }

    /// Moves the notes the JMESPath functions left into warnings about `what`.
    fn jmes_notes(&mut self, what: &str, stored: Option<&str>) {
        for (kind, text) in take_notes() {
            self.push(kind, what, text.clone(), stored.map(str::to_string), format!("{what}: {text}"));
        }
    }
}

/// First token of a fallback chain, as a string; `Ok(None)` when absent/blank.
fn eval_string(exprs: &[Expression], ctx: &Value, what: &str, w: &mut Warnings<'_>) -> Result<Option<String>, (SkipKind, String)> {
    for e in exprs {
        let tok = e.select_token(ctx).map_err(|er| eval_err(er, what, e))?;
        let shown = tok.as_ref().map(|t| token_string_rewritten(t).0).and_then(|t| match t {
            TokenString::Text(s) => Some(s),
            _ => None,
        });
        w.jmes_notes(what, shown.as_deref());
        match tok {
            None => continue,
            Some(tok) => match token_string_rewritten(&tok) {
                (TokenString::Text(s), Some(original)) => {
                    w.push(
                        WarningKind::DateStringRewritten,
                        what,
                        original.clone(),
                        Some(s.clone()),
                        format!(
                            "{what}: {original:?} has the shape Json.NET reads as a date while parsing the message, so the service extracts it as the text {s:?} \
                             (.NET invariant \"G\" format: fraction of a second and UTC offset lost)"
                        ),
                    );
                    return Ok(Some(s));
                }
                (TokenString::Text(s), None) => return Ok(Some(s)),
                (TokenString::Missing, _) => continue,
                (TokenString::NotAValue(k), _) => {
                    return Err((SkipKind::ExpressionError, format!("{what} expression {:?} selected {k}, not a single value", e.as_str())))
                }
            },
        }
    }
    Ok(None)
}

fn exprs_text(exprs: &[Expression]) -> String {
    exprs.iter().map(|e| format!("{:?}", e.as_str())).collect::<Vec<_>>().join(" or ")
}

fn extract(
    t: &ContentTemplate,
    ctx: &Value,
    ingestion_time: DateTime<Utc>,
    input: usize,
    w: &mut Warnings<'_>,
) -> Result<Measurement, (SkipKind, String)> {
    let device_id = eval_string(&t.device_id, ctx, "deviceId", w)?
        .ok_or_else(|| (SkipKind::RequiredValueMissing, format!("required deviceId is missing, null or blank ({})", exprs_text(&t.device_id))))?;
    let mut time = None;
    for e in &t.timestamp {
        let tok = e.select_token(ctx).map_err(|er| eval_err(er, "timestamp", e))?;
        w.jmes_notes("timestamp", None);
        let Some(tok) = tok else { continue };
        match token_time(&tok, ingestion_time.date_naive()) {
            Ok(tm) => {
                if !tm.notes.is_empty() {
                    let sent = match &tok {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let why: Vec<&str> = tm.notes.iter().map(|n| n.text()).collect();
                    w.push(
                        WarningKind::TimeReadDifferently,
                        "timestamp",
                        sent.clone(),
                        Some(super::times::json_net(&super::times::to_ticks(tm.time))),
                        format!("timestamp {sent:?} ({:?}): {}", e.as_str(), why.join("; ")),
                    );
                }
                time = Some(tm.time);
                break;
            }
            Err(TimeError::Missing) => continue,
            Err(TimeError::NotATime(m)) => return Err((SkipKind::InvalidTimestamp, format!("timestamp {:?}: {m}", e.as_str()))),
        }
    }
    let occurrence_time =
        time.ok_or_else(|| (SkipKind::RequiredValueMissing, format!("required timestamp is missing, null or blank ({})", exprs_text(&t.timestamp))))?;
    let mut opt = |e: &Option<Expression>, what: &str| -> Result<Option<String>, (SkipKind, String)> {
        match e {
            Some(e) => eval_string(std::slice::from_ref(e), ctx, what, w),
            None => Ok(None),
        }
    };
    let patient_id = opt(&t.patient_id, "patientId")?;
    let encounter_id = opt(&t.encounter_id, "encounterId")?;
    let correlation_id = opt(&t.correlation_id, "correlationId")?;
    if let (Some(e), None) = (&t.correlation_id, &correlation_id) {
        return Err((
            SkipKind::RequiredValueMissing,
            format!("correlationIdExpression {:?} is set, which makes the correlation id required, and it is missing", e.as_str()),
        ));
    }
    let mut properties = Vec::new();
    for v in &t.values {
        match eval_string(std::slice::from_ref(&v.expression), ctx, &v.name, w)? {
            Some(s) => properties.push((v.name.clone(), s)),
            None if v.required => {
                return Err((
                    SkipKind::RequiredValueMissing,
                    format!("required value {:?} ({:?}) is missing, null or blank", v.name, v.expression.as_str()),
                ))
            }
            None => {}
        }
    }
    Ok(Measurement {
        type_name: t.type_name.clone(),
        occurrence_time: times::to_ticks(occurrence_time),
        ingestion_time,
        device_id,
        patient_id,
        encounter_id,
        correlation_id,
        properties,
        input,
    })
}
