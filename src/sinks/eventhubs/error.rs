//! What can go wrong when the Event Hubs sink starts, as one type for the
//! sink's seam (the service logs it, `iomt-edge check` prints it). Each text
//! carries its cause, so `{e}` and `{e:#}` read the same and an error chain
//! does not say a cause twice.

use super::connection_string::ConnectionStringError;
use super::entra::EntraError;
use crate::config::secret::SecretError;
use std::path::PathBuf;

/// Why the Event Hubs sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum EventHubsError {
    /// A setting of `[sink.eventhubs]` is missing or invalid (the text names it).
    #[error("{0}")]
    Setting(String),
    /// A file named by a setting (`ca_file`, `client_certificate_file`,
    /// `client_key_file`) could not be read.
    #[error("cannot read sink.eventhubs.{setting} {}: {error}", path.display())]
    ReadFile { setting: &'static str, path: PathBuf, error: std::io::Error },
    /// A file named by a setting holds something other than its setting says
    /// (the text names the setting, the file and what is wrong).
    #[error("{0}")]
    BadFile(String),
    /// A secret (connection string, client secret) could not be read; `what`
    /// names it and its setting.
    #[error("cannot read {what}: {cause}")]
    ReadSecret { what: &'static str, cause: SecretError },
    /// The connection string is not one.
    #[error("the Event Hubs connection string (sink.eventhubs.connection_string) is malformed: {0}")]
    MalformedConnectionString(ConnectionStringError),
    /// The connection string and `event_hub` disagree, or neither names a hub.
    #[error("sink.eventhubs.connection_string: {0}")]
    HubName(ConnectionStringError),
    /// The Entra ID authority host or tenant is not usable.
    #[error("sink.eventhubs: {0}")]
    Entra(EntraError),
    /// The HTTPS client could not be set up (the text holds the cause's chain).
    #[error("{0}")]
    HttpClient(String),
}
