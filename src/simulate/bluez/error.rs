//! What can go wrong when the simulated BlueZ (and its private
//! `dbus-daemon`) starts, or a test drives it, as one type. Each text carries
//! its cause, so `{e}` and an error chain read the same.

use std::path::PathBuf;

/// Why the simulated BlueZ could not start, or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum BluezSimError {
    /// `dbus-daemon` is not on `PATH`.
    #[error("dbus-daemon is not installed (Debian/Ubuntu: apt-get install dbus-daemon)")]
    NoDbusDaemon,
    /// The private bus's folder or config could not be written (`what`:
    /// creating, writing).
    #[error("{what} {}: {error}", path.display())]
    Prepare { what: &'static str, path: PathBuf, error: std::io::Error },
    /// `dbus-daemon` could not be started.
    #[error("cannot start {}: {error}", exe.display())]
    DaemonStart { exe: PathBuf, error: std::io::Error },
    /// `dbus-daemon` ended before printing its address.
    #[error("dbus-daemon exited without printing an address")]
    DaemonExited,
    /// `dbus-daemon` printed no address in time.
    #[error("dbus-daemon did not print its address within 10 s")]
    NoAddress,
    /// `org.bluez` could not be claimed on the bus (the last attempt's error).
    #[error("cannot claim org.bluez on {bus}: {last:?}")]
    Claim { bus: String, last: Option<Box<zbus::Error>> },
    /// No simulated device has this address.
    #[error("no simulated device {0}")]
    NoDevice(String),
    /// The simulator is stopped or restarting.
    #[error("the simulator is down")]
    Down,
    /// A bus call failed (boxed: zbus's error is large).
    #[error(transparent)]
    Bus(Box<zbus::Error>),
    /// A thread could not be started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<zbus::Error> for BluezSimError {
    fn from(e: zbus::Error) -> BluezSimError {
        BluezSimError::Bus(Box::new(e))
    }
}
