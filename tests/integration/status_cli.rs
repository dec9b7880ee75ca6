//! `iomt-edge status` against a real gateway process: running with its
//! devices, stopped cleanly after SIGTERM, and "not running" after `kill -9`;
//! the status file never carries a patient id.

use crate::support::gateway as gateway_common;

use gateway_common::{start, terminate, Committed};
use std::process::Command;
use std::time::{Duration, Instant};

fn status(state: &std::path::Path, json: bool) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iomt-edge"));
    c.args(["status", "--state-dir"]).arg(state);
    if json {
        c.arg("--json");
    }
    let out = c.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Polls `status --json` until `pred` holds (20 s at most).
fn wait_status(state: &std::path::Path, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out) = status(state, true);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
            if pred(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{what}: last status {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn status_follows_the_running_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"status-gw\"\nstate_dir = \"{}\"\n\
             [[device]]\nid = \"strap-1\"\nkind = \"heart_rate_strap\"\npatient_id = \"P-SECRET-77\"\n[device.simulated]\ninterval_ms = 100\n\
             [[device]]\nid = \"oxi-1\"\nkind = \"pulse_oximeter\"\n[device.simulated]\ninterval_ms = 100\n\
             [sink.file]\npath = \"{}\"\n",
            state.display(),
            dir.path().join("out.ndjson").display()
        ),
    )
    .unwrap();
    let (code, out) = status(&state, false);
    assert_eq!(code, Some(1), "no status file yet: {out}");

    let committed: Committed = Default::default();
    let (gw, reader) = start(&cfg, committed.clone());
    let v = wait_status(&state, "both devices streaming", |v| {
        v["alive"] == true && v["devices"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["state"] == "streaming"))
    });
    assert_eq!(v["gatewayId"], "status-gw");
    assert_eq!(v["pid"].as_u64(), Some(gw.id() as u64));
    // Decode health travels with each device: healthy devices say so.
    for d in v["devices"].as_array().unwrap() {
        assert_eq!(d["stateText"], "streaming", "{d}");
        assert_eq!((d["inputErrors"].as_u64(), d["extraBytes"].as_u64()), (Some(0), Some(0)), "{d}");
        // The simulated devices send only values a body can have.
        assert_eq!(d["outOfRange"].as_u64(), Some(0), "{d}");
    }
    let (code, text) = status(&state, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("status-gw: running (pid") && text.contains("strap-1") && text.contains("oxi-1"), "{text}");
    let file = std::fs::read_to_string(state.join("status.json")).unwrap();
    assert!(!file.contains("P-SECRET-77") && !text.contains("P-SECRET-77"), "no patient id in the status");

    // A clean stop is told apart from a crash.
    terminate(&gw);
    let mut gw = gw;
    gw.wait().unwrap();
    reader.join().unwrap();
    let (code, text) = status(&state, false);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("stopped cleanly"), "{text}");

    let (mut gw, reader) = start(&cfg, committed);
    wait_status(&state, "running again", |v| v["alive"] == true && v["pid"].as_u64() == Some(gw.id() as u64));
    gw.kill().unwrap();
    gw.wait().unwrap();
    reader.join().unwrap();
    let (code, text) = status(&state, false);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("NOT RUNNING"), "{text}");
}
