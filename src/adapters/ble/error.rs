//! What stops the BLE adapter from using the controller, as one type for the
//! adapter's seam. A failing device is not an error here (it is retried and
//! reported as its link state); these are the controller and bus failures the
//! adapter logs once per episode while it retries, and the setup mistakes that
//! stop it. Each text carries its cause.

/// Why the BLE adapter cannot use bluetoothd (retried) or cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BleError {
    /// [`super::set_system_bus_address`] came after btleplug connected.
    #[error(
        "the D-Bus system bus address is fixed once btleplug has connected in this process; \
         set DBUS_SYSTEM_BUS_ADDRESS before starting the BLE adapter"
    )]
    BusAddressFixed,
    /// A call to bluetoothd (`what`: connect, list adapters, adapter info,
    /// start scan) got no answer in time.
    #[error("{what} timed out: {elapsed}")]
    Timeout { what: &'static str, elapsed: tokio::time::error::Elapsed },
    /// bluetoothd (through btleplug) refused a call.
    #[error(transparent)]
    Bluez(#[from] btleplug::Error),
    /// bluetoothd lists no controller.
    #[error("no Bluetooth adapter")]
    NoAdapter,
    /// A device's task panicked.
    #[error("BLE device task failed: {0}")]
    DeviceTask(tokio::task::JoinError),
}
