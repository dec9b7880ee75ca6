//! systemd integration: READY, STATUS and the watchdog (`Type=notify`).
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call here does nothing.

use std::time::Duration;

/// Tells systemd the gateway is ready (outbox open, adapters started).
pub(crate) fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Updates the one-line status `systemctl status` shows.
pub(crate) fn status(line: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
}

/// Tells systemd we are stopping.
pub(crate) fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Feeds the watchdog.
pub(crate) fn watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}

/// The watchdog interval systemd expects, if it enabled one for us.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}
