//! The running gateway: wires adapters -> committer -> outbox -> forwarder -> sink,
//! talks to systemd, and stops cleanly on SIGTERM (SIGHUP, SIGUSR1 and SIGUSR2
//! are answered, never fatal: see [`handle_signals`]).

pub mod associations;
mod error;
pub(crate) mod gateway;
pub(crate) mod notify;
mod run;
pub(crate) mod status;

pub(crate) use gateway::GatewayHandle;
pub use run::commit_hooks;
pub(crate) use run::{handle_signals, run, Hangup, RunOptions};
