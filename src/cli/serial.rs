//! `iomt-edge serial record`: captures what a monitor sends on a serial port,
//! raw bytes with the time of each read, into a timed capture
//! ([`crate::adapters::serial::capture`]) for a profile author: `decode
//! serial` decodes it, `simulate serial --capture` plays it back at its
//! recorded timing.
//!
//! Nothing is decoded and nothing is logged: the file may hold vital signs,
//! so it is created readable by its owner only (0600).

use super::out::{errln, outln};
use crate::adapters::serial::capture;
use crate::adapters::serial::profile::{FlowControl, Parity, PortSettings};
use crate::adapters::serial::Driver;
use crate::config::serial::{SerialFlowControl, SerialParity};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) what: SerialCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum SerialCommand {
    /// Record the raw bytes a monitor sends, with the time of each read, into
    /// a timed capture (until Ctrl-C, `--duration`, or the port going away).
    #[command(
        after_help = "Examples:\n  iomt-edge serial record --port /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0 --out bed12.cap\n  \
iomt-edge serial record --port /dev/ttyUSB0 --profile nonin-ascii --duration 2m --out nonin.cap\n  \
iomt-edge decode serial --profile masimo-ascii1 bed12.cap\n  \
iomt-edge simulate serial --profile masimo-ascii1 --capture bed12.cap\n\n\
Stop the gateway first if it reads the same port (the gateway opens its ports exclusively).\n\
The capture holds whatever the monitor sends (vital signs included): it is written readable by you only."
    )]
    Record(RecordArgs),
}

#[derive(clap::Args)]
pub(crate) struct RecordArgs {
    /// The serial port (best its /dev/serial/by-id/... name).
    #[arg(long)]
    pub(crate) port: PathBuf,
    /// The capture file to write (replaced if it exists).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Take the line settings of this profile or driver (`masimo-ascii1`,
    /// `nonin-df7`, a profile file); default 9600 8N1.
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// Baud rate (overrides the profile's).
    #[arg(long)]
    pub(crate) baud: Option<u32>,
    /// Data bits, 5-8 (overrides the profile's).
    #[arg(long)]
    pub(crate) data_bits: Option<u8>,
    /// Parity: none, odd or even (overrides the profile's).
    #[arg(long)]
    pub(crate) parity: Option<SerialParity>,
    /// Stop bits, 1 or 2 (overrides the profile's).
    #[arg(long)]
    pub(crate) stop_bits: Option<u8>,
    /// Flow control: none, hardware or software (overrides the profile's).
    #[arg(long)]
    pub(crate) flow_control: Option<SerialFlowControl>,
    /// Stop after this long (e.g. `30s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        SerialCommand::Record(r) => record(r),
    }
}

/// The line settings: the profile's `[port]` (built-in drivers: 9600 8N1)
/// with the options applied; a plain error names the bad option.
fn settings(a: &RecordArgs) -> Result<PortSettings, String> {
    let mut s = match &a.profile {
        None => PortSettings::default(),
        Some(name) => match Driver::by_name(name).map_err(|e| format!("--profile {name}: {e}"))? {
            Driver::Profile(p) => p.port,
            _ => PortSettings::default(),
        },
    };
    if let Some(b) = a.baud {
        if b == 0 {
            return Err("--baud must be above 0".into());
        }
        s.baud = b;
    }
    if let Some(d) = a.data_bits {
        if !(5..=8).contains(&d) {
            return Err(format!("--data-bits {d}: use 5, 6, 7 or 8"));
        }
        s.data_bits = d;
    }
    if let Some(p) = a.parity {
        s.parity = p;
    }
    if let Some(b) = a.stop_bits {
        if !(1..=2).contains(&b) {
            return Err(format!("--stop-bits {b}: use 1 or 2"));
        }
        s.stop_bits = b;
    }
    if let Some(f) = a.flow_control {
        s.flow_control = f;
    }
    Ok(s)
}

fn describe(s: &PortSettings) -> String {
    let parity = match s.parity {
        Parity::None => 'N',
        Parity::Odd => 'O',
        Parity::Even => 'E',
    };
    let flow = match s.flow_control {
        FlowControl::None => "",
        FlowControl::Hardware => ", RTS/CTS",
        FlowControl::Software => ", XON/XOFF",
    };
    format!("{} {}{}{}{flow}", s.baud, s.data_bits, parity, s.stop_bits)
}

fn record(a: RecordArgs) -> anyhow::Result<ExitCode> {
    let s = match settings(&a) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        use std::os::unix::fs::OpenOptionsExt;
        use tokio::io::AsyncReadExt;
        use tokio_serial::SerialPortBuilderExt;
        let mut port = match crate::adapters::serial::adapter::port_builder(&a.port, &s).open_native_async() {
            Ok(p) => p,
            Err(e) => {
                errln!("error: cannot open {}: {e}", a.port.display());
                return Ok(ExitCode::from(super::EXIT_FAILURE));
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&a.out)
            .with_context(|| format!("cannot create the capture {}", a.out.display()))?;
        let started = crate::model::time::now_ms();
        write!(file, "{}\n# port {}, {}, started {}\n", capture::HEADER, a.port.display(), describe(&s), crate::model::time::format(&started))
            .with_context(|| format!("cannot write {}", a.out.display()))?;
        errln!("recording {} ({}) into {}; Ctrl-C stops", a.port.display(), describe(&s), a.out.display());
        let t0 = tokio::time::Instant::now();
        let deadline = a.duration.map(|d| t0 + d);
        let stop = crate::cli::simulate::wait_for_stop();
        tokio::pin!(stop);
        let (mut reads, mut total) = (0u64, 0u64);
        let mut buf = [0u8; 4096];
        let ended = loop {
            let until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break "stopped",
                _ = until => break "duration reached",
                r = port.read(&mut buf) => match r {
                    Ok(0) => break "the port closed",
                    Ok(n) => {
                        let line = capture::chunk_line(t0.elapsed(), &buf[..n]);
                        // Each read is written and flushed at once: Ctrl-C or a crash loses nothing recorded.
                        file.write_all(line.as_bytes()).and_then(|_| file.flush()).with_context(|| format!("cannot write {}", a.out.display()))?;
                        reads += 1;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break "the port went away",
                },
            }
        };
        file.sync_all().with_context(|| format!("cannot write {}", a.out.display()))?;
        errln!("{ended}: {total} byte(s) in {reads} read(s) over {:.1} s", t0.elapsed().as_secs_f64());
        outln!("{}", a.out.display())?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        record: RecordArgs,
    }

    #[test]
    fn parity_and_flow_control_use_the_config_spelling() {
        let c = Cmd::try_parse_from(["record", "--port", "/dev/ttyUSB0", "--out", "x", "--parity", "even", "--flow-control", "hardware"]).unwrap();
        let s = settings(&c.record).unwrap();
        assert_eq!((s.parity, s.flow_control), (Parity::Even, FlowControl::Hardware));
        assert_eq!(describe(&s), "9600 8E1, RTS/CTS");
        for (opt, bad, hint) in [("--parity", "mark", "use none, odd or even"), ("--flow-control", "rts", "use none, hardware or software")] {
            let e = Cmd::try_parse_from(["record", "--port", "p", "--out", "x", opt, bad]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(bad) && e.contains(hint), "{opt} {bad}: {e}");
        }
    }
}
