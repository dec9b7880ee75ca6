//! Simulators and emulators that stand in for the outside world in tests, the
//! demo and by hand: a simulated BlueZ, and a local IoT Hub (and DPS) emulator.

pub mod bluez;
pub mod iothub;
