//! Simulators and emulators that stand in for the outside world in tests, the
//! demo and by hand: a simulated BlueZ, a local IoT Hub (and DPS) emulator,
//! and a local Event Hubs emulator with an Entra ID token endpoint.

pub mod bluez;
// Event Hubs emulator (issue 14)
pub mod eventhubs;
pub mod iothub;
