//! Sinks: where the forwarder delivers messages (IoT Hub, Event Hubs, a file, stdout).
//!
//! A sink sends one [`Message`] and answers only when the destination confirmed
//! it (fsync, PUBACK, HTTP 201). The forwarder removes readings from the outbox
//! only after that answer, so a sink must never confirm early.

pub mod eventhubs;
pub(crate) mod file;
pub mod iothub;
pub(crate) mod stdout;

use crate::model::Message;
use async_trait::async_trait;
use std::time::Duration;

/// Why a send failed, which tells the forwarder what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A passing failure (network down, timeout, server error): retry with backoff.
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// The destination asked us to slow down.
    #[error("throttled by the destination: {detail}")]
    Throttled { retry_after: Option<Duration>, detail: String },
    /// Credentials were refused: retry slowly, keep queueing, tell the operator.
    #[error("credentials refused: {0}")]
    FatalAuth(String),
    /// The message is larger than the destination accepts: split and resend.
    #[error("message too large: {0}")]
    TooLarge(String),
}

/// A destination for messages.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Short name for logs and status (`file`, `iothub`...).
    fn name(&self) -> &'static str;

    /// Largest serialized message body this sink accepts, in bytes. The
    /// forwarder never builds a larger message.
    fn max_message_bytes(&self) -> usize {
        usize::MAX
    }

    /// How many messages may be awaiting confirmation at once (one per device at
    /// most, to keep per-device order).
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Delivers one message; returns only once the destination confirmed it.
    async fn send(&self, message: &Message) -> Result<(), SinkError>;

    /// Called once on shutdown, after the last send.
    async fn close(&self) {}
}
