//! `iomt-edge decode ble`: JSON on success, exit 3 and a sentence on malformed input.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).arg("decode").arg("ble").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn decodes_a_heart_rate_notification_as_json() {
    let (code, out, _) = run(&["2a37", "16", "4B", "2E", "03"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decoded"]["heartRate"], 75);
    assert_eq!(v["decoded"]["sensorContact"], "detected");
    assert_eq!(v["readings"][0]["type"], "heartRate");
    assert_eq!(v["readings"][0]["units"]["heartRate"], "/min");
    assert_eq!(v["readings"][1]["type"], "rrInterval");
    let rr = v["readings"][1]["values"]["rrInterval"].as_f64().unwrap();
    assert!((rr - 794.9).abs() < 0.05);
}

#[test]
fn decodes_by_name_and_compact_hex() {
    let (code, out, _) = run(&["plx-continuous", "08FF07FF07008000"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["readings"][0]["type"], "spo2");
    assert_eq!(v["readings"][0]["values"], serde_json::json!({}));
    assert_eq!(v["readings"][0]["flags"], serde_json::json!(["valueUnavailable", "sensorDisconnected"]));
}

#[test]
fn malformed_input_exits_3_with_a_message() {
    let (code, out, err) = run(&["2a60", "1A", "00"]);
    assert_eq!(code, 3);
    assert!(out.is_empty());
    assert!(err.contains("truncated") && err.contains("deviceAndSensorStatusSupport"), "{err}");
    let (code, _, err) = run(&["2a37", "4G"]);
    assert_eq!(code, 3);
    assert!(err.contains("not a hex digit"), "{err}");
    let (code, _, err) = run(&["nonsense", "00"]);
    assert_eq!(code, 3);
    assert!(err.contains("unknown characteristic"), "{err}");
}
