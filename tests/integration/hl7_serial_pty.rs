//! HL7 over a serial line through the whole gateway: simulated HL7
//! monitors on real pseudo-terminal pairs write MLLP-framed ORU^R01 messages
//! and read the gateway's ACKs on the same line, as a monitor's own HL7
//! stack would; the `iomt-edge` binary reads them through tokio-serial.
//!
//! The messages and the ACK parser are written here, from the HL7 v2.6 text
//! (MSH/PID/PV1/OBX, MSA-1/2/3) and MLLP (`0x0B` ... `0x1C 0x0D`), not with
//! the gateway's code.
//!
//! 1. A bedside monitor (patient from the device's association): every
//!    message answered `AA` has its readings in the outbox, which a SIGKILL
//!    right after the last `AA` and a restart prove; malformed messages get
//!    `AR` with the reason; a message naming another patient in PID-3 than
//!    the first gets `AE` with the reason and nothing of it is stored; a
//!    device with `ack = false` is never answered.
//! 2. A central station's feed of two beds with `patient_from = "pid"`: each
//!    bed's readings land on its own device id (`central-1/<bed>`) with the
//!    patient its PID-3 names; a message without PID-3 gets `AR`, nothing
//!    stored.
//!
//! `IOMT_TEST_BINARY` runs another gateway binary (to show that an older one
//! fails these tests).

use crate::support::gateway as gateway_common;

use iomt_edge::simulate::serial::{mllp, Pty};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn start(cfg: &Path) -> (Child, std::thread::JoinHandle<()>) {
    let bin = std::env::var("IOMT_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_iomt-edge").to_string());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--report-commits", "--config"]).arg(cfg);
    let log = std::env::var_os("IOMT_TEST_GATEWAY_LOG").map(PathBuf::from);
    gateway_common::start_command(cmd, Default::default(), log.as_deref())
}

/// Opens a terminal pair and points `link` at it (a udev by-id link).
fn plug(link: &Path) -> Pty {
    let pty = Pty::open().expect("a pseudo-terminal");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(pty.path(), link).expect("link");
    pty
}

/// A monitor's end of the line: what it sent and what it has received.
struct Monitor {
    pty: Pty,
    received: Vec<u8>,
}

impl Monitor {
    /// Waits until the gateway opened the port (its init byte, CR, arrives).
    async fn wait_open(&mut self, what: &str) {
        let start = Instant::now();
        loop {
            self.received.extend(self.pty.take_received());
            if let Some(i) = self.received.iter().position(|b| *b == 0x0D) {
                self.received.drain(..=i);
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{what}: the gateway never opened the port");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next MLLP block received within `within`, as text.
    async fn next_block(&mut self, within: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            self.received.extend(self.pty.take_received());
            if let Some(s) = self.received.iter().position(|b| *b == 0x0B) {
                if let Some(e) = self.received[s..].windows(2).position(|w| w == [0x1C, 0x0D]) {
                    let block = String::from_utf8_lossy(&self.received[s + 1..s + e]).into_owned();
                    self.received.drain(..s + e + 2);
                    return Some(block);
                }
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a message in an MLLP block and waits for its ACK: MSA-1, MSA-2,
    /// MSA-3 (the reason), or `None` when no answer came.
    async fn send(&mut self, message: &str) -> Option<(String, String, String)> {
        self.pty.send(&mllp(message)).await;
        let ack = self.next_block(Duration::from_secs(15)).await?;
        let segments: Vec<&str> = ack.split('\r').collect();
        assert!(segments[0].starts_with("MSH|^~\\&|") && segments[0].contains("|ACK^"), "an ACK message: {ack:?}");
        let msa = segments.iter().find(|s| s.starts_with("MSA|")).unwrap_or_else(|| panic!("no MSA segment in {ack:?}"));
        let f: Vec<&str> = msa.split('|').collect();
        // HL7 escapes (v2.6 section 2.7): \F\ \S\ \T\ \R\ \E\.
        let unescape = |t: &str| t.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\T\\", "&").replace("\\R\\", "~").replace("\\E\\", "\\");
        let get = |n: usize| f.get(n).map(|s| unescape(s)).unwrap_or_default();
        Some((get(1), get(2), get(3)))
    }
}

/// An ORU^R01 with SpO2 and pulse, optional PID-3 and PV1-3.
fn oru(control: &str, pid3: Option<&str>, pv1_3: Option<&str>, spo2: u32, pulse: u32) -> String {
    let ts = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    let mut m = format!("MSH|^~\\&|MON|ICU|||{ts}||ORU^R01^ORU_R01|{control}|P|2.6\r");
    if let Some(p) = pid3 {
        m.push_str(&format!("PID|1||{p}||Doe^Jane\r"));
    }
    if let Some(l) = pv1_3 {
        m.push_str(&format!("PV1|1|I|{l}\r"));
    }
    m.push_str(&format!("OBR|1|||1^MON^99X|||{ts}\r"));
    m.push_str(&format!("OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||{spo2}|262688^MDC_DIM_PERCENT^MDC|||||F|||{ts}\r"));
    m.push_str(&format!("OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC||{pulse}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||{ts}\r"));
    m
}

/// Delivered messages: (device id, patient id, type, value) of each reading with a value.
fn delivered(sink: &Path) -> Vec<(String, Option<String>, String, f64)> {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let m: Value = serde_json::from_str(line).expect("a whole JSON message per line");
        let device = m["deviceId"].as_str().unwrap_or_default().to_string();
        let patient = m["patientId"].as_str().map(str::to_string);
        for r in m["readings"].as_array().unwrap() {
            let ty = r["type"].as_str().unwrap_or_default().to_string();
            if let Some(v) = r["values"][&ty].as_f64() {
                out.push((device.clone(), patient.clone(), ty, v));
            }
        }
    }
    out
}

fn values(got: &[(String, Option<String>, String, f64)], device: &str, ty: &str) -> Vec<f64> {
    got.iter().filter(|(d, _, t, _)| d == device && t == ty).map(|(_, _, _, v)| *v).collect()
}

fn patients(got: &[(String, Option<String>, String, f64)], device: &str) -> Vec<Option<String>> {
    let mut p: Vec<Option<String>> = got.iter().filter(|(d, _, _, _)| d == device).map(|(_, p, _, _)| p.clone()).collect();
    p.dedup();
    p
}

async fn wait_delivered(sink: &Path, done: impl Fn(&[(String, Option<String>, String, f64)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !done(&delivered(sink)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(d: &Path, devices: &str) -> PathBuf {
    let cfg = d.join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-hl7-serial\"\nstate_dir = \"{}\"\n[outbox]\nflush_interval_ms = 20\n[forwarder]\nbatch_max_age_ms = 100\n\n{devices}\n[sink.file]\npath = \"{}\"\n",
            d.join("state").display(),
            d.join("delivered.ndjson").display()
        ),
    )
    .unwrap();
    cfg
}

fn stop(gw: Child, reader: std::thread::JoinHandle<()>) {
    gateway_common::terminate(&gw);
    let mut gw = gw;
    let _ = gw.wait();
    let _ = reader.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_hl7_monitor_gets_its_ack_after_the_commit_and_another_patient_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = d.join("delivered.ndjson");
    let cfg = config(
        d,
        &format!(
            "[[device]]\nid = \"bedside-1\"\nkind = \"bedside_monitor\"\npatient_id = \"PAT-BED12\"\n[device.serial]\nport = \"{}\"\ndriver = \"hl7\"\nbaud = 115200\ninit = \"0d\"\n\n\
             [[device]]\nid = \"streamer-1\"\nkind = \"bedside_monitor\"\n[device.serial]\nport = \"{}\"\ndriver = \"hl7\"\ninit = \"0d\"\nack = false\n",
            d.join("ttyBedside").display(),
            d.join("ttyStreamer").display()
        ),
    );
    let mut bedside = Monitor { pty: plug(&d.join("ttyBedside")), received: Vec::new() };
    let mut streamer = Monitor { pty: plug(&d.join("ttyStreamer")), received: Vec::new() };
    let (gw, reader) = start(&cfg);
    bedside.wait_open("bedside").await;
    streamer.wait_open("streamer").await;

    let a = bedside.send(&oru("B1", Some("P-A^^^HOSP^MR"), Some("ICU^^12"), 97, 61)).await;
    assert_eq!(a, Some(("AA".into(), "B1".into(), String::new())), "answered on the same line, AA echoing MSA-2");
    // Malformed: not ORU^R01, bad encoding characters: AR with the reason.
    let (code, id, why) = bedside.send("MSH|^~\\&|MON|ICU|||20250610015127+0000||ADT^A01|BAD1|P|2.6\rEVN|A01\r").await.expect("an answer");
    assert_eq!((code.as_str(), id.as_str()), ("AR", "BAD1"));
    assert!(why.contains("ADT^A01") && why.contains("not supported"), "{why}");
    let (code, _, why) =
        bedside.send("MSH|^^\\&|MON|ICU|||20250610015127+0000||ORU^R01|BAD2|P|2.6\rOBX|1|NM|150456^^MDC||50|%\r").await.expect("an answer");
    assert_eq!(code, "AR");
    assert!(why.contains("MSH-2"), "{why}");
    // Another patient on this device: AE, reason in plain words, nothing stored.
    let (code, id, why) = bedside.send(&oru("B2", Some("P-B^^^HOSP^MR"), Some("ICU^^12"), 88, 131)).await.expect("an answer");
    assert_eq!((code.as_str(), id.as_str()), ("AE", "B2"));
    assert!(why.contains("charts one patient") && why.contains("another patient") && why.contains("patient_from"), "{why}");
    let a = bedside.send(&oru("B3", Some("P-A^^^HOSP^MR"), Some("ICU^^12"), 96, 62)).await;
    assert_eq!(a.map(|a| a.0), Some("AA".into()), "the charted patient again");
    let a = bedside.send(&oru("B4", None, None, 95, 63)).await;
    assert_eq!(a.map(|a| a.0), Some("AA".into()), "no PID: accepted");
    // ack = false: stored, never answered.
    streamer.pty.send(&mllp(&oru("S1", Some("P-S"), None, 94, 70))).await;
    assert_eq!(streamer.next_block(Duration::from_secs(2)).await, None, "ack = false sends no ACK");

    // Everything answered AA is committed: kill -9 now, restart, and it is delivered.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(gw.id() as i32, libc::SIGKILL) };
    let mut gw = gw;
    let _ = gw.wait();
    let _ = reader.join();
    let (gw, reader) = start(&cfg);
    wait_delivered(&sink, |got| values(got, "bedside-1", "pulseRate").len() >= 3 && !values(got, "streamer-1", "spo2").is_empty()).await;
    stop(gw, reader);

    let got = delivered(&sink);
    assert_eq!(values(&got, "bedside-1", "spo2"), vec![97.0, 96.0, 95.0], "every AA'd message, in order; nothing of B2");
    assert_eq!(values(&got, "bedside-1", "pulseRate"), vec![61.0, 62.0, 63.0]);
    assert_eq!(patients(&got, "bedside-1"), vec![Some("PAT-BED12".to_string())], "the device's patient, not PID-3");
    assert!(!got.iter().any(|(_, _, _, v)| [88.0, 131.0, 50.0].contains(v)), "nothing of the refused messages: {got:?}");
    assert_eq!(values(&got, "streamer-1", "spo2"), vec![94.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_station_feed_in_pid_mode_charts_each_bed_on_its_patient() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = d.join("delivered.ndjson");
    let cfg = config(
        d,
        &format!(
            "[[device]]\nid = \"central-1\"\nkind = \"bedside_monitor\"\n[device.serial]\nport = \"{}\"\ndriver = \"hl7\"\ninit = \"0d\"\npatient_from = \"pid\"\n",
            d.join("ttyCentral").display()
        ),
    );
    let mut central = Monitor { pty: plug(&d.join("ttyCentral")), received: Vec::new() };
    let (gw, reader) = start(&cfg);
    central.wait_open("central").await;
    // Two beds interleaved: bed 10 as the Comen sample writes PV1-3 (`^^&10`), bed ICU 12.
    for (c, pid, bed, spo2, pulse) in [
        ("C1", "P-10^^^HOSP^MR", "^^&10", 97, 70),
        ("C2", "P-12^^^HOSP^MR", "ICU^^12", 92, 80),
        ("C3", "P-10^^^HOSP^MR", "^^&10", 98, 71),
        ("C5", "P-12^^^HOSP^MR", "ICU^^12", 93, 81),
    ] {
        let a = central.send(&oru(c, Some(pid), Some(bed), spo2, pulse)).await;
        assert_eq!(a, Some(("AA".into(), c.into(), String::new())));
    }
    let (code, id, why) = central.send(&oru("C4", None, Some("^^&10"), 50, 150)).await.expect("an answer");
    assert_eq!((code.as_str(), id.as_str()), ("AR", "C4"));
    assert!(why.contains("PID-3"), "{why}");
    wait_delivered(&sink, |got| values(got, "central-1/ICU-12", "pulseRate").len() >= 2 && values(got, "central-1/10", "pulseRate").len() >= 2).await;
    stop(gw, reader);

    let got = delivered(&sink);
    assert_eq!(values(&got, "central-1/10", "spo2"), vec![97.0, 98.0]);
    assert_eq!(values(&got, "central-1/10", "pulseRate"), vec![70.0, 71.0]);
    assert_eq!(patients(&got, "central-1/10"), vec![Some("P-10".to_string())], "PID-3 CX.1 is the patient id");
    assert_eq!(values(&got, "central-1/ICU-12", "spo2"), vec![92.0, 93.0]);
    assert_eq!(values(&got, "central-1/ICU-12", "pulseRate"), vec![80.0, 81.0]);
    assert_eq!(patients(&got, "central-1/ICU-12"), vec![Some("P-12".to_string())]);
    assert!(values(&got, "central-1", "spo2").is_empty(), "no reading on the feed's own id");
    assert!(!got.iter().any(|(_, _, _, v)| [50.0, 150.0].contains(v)), "nothing of the message without PID-3: {got:?}");
}
