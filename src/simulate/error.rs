//! What can go wrong when an emulator (IoT Hub, Event Hubs) starts or is
//! driven by a test, as one type shared by both: they fail in the same ways
//! (certificates, TLS, listening, their state files). Each text carries its
//! cause, so `{e}` and an error chain read the same.

use std::path::PathBuf;

/// Why an emulator could not start, or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A certificate could not be made (`what` says which step).
    #[error("{what}: {error}")]
    CertificateStep { what: &'static str, error: rcgen::Error },
    /// A certificate could not be made.
    #[error(transparent)]
    Certificate(#[from] rcgen::Error),
    /// The TLS server settings were refused.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A listening socket could not be opened (`what`: the address, and the
    /// transport when it is not the main one).
    #[error("cannot listen on {what}: {error}")]
    Listen { what: String, error: std::io::Error },
    /// The Event Hubs emulator listens on loopback addresses only.
    #[error("the emulator listens on loopback addresses only")]
    NotLoopback,
    /// A client certificate to register cannot be read or used.
    #[error("the client certificate {}: {why}", path.display())]
    ClientCertificate { path: PathBuf, why: String },
    /// The record folder could not be created.
    #[error("cannot create the record folder {}: {error}", path.display())]
    RecordFolder { path: PathBuf, error: std::io::Error },
    /// The stored identity file is not what the emulator wrote.
    #[error("{} is damaged; remove it to start afresh: {error}", path.display())]
    DamagedIdentity { path: PathBuf, error: serde_json::Error },
    /// A file could not be created.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
    /// Another file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON could not be written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A direct method could not be delivered (the text says why, with the
    /// status IoT Hub would answer).
    #[error("{0}")]
    MethodNotDelivered(&'static str),
    /// The device did not answer a direct method in time.
    #[error("the device did not answer in time (504): {0}")]
    MethodTimeout(tokio::time::error::Elapsed),
    /// The device disconnected before answering a direct method.
    #[error("the device disconnected: {0}")]
    MethodDropped(tokio::sync::oneshot::error::RecvError),
}
