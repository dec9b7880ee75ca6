//! Sinks: where the forwarder delivers messages (IoT Hub, Event Hubs, a file, stdout).
//!
//! A sink sends one [`Message`] (or, if it says it can, several messages of one
//! device in one request) and answers only when the destination confirmed it
//! (fsync, PUBACK, HTTP 201). The forwarder removes readings from the outbox
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

    /// How many messages of one device one request may carry (Event Hubs
    /// batch sends). At 1 (the default) the forwarder calls [`Sink::send`]
    /// once per message; above 1 it may call [`Sink::send_many`] with up to
    /// this many.
    fn max_messages_per_request(&self) -> usize {
        1
    }

    /// Largest total of serialized message bodies, in bytes, one request of
    /// several messages may carry (the forwarder counts each message's
    /// readings plus a fixed overhead). Only read when
    /// [`Sink::max_messages_per_request`] is above 1.
    fn max_request_bytes(&self) -> usize {
        self.max_message_bytes()
    }

    /// Delivers one message; returns only once the destination confirmed it.
    async fn send(&self, message: &Message) -> Result<(), SinkError>;

    /// Delivers several messages of one device, in order, in one request:
    /// `Ok` only once the destination confirmed all of them; on an error none
    /// counts as confirmed (the forwarder resends them all under the same
    /// ids, or splits the request after `TooLarge`). The default sends them
    /// one by one (for sinks that carry one message per request, where it is
    /// given one).
    async fn send_many(&self, messages: &[Message]) -> Result<(), SinkError> {
        for m in messages {
            self.send(m).await?;
        }
        Ok(())
    }

    /// Called once on shutdown, after the last send.
    async fn close(&self) {}
}
