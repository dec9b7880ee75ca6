//! `iomt-edge status`: what the gateway on this machine is doing right now,
//! read from the status file the running daemon rewrites every 5 s
//! (`/run/iomt-edge/status.json` under systemd, else `status.json` in the
//! state folder). Works while the service runs, unlike `outbox stats`.
//!
//! Exit code 0 when the gateway is running, 3 when it is not (stopped, or
//! killed and not restarted), 1 when there is no status file at all, 2 when
//! the config cannot be read or is invalid (its error, with file, line and
//! column, is printed).

use super::out::{errln, out, outln};
use crate::model::status::{DeviceReport, GatewayStatus};
use crate::service::status::FILE_NAME;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  iomt-edge status\n  iomt-edge status --config /etc/iomt-edge/iomt-edge.toml --json")]
pub(crate) struct Args {
    /// The gateway's config (default /etc/iomt-edge/iomt-edge.toml); its
    /// `state_dir` locates the status file. A config that is invalid, or given
    /// here and cannot be read, is reported (exit 2); a default file that is
    /// missing or not readable by this user means the package's folders.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Read the status file in this state folder only (instead of the config's
    /// state folder and /run/iomt-edge).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Print the status document as JSON (with `alive` added).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where the package installs the config.
const DEFAULT_CONFIG: &str = "/etc/iomt-edge/iomt-edge.toml";

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => {
            let path = a.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            match crate::config::load(&path) {
                Ok(c) => c.gateway.state_dir,
                // The default config missing, or not readable by this user (the
                // service's own files are 0600): the package's folders, where
                // /run/iomt-edge/status.json is readable by everyone.
                Err(e) if a.config.is_none() && e.line == 0 => {
                    if path.exists() {
                        errln!("note: {e}; looking in the package's folders");
                    }
                    PathBuf::from("/var/lib/iomt-edge")
                }
                Err(e) => {
                    // Guessing a folder would report on some other gateway, or on none.
                    errln!("{e}");
                    errln!("(the config names the state folder that holds the status file; fix it, or give --state-dir)");
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
            }
        }
    };
    // Under systemd the daemon writes to its RuntimeDirectory; an explicit
    // --state-dir means that folder only.
    let candidates: Vec<PathBuf> = match &a.state_dir {
        Some(_) => vec![state_dir.join(FILE_NAME)],
        None => vec![PathBuf::from("/run/iomt-edge").join(FILE_NAME), state_dir.join(FILE_NAME)],
    };
    let Some(path) = newest(&candidates) else {
        let names: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        errln!("no status file ({}): the gateway has not run on this machine with this state folder", names.join(" or "));
        return Ok(ExitCode::from(super::EXIT_FAILURE));
    };
    // The raw document for --json (fields of a newer version pass through),
    // the typed one for the text view.
    let read = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
        let raw: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
        let typed: GatewayStatus = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        Ok((raw, typed))
    });
    let (raw, doc) = match read {
        Ok(v) => v,
        Err(e) => {
            errln!("cannot read {}: {e}", path.display());
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    };
    let alive = doc.running == Some(true) && doc.pid.is_some_and(|p| process_is_gateway(u64::from(p)));
    if a.json {
        let mut out = raw;
        if let Some(o) = out.as_object_mut() {
            o.insert("alive".into(), Value::Bool(alive));
        }
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        out!("{}", render(&doc, alive, chrono::Utc::now()))?;
    }
    Ok(if alive { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_PROBLEMS) })
}

/// The most recently written of the existing files.
fn newest(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok().map(|t| (t, p.clone()))).max_by_key(|(t, _)| *t).map(|(_, p)| p)
}

/// A process with this pid exists and is an iomt-edge.
fn process_is_gateway(pid: u64) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm")).is_ok_and(|c| c.trim().starts_with("iomt-edge"))
}

/// "3 s ago", "2 min ago"... from an RFC 3339 time.
fn ago(t: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(t) = t.and_then(|s| crate::model::time::parse(s).ok()) else { return "-".into() };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// The text form.
pub(crate) fn render(doc: &GatewayStatus, alive: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    let id = doc.gateway_id.as_deref().unwrap_or("?");
    let written = ago(doc.written_at.as_deref(), now);
    let state = if alive {
        format!("running (pid {})", doc.pid.map_or("?".to_string(), |p| p.to_string()))
    } else if doc.running == Some(false) {
        "stopped cleanly".to_string()
    } else {
        "NOT RUNNING: it did not stop cleanly (killed or crashed); `systemctl status iomt-edge` and `journalctl -u iomt-edge` say why".to_string()
    };
    out.push_str(&format!("iomt-edge {id}: {state}; status written {written}; sink {}\n", doc.sink.as_deref().unwrap_or("?")));
    let d = &doc.dropped;
    out.push_str(&format!(
        "outbox: {} readings queued ({}); delivered {} readings in {} messages; dropped {}\n{}\n",
        doc.outbox_depth,
        crate::config::units::ByteSize(doc.outbox_bytes),
        doc.delivered.readings,
        doc.delivered.messages,
        if d.total() == 0 {
            "none".to_string()
        } else {
            format!(
                "{} (outbox full {}, too old {}, refused {}{})",
                d.total(),
                d.full,
                d.too_old,
                d.refused,
                // Only an older version's file has these (they are dead letters now).
                if d.rejected_by_sink > 0 { format!(", rejected by the destination {}", d.rejected_by_sink) } else { String::new() }
            )
        },
        // Older status files have no bound.
        doc.outbox_bound_text.as_deref().map(|t| format!("{t}\n")).unwrap_or_default()
    ));
    if doc.dead_letters.readings > 0 {
        out.push_str(&format!(
            "dead letters: {} readings ({}) the destination refused even alone are kept apart; `iomt-edge outbox dead-letters list` (gateway stopped)\n",
            doc.dead_letters.readings,
            crate::config::units::ByteSize(doc.dead_letters.bytes)
        ));
    }
    // `stateText` says "streaming, 100% undecodable" when a device sends only
    // values that cannot be decoded; older status files have only `state`.
    let state_of = |d: &DeviceReport| {
        d.state_text
            .clone()
            .or_else(|| d.state.and_then(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_string)))
            .unwrap_or_else(|| "?".into())
    };
    let width = doc.devices.iter().map(|d| state_of(d).len()).max().unwrap_or(0).max(11);
    out.push_str(&format!(
        "{:<24} {:<width$} {:>7}  {:<12} {:>9} {:>7} {:>11} {:>12}\n",
        "DEVICE", "STATE", "BATTERY", "LAST SEEN", "READINGS", "ERRORS", "EXTRA BYTES", "OUT OF RANGE"
    ));
    for d in &doc.devices {
        out.push_str(&format!(
            "{:<24} {:<width$} {:>7}  {:<12} {:>9} {:>7} {:>11} {:>12}\n",
            d.id,
            state_of(d),
            d.battery.map(|b| format!("{b:.0}%")).unwrap_or_else(|| "-".into()),
            ago(d.last_seen.as_deref(), now),
            d.readings,
            d.input_errors,
            d.extra_bytes,
            d.out_of_range
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn typed(v: &Value) -> GatewayStatus {
        serde_json::from_value(v.clone()).expect("a status document")
    }

    #[test]
    fn renders_running_stopped_and_killed() {
        let now = crate::model::time::parse("2026-11-21T10:00:10Z").unwrap();
        let mut doc = json!({
            "gatewayId": "ward3-bed12", "sink": "iothub", "pid": 42, "running": true,
            "writtenAt": "2026-11-21T10:00:07Z", "outboxDepth": 3, "outboxBytes": 2048,
            "delivered": {"readings": 100, "messages": 4},
            "dropped": {"full": 0, "tooOld": 0, "refused": 0, "rejectedBySink": 0},
            "devices": [{"id": "strap-1", "state": "streaming", "battery": 87, "lastSeen": "2026-11-21T10:00:09Z", "readings": 100, "inputErrors": 0}]
        });
        let t = render(&typed(&doc), true, now);
        assert!(t.contains("ward3-bed12: running (pid 42); status written 3 s ago; sink iothub"), "{t}");
        assert!(t.contains("3 readings queued (2.0 KiB); delivered 100 readings in 4 messages; dropped none"), "{t}");
        assert!(t.contains("strap-1") && t.contains("streaming") && t.contains("87%") && t.contains("1 s ago"), "{t}");
        assert!(render(&typed(&doc), false, now).contains("NOT RUNNING"));
        doc["running"] = json!(false);
        doc["dropped"]["full"] = json!(5);
        let t = render(&typed(&doc), false, now);
        assert!(t.contains("stopped cleanly") && t.contains("dropped 5 (outbox full 5"), "{t}");
        assert!(!t.contains("dead letters"), "no line while there are none: {t}");
        doc["deadLetters"] = json!({"readings": 2, "bytes": 3072, "movedThisRun": 2});
        let t = render(&typed(&doc), false, now);
        assert!(t.contains("dead letters: 2 readings (3.0 KiB)") && t.contains("outbox dead-letters list"), "{t}");
    }

    #[test]
    fn renders_undecodable_share_and_extra_bytes() {
        let now = crate::model::time::parse("2026-11-21T10:00:10Z").unwrap();
        let doc = json!({
            "gatewayId": "g", "sink": "file", "pid": 42, "running": true, "writtenAt": "2026-11-21T10:00:07Z",
            "devices": [
                {"id": "strap-1", "state": "streaming", "stateText": "streaming, 100% undecodable",
                 "readings": 0, "inputErrors": 40, "extraBytes": 0},
                {"id": "strap-2", "state": "streaming", "stateText": "streaming", "readings": 90,
                 "inputErrors": 0, "extraBytes": 30, "outOfRange": 7}
            ]
        });
        let t = render(&typed(&doc), true, now);
        let line = |id: &str| t.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_string();
        assert!(line("strap-1").contains("streaming, 100% undecodable"), "{t}");
        assert!(line("strap-1").split_whitespace().any(|w| w == "40"), "{t}");
        let cols = |id: &str| line(id).split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(cols("strap-2")[cols("strap-2").len() - 2..], ["30", "7"], "extra bytes, then out of range: {t}");
        assert_eq!(cols("strap-1").last().map(String::as_str), Some("0"), "an older status file without the count: {t}");
        assert!(t.contains("EXTRA BYTES") && t.contains("OUT OF RANGE"), "{t}");
    }
}
