//! `medtech preview` and `check` predict what the MedTech service stores, including
//! its silent .NET coercions: a Quantity value `"36,6"` is stored
//! as 366 by `decimal.Parse(s, CultureInfo.InvariantCulture)`, and the preview must
//! show 366 and `check` must flag it loudly, naming the value and the message.

use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

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

const DEVICE: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "JsonPathContent", "template": {"typeName": "bodyTemperature", "typeMatchExpression": "$..[?(@temperature)]",
    "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.time",
    "values": [{"valueName": "temperature", "valueExpression": "$.temperature", "required": "true"}]}},
  {"templateType": "JsonPathContent", "template": {"typeName": "heartRate", "typeMatchExpression": "$..[?(@hr)]",
    "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.time",
    "values": [{"valueName": "hr", "valueExpression": "$.hr", "required": "true"}]}},
  {"templateType": "CalculatedContent", "template": {"typeName": "weight", "typeMatchExpression": "$..[?(@grams)]",
    "deviceIdExpression": "$.matchedToken.deviceId", "patientIdExpression": "$.matchedToken.patientId", "timestampExpression": "$.matchedToken.time",
    "values": [{"valueName": "kg", "valueExpression": {"value": "divide(matchedToken.grams, `1000`)", "language": "JmesPath"}, "required": "true"}]}},
  {"templateType": "JsonPathContent", "template": {"typeName": "note", "typeMatchExpression": "$..[?(@taken)]",
    "deviceIdExpression": "$.deviceId", "patientIdExpression": "$.patientId", "timestampExpression": "$.time",
    "values": [{"valueName": "taken", "valueExpression": "$.taken", "required": "true"}]}}]}"#;

const FHIR: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "bodyTemperature", "periodInterval": 0,
    "codes": [{"code": "8310-5", "system": "http://loinc.org"}],
    "value": {"valueType": "Quantity", "valueName": "temperature", "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartRate", "periodInterval": 60,
    "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
    "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "weight", "periodInterval": 0,
    "codes": [{"code": "29463-7", "system": "http://loinc.org"}],
    "value": {"valueType": "Quantity", "valueName": "kg", "unit": "kg"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "note", "periodInterval": 0,
    "codes": [{"code": "x", "system": "urn:example"}],
    "value": {"valueType": "String", "valueName": "taken"}}}]}"#;

fn files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("devicecontent.json");
    let f = dir.path().join("fhirmapping.json");
    std::fs::write(&d, DEVICE).unwrap();
    std::fs::write(&f, FHIR).unwrap();
    let (d, f) = (d.to_str().unwrap().to_string(), f.to_str().unwrap().to_string());
    (dir, d, f)
}

fn msg(extra: Value) -> String {
    let mut m = json!({"deviceId": "thermo-1", "patientId": "p-1", "time": "2026-01-15T10:00:00Z"});
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m.to_string()
}

/// The issue's input: the preview shows 366 (what the service stores) and warns;
/// before, it said "not a number, dropped" and made no Observation.
#[test]
fn comma_decimal_is_stored_as_366_and_preview_says_so() {
    let (_dir, d, f) = files();
    let input = msg(json!({"temperature": "36,6"}));
    let (code, out, err) = cli(&["medtech", "preview", "--device-mapping", &d, "--fhir-mapping", &f, "-"], &input);
    assert_eq!(code, 3, "a value stored differently from what was sent is a problem: {out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["skipped"], json!([]), "{out}");
    let obs = doc["observations"].as_array().unwrap();
    assert_eq!(obs.len(), 1, "{out}");
    assert_eq!(obs[0]["valueQuantity"]["value"], json!(366));
    let w = &doc["warnings"][0];
    assert_eq!(w["kind"], "groupSeparatorRead");
    assert_eq!(w["input"], 0);
    assert_eq!(w["valueName"], "temperature");
    assert_eq!(w["sent"], "36,6");
    assert_eq!(w["stored"], "366");
    assert!(w["reason"].as_str().unwrap().contains("factor of 10"), "{w}");

    let (code, out, _) = cli(&["medtech", "preview", "--summary", "--device-mapping", &d, "--fhir-mapping", &f, "-"], &input);
    assert_eq!(code, 3);
    assert!(out.lines().next().unwrap().starts_with("bodyTemperature 366 Cel -> Observation 8310-5"), "{out}");
    assert!(out.contains("WARNING (',' read as a thousands separator (probable unit/locale error)): message 0:"), "{out}");
}

#[test]
fn check_flags_the_comma_loudly_with_field_and_message() {
    let (dir, d, f) = files();
    let p = dir.path().join("msgs.ndjson");
    std::fs::write(&p, format!("{}\n{}\n", msg(json!({"temperature": "36.6"})), msg(json!({"temperature": "36,6", "time": "2026-01-15T10:01:00Z"}))))
        .unwrap();
    let (code, out, err) = cli(&["medtech", "check", "--device-mapping", &d, "--fhir-mapping", &f, p.to_str().unwrap()], "");
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("nothing would be dropped"), "{out}");
    assert!(out.contains("WARNING: 1 value(s) would be STORED DIFFERENTLY"), "{out}");
    assert!(
        out.contains("- ',' read as a thousands separator (probable unit/locale error): message 1, template[0] bodyTemperature, value \"temperature\": sent \"36,6\" -> stored 366"),
        "{out}"
    );
    // A plain "36.6" alone is fine.
    std::fs::write(&p, msg(json!({"temperature": "36.6"}))).unwrap();
    let (code, out, _) = cli(&["medtech", "check", "--device-mapping", &d, "--fhir-mapping", &f, p.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("WARNING"), "{out}");
}

/// Siblings of the kind, one message each, through the CLI.
#[test]
fn siblings_of_the_kind_through_preview() {
    let (_dir, d, f) = files();
    let run = |extra: Value| -> Value {
        let (code, out, err) = cli(&["medtech", "preview", "--device-mapping", &d, "--fhir-mapping", &f, "-"], &msg(extra));
        assert_eq!(code, 3, "{out}{err}");
        serde_json::from_str(&out).unwrap()
    };
    // Trailing sign: stored as -5.
    let doc = run(json!({"temperature": "5-"}));
    assert_eq!(doc["observations"][0]["valueQuantity"]["value"], json!(-5));
    assert_eq!(doc["warnings"][0]["kind"], "trailingSignRead");
    // A JSON number 0.00001 is extracted by Json.NET as "1E-05", which decimal.Parse refuses: group dropped.
    let doc = run(json!({"temperature": 0.00001}));
    assert_eq!(doc["observations"], json!([]));
    assert_eq!(doc["measurements"][0]["Properties"][0]["Value"], "1E-05");
    assert_eq!(doc["skipped"][0]["kind"], "notANumber");
    assert!(doc["skipped"][0]["reason"].as_str().unwrap().contains("exponent"), "{doc}");
    // Booleans, parentheses, currency, NaN: dropped with the .NET reason.
    for v in [json!(true), json!("(36.6)"), json!("$36.6"), json!("NaN"), json!("36.6 C")] {
        let doc = run(json!({"temperature": v}));
        assert_eq!(doc["skipped"][0]["kind"], "notANumber", "{v}: {doc}");
    }
    // SampledData does not parse values: "72,5" is written as is, and said so.
    let doc = run(json!({"hr": "72,5"}));
    assert!(doc["observations"][0]["valueSampledData"]["data"].as_str().unwrap().contains("72,5"));
    assert_eq!(doc["warnings"][0]["kind"], "sampledDataNotDecimal");
    let doc = run(json!({"hr": "72 5"}));
    assert_eq!(doc["warnings"][0]["kind"], "sampledDataValueSplit");
    // JMESPath divide of two integers truncates in the service: 72500 g / 1000 = 72.
    let doc = run(json!({"grams": 72500}));
    assert_eq!(doc["observations"][0]["valueQuantity"]["value"], json!(72));
    assert_eq!(doc["warnings"][0]["kind"], "integerArithmetic");
    // A date-like string value is rewritten by Json.NET while parsing.
    let doc = run(json!({"taken": "2026-01-15T09:59:00Z"}));
    assert_eq!(doc["observations"][0]["valueString"], "01/15/2026 09:59:00");
    assert_eq!(doc["warnings"][0]["kind"], "dateStringRewritten");
    // Time strings: no offset, a time with no date, month/day order.
    let doc = run(json!({"temperature": "36.6", "time": "01/02/2026 10:00:00"}));
    assert_eq!(doc["measurements"][0]["OccurrenceTimeUtc"], "2026-01-02T10:00:00Z");
    assert_eq!(doc["warnings"][0]["kind"], "timeReadDifferently");
    // A time the preview cannot predict is not called fine.
    let doc = run(json!({"temperature": "36.6", "time": "15 Jan 2026 10:00"}));
    assert_eq!(doc["skipped"][0]["kind"], "invalidTimestamp");
}
