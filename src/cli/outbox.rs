//! `iomt-edge outbox stats|peek|dead-letters --state-dir DIR`: look into a
//! gateway's outbox.
//!
//! The outbox is locked while the gateway runs; stop the service first.
//! Looking changes nothing: a state folder without an outbox is an error
//! (exit 2), not a new outbox, and a damaged outbox is reported (exit 3), not
//! moved aside; the gateway salvages it at its next start.
//!
//! `dead-letters list|export` look the same way. `dead-letters retry` writes
//! (it queues readings again), so it needs the gateway stopped: a running
//! gateway holds the outbox's lock and the retry says so (exit 1). It does
//! not go through the running gateway: the gateway has no control channel
//! for it, and a retry is rare (after raising a size limit or changing the
//! sink, which needs a restart anyway).

use super::out::{errln, out, outln};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: OutboxCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum OutboxCommand {
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
    /// Readings the destination refused even alone (larger than it accepts),
    /// kept apart in the outbox instead of being dropped: list, export, or
    /// queue them again.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
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

#[derive(clap::Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// One line per device: how many dead letters, their size, when they were
    /// moved, which sink refused them and why (the latest reason). Works on a
    /// stopped gateway's outbox and changes nothing.
    #[command(
        after_help = "Exit codes: 0 listed (also when there are none), 1 the outbox is in use or unreadable, 2 no outbox in --state-dir, 3 the outbox is damaged."
    )]
    List {
        /// The gateway's state folder (the outbox is its `outbox` subfolder).
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Queues dead letters again, under new sequence numbers (after what is
    /// queued now), so the gateway sends them at its next start. Stop the
    /// gateway first. Do it after the cause is gone (a larger
    /// `max_request_bytes`, another tier or sink): a reading that is still
    /// too large is refused again and comes back here. Readings keep their
    /// measurement time. Never drops a queued reading: what does not fit in
    /// the outbox's bound stays a dead letter.
    #[command(
        group(clap::ArgGroup::new("which").required(true).args(["all", "device", "seq"])),
        after_help = "Exit codes: 0 queued (or nothing to queue with --all), 1 the gateway is running (stop it first), a disk error, or some left for lack of room, 2 no outbox in --state-dir or nothing matched --device/--seq, 3 the outbox is damaged.\n\nExamples:\n  iomt-edge outbox dead-letters retry --all\n  iomt-edge outbox dead-letters retry --device strap-1"
    )]
    Retry {
        /// The gateway's state folder (the outbox is its `outbox` subfolder).
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// The dead letters of this device.
        #[arg(long)]
        device: Option<String>,
        /// The dead letter queued under this sequence number (repeatable; `list --json` or `export` shows them).
        #[arg(long)]
        seq: Vec<u64>,
    },
    /// Prints dead letters as JSON lines: `deadLetterSeq`, `deviceId`, `sink`,
    /// `reason`, `deadLetteredAt`, `committedAt` and the `reading` (patient
    /// ids included: handle with care). Works on a stopped gateway's outbox
    /// and changes nothing.
    #[command(
        after_help = "Exit codes: 0 exported, 1 the outbox is in use or unreadable or --out cannot be written, 2 no outbox in --state-dir, 3 the outbox is damaged."
    )]
    Export {
        /// The gateway's state folder (the outbox is its `outbox` subfolder).
        #[arg(long, default_value = "/var/lib/iomt-edge")]
        state_dir: PathBuf,
        /// Only this device's dead letters.
        #[arg(long)]
        device: Option<String>,
        /// Write to this file (replaced whole, durably) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
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
        "{}: {} queued readings readable, {} in-flight batches, {} dead letters, {} damaged records unreadable, {} old copies of delivered or dropped readings left out",
        from.display(),
        found.readings.len(),
        found.in_flight.len(),
        found.dead_letters.len(),
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

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
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
                outln!(
                    "  dead letters        {} ({}){}",
                    s.dead_letters,
                    crate::config::units::ByteSize(s.dead_letter_bytes),
                    if s.dead_letters > 0 { ": refused by the destination even alone, kept apart; `outbox dead-letters list`" } else { "" }
                )?;
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
            // Dead letters stay dead letters (not queued: they would be refused again).
            let dead: Vec<_> = found.dead_letters.values().cloned().collect();
            let dead_added = ob.restore_dead_letters(&dead)?;
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
            if dead_added > 0 {
                outln!("kept {dead_added} dead letters apart (`iomt-edge outbox dead-letters list`)")?;
            }
        }
        OutboxCommand::DeadLetters { command } => return dead_letters(command),
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

/// The dead letters of the outbox in `state_dir`, read through an inspection
/// copy; on failure, says why and gives the exit code.
fn read_dead_letters(state_dir: &std::path::Path) -> Result<Vec<crate::outbox::dead_letters::DeadLetter>, ExitCode> {
    let ob = open(state_dir)?;
    ob.dead_letters().map_err(|e| {
        let dir = state_dir.join("outbox");
        // Name the outbox, not the private copy it was read from.
        let e = if e.is_damage() { crate::outbox::OutboxError::Damaged(dir.clone()) } else { e };
        errln!("error: cannot read the dead letters of the outbox in {}: {e}", dir.display());
        ExitCode::from(inspect_exit_code(&e))
    })
}

/// One device's dead letters, for `list`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceSummary {
    device_id: String,
    readings: u64,
    /// Bytes of the readings' JSON.
    bytes: u64,
    first_moved_at: String,
    last_moved_at: String,
    sink: String,
    /// The reason given for the latest one.
    reason: String,
    seqs: Vec<u64>,
}

fn summarize(list: &[crate::outbox::dead_letters::DeadLetter]) -> Vec<DeviceSummary> {
    let mut by_device: std::collections::BTreeMap<&str, Vec<&crate::outbox::dead_letters::DeadLetter>> = Default::default();
    for d in list {
        by_device.entry(&d.device_id).or_default().push(d);
    }
    by_device
        .into_iter()
        .map(|(device, ds)| {
            let latest = ds.iter().max_by_key(|d| d.at_ms).copied();
            DeviceSummary {
                device_id: device.to_string(),
                readings: ds.len() as u64,
                bytes: ds.iter().map(|d| d.reading.len() as u64).sum(),
                first_moved_at: when(ds.iter().map(|d| d.at_ms).min().unwrap_or(0)),
                last_moved_at: when(ds.iter().map(|d| d.at_ms).max().unwrap_or(0)),
                sink: latest.map(|d| d.sink.clone()).unwrap_or_default(),
                reason: latest.map(|d| d.reason.clone()).unwrap_or_default(),
                seqs: ds.iter().map(|d| d.dead_letter_seq).collect(),
            }
        })
        .collect()
}

fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeadLettersCommand::List { state_dir, json } => {
            let list = match read_dead_letters(&state_dir) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let summary = summarize(&list);
            if json {
                outln!("{}", serde_json::to_string_pretty(&summary)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let dir = state_dir.join("outbox");
            if list.is_empty() {
                outln!("no dead letters in {}", dir.display())?;
                return Ok(ExitCode::SUCCESS);
            }
            let bytes: u64 = summary.iter().map(|s| s.bytes).sum();
            outln!(
                "{} dead letters in {} ({}): readings the destination refused even alone; they are not sent until `iomt-edge outbox dead-letters retry`",
                list.len(),
                dir.display(),
                crate::config::units::ByteSize(bytes)
            )?;
            let width = summary.iter().map(|s| s.device_id.len()).max().unwrap_or(0).max(6);
            outln!(
                "{:<width$}  {:>8}  {:>10}  {:<24}  {:<24}  {:<9}  REASON (latest)",
                "DEVICE",
                "READINGS",
                "SIZE",
                "FIRST MOVED",
                "LAST MOVED",
                "SINK"
            )?;
            for s in &summary {
                outln!(
                    "{:<width$}  {:>8}  {:>10}  {:<24}  {:<24}  {:<9}  {}",
                    s.device_id,
                    s.readings,
                    crate::config::units::ByteSize(s.bytes).to_string(),
                    s.first_moved_at,
                    s.last_moved_at,
                    s.sink,
                    s.reason
                )?;
            }
        }
        DeadLettersCommand::Export { state_dir, device, out } => {
            let list = match read_dead_letters(&state_dir) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let mut text = String::new();
            let mut n = 0u64;
            for d in list.iter().filter(|d| device.as_ref().is_none_or(|id| d.device_id == *id)) {
                let reading =
                    d.reading().map(|r| serde_json::to_value(r).unwrap_or_default()).unwrap_or_else(|| serde_json::Value::String(d.reading.clone()));
                let line = serde_json::json!({
                    "deadLetterSeq": d.dead_letter_seq,
                    "deviceId": d.device_id,
                    "sink": d.sink,
                    "reason": d.reason,
                    "deadLetteredAt": when(d.at_ms),
                    "committedAt": when(d.committed_ms),
                    "reading": reading,
                });
                text.push_str(&serde_json::to_string(&line)?);
                text.push('\n');
                n += 1;
            }
            match out {
                Some(path) => {
                    if let Err(e) = crate::fsutil::write_durable(&path, text.as_bytes()) {
                        errln!("error: cannot write {}: {e}", path.display());
                        return Ok(ExitCode::from(super::EXIT_FAILURE));
                    }
                    errln!("exported {n} dead letters to {}", path.display());
                }
                None => {
                    out!("{text}")?;
                    errln!("exported {n} dead letters");
                }
            }
        }
        DeadLettersCommand::Retry { state_dir, all, device, seq } => {
            use crate::outbox::dead_letters::Which;
            let dir = state_dir.join("outbox");
            if !dir.join("db").is_file() {
                errln!(
                    "error: there is no outbox in {} (no `outbox` folder with a `db` file); is --state-dir right? It is the gateway's state_dir (default /var/lib/iomt-edge)",
                    state_dir.display()
                );
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
            let which = match (all, device) {
                (true, _) => Which::All,
                (false, Some(d)) => Which::Device(d),
                (false, None) => Which::Seqs(seq),
            };
            let ob = match crate::outbox::Outbox::open(&dir, &crate::config::OutboxConfig::default()) {
                Ok((ob, _)) => ob,
                Err(e) => {
                    errln!("error: {e}");
                    return Ok(ExitCode::from(inspect_exit_code(&e)));
                }
            };
            let report = match ob.retry_dead_letters(&which) {
                Ok(r) => r,
                Err(e) => {
                    // One atomic write: all of this retry or none of it.
                    errln!(
                        "error: retrying the dead letters in {} failed: {e}; the outbox holds all of this retry or none of it (`iomt-edge outbox dead-letters list` shows which)",
                        dir.display()
                    );
                    return Ok(ExitCode::from(inspect_exit_code(&e)));
                }
            };
            ob.close_clean()?;
            let left = ob.stats().dead_letters;
            if let (Some(first), Some(last)) = (report.requeued.first(), report.requeued.last()) {
                outln!(
                    "queued {} dead letters again in {} as sequence numbers {}..={}; {left} dead letters left",
                    report.requeued.len(),
                    dir.display(),
                    first.1,
                    last.1
                )?;
            }
            if report.no_room > 0 {
                errln!(
                    "{} dead letters stay where they are: the outbox has no room for them within its bound (deliver the backlog first, then retry)",
                    report.no_room
                );
            }
            if report.unreadable > 0 {
                errln!("{} dead letters could not be read and stay where they are", report.unreadable);
            }
            if report.no_room > 0 || report.unreadable > 0 {
                return Ok(ExitCode::from(super::EXIT_FAILURE));
            }
            if report.requeued.is_empty() {
                if which == Which::All {
                    outln!("no dead letters in {}: nothing to retry", dir.display())?;
                } else {
                    errln!(
                        "error: no dead letter in {} matches {}; `iomt-edge outbox dead-letters list` shows them",
                        dir.display(),
                        match &which {
                            Which::Device(d) => format!("--device {d}"),
                            Which::Seqs(s) => format!("--seq {s:?}"),
                            Which::All => String::new(),
                        }
                    );
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
