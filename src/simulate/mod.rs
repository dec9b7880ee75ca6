//! Simulators and emulators that stand in for the outside world in tests, the
//! demo and by hand: a simulated BlueZ, a local IoT Hub (and DPS) emulator, and
//! serial monitors on pseudo-terminals.

pub mod bluez;
pub mod iothub;
pub mod serial;
