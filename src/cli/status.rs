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
use crate::service::status::FILE_NAME;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  iomt-edge status\n  iomt-edge status --config /etc/iomt-edge/iomt-edge.toml --json")]
pub struct Args {
    /// The gateway's config (default /etc/iomt-edge/iomt-edge.toml); its
    /// `state_dir` locates the status file. A config that is invalid, or given
    /// here and cannot be read, is reported (exit 2); a default file that is
    /// missing or not readable by this user means the package's folders.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read the status file in this state folder only (instead of the config's
    /// state folder and /run/iomt-edge).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print the status document as JSON (with `alive` added).
    #[arg(long)]
    pub json: bool,
}

/// Where the package installs the config.
const DEFAULT_CONFIG: &str = "/etc/iomt-edge/iomt-edge.toml";

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
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
    let doc: Value = match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
        Ok(v) => v,
        Err(e) => {
            errln!("cannot read {}: {e}", path.display());
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    };
    let alive = doc["running"].as_bool() == Some(true) && doc["pid"].as_u64().is_some_and(process_is_gateway);
    if a.json {
        let mut out = doc.clone();
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
fn ago(t: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(t) = t.as_str().and_then(|s| crate::model::time::parse(s).ok()) else { return "-".into() };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// The text form.
pub fn render(doc: &Value, alive: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    let id = doc["gatewayId"].as_str().unwrap_or("?");
    let written = ago(&doc["writtenAt"], now);
    let state = if alive {
        format!("running (pid {})", doc["pid"])
    } else if doc["running"].as_bool() == Some(false) {
        "stopped cleanly".to_string()
    } else {
        "NOT RUNNING: it did not stop cleanly (killed or crashed); `systemctl status iomt-edge` and `journalctl -u iomt-edge` say why".to_string()
    };
    out.push_str(&format!("iomt-edge {id}: {state}; status written {written}; sink {}\n", doc["sink"].as_str().unwrap_or("?")));
    let n = |p: &str| doc.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    // `rejectedBySink`: readings an older version removed when the
    // destination refused them even alone (now they are dead letters).
    let dropped = n("/dropped/full") + n("/dropped/tooOld") + n("/dropped/refused") + n("/dropped/rejectedBySink");
    out.push_str(&format!(
        "outbox: {} readings queued ({}); delivered {} readings in {} messages; dropped {}\n{}\n",
        n("/outboxDepth"),
        crate::config::units::ByteSize(n("/outboxBytes")),
        n("/delivered/readings"),
        n("/delivered/messages"),
        if dropped == 0 {
            "none".to_string()
        } else {
            format!(
                "{dropped} (outbox full {}, too old {}, refused {}, rejected by the destination {})",
                n("/dropped/full"),
                n("/dropped/tooOld"),
                n("/dropped/refused"),
                n("/dropped/rejectedBySink")
            )
        },
        // Older status files have no bound.
        doc["outboxBoundText"].as_str().map(|t| format!("{t}\n")).unwrap_or_default()
    ));
    if n("/deadLetters/readings") > 0 {
        out.push_str(&format!(
            "dead letters: {} readings ({}) the destination refused even alone are kept apart; `iomt-edge outbox dead-letters list` (gateway stopped)\n",
            n("/deadLetters/readings"),
            crate::config::units::ByteSize(n("/deadLetters/bytes"))
        ));
    }
    let devices = doc["devices"].as_array().map(Vec::as_slice).unwrap_or_default();
    // `stateText` says "streaming, 100% undecodable" when a device sends only
    // values that cannot be decoded; older status files have only `state`.
    let state_of = |d: &Value| d["stateText"].as_str().or(d["state"].as_str()).unwrap_or("?").to_string();
    let width = devices.iter().map(|d| state_of(d).len()).max().unwrap_or(0).max(11);
    out.push_str(&format!(
        "{:<24} {:<width$} {:>7}  {:<12} {:>9} {:>7} {:>11} {:>12}\n",
        "DEVICE", "STATE", "BATTERY", "LAST SEEN", "READINGS", "ERRORS", "EXTRA BYTES", "OUT OF RANGE"
    ));
    for d in devices {
        out.push_str(&format!(
            "{:<24} {:<width$} {:>7}  {:<12} {:>9} {:>7} {:>11} {:>12}\n",
            d["id"].as_str().unwrap_or("?"),
            state_of(d),
            d["battery"].as_f64().map(|b| format!("{b:.0}%")).unwrap_or_else(|| "-".into()),
            ago(&d["lastSeen"], now),
            d["readings"].as_u64().unwrap_or(0),
            d["inputErrors"].as_u64().unwrap_or(0),
            d["extraBytes"].as_u64().unwrap_or(0),
            d["outOfRange"].as_u64().unwrap_or(0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let t = render(&doc, true, now);
        assert!(t.contains("ward3-bed12: running (pid 42); status written 3 s ago; sink iothub"), "{t}");
        assert!(t.contains("3 readings queued (2.0 KiB); delivered 100 readings in 4 messages; dropped none"), "{t}");
        assert!(t.contains("strap-1") && t.contains("streaming") && t.contains("87%") && t.contains("1 s ago"), "{t}");
        assert!(render(&doc, false, now).contains("NOT RUNNING"));
        doc["running"] = json!(false);
        doc["dropped"]["full"] = json!(5);
        let t = render(&doc, false, now);
        assert!(t.contains("stopped cleanly") && t.contains("dropped 5 (outbox full 5"), "{t}");
        assert!(!t.contains("dead letters"), "no line while there are none: {t}");
        doc["deadLetters"] = json!({"readings": 2, "bytes": 3072, "movedThisRun": 2});
        let t = render(&doc, false, now);
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
        let t = render(&doc, true, now);
        let line = |id: &str| t.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_string();
        assert!(line("strap-1").contains("streaming, 100% undecodable"), "{t}");
        assert!(line("strap-1").split_whitespace().any(|w| w == "40"), "{t}");
        let cols = |id: &str| line(id).split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(cols("strap-2")[cols("strap-2").len() - 2..], ["30", "7"], "extra bytes, then out of range: {t}");
        assert_eq!(cols("strap-1").last().map(String::as_str), Some("0"), "an older status file without the count: {t}");
        assert!(t.contains("EXTRA BYTES") && t.contains("OUT OF RANGE"), "{t}");
    }
}
