//! The shipped mappings (devices/medtech/): every reading type the gateway can
//! emit is mapped (or deliberately listed as unmapped), the Observations they
//! produce validate as FHIR R4 with an independent validator (`fhir.resources`,
//! R4B models, via IOMT_TEST_PYTHON), and the CLI reports what it should.

use chrono::{TimeZone, Utc};
use iomt_edge::medtech::{check, shipped_mappings, summary_line, IdentityMode, MedTech, PreviewOptions, SkipKind, UNMAPPED_READING_TYPES};
use iomt_edge::model::{DeviceKind, Flag, Message, Reading, ReadingType};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

fn opts() -> PreviewOptions {
    PreviewOptions {
        identity: IdentityMode::Create,
        ingestion_time: Some(Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()),
        issued: Some(Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()),
        ..Default::default()
    }
}

/// A message as the forwarder sends it: every reading has its own outbox
/// sequence number (given here in order when the test left it 0).
fn message(mut readings: Vec<Reading>) -> Value {
    for (i, r) in readings.iter_mut().enumerate() {
        if r.seq == 0 {
            r.seq = i as u64 + 1;
        }
    }
    serde_json::to_value(Message::from_batch("gw-1", "0000abcd", &readings).unwrap()).unwrap()
}

fn reading(kind: ReadingType, secs: i64) -> Reading {
    let mut r = if kind == ReadingType::DeviceEvent {
        Reading::event("strap-1", DeviceKind::HeartRateStrap, iomt_edge::model::DeviceEvent::Disconnected)
    } else {
        let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, kind);
        // A plausible value of each type (model::PLAUSIBLE_RANGES): an
        // implausible one is flagged `outOfRange` and kept off the chart.
        let base = match kind {
            ReadingType::RrInterval => 800.0,
            ReadingType::BodyTemperature => 36.0,
            ReadingType::Spo2 => 90.0,
            ReadingType::Sphb => 13.0,
            _ => 70.0,
        };
        for (i, (name, _)) in kind.value_units().iter().enumerate() {
            r.set_value(name, base + i as f64 + secs as f64 / 10.0);
        }
        assert!(r.flags.is_empty(), "{kind}: the fixture must be plausible: {r:?}");
        r
    };
    r.time = Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap() + chrono::Duration::seconds(secs);
    r.patient_id = Some("patient-7".into());
    r
}

#[test]
fn every_reading_type_is_mapped() {
    let engine = MedTech::shipped().unwrap();
    let allowed: Vec<ReadingType> = UNMAPPED_READING_TYPES.iter().map(|(t, _)| *t).collect();
    for kind in ReadingType::ALL {
        let p = engine.preview(&[message(vec![reading(kind, 1)])], &opts());
        if allowed.contains(&kind) {
            assert!(p.observations.is_empty(), "{kind} is listed as deliberately unmapped but produces Observations");
            continue;
        }
        assert!(p.skipped.is_empty(), "{kind}: {:#?}", p.skipped);
        assert_eq!(p.observations.len(), 1, "{kind} must produce exactly one Observation");
        let obs = &p.observations[0];
        assert_eq!(obs["code"]["text"], kind.name());
        // Every value of the type arrives (as the value or a component).
        let text = obs.to_string();
        for (name, unit) in kind.value_units() {
            assert!(text.contains(&format!("\"{unit}\"")), "{kind}: unit {unit} of {name} missing: {obs}");
        }
        if kind.has_spot_checks() {
            let mut spot = reading(kind, 1);
            spot.spot_check = true;
            let p = engine.preview(&[message(vec![spot])], &opts());
            assert!(p.skipped.is_empty(), "{kind} spot-check: {:#?}", p.skipped);
            assert_eq!(p.observations.len(), 1, "{kind} spot-check must produce exactly one Observation");
            let obs = &p.observations[0];
            assert_eq!(obs["code"]["text"], format!("{}SpotCheck", kind.name()));
            assert!(obs["valueQuantity"]["value"].is_number(), "{kind} spot-check is one Quantity: {obs}");
        }
    }
}

/// A spot-check taken in the same second as a continuous value (a PLX oximeter
/// sends both) must not share its SampledData slot: MedTech would keep only one.
#[test]
fn spot_checks_and_continuous_values_are_both_kept() {
    let engine = MedTech::shipped().unwrap();
    let mut readings = Vec::new();
    for s in 0..10 {
        let mut r = reading(ReadingType::Spo2, s);
        r.device_id = "ox-1".into();
        readings.push(r);
        if s % 5 == 0 {
            let mut spot = reading(ReadingType::Spo2, s);
            spot.device_id = "ox-1".into();
            spot.time += chrono::Duration::milliseconds(1);
            spot.spot_check = true;
            spot.set_value("spo2", 91.0);
            readings.push(spot);
        }
    }
    let p = engine.preview(&[message(readings)], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    let continuous: Vec<&Value> = p.observations.iter().filter(|o| o["code"]["text"] == "spo2").collect();
    let spots: Vec<&Value> = p.observations.iter().filter(|o| o["code"]["text"] == "spo2SpotCheck").collect();
    assert_eq!(continuous.len(), 1);
    let data = continuous[0]["valueSampledData"]["data"].as_str().unwrap();
    assert_eq!(data.split(' ').filter(|v| *v != "E").count(), 10, "all ten continuous values: {data}");
    assert!(!data.contains("91"), "no spot-check value in the continuous series: {data}");
    assert_eq!(spots.len(), 2);
    assert!(spots.iter().all(|o| o["valueQuantity"]["value"] == 91));
}

#[test]
fn unavailable_values_are_not_matched_rather_than_failing() {
    let engine = MedTech::shipped().unwrap();
    let mut ok = reading(ReadingType::HeartRate, 1);
    ok.device_id = "ox-1".into();
    let flagged = Reading::new("ox-1", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", f64::NAN).at(ok.time);
    assert!(flagged.flags.contains(&Flag::ValueUnavailable));
    let mut flagged = flagged;
    flagged.patient_id = ok.patient_id.clone();
    let p = engine.preview(&[message(vec![ok, flagged.clone()])], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert_eq!(p.measurements.len(), 1);
    // Alone, the message is simply not matched (the service counts a dropped
    // event, it does not retry it forever), and that is the device-status rule
    // working: reported as excluded by device status, not as a loss.
    let p = engine.preview(&[message(vec![flagged])], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert!(p.measurements.is_empty());
    assert_eq!(p.excluded.len(), 1, "{:#?}", p.excluded);
    assert_eq!((p.excluded[0].type_name.as_str(), p.excluded[0].flags.clone()), ("spo2", vec!["valueUnavailable".to_string()]));
    // A message the mapping does not match for another reason is still a skip.
    let battery = Reading::new("ox-1", DeviceKind::PulseOximeter, ReadingType::BatteryLevel).with_value("batteryLevel", 50.0);
    let p = engine.preview(&[message(vec![battery])], &opts());
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].kind, SkipKind::NoTemplateMatched);
}

#[test]
fn blood_pressure_is_one_panel_and_summary_reads_well() {
    let engine = MedTech::shipped().unwrap();
    let p = engine.preview(&[message(vec![reading(ReadingType::BloodPressure, 0), reading(ReadingType::HeartRate, 0)])], &opts());
    let bp = p.observations.iter().find(|o| o["code"]["text"] == "bloodPressure").unwrap();
    assert_eq!(bp["code"]["coding"][0]["code"], "85354-9");
    let codes: Vec<&str> = bp["component"].as_array().unwrap().iter().map(|c| c["code"]["coding"][0]["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["8480-6", "8462-4", "8478-0"]);
    assert_eq!(bp["component"][0]["valueQuantity"], json!({"value": 70, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}));
    let hr = p.observations.iter().find(|o| o["code"]["text"] == "heartRate").unwrap();
    let line = summary_line(hr);
    assert!(line.starts_with("heartRate 70 /min (1 sample(s)) -> Observation 8867-4 Heart rate id "), "{line}");
}

/// The Masimo rainbow parameters: SpCO by its LOINC pulse-oximetry term, the
/// others by the gateway's own code (no LOINC term with method "Pulse
/// oximetry" is used for them: devices/medtech/README.md), each with its UCUM
/// unit, in hourly series; a flagged one is excluded, not charted.
#[test]
fn rainbow_parameters_are_coded_with_their_units() {
    let engine = MedTech::shipped().unwrap();
    let kinds = [ReadingType::Spco, ReadingType::Spmet, ReadingType::Sphb, ReadingType::Pvi];
    let p = engine.preview(&[message(kinds.iter().map(|k| reading(*k, 0)).collect())], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    let obs = |t: &str| p.observations.iter().find(|o| o["code"]["text"] == t).unwrap_or_else(|| panic!("no {t}"));
    let first = |t: &str| {
        (
            obs(t)["code"]["coding"][0]["system"].clone(),
            obs(t)["code"]["coding"][0]["code"].clone(),
            obs(t)["valueSampledData"]["origin"]["unit"].clone(),
        )
    };
    assert_eq!(first("spco"), (json!("http://loinc.org"), json!("86904-0"), json!("%")));
    assert_eq!(first("spmet"), (json!("urn:iomt-edge:codes"), json!("spmet"), json!("%")));
    assert_eq!(first("sphb"), (json!("urn:iomt-edge:codes"), json!("sphb"), json!("g/dL")));
    assert_eq!(first("pvi"), (json!("urn:iomt-edge:codes"), json!("pvi"), json!("%")));
    // No LOINC coding on them (series and single templates): a laboratory
    // term (2615-3 methemoglobin, 718-7 hemoglobin) would mislabel a
    // noninvasive estimate; devices/medtech/README.md records the search.
    let (_, fhir) = shipped_mappings();
    let fhir: Value = serde_json::from_str(fhir).unwrap();
    let mut checked = 0;
    for t in fhir["template"].as_array().unwrap() {
        let name = t["template"]["typeName"].as_str().unwrap_or("");
        if ["spmet", "sphb", "pvi"].iter().any(|k| name == *k || name == format!("{k}Single")) {
            checked += 1;
            let codes = t["template"]["codes"].as_array().unwrap();
            assert!(codes.iter().all(|c| c["system"] != "http://loinc.org"), "{name}: {codes:?}");
            assert!(codes.iter().any(|c| c["system"] == "urn:iomt-edge:codes"), "{name}: {codes:?}");
        }
    }
    assert_eq!(checked, 6, "spmet, sphb, pvi and their Single templates");
    let mut off = reading(ReadingType::Sphb, 1);
    off.add_flag(Flag::SensorDisconnected);
    let p = engine.preview(&[message(vec![off])], &opts());
    assert!(p.observations.is_empty() && p.skipped.is_empty() && p.excluded.len() == 1, "{p:#?}");
}

#[test]
fn default_check_samples_pass_the_shipped_mappings() {
    let engine = MedTech::shipped().unwrap();
    let samples = check::sample_messages();
    let r = check::check(&engine, &samples, &opts(), "generated", Vec::new());
    assert!(!r.data_lost, "{}", r.text);
    assert!(r.stats.device_templates.iter().all(|s| s.events_matched >= 1 && s.errors == 0), "{}", r.text);
    // A broken FHIR mapping (heart rate removed) is caught.
    let (d, f) = shipped_mappings();
    let mut fv: Value = serde_json::from_str(f).unwrap();
    fv["template"].as_array_mut().unwrap().remove(0);
    let broken = MedTech::new(d, &fv.to_string()).unwrap();
    let r = check::check(&broken, &samples, &opts(), "generated", Vec::new());
    assert!(r.data_lost);
    assert!(r.text.contains("no FHIR template for the type"), "{}", r.text);
}

fn python() -> Option<String> {
    match std::env::var("IOMT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let why = "IOMT_TEST_PYTHON is not set: no fhir.resources validation (set it to a python with fhir.resources installed)";
            crate::support::skip(&crate::support::this_test(), why);
            None
        }
    }
}

const VALIDATOR: &str = r#"
import json, sys
from fhir.resources.R4B.observation import Observation
docs = json.load(sys.stdin)
bad = 0
for d in docs:
    try:
        Observation.model_validate(d) if hasattr(Observation, "model_validate") else Observation.parse_obj(d)
    except Exception as e:
        bad += 1
        print("INVALID", d.get("code", {}).get("text"), str(e).replace("\n", " | ")[:600])
print("validated", len(docs), "invalid", bad)
sys.exit(1 if bad else 0)
"#;

fn validate(observations: &[Value]) -> (bool, String) {
    let Some(py) = python() else { return (true, String::new()) };
    let mut child = Command::new(&py)
        .args(["-c", VALIDATOR])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    child.stdin.take().unwrap().write_all(serde_json::to_string(observations).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("validated"), "validator did not run: {text}");
    (out.status.success(), text)
}

#[test]
fn shipped_observations_validate_with_fhir_resources() {
    let engine = MedTech::shipped().unwrap();
    let mut readings: Vec<Reading> = Vec::new();
    for (i, kind) in ReadingType::ALL.into_iter().enumerate() {
        readings.push(reading(kind, i as i64));
        readings.push(reading(kind, i as i64 + 30));
        if kind.has_spot_checks() {
            let mut spot = reading(kind, i as i64 + 45);
            spot.spot_check = true;
            readings.push(spot);
        }
        if iomt_edge::model::series_period_ms(kind).is_some() {
            let mut taken = reading(kind, i as i64 + 50);
            taken.slot_taken = true;
            readings.push(taken);
        }
    }
    let p = engine.preview(&[message(readings)], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert_eq!(
        p.observations
            .iter()
            .filter(|o| o["valueQuantity"].is_object() && o["code"]["text"].as_str().is_some_and(|t| t.ends_with("SpotCheck")))
            .count(),
        3
    );
    assert_eq!(
        p.observations.iter().filter(|o| o["valueQuantity"].is_object() && o["code"]["text"].as_str().is_some_and(|t| t.ends_with("Single"))).count(),
        10
    );
    assert!(p.observations.len() >= ReadingType::ALL.len() - UNMAPPED_READING_TYPES.len());
    let (ok, text) = validate(&p.observations);
    assert!(ok, "{text}");

    // The validator is not a rubber stamp: a broken Observation fails.
    if python().is_some() {
        let mut broken = p.observations[0].clone();
        broken["status"] = json!("done-ish");
        broken["effectivePeriod"]["start"] = json!("not a time");
        let (ok, text) = validate(&[broken]);
        assert!(!ok, "{text}");
    }
}

#[test]
fn workshop_observations_validate_with_fhir_resources() {
    let dir = format!("{}/tests/data/medtech", env!("CARGO_MANIFEST_DIR"));
    let read = |n: &str| std::fs::read_to_string(format!("{dir}/{n}")).unwrap();
    let engine = MedTech::new(&read("ahds-workshop-ch09-devicecontent.json"), &read("ahds-workshop-ch09-fhirmapping.json")).unwrap();
    let msgs: Vec<Value> = serde_json::from_str(&read("ahds-workshop-ch09-messages.fixed.json")).unwrap();
    let p = engine.preview(&msgs, &opts());
    assert_eq!(p.observations.len(), 9);
    let (ok, text) = validate(&p.observations);
    assert!(ok, "{text}");
}

fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn cli_preview_and_check() {
    // check with no input: generated messages through the shipped mappings, nothing dropped.
    let (code, out, err) = cli(&["medtech", "check"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing would be dropped"), "{out}");

    // The workshop mapping drops BloodPulseWave: exit 3 and the reason.
    let ws = [
        "--device-mapping",
        "tests/data/medtech/ahds-workshop-ch09-devicecontent.json",
        "--fhir-mapping",
        "tests/data/medtech/ahds-workshop-ch09-fhirmapping.json",
    ];
    let mut args = vec!["medtech", "check"];
    args.extend(ws);
    args.push("tests/data/medtech/ahds-workshop-ch09-messages.fixed.json");
    let (code, out, _) = cli(&args, "");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no FHIR template for the type") && out.contains("BloodPulseWave"), "{out}");

    // preview from stdin, NDJSON, with one broken line.
    let m1 = message(vec![reading(ReadingType::HeartRate, 0)]).to_string();
    let m2 = message(vec![reading(ReadingType::Spo2, 1)]).to_string();
    let (code, out, err) = cli(&["medtech", "preview", "-"], &format!("{m1}\n{{broken\n{m2}\n"));
    assert_eq!(code, 3, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["measurements"].as_array().unwrap().len(), 2);
    assert_eq!(doc["observations"].as_array().unwrap().len(), 2);
    assert_eq!(doc["skipped"][0]["kind"], "notJson");
    assert_eq!(doc["measurements"][0]["Type"], "heartRate");

    // An invalid mapping: exit 3 with the path of the bad field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, shipped_mappings().1.replacen("\"periodInterval\": 60", "\"periodIntervall\": 60", 1)).unwrap();
    let (code, _, err) = cli(&["medtech", "check", "--fhir-mapping", bad.to_str().unwrap()], "");
    assert_eq!(code, 3);
    assert!(err.contains("template[0].template.periodIntervall: unknown field"), "{err}");
}

#[test]
fn cli_preview_of_a_queued_outbox() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, _) = iomt_edge::outbox::Outbox::open(dir.path(), &iomt_edge::config::OutboxConfig::default()).unwrap();
        let mut rs = vec![reading(ReadingType::HeartRate, 0), reading(ReadingType::HeartRate, 1), reading(ReadingType::BloodPressure, 2)];
        outbox.append(&mut rs).unwrap();
    }
    let (code, out, err) = cli(&["medtech", "preview", "--summary", "--outbox", dir.path().to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("heartRate 70.1 /min (2 sample(s)) -> Observation 8867-4"), "{out}");
    assert!(lines[1].starts_with("bloodPressure systolic 70.2 mm[Hg], diastolic 71.2 mm[Hg], mean 72.2 mm[Hg] -> Observation 85354-9"), "{out}");
}
