//! `iomt-edge decode serial`: one JSON object per record for every public
//! capture in tests/data/serial, bad input on stderr, documented exit codes.

use std::io::Write;
use std::process::{Command, Stdio};

fn data(name: &str) -> String {
    format!("{}/tests/data/serial/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<serde_json::Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["decode", "serial", "--arrival", "2025-06-10T00:00:00Z"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or(b"")).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    (out.status.code().unwrap_or(-1), records, String::from_utf8_lossy(&out.stderr).into())
}

fn value(rec: &serde_json::Value, kind: &str, name: &str) -> Option<f64> {
    rec["readings"].as_array()?.iter().find(|r| r["type"] == kind)?["values"][name].as_f64()
}

#[test]
fn every_public_capture_decodes_to_its_stated_values() {
    let (code, recs, err) = run(&["--profile", "masimo-ascii1", &data("masimo_rad8_ascii1_yahnatan.txt")], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0]["record"], 1);
    assert_eq!(recs[0]["serial"], "0000056661");
    assert_eq!(recs[0]["deviceClock"], "2016-02-22T22:47:45");
    assert_eq!((value(&recs[0], "spo2", "spo2"), value(&recs[0], "pulseRate", "pulseRate")), (Some(98.0), Some(97.0)));
    assert_eq!(value(&recs[0], "perfusionIndex", "perfusionIndex"), Some(3.6));
    assert_eq!(recs[0]["readings"][0]["deviceTime"]["timeFrom"], "arrival");
    assert_eq!(recs[0]["readings"][0]["time"], "2025-06-10T00:00:00.000Z");
    assert!(err.contains("5 record(s), 15 reading(s); bad input: none"), "{err}");

    let (code, recs, _) = run(&["--profile", "masimo-ascii1", &data("masimo_ascii1_other_models.txt")], None);
    assert_eq!(code, 0);
    assert_eq!((value(&recs[0], "pulseRate", "pulseRate"), value(&recs[0], "perfusionIndex", "perfusionIndex")), (Some(123.0), Some(0.55)));
    assert_eq!(recs[0]["deviceStatus"], serde_json::json!(["lowSignalIq", "set"]));
    assert_eq!(recs[2]["readings"][0]["flags"], serde_json::json!(["valueUnavailable", "sensorDisconnected"]));

    let (code, recs, err) = run(&["--profile", "nonin-df2", "--hex", &data("nonin_df2_packet_pufferfish_testvector.hex")], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1);
    assert_eq!((value(&recs[0], "pulseRate", "pulseRate"), value(&recs[0], "spo2", "spo2")), (Some(72.0), Some(97.0)));

    let (code, recs, err) = run(&["--profile", "hl7", &data("hl7_oru_r01_comen_unverified.txt")], None);
    assert_eq!(code, 0, "{err}");
    let r = &recs[0];
    assert_eq!(
        (value(r, "spo2", "spo2"), value(r, "pulseRate", "pulseRate"), value(r, "respirationRate", "respirationRate")),
        (Some(97.0), Some(59.0), Some(20.0))
    );
    assert_eq!(value(r, "bodyTemperature", "bodyTemperature"), Some(37.0));
    assert_eq!(
        (value(r, "bloodPressure", "systolic"), value(r, "bloodPressure", "diastolic"), value(r, "bloodPressure", "mean")),
        (Some(120.0), Some(80.0), Some(90.0))
    );
    assert_eq!(r["readings"][0]["time"], "2025-06-09T17:51:27.000Z");
    assert_eq!(r["readings"][0]["deviceTime"]["timeFrom"], "deviceZone");
}

#[test]
fn standard_input_bad_input_and_exit_codes() {
    // Raw bytes on stdin, with noise: records decoded, the noise counted on stderr.
    let (code, recs, err) = run(&["--profile", "nonin-ascii"], Some(b"SPO2=097 HR=072\r\nSPO2=0x7 HR=1\r\nSPO2=--- HR=---\r\n"));
    assert_eq!(code, 0);
    assert_eq!(recs.len(), 2);
    assert!(err.contains("bad input (badField): field `SPO2`"), "{err}");
    assert!(err.contains("bad input: badField 1"), "{err}");
    // Nothing decodable: exit 3.
    let (code, recs, err) = run(&["--profile", "nonin-df2"], Some(b"\x01\x81\x01\x00\x84junk"));
    assert_eq!(code, 3);
    assert!(recs.is_empty());
    assert!(err.contains("error: no record in the input"), "{err}");
    let (code, _, err) = run(&["--profile", "nonin-df2", "--hex"], Some(b"01 8G"));
    assert_eq!(code, 3);
    assert!(err.contains("not hex"), "{err}");
    // Unknown profile, invalid profile, code map on a profile: exit 2, named.
    let (code, _, err) = run(&["--profile", "philips-mib"], Some(b""));
    assert_eq!(code, 2);
    assert!(err.contains("no such profile") && err.contains("masimo-ascii1"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "name = \"x\"\ndevice_kind = \"pulseOximeter\"\n[parse]\nmode = \"kv\"\n[[reading]]\nfield = \"HR\"\ntype = \"pulseRate\"\nunit = \"bpm\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--profile", p.to_str().unwrap()], Some(b""));
    assert_eq!(code, 2);
    assert!(err.contains("`reading[0].unit`") && err.contains("/min"), "{err}");
    let (code, _, err) = run(&["--profile", "masimo-ascii1", "--code-map", "x.toml"], Some(b""));
    assert_eq!(code, 2);
    assert!(err.contains("only used with --profile hl7"), "{err}");
    // A file that does not exist: exit 1.
    let (code, _, err) = run(&["--profile", "hl7", "/nonexistent/capture.hl7"], None);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/capture.hl7"), "{err}");
}
