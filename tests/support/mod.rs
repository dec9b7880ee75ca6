//! Helpers shared by the integration tests (`tests/integration/`), one module
//! per area, and the suite's one rule for a test whose tool or privilege is
//! missing on this machine ([`skip`]).

pub mod ble;
pub mod deb;
pub mod gateway;
pub mod iothub;
pub mod powercut_fs;
pub mod tmpfs;

use std::fmt::Display;

/// Whether a missing tool fails the test instead of skipping it:
/// `IOMT_REQUIRE_ALL=1`, which scripts/test.sh (and so CI) sets.
pub fn require_all() -> bool {
    std::env::var("IOMT_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The suite's one rule for "this test needs something this machine lacks"
/// (a tool, a Python package, root): under `IOMT_REQUIRE_ALL=1` the test
/// fails, saying `why`; otherwise it prints `SKIPPED: {test}: {why}` on
/// stderr and the caller returns without testing anything.
///
/// `why` says what is missing and how to get it, e.g. "systemd-analyze is
/// not installed (apt-get install systemd)".
#[track_caller]
pub fn skip(test: &str, why: impl Display) {
    assert!(!require_all(), "{test}: IOMT_REQUIRE_ALL=1 but {why}");
    eprintln!("SKIPPED: {test}: {why}");
}

/// The running test's name, for [`skip`]: libtest runs each test on a thread
/// named after it (`systemd_unit::unit_verifies`).
pub fn this_test() -> String {
    std::thread::current().name().filter(|n| *n != "main").unwrap_or("this test").to_string()
}
