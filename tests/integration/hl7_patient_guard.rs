//! The HL7 right-patient guard across restarts, through the whole gateway:
//! the `iomt-edge` binary as a real process with an HL7 TCP
//! listener (`patient_from = "device"`, the default) and the IoT Hub sink on
//! the local emulator, whose twin is how a ward system changes a device's
//! patient association in the running gateway.
//!
//! - A message for patient A is answered `AA`: the guard charts A. After a
//!   clean stop (SIGTERM), and after a `kill -9`, the **first** message names
//!   patient B: `AE`, nothing stored. (A guard kept in memory only would have
//!   learned B there and charted B's data on the device's patient.)
//! - The twin changes the device's association: the guard starts over, a
//!   message for B is accepted (`AA`, stored, with the new association), one
//!   for A is now refused; that too survives a `kill -9`.
//!
//! At the end of each test every committed reading was delivered, and none
//! of a refused message's values is among them: refused messages stored
//! nothing.
//!
//! The messages, the MLLP framing (`0x0B` ... `0x1C 0x0D`) and the ACK parser
//! are written here from the HL7 v2.6 text, not with the gateway's code.
//! `IOMT_TEST_BINARY` runs another gateway binary (to show that an older one
//! fails this test).

use crate::support::gateway as gateway_common;

use gateway_common::{Committed, Delivered};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(cfg: &Path, committed: &Committed) -> (Child, std::thread::JoinHandle<()>) {
    let bin = std::env::var("IOMT_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_iomt-edge").to_string());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--report-commits", "--config"]).arg(cfg);
    let log = std::env::var_os("IOMT_TEST_GATEWAY_LOG").map(PathBuf::from);
    gateway_common::start_command(cmd, committed.clone(), log.as_deref())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_listening(port: u16) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "the gateway never listened on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ORU^R01 with one SpO2 observation (MDC 150456) for the patient `pid`
/// (PID-3, CX: ID number ^^^ assigning authority). No OBX-14: the gateway
/// times the reading on arrival.
fn oru(control: &str, pid: &str, spo2: u32) -> String {
    format!(
        "MSH|^~\\&|MON|ICU|||20250610015127+0000||ORU^R01^ORU_R01|{control}|P|2.6\rPID|||{pid}||Doe^Jane\rPV1||I|ICU^^12\r\
         OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||{spo2}|262688^MDC_DIM_PERCENT^MDC|||||F\r"
    )
}

/// Sends one MLLP block and reads the answer: (MSA-1, MSA-2, MSA-3).
async fn send(port: u16, msg: &str) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the HL7 listener");
    let mut block = vec![0x0B];
    block.extend_from_slice(msg.as_bytes());
    block.extend_from_slice(&[0x1C, 0x0D]);
    s.write_all(&block).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while !got.windows(2).any(|w| w == [0x1C, 0x0D]) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no ACK within 30 s");
    let text = String::from_utf8_lossy(&got).to_string();
    let msa = text.split('\r').find_map(|seg| seg.trim_start_matches('\u{b}').strip_prefix("MSA|").map(str::to_string));
    let msa = msa.unwrap_or_else(|| panic!("no MSA segment in the answer {text:?}"));
    let f: Vec<&str> = msa.split('|').collect();
    let field = |n: usize| f.get(n).copied().unwrap_or("").to_string();
    (field(0), field(1), field(2))
}

/// Sends `msg` and asserts the acknowledgment code (and that MSA-2 echoes
/// the control id); returns MSA-3.
async fn expect(port: u16, control: &str, pid: &str, spo2: u32, code: &str, what: &str) -> String {
    let (c, id, reason) = send(port, &oru(control, pid, spo2)).await;
    assert_eq!((c.as_str(), id.as_str()), (code, control), "{what}: answered {c} ({reason})");
    reason
}

/// (device id, patient id, SpO2) of every delivered SpO2 reading.
fn delivered_spo2(emu: &Emulator) -> Vec<(String, Option<String>, f64)> {
    let mut out = Vec::new();
    for m in emu.messages() {
        let body: Value = serde_json::from_slice(&m.body).expect("our JSON message");
        for r in body["readings"].as_array().unwrap() {
            if let Some(v) = r["values"]["spo2"].as_f64() {
                out.push((body["deviceId"].as_str().unwrap().to_string(), body["patientId"].as_str().map(str::to_string), v));
            }
        }
    }
    out
}

/// A running gateway; killed if a failed assertion drops it (no orphan
/// keeps the port or the state directory).
struct Gw(Option<(Child, std::thread::JoinHandle<()>)>);

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(mut gw: Gw, how: &str) {
    let Some((mut child, reader)) = gw.0.take() else { return };
    match how {
        "kill -9" => child.kill().unwrap(),
        _ => gateway_common::terminate(&child),
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    if how != "kill -9" {
        assert!(status.success(), "clean stop expected, got {status:?}");
    }
}

/// The patients of the tests (PID-3 with assigning authority and type).
const A: &str = "MRN-A^^^HOSP&1.2.3&ISO^MR";
const B: &str = "MRN-B^^^HOSP&1.2.3&ISO^MR";

/// A gateway config and the emulator whose twin drives it.
struct Setup {
    emu: Emulator,
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    port: u16,
    committed: Committed,
}

impl Setup {
    /// `bedside-1`, patient `PAT-CONFIG` from the config, HL7 over TCP.
    async fn new(gateway: &str) -> Setup {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = emu.write_ca(dir.path()).unwrap();
        let cs = emu.add_device(gateway);
        let port = free_port();
        let state = dir.path().join("state");
        let cfg = dir.path().join("gw.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"{gateway}\"\nstate_dir = \"{}\"\n[outbox]\nflush_interval_ms = 20\n[forwarder]\nbatch_max_age_ms = 100\n\
                 [[device]]\nid = \"bedside-1\"\nkind = \"bedside_monitor\"\npatient_id = \"PAT-CONFIG\"\n\
                 [device.hl7_tcp]\nlisten = \"127.0.0.1:{port}\"\n\
                 [sink.iothub]\nconnection_string = {{ value = \"{cs}\" }}\nca_file = \"{}\"\n",
                state.display(),
                ca.display()
            ),
        )
        .unwrap();
        Setup { emu, _dir: dir, cfg, state, port, committed: Default::default() }
    }

    /// Starts the gateway and waits until it listens.
    async fn start(&self) -> Gw {
        let gw = Gw(Some(start(&self.cfg, &self.committed)));
        wait_listening(self.port).await;
        gw
    }

    /// [`expect`] on this gateway.
    async fn expect(&self, control: &str, pid: &str, spo2: u32, code: &str, what: &str) -> String {
        expect(self.port, control, pid, spo2, code, what).await
    }

    /// Waits until every committed reading (and the SpO2 `last`) is
    /// delivered, stops the gateway, checks the delivery contract and that
    /// the delivered SpO2 readings are exactly `want` (device, patient, value).
    async fn finish(&self, gw: Gw, last: f64, want: &[(&str, &str, f64)]) {
        let delivered = || {
            let mut d = Delivered::default();
            for m in self.emu.messages() {
                d.add(&serde_json::from_slice(&m.body).unwrap());
            }
            d
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(delivered_spo2(&self.emu).iter().any(|r| r.2 == last) && {
            let d = delivered();
            self.committed.lock().unwrap().keys().all(|s| d.ids.contains_key(s))
        }) {
            assert!(Instant::now() < deadline, "not everything committed was delivered: {:?}", delivered_spo2(&self.emu));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop(gw, "SIGTERM");
        delivered().check(&self.committed.lock().unwrap());
        let mut got = delivered_spo2(&self.emu);
        got.sort_by(|x, y| x.2.total_cmp(&y.2));
        got.dedup();
        let want: Vec<(String, Option<String>, f64)> = want.iter().map(|(d, p, v)| (d.to_string(), Some(p.to_string()), *v)).collect();
        assert_eq!(got, want, "exactly the acknowledged messages' readings, on the association in force; none of the refused ones");
    }
}

/// A clean stop (SIGTERM): the first message after the restart names
/// another patient and is refused; the charted one is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_the_first_message_cannot_teach_another_patient() {
    let s = Setup::new("guard-term").await;
    let gw = s.start().await;
    s.expect("A1", A, 97, "AA", "the first patient").await;
    stop(gw, "SIGTERM");
    let gw = s.start().await;
    let reason = s.expect("B1", B, 81, "AE", "another patient first after a SIGTERM restart").await;
    assert!(reason.contains("charts one patient"), "the reason in plain words: {reason}");
    s.expect("A2", A, 96, "AA", "the charted patient after the restart").await;
    s.finish(gw, 96.0, &[("bedside-1", "PAT-CONFIG", 96.0), ("bedside-1", "PAT-CONFIG", 97.0)]).await;
}

/// The same after `kill -9` (no clean stop: the record must already be on
/// disk when the first message is acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_first_message_cannot_teach_another_patient() {
    let s = Setup::new("guard-kill").await;
    let gw = s.start().await;
    s.expect("A1", A, 97, "AA", "the first patient").await;
    stop(gw, "kill -9");
    let gw = s.start().await;
    s.expect("B1", B, 82, "AE", "another patient first after a kill -9 restart").await;
    s.expect("A2", A, 96, "AA", "the charted patient after the restart").await;
    stop(gw, "kill -9");
    let gw = s.start().await;
    s.expect("B2", B, 83, "AE", "another patient first after a second kill -9").await;
    s.finish(gw, 96.0, &[("bedside-1", "PAT-CONFIG", 96.0), ("bedside-1", "PAT-CONFIG", 97.0)]).await;
}

/// A ward system moves the monitor to the next patient through the twin of
/// the running gateway: the guard starts over (the new patient's message is
/// accepted and stored on the new association, the previous patient's is
/// refused), and what it learned after the change survives a `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_association_change_starts_the_guard_over_durably() {
    let s = Setup::new("guard-twin").await;
    let gw = s.start().await;
    s.expect("A1", A, 97, "AA", "the first patient").await;
    s.expect("B1", B, 81, "AE", "another patient before the change").await;
    s.emu.patch_desired("guard-twin", serde_json::json!({"patients": {"bedside-1": "PAT-NEW"}}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saved: Value = std::fs::read(s.state.join("associations.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if saved["bedside-1"]["patient"] == "PAT-NEW" {
            break;
        }
        assert!(Instant::now() < deadline, "the twin's association never reached the gateway: {saved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.expect("B2", B, 91, "AA", "the new patient after the association changed").await;
    s.expect("A2", A, 83, "AE", "the previous patient after the association changed").await;
    stop(gw, "kill -9");
    let gw = s.start().await;
    s.expect("A3", A, 84, "AE", "the previous patient first after the change and a kill -9").await;
    s.expect("B3", B, 92, "AA", "the new patient after the change and a kill -9").await;
    s.finish(gw, 92.0, &[("bedside-1", "PAT-NEW", 91.0), ("bedside-1", "PAT-NEW", 92.0), ("bedside-1", "PAT-CONFIG", 97.0)]).await;
}
