//! Simulators and emulators that stand in for the outside world in tests, the
//! demo and by hand: a simulated BlueZ, a local IoT Hub (and DPS) emulator, a
//! local Event Hubs emulator with an Entra ID token endpoint, and serial
//! monitors on pseudo-terminals.

pub mod bluez;
mod error;
pub mod eventhubs;
pub mod iothub;
pub mod serial;

pub(crate) use error::EmulatorError;
