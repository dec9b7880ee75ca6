//! The command line: one subcommand per file in this folder.
//!
//! Exit codes (documented in `--help`): 0 success, 1 runtime failure,
//! 2 bad usage or bad configuration, 3 a check found problems or the input was
//! malformed. User mistakes get a sentence, never a panic or a debug dump.
//!
//! Every command writes through `out::outln!`/`errln!`, never `println!`: a
//! reader that closes the pipe early (`| head -1`) ends the command quietly
//! with its usual exit code (see `out` for why SIGPIPE stays ignored).

mod bench;
mod check_config;
mod decode;
mod demo;
mod medtech;
pub(crate) mod out;
mod outbox;
mod run;
mod scan;
mod serial;
pub(crate) mod simulate;
mod status;

use clap::{Parser, Subcommand};
use out::errln;
use std::process::ExitCode;

/// Exit code: something failed while running.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage or bad configuration.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: a check found problems, or the input was malformed.
pub(crate) const EXIT_PROBLEMS: u8 = 3;

#[derive(Parser)]
#[command(
    name = "iomt-edge",
    version,
    about = "Edge gateway for bedside and wearable medical devices",
    long_about = "Reads BLE heart-rate straps, pulse oximeters and serial bedside monitors, stores every \
reading in a durable local outbox, and forwards it to Azure IoT Hub, Event Hubs, a file or stdout, shaped \
for the Azure MedTech service.",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration, 3 problems found or malformed input.\n\
Output read by a pipe that closes early (`| head`) is not an error: the command ends quietly with its usual exit code.\n\
Logging: set RUST_LOG (e.g. RUST_LOG=debug) or --log-level; colours only on a terminal (and not with NO_COLOR set)."
)]
pub(crate) struct Cli {
    /// Log level for stderr: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, global = true, env = "IOMT_EDGE_LOG", value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the systemd service runs this).
    Run(run::Args),
    /// Run the whole pipeline on this machine with simulated devices, no setup needed.
    Demo(demo::Args),
    /// Validate a config file without starting anything.
    CheckConfig(check_config::Args),
    /// What the gateway on this machine is doing now: devices, battery, outbox, deliveries.
    Status(status::Args),
    /// Look into a gateway's outbox (stop the service first).
    Outbox(outbox::Args),
    /// Measure this machine: outbox ingest, forwarding, reopen, daemon memory.
    Bench(bench::Args),
    /// Decode captured device bytes offline and print them as JSON.
    Decode(decode::Args),
    /// Find nearby BLE straps and oximeters, or serial ports, with config blocks to paste.
    Scan(scan::Args),
    /// Work with a serial port directly: record what a monitor sends.
    Serial(serial::Args),
    /// Run a simulator by hand: BlueZ on a private D-Bus, or a local IoT Hub emulator.
    Simulate(simulate::Args),
    /// Preview or check Azure MedTech mappings against messages (what the service would make of them).
    Medtech(medtech::Args),
}

/// Sets up logging to stderr (journald picks it up under systemd); see
/// [`crate::logging::init`].
pub(crate) fn init_logging(level: Option<&str>) {
    crate::logging::init(level)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a live view on stdout; keep routine log lines out of it.
    let quiet_default = matches!(cli.command, Command::Demo(_)) && std::env::var_os("RUST_LOG").is_none();
    let level = cli.log_level.as_deref().or(if quiet_default { Some("warn") } else { None });
    init_logging(level);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Demo(a) => demo::run(a),
        Command::CheckConfig(a) => check_config::run(a),
        Command::Status(a) => status::run(a),
        Command::Outbox(a) => outbox::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Decode(a) => decode::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Serial(a) => serial::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Medtech(a) => medtech::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {}", anyhow_chain(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// [`crate::logging::error_chain`] for an `anyhow::Error` (commands use
/// anyhow; the stages below them return typed errors).
fn anyhow_chain(e: &anyhow::Error) -> String {
    crate::logging::error_chain(e.as_ref())
}

#[cfg(test)]
mod tests {
    use super::anyhow_chain;

    #[test]
    fn anyhow_chain_says_each_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read /x: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(Outer(io)).context("cannot start");
        let line = anyhow_chain(&e);
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert!(line.starts_with("cannot start: cannot read /x: "), "{line}");
        // Causes that add something are kept.
        let e = anyhow::anyhow!("disk full").context("cannot store").context("cannot start");
        assert_eq!(anyhow_chain(&e), "cannot start: cannot store: disk full");
    }
}
