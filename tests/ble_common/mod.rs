//! Shared helpers for the BLE integration tests: finding external tools with
//! the suite's skip/require rules.

#![allow(dead_code)]

/// Whether missing tools must fail the test (scripts/test.sh sets IOMT_REQUIRE_ALL=1).
pub fn require_all() -> bool {
    std::env::var("IOMT_REQUIRE_ALL").map(|v| v == "1").unwrap_or(false)
}

/// `true` when dbus-daemon is installed; otherwise fails (IOMT_REQUIRE_ALL=1)
/// or prints a SKIPPED line and returns `false`.
pub fn have_dbus_daemon(test: &str) -> bool {
    if iomt_edge::simulate::bluez::daemon::find_dbus_daemon().is_some() {
        return true;
    }
    if require_all() {
        panic!("{test}: dbus-daemon is required (IOMT_REQUIRE_ALL=1) but not installed");
    }
    eprintln!("SKIPPED {test}: dbus-daemon is not installed (apt-get install dbus-daemon)");
    false
}

/// The Python with the cross-check clients (IOMT_TEST_PYTHON), if it has `module`.
pub fn python_with(test: &str, module: &str) -> Option<String> {
    let py = std::env::var("IOMT_TEST_PYTHON").ok();
    let ok = py.as_ref().is_some_and(|p| {
        std::process::Command::new(p)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if ok {
        return py;
    }
    if require_all() {
        panic!("{test}: IOMT_TEST_PYTHON with `{module}` is required (IOMT_REQUIRE_ALL=1); run scripts/test.sh");
    }
    eprintln!("SKIPPED {test}: set IOMT_TEST_PYTHON to a Python with `{module}` (pip install -r scripts/requirements-test.txt)");
    None
}
