//! Issue 11 item 9: every command that writes to standard output ends quietly
//! when its reader closes the pipe early (`iomt-edge outbox peek | head -1`):
//! no panic, no exit 101, and the same exit code as with the whole output
//! read. The reader here closes its end before the command writes anything,
//! so every write of the command meets a closed pipe.

use iomt_edge::model::{DeviceKind, Reading, ReadingType};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
}

/// Runs `args` with stdout read to the end.
fn read_all(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs `args` with stdout a pipe whose reader is already gone; `stop` (if
/// any) is sent after `after` to end a command that runs until told to.
fn closed_pipe(args: &[&str], stop: Option<(i32, Duration)>) -> (Option<i32>, String) {
    let mut child = bin().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away before the first write
    if let Some((sig, after)) = stop {
        std::thread::sleep(after);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn queued_outbox(state: &Path) {
    let (ob, _) = iomt_edge::outbox::Outbox::open(&state.join("outbox"), &Default::default()).unwrap();
    let mut group: Vec<Reading> = (0..50)
        .map(|i| Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + i as f64))
        .collect();
    ob.append(&mut group).unwrap();
    ob.close_clean().unwrap();
}

#[test]
fn one_shot_commands_end_quietly_with_their_usual_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    queued_outbox(&state);
    std::fs::write(
        state.join("status.json"),
        r#"{"gatewayId":"gw-1","sink":"file","pid":1,"running":false,"writtenAt":"2026-01-01T00:00:00Z","devices":[{"id":"strap-1","state":"lost"}]}"#,
    )
    .unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, "[gateway]\nid = \"gw-1\"\n[sink.stdout]\n").unwrap();
    let msgs = dir.path().join("msgs.json");
    std::fs::write(
        &msgs,
        r#"{"gatewayId":"gw-1","deviceId":"strap-1","messageId":"m1","readings":[{"seq":1,"type":"heartRate","time":"2026-01-01T00:00:00Z","values":{"heartRate":61}}]}"#,
    )
    .unwrap();
    let s = state.to_str().unwrap();
    let c = cfg.to_str().unwrap();
    let m = msgs.to_str().unwrap();
    let outbox_dir = state.join("outbox");
    let o = outbox_dir.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["outbox", "peek", "--state-dir", s, "-n", "50"],
        vec!["outbox", "stats", "--state-dir", s],
        vec!["outbox", "stats", "--state-dir", s, "--json"],
        vec!["status", "--state-dir", s],
        vec!["status", "--state-dir", s, "--json"],
        vec!["check-config", c],
        vec!["decode", "ble", "2a37", "16", "4B", "2E", "03"],
        vec!["decode", "ble", "2a19", "64"],
        vec!["medtech", "check"],
        vec!["medtech", "preview", m],
        vec!["medtech", "preview", "--summary", m],
        vec!["bench", "--reopen-only", o],
        vec!["--help"],
        vec!["outbox", "--help"],
        vec!["--version"],
    ];
    for args in &commands {
        let full = read_all(args);
        assert!(!full.stdout.is_empty(), "{args:?} prints something: {}", String::from_utf8_lossy(&full.stderr));
        let (code, stderr) = closed_pipe(args, None);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(code, full.status.code(), "{args:?} exits as it would with its output read: {stderr}");
        assert_ne!(code, Some(101), "{args:?}");
    }
}

#[test]
fn the_demo_stops_cleanly_when_nobody_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let started = Instant::now();
    let (code, stderr) = closed_pipe(&["demo", "--in-process", "--plain", "--duration", "90s", "--dir", d.to_str().unwrap()], None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "the demo noticed the closed pipe and stopped early");
    // It stopped cleanly: the outbox recorded a clean stop.
    let stats = read_all(&["outbox", "stats", "--state-dir", d.join("state").to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["previous_stop"]["kind"], "clean", "{v}");
}

#[test]
fn the_iothub_emulator_keeps_serving_when_nobody_reads_its_banner() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) =
        closed_pipe(&["simulate", "iothub", "--port", "0", "--dir", dir.path().to_str().unwrap()], Some((libc::SIGINT, Duration::from_secs(3))));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(0), "served until Ctrl-C, then stopped: {stderr}");
}

/// Commands print only through `cli::out` (a closed pipe never panics), so a
/// new `println!` anywhere in the crate is caught here.
#[test]
fn no_command_prints_with_println() {
    let mut offenders = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("cli/out.rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    if ["println!(", "print!(", "eprintln!(", "eprint!("].iter().any(|m| code.contains(m)) {
                        offenders.push(format!("{}:{}: {}", p.display(), i + 1, code));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "print through cli::out (outln!/out!/errln!) instead:\n{}", offenders.join("\n"));
}
