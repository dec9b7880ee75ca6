//! Why the gateway could not start or stopped running, as one type for the
//! seam between the service and the command line. The stages' own errors
//! pass through unchanged (their texts carry their causes); the service adds
//! only what it does itself: the state folder, the file sink's file, and a
//! forwarder that ended early.

use crate::adapters::AdapterError;
use crate::outbox::OutboxError;
use crate::sinks::eventhubs::EventHubsError;
use crate::sinks::iothub::IotHubError;
use std::path::PathBuf;

/// Why [`super::run`] (or [`super::build_sink`]) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// `gateway.state_dir` could not be created.
    #[error("cannot create the state folder {}: {error}", path.display())]
    StateFolder { path: PathBuf, error: std::io::Error },
    /// The outbox could not be opened (locked, damaged beyond salvage, a
    /// failing disk) or could not record a clean stop.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A blocking task (opening or closing the outbox) panicked.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The file sink's file could not be opened.
    #[error("cannot open the file sink {}: {error}", path.display())]
    FileSink { path: PathBuf, error: std::io::Error },
    /// The IoT Hub sink could not start.
    #[error(transparent)]
    IotHub(#[from] IotHubError),
    /// The Event Hubs sink could not start.
    #[error(transparent)]
    EventHubs(#[from] EventHubsError),
    /// A device's adapter settings were refused.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// The forwarder ended before it was asked to (a bug: it rides out
    /// outbox errors itself); the text says how.
    #[error("the forwarder stopped: {0}")]
    ForwarderStopped(String),
}
