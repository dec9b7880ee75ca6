//! The HL7 TCP listener against an independent sender: the PyPI `hl7`
//! package (python-hl7) builds ORU^R01 messages, sends them over MLLP with
//! its own client and parses the gateway's ACKs (tests/python/hl7_mllp_sender.py).
//!
//! The contract: a message answered `MSA|AA` has its readings in the outbox.
//! The gateway is killed with SIGKILL while the sender is still sending; after
//! a restart every AA-acknowledged message's readings are delivered, value by
//! value; the message in flight at the kill was either acknowledged (and is
//! delivered) or not acknowledged (and the sender would resend it), never
//! acknowledged and lost. Messages the gateway cannot use get AR with a reason.
//!
//! Python: `IOMT_TEST_PYTHON` (scripts/test.sh sets it to the test venv, which
//! installs scripts/requirements-test.txt), else `python3`. Without python or
//! the `hl7` package the test is skipped with a note, and fails when
//! `IOMT_REQUIRE_ALL=1`.

use crate::support::gateway as gateway_common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> Option<String> {
    let py = std::env::var("IOMT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", "import hl7, hl7.client"]).output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return Some(py);
    }
    let why = format!("{py} cannot import the PyPI `hl7` package (pip install -r scripts/requirements-test.txt): no independent HL7 sender");
    crate::support::skip(&crate::support::this_test(), why);
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the gateway never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (spo2, pulse) pairs delivered for the listener's device.
fn delivered(sink: &std::path::Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let m: Value = serde_json::from_str(line).unwrap();
        for r in m["readings"].as_array().unwrap() {
            let ty = r["type"].as_str().unwrap().to_string();
            if let Some(v) = r["values"][&ty].as_f64() {
                out.push((ty, v));
            }
        }
    }
    out
}

#[test]
fn every_acknowledged_message_survives_a_kill_9() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("delivered.ndjson");
    let port = free_port();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-hl7\"\nstate_dir = \"{}\"\n[forwarder]\nbatch_max_age_ms = 100\n\n[[device]]\nid = \"central-1\"\nkind = \"bedside_monitor\"\n\
             [device.hl7_tcp]\nlisten = \"127.0.0.1:{port}\"\n\n[sink.file]\npath = \"{}\"\n",
            dir.path().join("state").display(),
            sink.display()
        ),
    )
    .unwrap();
    let (mut gw, reader) = gateway_common::start(&cfg, Default::default());
    wait_listening(port);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/hl7_mllp_sender.py");
    let mut sender = Command::new(&py)
        .arg(script)
        .args(["127.0.0.1", &port.to_string(), "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the python sender");
    let lines = BufReader::new(sender.stdout.take().unwrap());
    let mut sent: Vec<Value> = Vec::new();
    let mut killed = false;
    for line in lines.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).expect("the sender prints JSON");
        sent.push(v);
        if !killed && sent.iter().filter(|v| v["ack"] == "AA").count() >= 15 {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(gw.id() as i32, libc::SIGKILL) };
            killed = true;
        }
    }
    assert!(sender.wait().unwrap().success(), "the sender failed");
    let _ = gw.wait();
    reader.join().unwrap();
    assert!(killed, "the sender finished before 15 ACKs: {sent:?}");

    // What the gateway refused, it refused with a reason.
    assert_eq!(sent[0]["id"], "ADT1");
    assert_eq!(sent[0]["ack"], "AR");
    assert_eq!(sent[0]["msa2"], "ADT1");
    assert!(sent[0]["reason"].as_str().unwrap().contains("not supported"), "{}", sent[0]);
    assert_eq!((sent[1]["id"].as_str(), sent[1]["ack"].as_str()), (Some("NOMSH"), Some("AR")));
    assert!(sent[1]["reason"].as_str().unwrap().contains("MSH"), "{}", sent[1]);
    let acked: Vec<&Value> = sent[2..].iter().filter(|v| v["ack"] == "AA").collect();
    for v in &acked {
        assert_eq!(v["msa2"], v["id"], "MSA-2 echoes the control id");
    }
    // Only the ORU messages after the first unanswered one went unanswered.
    let first_unanswered = sent[2..].iter().position(|v| v["ack"] != "AA").unwrap_or(sent.len() - 2);
    assert_eq!(first_unanswered, acked.len(), "answers stop at the kill: {sent:?}");
    assert!(sent[2..].iter().all(|v| v["ack"] == "AA" || v["ack"].is_null()), "only AA or no answer: {sent:?}");

    // Restart: the outbox still holds what was acknowledged; it is delivered.
    let (gw, reader) = gateway_common::start(&cfg, Default::default());
    let want: BTreeSet<u64> = acked.iter().map(|v| v["pulse"].as_u64().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<u64> = delivered(&sink).iter().filter(|(t, _)| t == "pulseRate").map(|(_, v)| *v as u64).collect();
        if want.is_subset(&got) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    gateway_common::terminate(&gw);
    let mut gw = gw;
    let _ = gw.wait();
    reader.join().unwrap();
    let got = delivered(&sink);
    for v in &acked {
        let (spo2, pulse) = (v["spo2"].as_f64().unwrap(), v["pulse"].as_f64().unwrap());
        assert!(got.contains(&("pulseRate".into(), pulse)), "{} was acknowledged but its pulse {pulse} was not delivered", v["id"]);
        assert!(got.contains(&("spo2".into(), spo2)), "{} was acknowledged but its SpO2 {spo2} was not delivered", v["id"]);
    }
    eprintln!("{} messages acknowledged before the kill, all delivered after the restart", acked.len());
}
