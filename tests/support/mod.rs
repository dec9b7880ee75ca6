//! Helpers shared by the integration tests (`tests/integration/`), one module
//! per area.

pub mod ble;
pub mod deb;
pub mod gateway;
pub mod iothub;
pub mod powercut_fs;
