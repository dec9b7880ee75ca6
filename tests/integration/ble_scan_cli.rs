//! `iomt-edge scan ble` against the simulated BlueZ (its own private
//! dbus-daemon, started by `iomt-edge simulate bluez`): lists the simulated
//! straps and oximeters with kinds, names and config blocks; without BlueZ it
//! says so and exits 1.

use crate::support::ble as ble_common;

use ble_common::have_dbus_daemon;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Sim(Child);
impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iomt-edge simulate bluez` and returns it with its bus address.
fn simulator() -> (Sim, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["simulate", "bluez", "--straps", "2", "--oximeters", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("unix:"), "the simulator prints its bus address first: {first:?}");
    (Sim(child), first.trim().to_string())
}

fn scan(bus: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["scan", "ble", "--duration", "3s"])
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .unwrap()
}

#[test]
fn scan_lists_simulated_straps_and_oximeters() {
    if !have_dbus_daemon("scan_lists_simulated_straps_and_oximeters") {
        return;
    }
    let (_sim, bus) = simulator();
    let out = scan(&bus, &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let devices = v["devices"].as_array().unwrap();
    let find = |a: &str| devices.iter().find(|d| d["address"] == a).unwrap_or_else(|| panic!("{a} not found in {v}"));
    for a in ["C0:FF:EE:00:00:01", "C0:FF:EE:00:00:02"] {
        assert_eq!(find(a)["kind"], "heart_rate_strap");
        assert_eq!(find(a)["name"], "HRM-SIM");
        assert!(find(a)["services"].as_array().unwrap().iter().any(|s| s == "heart rate"), "{v}");
    }
    assert_eq!(find("C0:FF:EE:00:01:01")["kind"], "pulse_oximeter");
    assert_eq!(devices.len(), 3, "{v}");

    // The table form ends with config blocks the gateway accepts.
    let out = scan(&bus, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ADDRESS") && text.contains("C0:FF:EE:00:01:01"), "{text}");
    let blocks = &text[text.find("[[device]]").expect("config blocks")..];
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("scan.toml");
    let blocks = blocks.replace("bed-XX-", "bed-12-");
    std::fs::write(&cfg, format!("[gateway]\nid = \"gw\"\nstate_dir = \"{}\"\n[sink.stdout]\n{blocks}", dir.path().display())).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["check-config"]).arg(&cfg).output().unwrap();
    assert!(check.status.success(), "{}\n{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
}

#[test]
fn scan_without_bluez_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["scan", "ble", "--duration", "1s"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/iomt-test-bus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BlueZ") || err.contains("D-Bus"), "a plain-words error expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
