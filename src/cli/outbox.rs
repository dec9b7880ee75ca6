//! `iomt-edge outbox stats|peek --state-dir DIR`: look into a gateway's outbox.
//!
//! The outbox is locked while the gateway runs; stop the service first.
//! Looking changes nothing: a state folder without an outbox is an error
//! (exit 2), not a new outbox, and a damaged outbox is reported (exit 3), not
//! moved aside; the gateway salvages it at its next start.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// Counts, sizes and drop counters.
    Stats {
        /// The gateway's state folder (the outbox is its `outbox` subfolder).
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The oldest queued readings, as JSON lines (patient ids included: handle with care).
    Peek {
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// How many readings.
        #[arg(long, short = 'n', default_value_t = 10)]
        count: usize,
    },
}

/// Opens the outbox in `state_dir` for inspection: never creates one, never
/// moves a damaged one aside ([`crate::outbox::Outbox::inspect`]). On failure,
/// says why on stderr and gives the exit code ([`inspect_exit_code`]).
fn open(state_dir: &std::path::Path) -> Result<crate::outbox::Outbox, ExitCode> {
    let dir = state_dir.join("outbox");
    match crate::outbox::Outbox::inspect(&dir, &crate::config::OutboxConfig::default()) {
        Ok((ob, _report)) => Ok(ob),
        Err(e @ crate::outbox::OutboxError::NotFound(_)) => {
            eprintln!(
                "error: there is no outbox in {} (no `outbox` folder with a `db` file); is --state-dir right? It is the gateway's state_dir (default /var/lib/iomt-edge)",
                state_dir.display()
            );
            Err(ExitCode::from(inspect_exit_code(&e)))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(inspect_exit_code(&e)))
        }
    }
}

/// The exit code of an inspection that failed: 2 (bad usage) when the path
/// holds no outbox, 3 (a problem found) when the outbox is damaged, 1 otherwise
/// (locked by a running gateway, a disk error).
pub(super) fn inspect_exit_code(e: &crate::outbox::OutboxError) -> u8 {
    match e {
        crate::outbox::OutboxError::NotFound(_) => super::EXIT_USAGE,
        e if e.is_damage() => super::EXIT_PROBLEMS,
        _ => super::EXIT_FAILURE,
    }
}

/// A Unix-ms time as RFC 3339 UTC, or "not recorded".
fn when(ms: u64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms as i64) {
        Some(t) if ms > 0 => crate::model::time::format(&t),
        _ => "not recorded".into(),
    }
}

fn previous_stop(p: crate::outbox::PreviousStop) -> String {
    use crate::outbox::PreviousStop;
    match p {
        PreviousStop::None => "none (a new outbox)".into(),
        PreviousStop::Clean { at_ms } => format!("clean, at {}", when(at_ms)),
        PreviousStop::Unclean { started_ms } => {
            format!("UNCLEAN: the life that started at {} never recorded a clean stop (power cut, crash or kill)", when(started_ms))
        }
        PreviousStop::Unknown => "not recorded (outbox written by an older version)".into(),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        OutboxCommand::Stats { state_dir, json } => {
            let ob = match open(&state_dir) {
                Ok(ob) => ob,
                Err(code) => return Ok(code),
            };
            let s = ob.stats();
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("outbox in {}", state_dir.join("outbox").display());
                println!("  queued readings     {}", s.queued);
                println!("  queued size         {}", crate::config::units::ByteSize(s.queued_bytes));
                println!("  batches in flight   {}", s.in_flight_batches);
                println!("  next sequence no.   {}", s.next_seq);
                println!("  dropped (full)      {}", s.dropped_full);
                println!("  dropped (too old)   {}", s.dropped_age);
                println!("  refused (full)      {}", s.refused);
                println!("  size on disk        {}", crate::config::units::ByteSize(s.disk_bytes));
                println!("  epoch               {}", s.epoch);
                println!("  last start          {}", when(s.started_ms));
                println!("  last stop           {}", previous_stop(s.previous_stop));
            }
        }
        OutboxCommand::Peek { state_dir, count } => {
            let ob = match open(&state_dir) {
                Ok(ob) => ob,
                Err(code) => return Ok(code),
            };
            let readings = match ob.read_range(0, u64::MAX, count) {
                Ok(r) => r,
                Err(e) => {
                    let dir = state_dir.join("outbox");
                    // Name the outbox, not the private copy it was read from.
                    let e = if e.is_damage() { crate::outbox::OutboxError::Damaged(dir.clone()) } else { e };
                    eprintln!("error: cannot read the outbox in {}: {e}", dir.display());
                    return Ok(ExitCode::from(inspect_exit_code(&e)));
                }
            };
            for r in readings {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
