//! `iomt-edge outbox stats|peek --state-dir DIR`: look into a gateway's outbox.
//!
//! The outbox is locked while the gateway runs; stop the service first.
//! Looking changes nothing: a state folder without an outbox is an error
//! (exit 2), not a new outbox, and a damaged outbox is reported (exit 3), not
//! moved aside; the gateway salvages it at its next start.

use super::out::{errln, outln};
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
    /// Reads what can still be read out of a damaged outbox that was moved
    /// aside (`outbox.corrupt-*`) and prints the queued readings as JSON lines
    /// (patient ids included: handle with care); a summary goes to stderr.
    Export {
        /// The damaged outbox folder (e.g. /var/lib/iomt-edge/outbox.corrupt-20261130T021909Z).
        #[arg(long)]
        from: PathBuf,
    },
    /// Queues the readings still readable in a damaged outbox (moved aside)
    /// into the gateway's outbox again, under new sequence numbers, so they
    /// are delivered. Stop the gateway first. Refuses a copy the gateway
    /// already salvaged itself (it says so in its log), unless --force.
    Salvage {
        /// The damaged outbox folder.
        #[arg(long)]
        from: PathBuf,
        /// The gateway's state folder (its outbox is the `outbox` subfolder).
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// Queue them even if the gateway already salvaged this copy
        /// (readings may then be delivered twice, under two message ids).
        #[arg(long)]
        force: bool,
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
            errln!(
                "error: there is no outbox in {} (no `outbox` folder with a non-empty `db` file); is --state-dir right? It is the gateway's state_dir (default /var/lib/iomt-edge)",
                state_dir.display()
            );
            Err(ExitCode::from(inspect_exit_code(&e)))
        }
        Err(e) => {
            errln!("error: {e}");
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

/// Scans a damaged outbox folder and says what it found on stderr. A path
/// that is not an outbox folder (no `db` file: a typo) is bad usage, exit 2
/// as for `outbox stats`; a folder that cannot be read, exit 1.
fn scan(from: &std::path::Path) -> Result<crate::outbox::salvage::Salvaged, ExitCode> {
    if !from.join("db").is_file() {
        errln!(
            "error: {} is not an outbox folder (it has no `db` file); is --from right? It is a folder the gateway moved aside, such as /var/lib/iomt-edge/outbox.corrupt-…",
            from.display()
        );
        return Err(ExitCode::from(super::EXIT_USAGE));
    }
    let (found, skipped) = match crate::outbox::salvage::scan_dir(from) {
        Ok(done) => done,
        Err(e) => {
            errln!("error: cannot read {}: {e}", from.display());
            return Err(ExitCode::from(super::EXIT_FAILURE));
        }
    };
    for f in skipped {
        errln!("could not read {f}");
    }
    errln!(
        "{}: {} queued readings readable, {} in-flight batches, {} damaged records unreadable, {} old copies of delivered or dropped readings left out",
        from.display(),
        found.readings.len(),
        found.in_flight.len(),
        found.unreadable,
        found.already_gone
    );
    Ok(found)
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
                outln!("{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                outln!("outbox in {}", state_dir.join("outbox").display())?;
                outln!("  queued readings     {}", s.queued)?;
                outln!("  queued size         {}", crate::config::units::ByteSize(s.queued_bytes))?;
                outln!("  batches in flight   {}", s.in_flight_batches)?;
                outln!("  next sequence no.   {}", s.next_seq)?;
                outln!("  dropped (full)      {}", s.dropped_full)?;
                outln!("  dropped (too old)   {}", s.dropped_age)?;
                outln!("  refused (full)      {}", s.refused)?;
                outln!("  size on disk        {}", crate::config::units::ByteSize(s.disk_bytes))?;
                outln!("  bound               {}", s.bound.describe(&state_dir))?;
                outln!("  epoch               {}", s.epoch)?;
                outln!("  last start          {}", when(s.started_ms))?;
                outln!("  last stop           {}", previous_stop(s.previous_stop))?;
            }
        }
        OutboxCommand::Export { from } => {
            let found = match scan(&from) {
                Ok(found) => found,
                Err(code) => return Ok(code),
            };
            for (_, r) in found.readings.values() {
                outln!("{}", serde_json::to_string(r)?)?;
                if super::out::stdout_gone() {
                    break; // the reader went away (`| head`)
                }
            }
        }
        OutboxCommand::Salvage { from, state_dir, force } => {
            if let Ok(report) = std::fs::read_to_string(from.join(crate::outbox::SALVAGED_MARK)) {
                if !force {
                    errln!(
                        "the gateway already salvaged {} when it found it damaged:\n{report}\nits readings are queued already; --force queues them again (they may then be delivered twice, under two message ids)",
                        from.display()
                    );
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
            }
            let found = match scan(&from) {
                Ok(found) => found,
                Err(code) => return Ok(code),
            };
            let dir = state_dir.join("outbox");
            let (ob, _) = crate::outbox::Outbox::open(&dir, &crate::config::OutboxConfig::default())?;
            let mut readings: Vec<crate::model::Reading> = found.readings.into_values().map(|(_, r)| r).collect();
            for r in &mut readings {
                r.seq = 0;
            }
            let mut queued = 0u64;
            for chunk in readings.chunks_mut(5000) {
                let outcome = ob.append(chunk)?;
                queued += outcome.seqs.iter().flatten().count() as u64;
            }
            let _ = crate::fsutil::write_durable(&from.join(crate::outbox::SALVAGED_MARK), format!("{{\"queuedByHand\": {queued}}}\n").as_bytes());
            ob.close_clean()?;
            outln!("queued {queued} readings from {} into {} under new sequence numbers", from.display(), dir.display())?;
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
                    errln!("error: cannot read the outbox in {}: {e}", dir.display());
                    return Ok(ExitCode::from(inspect_exit_code(&e)));
                }
            };
            for r in readings {
                outln!("{}", serde_json::to_string(&r)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
