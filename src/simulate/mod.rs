//! Simulators and emulators for trying and testing the gateway without real
//! devices or cloud services.

pub mod iothub;
