//! `medtech check`: validates the mappings, runs sample messages through them and
//! reports per template what matched and what the service would drop.

use super::preview::{MedTech, PreviewOptions, Stats};
use super::skip::SkipKind;
use crate::model::{DeviceEvent, DeviceKind, Flag, Message, Reading, ReadingType};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One sample message per reading type the gateway emits (except the deliberately
/// unmapped [`super::UNMAPPED_READING_TYPES`]), one per type that also comes as
/// a spot-check, one per series type whose SampledData slot is taken
/// (`slotTaken`), plus one where a flagged-unavailable value travels with a good
/// one and one with a heart rate the strap flags as without skin contact, as
/// the forwarder would send them.
pub fn sample_messages() -> Vec<Value> {
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).single().unwrap_or_else(Utc::now);
    let mut out = Vec::new();
    let unmapped: Vec<ReadingType> = super::UNMAPPED_READING_TYPES.iter().map(|(t, _)| *t).collect();
    let variants = ReadingType::ALL.into_iter().filter(|t| !unmapped.contains(t)).flat_map(|t| {
        std::iter::once((t, false, false))
            .chain(t.has_spot_checks().then_some((t, true, false)))
            .chain(crate::model::series_period_ms(t).map(|_| (t, false, true)))
    });
    for (i, (kind, spot_check, slot_taken)) in variants.enumerate() {
        let dk = match kind {
            ReadingType::Spo2
            | ReadingType::PulseRate
            | ReadingType::PerfusionIndex
            | ReadingType::Spco
            | ReadingType::Spmet
            | ReadingType::Sphb
            | ReadingType::Pvi => DeviceKind::PulseOximeter,
            ReadingType::HeartRate | ReadingType::RrInterval | ReadingType::EnergyExpended => DeviceKind::HeartRateStrap,
            _ => DeviceKind::BedsideMonitor,
        };
        let mut r = if kind == ReadingType::DeviceEvent {
            Reading::event("sample-device", dk, DeviceEvent::Connected)
        } else {
            let mut r = Reading::new("sample-device", dk, kind);
            for (j, (name, _)) in kind.value_units().iter().enumerate() {
                // Distinct per value name, and plausible (model::PLAUSIBLE_RANGES):
                // `spo2Fast` 95, `spo2Slow` 93 rather than over 100 %.
                r.set_value(name, sample_value(kind) - j as f64 * 2.0);
            }
            r
        };
        r.spot_check = spot_check;
        r.slot_taken = slot_taken;
        r.time = t0 + chrono::Duration::seconds(i as i64);
        r.seq = i as u64 + 1;
        r.patient_id = Some("sample-patient".into());
        if let Some(m) = Message::from_batch("sample-gateway", "00000000", &[r]) {
            out.push(serde_json::to_value(&m).unwrap_or(Value::Null));
        }
    }
    // A reading whose value the device marked unavailable, batched with a good one
    // (as the forwarder batches them): it must not fail the event.
    let mut r = Reading::new("sample-device", DeviceKind::PulseOximeter, ReadingType::Spo2).with_flag(Flag::ValueUnavailable);
    r.time = t0 + chrono::Duration::seconds(60);
    r.patient_id = Some("sample-patient".into());
    let mut good = Reading::new("sample-device", DeviceKind::PulseOximeter, ReadingType::PulseRate).with_value("pulseRate", 71.0);
    good.time = r.time;
    good.patient_id = r.patient_id.clone();
    r.seq = 1001;
    good.seq = 1002;
    if let Some(m) = Message::from_batch("sample-gateway", "00000000", &[r, good]) {
        out.push(serde_json::to_value(&m).unwrap_or(Value::Null));
    }
    // A heart rate the strap sent without skin contact: excluded by device status.
    let mut loose = Reading::new("sample-device", DeviceKind::HeartRateStrap, ReadingType::HeartRate)
        .with_value("heartRate", 80.0)
        .with_flag(Flag::SensorContactLost);
    loose.time = t0 + chrono::Duration::seconds(61);
    loose.patient_id = Some("sample-patient".into());
    loose.seq = 1003;
    if let Some(m) = Message::from_batch("sample-gateway", "00000000", &[loose]) {
        out.push(serde_json::to_value(&m).unwrap_or(Value::Null));
    }
    out
}

fn sample_value(kind: ReadingType) -> f64 {
    match kind {
        ReadingType::HeartRate | ReadingType::PulseRate => 72.0,
        ReadingType::RrInterval => 833.0,
        ReadingType::EnergyExpended => 120.0,
        ReadingType::Spo2 => 97.0,
        ReadingType::PerfusionIndex => 2.5,
        ReadingType::RespirationRate => 14.0,
        ReadingType::BodyTemperature => 36.8,
        ReadingType::BloodPressure => 120.0,
        ReadingType::BatteryLevel => 80.0,
        ReadingType::Spco => 1.5,
        ReadingType::Spmet => 0.8,
        ReadingType::Sphb => 13.5,
        ReadingType::Pvi => 12.0,
        ReadingType::DeviceEvent => 0.0,
    }
}

/// The result of a check.
#[derive(Debug)]
pub struct CheckReport {
    pub stats: Stats,
    /// Data would be dropped (or the event retried forever), or stored
    /// differently from what was sent.
    pub data_lost: bool,
    /// A reading the device marked as not valid would be charted.
    pub invalid_charted: bool,
    /// Human-readable report.
    pub text: String,
}

/// Runs `messages` through `engine` and writes the per-template report.
/// `input_problems` are drops found before the pipeline (inputs that are not JSON).
pub fn check(engine: &MedTech, messages: &[Value], opts: &PreviewOptions, n_inputs_described: &str, input_problems: Vec<super::Skip>) -> CheckReport {
    let (mut preview, stats) = engine.preview_with_stats(messages, opts);
    preview.skipped.splice(0..0, input_problems);
    let mut text = String::new();
    let _ = writeln!(text, "mappings OK: {} device template(s), {} FHIR template(s)", engine.device.templates.len(), engine.fhir.templates.len());
    for w in &engine.device.warnings {
        let _ = writeln!(text, "warning: {w}");
    }
    let _ = writeln!(text, "{} message(s) checked ({n_inputs_described})", messages.len());
    let _ = writeln!(text, "\ndevice templates:");
    for (t, s) in engine.device.templates.iter().zip(&stats.device_templates) {
        let fhir = if engine.fhir.lookup(&t.type_name).is_some() { "" } else { "  [no FHIR template for this type]" };
        let _ = writeln!(
            text,
            "  {} {:<22} matched {} message(s), {} measurement(s), failed on {}{fhir}",
            t.path, t.type_name, s.events_matched, s.measurements, s.errors
        );
    }
    let _ = writeln!(text, "\nFHIR templates:");
    for (t, n) in engine.fhir.templates.iter().zip(&stats.fhir_observations) {
        let _ = writeln!(text, "  {} {:<22} {} Observation(s)", t.path, t.type_name, n);
    }
    let mut by_kind: BTreeMap<SkipKind, usize> = BTreeMap::new();
    for s in &preview.skipped {
        *by_kind.entry(s.kind).or_default() += s.count;
    }
    if preview.skipped.is_empty() {
        let _ = writeln!(text, "\nnothing would be dropped");
    } else {
        let _ = writeln!(text, "\nwould be dropped:");
        for (k, n) in &by_kind {
            let _ = writeln!(text, "  {:>5} x {}", n, k.title());
        }
        let _ = writeln!(text, "\ndetails:");
        for s in &preview.skipped {
            let at = s.input.map(|i| format!("message {i}: ")).unwrap_or_default();
            let _ = writeln!(text, "  - {at}{}", s.reason);
        }
    }
    let altering: Vec<&super::Warning> = preview.warnings.iter().filter(|w| w.kind.alters_data()).collect();
    if !altering.is_empty() {
        let _ = writeln!(
            text,
            "\nWARNING: {} value(s) would be STORED DIFFERENTLY from what was sent (nothing is dropped, so the service reports nothing):",
            altering.len()
        );
        for w in &altering {
            let at = w.input.map(|i| format!("message {i}")).unwrap_or_else(|| "a message".into());
            let field = w.value_name.as_deref().map(|v| format!(", value {v:?}")).unwrap_or_default();
            let tmpl = w.template.as_deref().map(|t| format!(", {t}")).unwrap_or_default();
            let stored = w.stored.as_deref().map(|s| format!(" -> stored {s}")).unwrap_or_default();
            let _ = writeln!(text, "  - {}: {at}{tmpl}{field}: sent {:?}{stored}", w.kind.title(), w.sent);
            let _ = writeln!(text, "    {}", w.reason);
        }
    }
    let notes: Vec<&super::Warning> = preview.warnings.iter().filter(|w| !w.kind.alters_data()).collect();
    if !notes.is_empty() {
        let _ = writeln!(text, "\nnotes:");
        for w in notes {
            let _ = writeln!(text, "  - {}", super::warning_line(w));
        }
    }
    if preview.excluded.is_empty() {
        let _ = writeln!(text, "\nexcluded by device status: none");
    } else {
        let _ = writeln!(
            text,
            "\nexcluded by device status (the device marked them not valid; kept out of the chart on purpose, still in the message; charted only with {}):",
            super::status::chartable_flag_names().join(", ")
        );
        for line in super::status::excluded_summary(&preview.excluded) {
            let _ = writeln!(text, "  {}", line.trim_start_matches("excluded by device status: "));
        }
    }
    if !preview.charted_invalid.is_empty() {
        let _ = writeln!(text, "\n{} reading(s) the device marked as not valid WOULD BE CHARTED as normal values:", preview.charted_invalid.len());
        for line in super::status::charted_lines(&preview.charted_invalid) {
            let _ = writeln!(text, "  - {line}");
        }
    }
    let invalid_charted = !preview.charted_invalid.is_empty();
    let data_lost = !preview.skipped.is_empty() || preview.warnings.iter().any(|w| w.kind.alters_data());
    CheckReport { stats, data_lost, invalid_charted, text }
}
