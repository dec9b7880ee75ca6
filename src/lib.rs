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

#![warn(unreachable_pub)]

// The public surface is what code outside `src/` uses, and nothing more: the
// binary (`cli::main`), the integration tests (tests/), the benches (benches/),
// the fuzz targets (fuzz/) and the doc test in `medtech::preview`. Inside these
// modules everything else is `pub(crate)`; `unreachable_pub` above (an error
// under clippy's `-D warnings`) flags a `pub` that no outside path reaches.
pub mod adapters; // BLE adapter and GATT decoders, serial drivers and framing (tests, fuzz)
pub mod backoff; // the retry delay (tests)
pub mod cli; // `cli::main` (the binary)
pub mod config; // configs built and parsed by tests and benches
pub mod forwarder; // forwarder settings (tests)
pub mod health; // the watchdog heartbeat the committer takes (tests)
pub mod medtech; // the MedTech preview (tests, benches, doc test)
pub mod model; // Reading, Message and their kinds (everywhere)
pub mod outbox; // the outbox and committer (tests, benches)
pub mod service; // the committer's hooks and patient associations (tests)
pub mod simulate; // the BlueZ, IoT Hub, Event Hubs and serial emulators (tests, benches)
pub mod sinks; // the sinks and their SAS/Entra/TLS pieces (tests, benches)

// Used inside the crate only.
mod fsutil;
mod logging;
mod redact;

#[cfg(test)]
mod layering;
