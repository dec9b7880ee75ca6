//! Azure Event Hubs sink over HTTPS.
//!
//! MedTech ingests from an event hub, so a gateway can send there directly
//! instead of through IoT Hub. The REST "Send batch events" operation is used
//! rather than AMQP: the Azure Rust AMQP crate is pre-1.0 (SAS support not
//! yet released), and one HTTPS POST per batch is simple to emulate and to
//! run on a Raspberry Pi holding a SAS key.
//!
//! [`sink`] is the [`crate::sinks::Sink`] (HTTPS requests, token renewal).
//! The rest is pure (no I/O, no clock; time is passed in), so each protocol
//! rule is tested on its own:
//! - [`connection_string`] — `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`.
//! - [`sas`] — SAS tokens (key used as UTF-8 bytes) and their renewal time.
//! - [`batch`] — `application/vnd.microsoft.servicebus.json` bodies cut to the tier's size limit.
//! - [`response`] — what each HTTP answer means ([`crate::sinks::SinkError`]).
//! - [`entra`] — Microsoft Entra ID client credentials, token cache decisions,
//!   the signed certificate assertion (PS256), bearer token file re-reads.
//!
//! Not built yet (see docs/eventhubs.md): the dead-letter tree for a message
//! that can never fit.

pub(crate) mod batch;
pub(crate) mod connection_string;
pub mod entra;
pub(crate) mod error;
pub(crate) mod response;
pub mod sas;
pub(crate) mod sink;

pub(crate) use error::EventHubsError;
pub(crate) use sink::build;
pub use sink::EventHubsSink;
