//! Issue 9, items 2 and 6, through the shipped MedTech mappings:
//! a reading the device marks as not valid is never charted as a normal vital
//! sign (allowlist of flags), and no value is lost to a SampledData slot, an
//! Observation identifier with whole seconds, or a burst of any length.
//!
//! Messages are built as JSON, the way `iomt-edge decode ble` and the
//! forwarder produce them, so flags this branch's decoder does not know yet
//! (`invalid`, a future flag) travel as they will on the wire.

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use iomt_edge::medtech::{check, shipped_mappings, MedTech, Preview, PreviewOptions, SkipKind};
use iomt_edge::model::{time, DeviceKind, Flag, Message, Reading, ReadingType, SeriesSlots, CHARTABLE_FLAGS, SAMPLED_DATA_SERIES, SERIES_WINDOW_MS};
use serde_json::{json, Value};
use std::process::Command;

fn opts() -> PreviewOptions {
    PreviewOptions {
        ingestion_time: Some(Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()),
        issued: Some(Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()),
        ..Default::default()
    }
}

/// A message body from reading objects shaped as `decode ble` prints them
/// (`deviceId`, `deviceKind`, `units` per reading): per-device fields hoisted,
/// sequence numbers given in order, as the forwarder does.
fn message_json(device_id: &str, kind: &str, readings: &[Value]) -> Value {
    let mut units = serde_json::Map::new();
    let mut wire = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        let mut r = r.as_object().cloned().unwrap();
        if let Some(Value::Object(u)) = r.remove("units") {
            units.extend(u);
        }
        r.remove("deviceId");
        r.remove("deviceKind");
        r.remove("patientId");
        r.insert("seq".into(), json!(i + 1));
        wire.push(Value::Object(r));
    }
    json!({
        "schema": "iomt-edge/1",
        "messageId": format!("0a0b0c0d-0000abcd-1-{}", readings.len()),
        "gatewayId": "gw-1",
        "deviceId": device_id,
        "deviceKind": kind,
        "patientId": "patient-7",
        "units": units,
        "readings": wire,
    })
}

fn reading_json(kind: &str, time: &str, values: Value, flags: &[&str], spot_check: bool) -> Value {
    let mut r = json!({"type": kind, "time": time, "values": values});
    if !flags.is_empty() {
        r["flags"] = json!(flags);
    }
    if spot_check {
        r["spotCheck"] = json!(true);
    }
    r
}

/// All values that reached an Observation, as (type name, value) pairs.
fn charted(p: &Preview) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for o in &p.observations {
        let t = o["code"]["text"].as_str().unwrap().to_string();
        if let Some(v) = o["valueQuantity"]["value"].as_f64() {
            out.push((t.clone(), v));
        }
        if let Some(d) = o["valueSampledData"]["data"].as_str() {
            out.extend(d.split(' ').filter(|x| *x != "E").map(|x| (t.clone(), x.parse::<f64>().unwrap())));
        }
        for c in o["component"].as_array().into_iter().flatten() {
            if let Some(v) = c["valueQuantity"]["value"].as_f64() {
                out.push((t.clone(), v));
            }
        }
    }
    out
}

const T: &str = "2026-01-15T10:00:00.400Z";

/// The issue's four BLE inputs, as the fixed decoders report them:
/// `2a5e 02 62 00 48 00 00 80` (PLX spot-check, "invalid measurement detected"),
/// `2a5f 04 62 00 48 00 00 04` (PLX continuous, "data for demonstration"),
/// `2a37 04 50` (contact supported, not detected), `2a37 00 00` (heart rate 0:
/// no signal, flagged unavailable; shown both without the number and, should a
/// decoder keep it, with it).
fn issue_inputs() -> Vec<Value> {
    vec![
        message_json(
            "ox-1",
            "pulseOximeter",
            &[
                reading_json("spo2", T, json!({"spo2": 98.0}), &["invalid"], true),
                reading_json("pulseRate", T, json!({"pulseRate": 72.0}), &["invalid"], true),
            ],
        ),
        message_json(
            "ox-1",
            "pulseOximeter",
            &[
                reading_json("spo2", T, json!({"spo2": 98.0}), &["testData"], false),
                reading_json("pulseRate", T, json!({"pulseRate": 72.0}), &["testData"], false),
            ],
        ),
        message_json("strap-1", "heartRateStrap", &[reading_json("heartRate", T, json!({"heartRate": 80.0}), &["sensorContactLost"], false)]),
        message_json("strap-1", "heartRateStrap", &[reading_json("heartRate", T, json!({}), &["valueUnavailable"], false)]),
        message_json("strap-2", "heartRateStrap", &[reading_json("heartRate", T, json!({"heartRate": 0.0}), &["valueUnavailable"], false)]),
    ]
}

#[test]
fn readings_the_device_marks_not_valid_are_never_charted() {
    let engine = MedTech::shipped().unwrap();
    let msgs = issue_inputs();
    let p = engine.preview(&msgs, &opts());
    assert!(p.observations.is_empty(), "nothing of these may be charted: {:#?}", p.observations);
    assert!(p.measurements.is_empty(), "{:#?}", p.measurements);
    assert!(p.skipped.is_empty(), "excluded on purpose is not a loss: {:#?}", p.skipped);
    assert!(p.charted_invalid.is_empty());
    // Every flagged reading is counted, with the flag that excluded it.
    let got: Vec<(usize, String, Vec<String>)> = p.excluded.iter().map(|e| (e.input, e.type_name.clone(), e.flags.clone())).collect();
    let f = |s: &str| vec![s.to_string()];
    assert_eq!(
        got,
        vec![
            (0, "spo2".into(), f("invalid")),
            (0, "pulseRate".into(), f("invalid")),
            (1, "spo2".into(), f("testData")),
            (1, "pulseRate".into(), f("testData")),
            (2, "heartRate".into(), f("sensorContactLost")),
            (3, "heartRate".into(), f("valueUnavailable")),
            (4, "heartRate".into(), f("valueUnavailable")),
        ]
    );
    // The messages still carry them, flags included (the preview does not alter input).
    assert_eq!(msgs[0]["readings"][0]["flags"], json!(["invalid"]));
}

#[test]
fn the_flag_rule_is_an_allowlist() {
    let engine = MedTech::shipped().unwrap();
    let cases: [(&[&str], bool); 8] = [
        (&[], true),
        (&["lowPerfusion"], true),
        (&["deviceClockNotSet"], true),
        (&["lowPerfusion", "deviceClockNotSet"], true),
        // A flag added in a later version, unknown to this mapping: excluded.
        (&["sensorOverheated"], false),
        (&["lowPerfusion", "questionable"], false),
        (&["earlyEstimate"], false),
        (&["signalIrregular"], false),
    ];
    for (kind, value, spot) in
        [("spo2", "spo2", false), ("spo2", "spo2", true), ("heartRate", "heartRate", false), ("perfusionIndex", "perfusionIndex", false)]
    {
        for (flags, charted_expected) in cases {
            let m = message_json("dev-1", "pulseOximeter", &[reading_json(kind, T, json!({ value: 97.0 }), flags, spot)]);
            let p = engine.preview(&[m], &opts());
            assert!(p.skipped.is_empty(), "{kind} {flags:?}: {:#?}", p.skipped);
            assert_eq!(p.observations.len(), usize::from(charted_expected), "{kind} spot={spot} {flags:?}: {:#?}", p.observations);
            assert_eq!(p.excluded.len(), usize::from(!charted_expected), "{kind} spot={spot} {flags:?}");
        }
    }
    // Blood pressure and the per-reading types follow the same rule.
    for (kind, values) in [
        ("bloodPressure", json!({"systolic": 120.0, "diastolic": 80.0})),
        ("bodyTemperature", json!({"bodyTemperature": 36.8})),
        ("energyExpended", json!({"energyExpended": 12.0})),
        ("rrInterval", json!({"rrInterval": 800.0})),
        ("respirationRate", json!({"respirationRate": 14.0})),
    ] {
        let m = message_json("dev-1", "bedsideMonitor", &[reading_json(kind, T, values.clone(), &["somethingNew"], false)]);
        let p = engine.preview(&[m], &opts());
        assert!(p.observations.is_empty() && p.excluded.len() == 1 && p.skipped.is_empty(), "{kind}: {p:#?}");
        let m = message_json("dev-1", "bedsideMonitor", &[reading_json(kind, T, values, &["lowPerfusion"], false)]);
        assert_eq!(engine.preview(&[m], &opts()).observations.len(), 1, "{kind} with an allowed flag");
    }
}

/// Every clinical template of the shipped device mapping carries the same
/// allowlist as the gateway's `CHARTABLE_FLAGS` (the committer uses it to know
/// which readings take a series slot).
#[test]
fn the_mapping_allowlist_matches_the_gateway() {
    let names: Vec<String> = CHARTABLE_FLAGS.iter().map(|f| serde_json::to_value(f).unwrap().as_str().unwrap().to_string()).collect();
    let clause = format!("!(flags[?!contains(`{}`, @)])", serde_json::to_string(&names).unwrap());
    let dev: Value = serde_json::from_str(shipped_mappings().0).unwrap();
    let mut clinical = 0;
    for t in dev["template"].as_array().unwrap() {
        let t = &t["template"];
        let name = t["typeName"].as_str().unwrap();
        if name == "deviceEvent" {
            continue;
        }
        clinical += 1;
        let m = t["typeMatchExpression"]["value"].as_str().unwrap_or_else(|| panic!("{name}: JMESPath type match expected"));
        assert_eq!(t["typeMatchExpression"]["language"], "JmesPath", "{name}");
        assert_eq!(m.matches("flags").count(), 1, "{name}: {m}");
        assert!(m.ends_with(&format!(" && {clause}]")), "{name}: {m} should end with the allowlist clause {clause}");
    }
    assert_eq!(clinical, 26);
    // The allowlist names real flags; the excluded ones are excluded.
    for f in [
        Flag::SensorContactLost,
        Flag::SensorDisconnected,
        Flag::ValueUnavailable,
        Flag::Questionable,
        Flag::EarlyEstimate,
        Flag::SignalIrregular,
        Flag::TestData,
    ] {
        assert!(!CHARTABLE_FLAGS.contains(&f), "{f:?}");
    }
}

#[test]
fn a_mapping_that_ignores_flags_fails_check() {
    let (d, f) = shipped_mappings();
    let engine = MedTech::shipped().unwrap();
    let r = check::check(&engine, &check::sample_messages(), &opts(), "generated", Vec::new());
    assert!(!r.data_lost && !r.invalid_charted, "{}", r.text);
    assert!(r.text.contains("excluded by device status (the device marked them not valid"), "{}", r.text);
    assert!(r.text.contains("1 heartRate reading(s) flagged sensorContactLost"), "{}", r.text);

    // The shipped mapping as it was before the allowlist: flags ignored.
    let careless = d.replace(" && !(flags[?!contains(`[\\\"lowPerfusion\\\",\\\"deviceClockNotSet\\\"]`, @)])", "");
    assert!(!careless.contains("flags"), "the clause was removed");
    let careless = MedTech::new(&careless, f).unwrap();
    let p = careless.preview(&issue_inputs(), &opts());
    assert!(p.excluded.iter().all(|e| e.flags == ["valueUnavailable"]), "only the reading without its value stays out: {:#?}", p.excluded);
    assert_eq!(p.charted_invalid.len(), 6, "{:#?}", p.charted_invalid);
    assert!(p.observations.iter().any(|o| o["code"]["text"] == "spo2SpotCheck"));
    let r = check::check(&careless, &issue_inputs(), &opts(), "issue inputs", Vec::new());
    assert!(r.invalid_charted, "{}", r.text);
    assert!(r.text.contains("WOULD BE CHARTED") && r.text.contains("flagged sensorContactLost by the device"), "{}", r.text);
}

fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The real decoder, then the CLI: `decode ble` for the three flagged inputs,
/// its readings batched into messages, `medtech preview --summary` on them.
#[test]
fn decoded_ble_inputs_through_the_cli_are_excluded_not_skipped() {
    let mut msgs = Vec::new();
    for hex in [&["2a5e", "02", "62", "00", "48", "00", "00", "80"][..], &["2a5f", "04", "62", "00", "48", "00", "00", "04"], &["2a37", "04", "50"]] {
        let (code, out, err) = cli(&[&["decode", "ble"][..], hex].concat(), "");
        assert_eq!(code, 0, "{err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        let readings = doc["readings"].as_array().unwrap().clone();
        assert!(readings.iter().all(|r| r["flags"].as_array().is_some_and(|f| !f.is_empty())), "the decoder flags them: {out}");
        let kind = readings[0]["deviceKind"].as_str().unwrap().to_string();
        msgs.push(message_json("decoded", &kind, &readings).to_string());
    }
    let (code, out, err) = cli(&["medtech", "preview", "--summary", "-"], &msgs.join("\n"));
    assert_eq!(code, 0, "excluded readings are not a loss: {out}{err}");
    assert!(!out.contains("-> Observation"), "no Observation: {out}");
    assert!(!out.contains("skipped"), "{out}");
    assert!(out.contains("excluded by device status: 1 heartRate reading(s) flagged sensorContactLost"), "{out}");
    assert!(out.contains("spo2 reading(s) flagged testData"), "{out}");
    let (code, out, _) = cli(&["medtech", "check"], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing would be dropped") && out.contains("excluded by device status"), "{out}");
}

/// Issue 11 item 14: a value no body can have (`decode ble 2a5f 00 E8 03 FF
/// 0F`: SpO2 1000 %, pulse rate -1 /min) is flagged `outOfRange`, which is not
/// in the shipped allowlist: counted as excluded by device status, never
/// charted, and not a loss.
#[test]
fn out_of_range_values_are_excluded_by_device_status() {
    assert!(!CHARTABLE_FLAGS.contains(&Flag::OutOfRange));
    let (code, out, err) = cli(&["decode", "ble", "2a5f", "00", "E8", "03", "FF", "0F"], "");
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let readings = doc["readings"].as_array().unwrap().clone();
    let msg = message_json("decoded", "pulseOximeter", &readings).to_string();
    let (code, out, err) = cli(&["medtech", "preview", "--summary", "-"], &msg);
    assert_eq!(code, 0, "excluded readings are not a loss: {out}{err}");
    assert!(!out.contains("-> Observation"), "no Observation: {out}");
    assert!(!out.contains("skipped"), "{out}");
    assert!(out.contains("excluded by device status: 1 spo2 reading(s) flagged outOfRange"), "{out}");
    assert!(out.contains("excluded by device status: 1 pulseRate reading(s) flagged outOfRange"), "{out}");
    // The same through the library, batched with an in-range reading that is charted.
    let engine = MedTech::shipped().unwrap();
    let t = "2026-01-15T10:00:00.000Z";
    let m = message_json(
        "ox-1",
        "pulseOximeter",
        &[reading_json("spo2", t, json!({"spo2": 1000}), &["outOfRange"], false), reading_json("pulseRate", t, json!({"pulseRate": 72}), &[], false)],
    );
    let p = engine.preview(&[m], &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert_eq!(p.excluded.len(), 1, "{:#?}", p.excluded);
    assert_eq!((p.excluded[0].type_name.as_str(), p.excluded[0].flags.clone()), ("spo2", vec!["outOfRange".to_string()]));
    assert!(p.observations.iter().all(|o| o["code"]["text"] != "spo2"), "not charted: {:#?}", p.observations);
    assert!(p.observations.iter().any(|o| o["code"]["text"] == "pulseRate"));
}

// ---- item 6: no value lost to a slot, an identifier or a burst ----

fn hr(time: DateTime<Utc>, value: f64) -> Reading {
    let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", value).at(time);
    r.patient_id = Some("patient-7".into());
    r
}

/// Commits readings as the gateway does: slot bookkeeping in commit order
/// (started before the readings' times), then sequence numbers, then
/// messages of at most `batch` readings.
fn as_gateway(readings: &mut [Reading], since: DateTime<Utc>, batch: usize) -> Vec<Value> {
    let mut slots = SeriesSlots::new(since);
    for (i, r) in readings.iter_mut().enumerate() {
        slots.assign(r);
        r.seq = i as u64 + 1;
    }
    readings.chunks(batch).map(|c| serde_json::to_value(Message::from_batch("gw-1", "0000abcd", c).unwrap()).unwrap()).collect()
}

#[test]
fn two_heart_rates_in_one_second_are_both_kept() {
    let engine = MedTech::shipped().unwrap();
    let t0 = time::parse("2026-01-15T10:00:00.400Z").unwrap();
    let readings = vec![hr(t0, 71.0), hr(t0 + Duration::milliseconds(1), 74.0)];
    // Without the gateway's slot rule (what the service did before): one is overwritten.
    let mut plain = readings.clone();
    for (i, r) in plain.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    let p = engine.preview(&[serde_json::to_value(Message::from_batch("gw-1", "0000abcd", &plain).unwrap()).unwrap()], &opts());
    assert_eq!(p.skipped.len(), 1, "{:#?}", p.skipped);
    assert_eq!(p.skipped[0].kind, SkipKind::SampledDataSlotOverwritten);

    // With it: the later one is its own Observation, at its own time.
    let mut gw = readings;
    let msgs = as_gateway(&mut gw, t0 - Duration::hours(1), 100);
    assert!(!gw[0].slot_taken && gw[1].slot_taken);
    assert_eq!(msgs[0]["readings"][1]["slotTaken"], true);
    let p = engine.preview(&msgs, &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    let mut values = charted(&p);
    values.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(values, vec![("heartRate".to_string(), 71.0), ("heartRateSingle".to_string(), 74.0)]);
    let single = p.observations.iter().find(|o| o["code"]["text"] == "heartRateSingle").unwrap();
    assert_eq!(single["effectivePeriod"]["start"], single["effectivePeriod"]["end"]);
    assert!(single["effectivePeriod"]["start"].as_str().unwrap().starts_with("2026-01-15T10:00:00.401"), "{single}");
    assert_eq!(single["code"]["coding"][0]["code"], "8867-4", "the same vital sign, charted");
    assert_eq!(single["category"][0]["coding"][0]["code"], "vital-signs");
    // The summary says nothing was skipped.
    let lines = iomt_edge::medtech::summary_lines(&p);
    assert!(lines.iter().all(|l| !l.starts_with("skipped")), "{lines:?}");
}

/// Bursts of every length, in one message or spread over many, for each
/// series type: every value the device sent reaches an Observation, none is
/// moved, merged or dropped. There is no tolerance to exceed: however long
/// the burst, each reading that finds its slot taken becomes its own
/// Observation (one Quantity each), the rest fill the series.
#[test]
fn bursts_of_any_length_lose_nothing() {
    let engine = MedTech::shipped().unwrap();
    let base = time::parse("2026-01-15T10:59:59.900Z").unwrap();
    for (kind, period) in SAMPLED_DATA_SERIES {
        let name = kind.value_units()[0].0;
        for (burst, spacing_ms, batch) in [(2, 1, 100), (5, 3, 100), (40, 7, 100), (300, 1, 25), (120, 0, 10)] {
            // A steady 1-per-slot stream, a radio gap, then `burst` readings close together,
            // straddling an hour boundary (two SampledData windows), then the stream again.
            let mut rs = Vec::new();
            // Distinct values, all plausible (model::PLAUSIBLE_RANGES: up to 308
            // of them must fit in SpO2's 0-100 % and SpHb's 0-40 g/dL), exact in
            // binary and decimal.
            let range = iomt_edge::model::plausible_range(kind).unwrap();
            let step = if range.max - range.min >= 100.0 { 0.25 } else { 0.0625 };
            let mut v = range.min + 5.0;
            let mut push = |t: DateTime<Utc>, rs: &mut Vec<Reading>| {
                v += step;
                let mut r = Reading::new("dev-1", DeviceKind::BedsideMonitor, kind).with_value(name, v).at(t);
                assert!(r.flags.is_empty(), "the fixture must be plausible: {r:?}");
                r.patient_id = Some("patient-7".into());
                rs.push(r);
            };
            for i in 0..4 {
                push(base - Duration::milliseconds(period * (10 - i)), &mut rs);
            }
            for i in 0..burst {
                push(base + Duration::milliseconds(spacing_ms * i), &mut rs);
            }
            for i in 0..4 {
                push(base + Duration::milliseconds(spacing_ms * burst + period * (i + 1)), &mut rs);
            }
            let sent: Vec<f64> = rs.iter().map(|r| r.values[name]).collect();
            let msgs = as_gateway(&mut rs, base - Duration::hours(2), batch);
            let p = engine.preview(&msgs, &opts());
            assert!(p.skipped.is_empty(), "{kind} burst {burst}: {:#?}", &p.skipped[..p.skipped.len().min(3)]);
            let mut got: Vec<f64> = charted(&p).into_iter().map(|(_, v)| v).collect();
            got.sort_by(f64::total_cmp);
            assert_eq!(got, sent, "{kind} burst {burst} every {spacing_ms} ms: every value exactly once");
            let singles = p.observations.iter().filter(|o| o["code"]["text"] == format!("{}Single", kind.name())).count();
            assert_eq!(singles, rs.iter().filter(|r| r.slot_taken).count());
            assert!(singles >= 1, "{kind} burst {burst}: a burst shares slots");
        }
    }
}

/// The same holds when the readings go through the real committer into the
/// outbox and out as messages (every adapter's readings pass there).
#[tokio::test]
async fn the_committer_marks_bursts_before_storing() {
    use iomt_edge::adapters::DeviceRegistry;
    use iomt_edge::outbox::committer::{CommitReport, Committer};
    use iomt_edge::outbox::Outbox;
    use iomt_edge::service::associations::Associations;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(dir.path(), &iomt_edge::config::OutboxConfig::default()).unwrap();
    let outbox = Arc::new(outbox);
    let committer = Committer {
        outbox: outbox.clone(),
        window: std::time::Duration::from_millis(20),
        hooks: iomt_edge::service::commit_hooks(&Arc::new(Associations::load(&[], None)), &Arc::new(DeviceRegistry::new())),
        health: Arc::new(iomt_edge::health::Health::new()),
        report: CommitReport(false),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1000);
    let (task, _, _) = committer.spawn(rx);
    // Live readings: timed after the committer started.
    let t0 = (Utc::now() + Duration::seconds(5)).duration_trunc(Duration::seconds(1)).unwrap() + Duration::milliseconds(400);
    let mut sent = Vec::new();
    for (i, dt) in [0, 1, 2, 3, 1000, 1001, 2000].into_iter().enumerate() {
        let r = hr(t0 + Duration::milliseconds(dt), 60.0 + i as f64);
        sent.push(r.values["heartRate"]);
        tx.send(r).await.unwrap();
    }
    drop(tx);
    task.await.unwrap();
    let stored = outbox.read_range(0, u64::MAX, 100).unwrap();
    let taken: Vec<bool> = stored.iter().map(|r| r.slot_taken).collect();
    assert_eq!(taken, [false, true, true, true, false, true, false]);
    assert!(stored.iter().zip(&sent).all(|(r, v)| r.values["heartRate"] == *v), "stored in order, values untouched");
    let msgs = vec![serde_json::to_value(Message::from_batch("gw-1", outbox.epoch(), &stored).unwrap()).unwrap()];
    let p = MedTech::shipped().unwrap().preview(&msgs, &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    let mut got: Vec<f64> = charted(&p).into_iter().map(|(_, v)| v).collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, sent);
}

/// The gateway's slot table is the shipped FHIR mapping's: same types, same
/// `defaultPeriod`, hourly windows, and a per-reading Quantity template with
/// the same codes for the readings whose slot is taken.
#[test]
fn the_gateway_slot_table_matches_the_shipped_fhir_mapping() {
    let fhir: Value = serde_json::from_str(shipped_mappings().1).unwrap();
    let templates: Vec<&Value> = fhir["template"].as_array().unwrap().iter().map(|t| &t["template"]).collect();
    let by_name = |n: &str| templates.iter().find(|t| t["typeName"] == n).copied();
    let sampled: Vec<(String, i64, i64)> = templates
        .iter()
        .filter(|t| t["value"]["valueType"] == "SampledData")
        .map(|t| (t["typeName"].as_str().unwrap().to_string(), t["value"]["defaultPeriod"].as_i64().unwrap(), t["periodInterval"].as_i64().unwrap()))
        .collect();
    let table: Vec<(String, i64, i64)> = SAMPLED_DATA_SERIES.iter().map(|(k, p)| (k.name().to_string(), *p, SERIES_WINDOW_MS / 60_000)).collect();
    assert_eq!(sampled, table, "fhirmapping.json SampledData templates vs SAMPLED_DATA_SERIES");
    for (kind, _) in SAMPLED_DATA_SERIES {
        let series = by_name(kind.name()).unwrap();
        let single = by_name(&format!("{}Single", kind.name())).unwrap_or_else(|| panic!("{kind}Single missing"));
        assert_eq!(single["periodInterval"], -1, "{kind}Single: one Observation per reading (correlation id)");
        assert_eq!(single["value"]["valueType"], "Quantity");
        assert_eq!(single["codes"], series["codes"]);
        assert_eq!(single["category"], series["category"]);
        assert_eq!(single["value"]["unit"], series["value"]["unit"]);
    }
    // Every other template makes one Observation per reading: no time segment to share.
    for t in &templates {
        if t["value"]["valueType"] != "SampledData" {
            assert_eq!(t["periodInterval"], -1, "{}", t["typeName"]);
        }
    }
}

/// Per-reading Observations used to be grouped by time (`periodInterval` 0),
/// whose identifier has whole seconds: two in one second were merged by the
/// service, the later value replacing the earlier. Now every one has its own
/// correlation id.
#[test]
fn per_reading_observations_in_one_second_are_all_kept() {
    let engine = MedTech::shipped().unwrap();
    let t0 = time::parse("2026-01-15T10:00:00.100Z").unwrap();
    let mut rs = Vec::new();
    for (i, kind) in
        [ReadingType::EnergyExpended, ReadingType::BodyTemperature, ReadingType::BloodPressure, ReadingType::Spo2, ReadingType::DeviceEvent]
            .into_iter()
            .enumerate()
    {
        for j in 0..3 {
            let mut r = if kind == ReadingType::DeviceEvent {
                Reading::event(
                    "dev-1",
                    DeviceKind::BedsideMonitor,
                    if j == 1 { iomt_edge::model::DeviceEvent::Disconnected } else { iomt_edge::model::DeviceEvent::Connected },
                )
            } else {
                let mut r = Reading::new("dev-1", DeviceKind::BedsideMonitor, kind);
                // Distinct and plausible values (model::PLAUSIBLE_RANGES).
                let base = [90.0, 36.0, 110.0, 95.0][i];
                for (k, (n, _)) in kind.value_units().iter().enumerate() {
                    r.set_value(n, base + j as f64 + k as f64 * 0.5);
                }
                assert!(r.flags.is_empty(), "the fixture must be plausible: {r:?}");
                r
            };
            r.spot_check = kind == ReadingType::Spo2;
            r.time = t0 + Duration::milliseconds(j as i64 * 300);
            r.patient_id = Some("patient-7".into());
            rs.push(r);
        }
    }
    let msgs = as_gateway(&mut rs, t0 - Duration::hours(1), 4);
    let p = engine.preview(&msgs, &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert_eq!(p.observations.len(), 15);
    let ids: std::collections::BTreeSet<&str> = p.observations.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 15, "every Observation has its own id");

    // The preview catches the old grouping: same mapping with periodInterval 0.
    let (d, f) = shipped_mappings();
    let old = MedTech::new(d, &f.replace("\"periodInterval\": -1", "\"periodInterval\": 0")).unwrap();
    let p = old.preview(&msgs, &opts());
    let replaced = p.skipped.iter().filter(|s| s.kind == SkipKind::ObservationReplaced).count();
    assert_eq!(replaced, 10, "two of three per type replaced: {:#?}", p.skipped);
    assert_eq!(p.observations.len(), 5);
}

/// In Lookup mode the preview cannot know the ids; two devices in the same
/// second are still two Observations, one device twice is a replacement.
#[test]
fn replaced_observations_in_lookup_mode_are_per_device() {
    let (d, f) = shipped_mappings();
    let old = MedTech::new(d, &f.replace("\"periodInterval\": -1", "\"periodInterval\": 0")).unwrap();
    let lookup = PreviewOptions { identity: iomt_edge::medtech::IdentityMode::Lookup, ..opts() };
    let t0 = time::parse("2026-01-15T10:00:00.100Z").unwrap();
    let temp = |dev: &str, ms: i64| {
        let mut r =
            Reading::new(dev, DeviceKind::BedsideMonitor, ReadingType::BodyTemperature).with_value("bodyTemperature", 36.0 + ms as f64 / 1000.0);
        r.time = t0 + Duration::milliseconds(ms);
        r
    };
    let mut a = vec![temp("mon-1", 0)];
    let mut b = vec![temp("mon-2", 500)];
    let msgs = [as_gateway(&mut a, t0, 10), as_gateway(&mut b, t0, 10)].concat();
    let p = old.preview(&msgs, &lookup);
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    assert_eq!(p.observations.len(), 2);
    let mut same = vec![temp("mon-1", 0), temp("mon-1", 500)];
    let p = old.preview(&as_gateway(&mut same, t0, 10), &lookup);
    assert_eq!(p.skipped.iter().map(|s| s.kind).collect::<Vec<_>>(), [SkipKind::ObservationReplaced]);
    assert_eq!(p.observations.len(), 1);
    assert_eq!(p.observations[0]["valueQuantity"]["value"], 36.5, "the later value wins, as in the service");
}
