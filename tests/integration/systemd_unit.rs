//! The shipped systemd unit is valid (`systemd-analyze verify`) and keeps the
//! properties the service depends on.

use std::process::Command;

fn analyze_available() -> bool {
    let ok = Command::new("systemd-analyze").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        crate::support::skip(&crate::support::this_test(), "systemd-analyze is not installed (apt-get install systemd)");
    }
    ok
}

/// A copy of the unit, with the same name, whose ExecStart= points at the built
/// binary (verify checks that it exists).
fn unit_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string("systemd/iomt-edge.service").unwrap();
    let path = dir.path().join("iomt-edge.service");
    std::fs::write(&path, unit.replace("/usr/bin/iomt-edge", env!("CARGO_BIN_EXE_iomt-edge"))).unwrap();
    (dir, path)
}

#[test]
fn systemd_analyze_verify_passes() {
    if !analyze_available() {
        return;
    }
    let (_dir, path) = unit_copy();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about units we do not ship (bluetooth.target on a machine without BlueZ)
    // or about the machine's own units are not ours to fix.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("iomt-edge.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify failed:\n{stderr}");
}

#[test]
fn unit_keeps_its_contract() {
    let unit = std::fs::read_to_string("systemd/iomt-edge.service").unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=",
        "SupplementaryGroups=bluetooth dialout",
        "StateDirectory=iomt-edge",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "DevicePolicy=closed",
        "ExecStart=/usr/bin/iomt-edge run --config /etc/iomt-edge/iomt-edge.toml",
    ] {
        assert!(unit.contains(line), "the unit lost {line:?}");
    }
}

/// A value of `key=` in the unit, in bytes (K, M, G suffixes as systemd reads them).
fn unit_bytes(unit: &str, key: &str) -> u64 {
    let v = unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("the unit has no {key}="));
    let (n, mult) = match v.trim().chars().last() {
        Some('K') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    n.trim().parse::<u64>().unwrap_or_else(|_| panic!("{key}={v} is not a size")) * mult
}

/// The memory limits leave room for what the gateway was measured to need
/// (docs/performance.md, "Service limits": a full outbox reopened after kill -9
/// and drained peaks at 148 MiB with MALLOC_ARENA_MAX=2), and still fit a Pi
/// with 512 MB: hitting MemoryMax kills the gateway, and a gateway killed each
/// time it reopens its outbox would never deliver.
#[test]
fn memory_and_cpu_limits_fit_the_measured_peak_and_a_small_pi() {
    let unit = std::fs::read_to_string("systemd/iomt-edge.service").unwrap();
    const MEASURED_PEAK: u64 = 148 << 20;
    let high = unit_bytes(&unit, "MemoryHigh");
    let max = unit_bytes(&unit, "MemoryMax");
    assert!(high >= MEASURED_PEAK + MEASURED_PEAK / 4, "MemoryHigh={high} leaves less than 25 % above the measured peak");
    assert!(max > high, "MemoryMax must be above MemoryHigh (reclaim before the kill)");
    assert!(max <= 256 << 20, "MemoryMax={max} is more than half of a 512 MB Pi");
    assert!(unit.contains("Environment=MALLOC_ARENA_MAX=2"), "the peak was measured with two malloc arenas");
    let quota = unit.lines().find_map(|l| l.strip_prefix("CPUQuota=")).expect("the unit has no CPUQuota=");
    let pct: u32 = quota.trim_end_matches('%').parse().expect("CPUQuota= in percent");
    assert!(pct >= 100, "CPUQuota={quota} would slow the single-threaded outbox reopen before READY=1");
}

#[test]
fn hardening_exposure_stays_low() {
    if !analyze_available() {
        return;
    }
    let (_dir, path) = unit_copy();
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes", "--threshold=30"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for iomt-edge.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.5, "systemd-analyze security exposure {level} is above 2.5:\n{text}");
}
