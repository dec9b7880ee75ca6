//! The running gateway: wires adapters -> committer -> outbox -> forwarder -> sink,
//! talks to systemd, and stops cleanly on SIGTERM.

pub mod associations;
pub mod control;
pub mod health;
pub mod notify;
mod run;
pub mod status;

pub use run::{build_sink, cancel_on_signals, run, Gateway, RunOptions};
