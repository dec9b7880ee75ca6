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

fn run_env(args: &[&str], tz: &str) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).env("TZ", tz).arg("decode").arg("ble").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null), stderr)
}

use serde_json::json;

/// Issue 9 item 2: the device's own "not valid" marks reach the readings, and
/// a heart rate of 0 is "no signal", not 0 /min.
#[test]
fn device_status_and_sentinels_become_flags() {
    let flags = |args: &[&str]| {
        let (code, v, err) = run_env(args, "UTC");
        assert_eq!(code, 0, "{args:?}: {err}");
        v["readings"].as_array().unwrap().iter().map(|r| (r["values"].clone(), r["flags"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(
        flags(&["2a5e", "02 62 00 48 00 00 80"]),
        vec![(json!({"spo2": 98.0}), json!(["invalid"])), (json!({"pulseRate": 72.0}), json!(["invalid"]))]
    );
    assert_eq!(
        flags(&["2a5f", "04 62 00 48 00 00 04"]),
        vec![(json!({"spo2": 98.0}), json!(["testData"])), (json!({"pulseRate": 72.0}), json!(["testData"]))]
    );
    assert_eq!(flags(&["2a37", "04 50"]), vec![(json!({"heartRate": 80.0}), json!(["sensorContactLost"]))]);
    assert_eq!(flags(&["2a37", "00 00"]), vec![(json!({}), json!(["valueUnavailable"]))]);
}

/// Issue 9 item 3: a stored spot-check is timed when it was measured, and the
/// output shows how its device clock became UTC.
#[test]
fn stored_spot_check_is_timed_when_it_was_measured() {
    const STORED: &str = "03 62 00 48 00 E9 07 03 04 05 06 07 00 02";
    // No offset measured, gateway in UTC+01:00 (TZ): the device clock read in that zone.
    let (code, v, err) = run_env(&["2a5e", STORED], "CET-1");
    assert_eq!(code, 0, "{err}");
    for r in v["readings"].as_array().unwrap() {
        assert_eq!(r["time"], "2025-03-04T04:06:07.000Z", "{v}");
        assert_eq!(r["deviceTime"], serde_json::json!({"local": "2025-03-04T05:06:07", "timeFrom": "gatewayZone", "utcOffsetSeconds": 3600}));
        assert!(r.get("flags").is_none(), "{r}");
    }
    // With an offset measured on live readings: device clock 2 h ahead of UTC.
    let (code, v, err) = run_env(&["--arrival", "2025-03-06T12:00:00Z", "--device-clock-offset", "7200", "2a5e", STORED], "CET-1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["readings"][0]["time"], "2025-03-04T03:06:07.000Z");
    assert_eq!(v["readings"][0]["deviceTime"]["timeFrom"], "measuredOffset");
    assert_eq!(v["arrival"], "2025-03-06T12:00:00.000Z");
    // An explicit gateway zone, and an arrival before the converted time: unknown.
    let (_, v, _) = run_env(&["--arrival", "2025-03-04T03:00:00Z", "--gateway-utc-offset", "+01:00", "2a5e", STORED], "UTC");
    assert_eq!(v["readings"][0]["time"], "2025-03-04T03:00:00.000Z");
    assert_eq!(v["readings"][0]["flags"], serde_json::json!(["timeUnknown"]));
    // Live (status 0): arrival time, and the offset it measures is shown.
    let (_, v, _) = run_env(&["--arrival", "2025-03-04T04:06:07Z", "2a5e", "03 62 00 48 00 E9 07 03 04 05 06 07 00 00"], "UTC");
    assert_eq!(v["readings"][0]["time"], "2025-03-04T04:06:07.000Z");
    assert_eq!(v["readings"][0]["deviceTime"]["timeFrom"], "arrival");
    assert_eq!(v["clockOffsetMeasured"], 3600);
    // Bad options say what is wrong.
    let (code, _, err) = run_env(&["--arrival", "yesterday", "2a5e", STORED], "UTC");
    assert_eq!(code, 3);
    assert!(err.contains("--arrival"), "{err}");
}

/// Issue 9 item 4: one stray byte after the last RR interval costs nothing but itself.
#[test]
fn stray_byte_keeps_heart_rate_and_rr() {
    for (n, hex) in ["10 3e b1 03 de", "10 3e b1 03 b1 03 de", "10 3e b1 03 b1 03 b1 03 de"].iter().enumerate() {
        let (code, v, err) = run_env(&["2a37", hex], "UTC");
        assert_eq!(code, 0, "{hex}: {err}");
        let rs = v["readings"].as_array().unwrap();
        assert_eq!(rs.len(), n + 2, "{v}");
        assert_eq!(rs[0]["values"]["heartRate"], 62.0);
        for r in &rs[1..] {
            let rr = r["values"]["rrInterval"].as_f64().unwrap();
            assert!((rr - 922.9).abs() < 0.05, "{rr}");
        }
        assert_eq!(v["extraBytes"], serde_json::json!({"count": 1, "cutField": "rrInterval"}));
    }
}

/// Issue 11 item 14: values no body can have (SpO2 1000 %, pulse rate -1
/// /min, heart rate 65535 /min) are kept as sent and flagged `outOfRange`, so
/// they do not pass as normal readings.
#[test]
fn values_no_body_can_have_are_flagged_out_of_range() {
    let (code, out, err) = run(&["2a5f", "00", "E8", "03", "FF", "0F"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let readings = v["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 2, "{out}");
    for (r, (kind, value)) in readings.iter().zip([("spo2", 1000.0), ("pulseRate", -1.0)]) {
        assert_eq!(r["type"], kind, "{out}");
        assert_eq!(r["values"][kind].as_f64(), Some(value), "kept as sent, not clamped: {out}");
        assert_eq!(r["flags"], serde_json::json!(["outOfRange"]), "{out}");
    }
    let (code, out, err) = run(&["2a37", "01", "FF", "FF"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["readings"][0]["values"]["heartRate"].as_f64(), Some(65535.0), "{out}");
    assert_eq!(v["readings"][0]["flags"], serde_json::json!(["outOfRange"]), "{out}");
    // A normal value carries no flag.
    let (_, out, _) = run(&["2a5f", "00", "62", "00", "48", "00"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["readings"].as_array().unwrap().iter().all(|r| r.get("flags").is_none()), "{out}");
}

#[test]
fn an_absurd_clock_offset_or_a_misplaced_option_is_a_sentence_not_a_panic() {
    let spot = ["2a5e", "03", "62", "00", "48", "00", "E9", "07", "03", "04", "05", "06", "07", "00", "02"];
    for offset in ["-9223372036854775808", "9223372036854775807", "-9223372036854775"] {
        let mut args = vec!["--arrival", "2025-03-04T09:00:00Z", "--device-clock-offset", offset];
        args.extend(spot);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "offset {offset}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for r in v["readings"].as_array().unwrap() {
            assert_eq!(r["time"], "2025-03-04T09:00:00.000Z", "{out}");
            assert!(r["flags"].as_array().unwrap().contains(&serde_json::json!("timeUnknown")), "{out}");
        }
    }
    // An option after the value bytes is named, not read as a hex digit.
    let (code, out, err) = run(&["2a37", "16", "4B", "--arrival", "2025-03-04T09:00:00Z"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("`--arrival`") && err.contains("before"), "{err}");
}
