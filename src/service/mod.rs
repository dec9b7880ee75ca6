//! The running gateway: wires adapters -> committer -> outbox -> forwarder -> sink,
//! talks to systemd, and stops cleanly on SIGTERM (SIGHUP, SIGUSR1 and SIGUSR2
//! are answered, never fatal: see [`handle_signals`]).

pub mod associations;
mod error;
pub mod gateway;
pub mod notify;
mod run;
pub mod status;

pub use error::ServiceError;
pub use gateway::GatewayHandle;
pub use run::{build_sink, cancel_on_signals, commit_hooks, handle_signals, reload_report, run, ControlSignals, Hangup, RunOptions};
