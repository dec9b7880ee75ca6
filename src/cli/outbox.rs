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
