//! `iomt-edge outbox stats|peek --state-dir DIR`: look into a gateway's outbox.
//!
//! The outbox is locked while the gateway runs; stop the service first.

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

fn open(state_dir: &std::path::Path) -> anyhow::Result<crate::outbox::Outbox> {
    let dir = state_dir.join("outbox");
    if !dir.exists() {
        anyhow::bail!("no outbox in {} (is --state-dir right?)", state_dir.display());
    }
    let (ob, report) = crate::outbox::Outbox::inspect(&dir, &crate::config::OutboxConfig::default())?;
    if let Some(p) = report.moved_aside {
        errln!("note: the outbox was corrupt and was moved to {}", p.display());
    }
    Ok(ob)
}

/// Scans a damaged outbox folder and says what it found on stderr.
fn scan(from: &std::path::Path) -> anyhow::Result<crate::outbox::salvage::Salvaged> {
    if !from.join("db").is_file() {
        anyhow::bail!("{} is not an outbox folder (it has no `db` file)", from.display());
    }
    let (found, skipped) = crate::outbox::salvage::scan_dir(from).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    for f in skipped {
        let _ = errln!("could not read {f}");
    }
    let _ = errln!(
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
            let ob = open(&state_dir)?;
            let s = ob.stats();
            if json {
                outln!("{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                outln!("outbox in {}", ob.dir().display())?;
                outln!("  queued readings     {}", s.queued)?;
                outln!("  queued size         {}", crate::config::units::ByteSize(s.queued_bytes))?;
                outln!("  batches in flight   {}", s.in_flight_batches)?;
                outln!("  next sequence no.   {}", s.next_seq)?;
                outln!("  dropped (full)      {}", s.dropped_full)?;
                outln!("  dropped (too old)   {}", s.dropped_age)?;
                outln!("  refused (full)      {}", s.refused)?;
                outln!("  size on disk        {}", crate::config::units::ByteSize(s.disk_bytes))?;
                outln!("  epoch               {}", s.epoch)?;
                outln!("  last start          {}", when(s.started_ms))?;
                outln!("  last stop           {}", previous_stop(s.previous_stop))?;
            }
        }
        OutboxCommand::Export { from } => {
            let found = scan(&from)?;
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
                    let _ = errln!(
                        "the gateway already salvaged {} when it found it damaged:\n{report}\nits readings are queued already; --force queues them again (they may then be delivered twice, under two message ids)",
                        from.display()
                    );
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
            }
            let found = scan(&from)?;
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
            let _ = crate::fsutil::write_durable(
                &from.join(crate::outbox::SALVAGED_MARK),
                format!("{{\"queuedByHand\": {queued}}}\n").as_bytes(),
            );
            ob.close_clean()?;
            outln!("queued {queued} readings from {} into {} under new sequence numbers", from.display(), dir.display())?;
        }
        OutboxCommand::Peek { state_dir, count } => {
            let ob = open(&state_dir)?;
            for r in ob.read_range(0, u64::MAX, count)? {
                if super::out::stdout_gone() {
                    break; // the reader stopped early (`| head`)
                }
                outln!("{}", serde_json::to_string(&r)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
