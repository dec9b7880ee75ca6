//! Adapters: the sources of readings (simulated devices, BLE, serial).
//!
//! Every adapter gets an [`AdapterContext`]: a [`ReadingSender`] into the outbox,
//! the shared [`DeviceRegistry`] where it reports link state, and a shutdown
//! token. Adapters never talk to sinks; the outbox is the only way out.

pub mod ble;
pub mod device_clock;
pub mod registry;
pub mod serial;
pub mod simulated;

pub use registry::{DeviceRegistry, DeviceStatus, LinkState};

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

/// The outbox has shut down; the adapter should stop.
#[derive(Debug, thiserror::Error)]
#[error("the outbox is closed")]
pub struct OutboxClosed;

impl ReadingSender {
    pub fn new(tx: mpsc::Sender<Reading>) -> ReadingSender {
        ReadingSender { tx }
    }

    /// Hands a reading to the outbox, waiting while its intake is full (so a
    /// stalled disk slows adapters down instead of losing readings in memory).
    pub async fn send(&self, reading: Reading) -> Result<(), OutboxClosed> {
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
    async fn run(self: Box<Self>, ctx: AdapterContext) -> anyhow::Result<()>;
}
