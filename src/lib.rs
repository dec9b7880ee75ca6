//! iomt-edge: an edge gateway for bedside and wearable medical devices.
//!
//! Data flows one way:
//!
//! ```text
//! adapters (ble, serial, simulated) -> Reading -> outbox (sled) -> forwarder -> sinks
//! ```
//!
//! Each stage is a folder under `src/`. Side tools (`decode`, `medtech`,
//! `simulate`) read the same [`model`].
//!
//! Imports follow the same direction: `model` and the leaves at the bottom,
//! then `config`; `adapters`, `outbox`, `sinks` (and `medtech`, `simulate`)
//! use only those; `forwarder` above them, `service` wires everything, `cli`
//! drives it. The unit test in `src/layering.rs` holds the table and fails
//! when an import goes up or sideways.

pub mod adapters;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod forwarder;
pub mod fsutil;
pub mod health;
pub mod logging;
pub mod medtech;
pub mod model;
pub mod outbox;
pub mod redact;
pub mod service;
pub mod simulate;
pub mod sinks;

#[cfg(test)]
mod layering;
