//! BLE heart-rate straps and pulse oximeters, read through btleplug (BlueZ).
//!
//! - [`gatt`]: pure decoders, bytes in, readings or typed errors out.
//! - [`adapter`]: the btleplug I/O: scanning, connecting, subscribing, and the
//!   per-device supervision (silence timer, reconnect with backoff, manager
//!   rebuild when bluetoothd restarts).

pub mod adapter;
pub mod error;
pub mod gatt;

pub use adapter::{build, set_system_bus_address, BleAdapter, BleDevice, Selector, MAX_CONNECTED};
pub use error::BleError;
