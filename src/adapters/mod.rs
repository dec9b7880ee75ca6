//! Adapters: the sources of readings (simulated devices, BLE, serial).
//!
//! Every adapter gets an [`AdapterContext`]: a [`ReadingSender`] into the outbox,
//! the shared [`DeviceRegistry`] where it reports link state, and a shutdown
//! token. Adapters never talk to sinks; the outbox is the only way out.

pub mod ble;
pub mod device_clock;
pub(crate) mod registry;
pub mod serial;
pub(crate) mod simulated;

pub(crate) use registry::DeviceStatus;
pub use registry::{DeviceRegistry, LinkState};

use crate::model::Reading;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The outbox's intake as adapters see it. Cloning is cheap.
#[derive(Clone)]
pub struct ReadingSender {
    tx: mpsc::Sender<Reading>,
}

/// Why an adapter cannot be built from its devices' settings, or cannot work
/// at all (device errors are handled inside the adapter). Each text carries
/// its cause, so `{e}` and an error chain read the same.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A `[[device]]`'s settings are refused (`problem` names the setting).
    #[error("device \"{device}\": {problem}")]
    Device { device: String, problem: String },
    /// A listening socket could not be opened (address in use, no permission).
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: std::net::SocketAddr, error: std::io::Error },
    /// The BLE adapter cannot start (its controller failures are retried).
    #[error(transparent)]
    Ble(#[from] ble::BleError),
}

impl AdapterError {
    /// A device's settings refused: `device` is its `id`, `problem` what is wrong.
    pub(crate) fn device(device: &str, problem: impl Into<String>) -> AdapterError {
        AdapterError::Device { device: device.to_string(), problem: problem.into() }
    }
}

/// The outbox has shut down; the adapter should stop.
#[derive(Debug, thiserror::Error)]
#[error("the outbox is closed")]
pub(crate) struct OutboxClosed;

impl ReadingSender {
    pub fn new(tx: mpsc::Sender<Reading>) -> ReadingSender {
        ReadingSender { tx }
    }

    /// Hands a reading to the outbox, waiting while its intake is full (so a
    /// stalled disk slows adapters down instead of losing readings in memory).
    pub(crate) async fn send(&self, reading: Reading) -> Result<(), OutboxClosed> {
        self.tx.send(reading).await.map_err(|_| OutboxClosed)
    }
}

/// What an adapter gets to run with.
#[derive(Clone)]
pub struct AdapterContext {
    pub readings: ReadingSender,
    pub registry: Arc<DeviceRegistry>,
    pub shutdown: CancellationToken,
}

/// A source of readings for one or more configured devices.
#[async_trait]
pub trait Adapter: Send {
    /// One line for logs: what this adapter reads (no device addresses).
    fn describe(&self) -> String;

    /// Runs until `ctx.shutdown` is cancelled. Device errors are handled inside
    /// (reconnect, backoff); an `Err` means the adapter cannot work at all.
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), AdapterError>;
}
