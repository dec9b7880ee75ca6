//! systemd integration: READY, STATUS and the watchdog (`Type=notify`).
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call here does nothing.

use std::time::Duration;

/// Tells systemd the gateway is ready (outbox open, adapters started).
pub fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(line: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
}

/// Tells systemd we are stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Feeds the watchdog.
pub fn watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}

/// The watchdog interval systemd expects, if it enabled one for us.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}
