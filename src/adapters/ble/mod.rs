//! BLE heart-rate straps and pulse oximeters, read through btleplug (BlueZ).
//!
//! - [`gatt`]: pure decoders, bytes in, readings or typed errors out.
//! - [`adapter`]: the btleplug I/O: scanning, connecting, subscribing, and the
//!   per-device supervision (silence timer, reconnect with backoff, manager
//!   rebuild when bluetoothd restarts).

pub(crate) mod adapter;
pub(crate) mod error;
pub mod gatt;

pub(crate) use adapter::build;
pub use adapter::{set_system_bus_address, BleAdapter, BleDevice, Selector};
pub(crate) use error::BleError;
