//! What can go wrong when the IoT Hub sink starts or gets its identity, as
//! one type for the sink's seam (the service logs it; the session reports it
//! as the link's state). Each text carries its cause, so `{e}` and `{e:#}`
//! read the same and an error chain does not say a cause twice.

use super::connection_string::ConnectionStringError;
use super::sas::SasError;
use super::tls::TlsError;
use crate::config::secret::SecretError;

/// Why the IoT Hub sink could not start or connect.
#[derive(Debug, thiserror::Error)]
pub enum IotHubError {
    /// The TLS settings (CA file, client certificate or key).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A secret (connection string, DPS key, proxy credentials) could not be
    /// read; `what` names it and its setting.
    #[error("cannot read {what}: {cause}")]
    ReadSecret { what: &'static str, cause: SecretError },
    /// The connection string is not one.
    #[error("the IoT Hub connection string (sink.iothub.connection_string) is malformed: {0}")]
    MalformedConnectionString(ConnectionStringError),
    /// The proxy credentials are not `user:password`.
    #[error("the proxy credentials must be `user:password`")]
    ProxyCredentials,
    /// A key could not sign a token or derive a device key.
    #[error(transparent)]
    Key(#[from] SasError),
    /// Provisioning through DPS failed (connection, answer, timeout).
    #[error("{0}")]
    Provisioning(String),
    /// The credentials themselves were refused (by DPS): retried slowly,
    /// reported as [`super::session::MqttLinkState::Refused`].
    #[error("{0}")]
    Refused(String),
}
