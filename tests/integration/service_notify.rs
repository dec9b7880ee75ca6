//! The daemon speaks systemd's notify protocol (READY after start-up, STATUS,
//! WATCHDOG while healthy, STOPPING on SIGTERM), exits cleanly on SIGTERM, and
//! never logs a patient id at info level.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn notify_protocol_and_clean_stop_without_patient_data_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let cfg = format!(
        r#"[gateway]
id = "notify-test"
state_dir = "{state}"
[[device]]
id = "strap-1"
kind = "heart_rate_strap"
patient_id = "MRN-SECRET-4711"
[device.simulated]
interval_ms = 100
[sink.file]
path = "{out}"
"#,
        state = dir.path().join("state").display(),
        out = dir.path().join("out.ndjson").display()
    );
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1500000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut got = Vec::<String>::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    let has = |got: &Vec<String>, p: &str| got.iter().any(|m| m.lines().any(|l| l.starts_with(p)));
    while Instant::now() < deadline
        && !(has(&got, "READY=1") && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3 && has(&got, "STATUS=1/1 devices streaming"))
    {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(has(&got, "READY=1"), "no READY=1 in {got:?}");
    assert!(has(&got, "STATUS=1/1 devices streaming"), "no STATUS line in {got:?}");
    assert!(got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "watchdog not fed: {got:?}");
    let ready_at = got.iter().position(|m| m.contains("READY=1")).unwrap();
    assert!(got[..ready_at].iter().all(|m| !m.contains("WATCHDOG=1")), "watchdog fed before READY");

    // SIGTERM: STOPPING=1 and a clean exit.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop_deadline = Instant::now() + Duration::from_secs(15);
    let mut stopping = false;
    while Instant::now() < stop_deadline && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit after SIGTERM: {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("running"), "expected start-up log lines, got: {log}");
    assert!(!log.contains("MRN-SECRET-4711"), "a patient id reached the logs:\n{log}");
    let delivered = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert!(delivered.contains("MRN-SECRET-4711"), "the patient id belongs in the message body");
}
