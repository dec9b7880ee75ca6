//! The stdout sink: the daemon prints one JSON message per line on stdout and
//! stops cleanly on SIGTERM, with everything it committed printed.

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn stdout_sink_prints_one_message_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[gateway]\nid = \"stdout-test\"\nstate_dir = \"{}\"\n[forwarder]\nbatch_max_age_ms = 100\n\
         [[device]]\nid = \"ox\"\nkind = \"pulse_oximeter\"\n[device.simulated]\ninterval_ms = 50\nseed = 5\n[sink.stdout]\n",
        dir.path().join("state").display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let msgs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is a JSON message")).collect();
    assert!(msgs.len() >= 2, "expected several messages, got {}", msgs.len());
    let mut seqs: Vec<u64> = msgs.iter().flat_map(|m| m["readings"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap())).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates");
    seqs.dedup();
    assert!(msgs.iter().all(|m| m["deviceId"] == "ox" && m["schema"] == "iomt-edge/1"));
    assert!(msgs.iter().any(|m| m["readings"].as_array().unwrap().iter().any(|r| r["type"] == "spo2")));
}
