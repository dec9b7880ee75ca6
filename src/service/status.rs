//! The gateway's state as one JSON document: the twin's reported properties
//! and `getStatus` carry it to the cloud, and the running daemon writes it to a
//! status file every few seconds for `iomt-edge status` on the Pi itself.
//!
//! No patient ids: the association lives in the desired properties the ward
//! system wrote, and in each message body.

use super::gateway::Gateway;
use crate::adapters::{DeviceRegistry, LinkState};
use crate::forwarder::ForwarderStats;
use crate::outbox::Outbox;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// The status file's name.
pub const FILE_NAME: &str = "status.json";

/// Where the running daemon writes its status file: systemd's
/// `RuntimeDirectory` (`/run/iomt-edge`, a tmpfs: no SD-card wear) when set,
/// else the state folder.
pub fn file_path(state_dir: &Path) -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories, separated by ':'.
        Some(d) => PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()).join(FILE_NAME),
        None => state_dir.join(FILE_NAME),
    }
}

/// Devices, outbox and delivery counters.
///
/// `deadLetters`: `readings` and `bytes` held in the outbox's dead letters
/// (readings the destination refused even alone), and `movedThisRun`, how
/// many this life moved there.
///
/// Per device: `state` (link state), `stateText` (the state with the share of
/// recent values that could not be decoded, e.g. `streaming, 100% undecodable`),
/// `values` (received), `inputErrors` (undecodable values), `undecodablePercent`
/// (of the last [`crate::adapters::registry::RECENT_VALUES`] values; null before
/// the first), `extraBytes` (bytes ignored after complete fields) and
/// `outOfRange` (stored readings flagged `outOfRange`: a value no body can
/// have, see [`crate::model::PLAUSIBLE_RANGES`]).
pub fn document(outbox: &Outbox, registry: &DeviceRegistry, stats: &ForwarderStats) -> Value {
    let s = outbox.stats();
    let devices: Vec<Value> = registry
        .snapshot()
        .into_iter()
        .map(|d| {
            json!({
                "id": d.device_id,
                "connected": d.state == LinkState::Streaming,
                "state": d.state,
                "stateText": d.state_text(),
                "battery": d.battery,
                "lastSeen": d.last_seen.map(|t| crate::model::time::format(&t)),
                "readings": d.readings,
                "values": d.values,
                "inputErrors": d.input_errors,
                "undecodablePercent": d.undecodable_percent(),
                "extraBytes": d.extra_bytes,
                "outOfRange": d.out_of_range,
            })
        })
        .collect();
    json!({
        "gatewayVersion": env!("CARGO_PKG_VERSION"),
        "outboxDepth": s.queued,
        "outboxBytes": s.queued_bytes,
        // The bound in force (max_bytes, or less on a small state filesystem).
        "outboxBound": s.bound,
        "outboxBoundText": s.bound.describe(outbox.dir().parent().unwrap_or(outbox.dir())),
        "dropped": { "full": s.dropped_full, "tooOld": s.dropped_age, "refused": s.refused },
        // Readings the destination refused even alone: kept, not dropped
        // (`iomt-edge outbox dead-letters list|retry|export`).
        "deadLetters": { "readings": s.dead_letters, "bytes": s.dead_letter_bytes,
                         "movedThisRun": stats.dead_lettered_readings.load(Ordering::Relaxed) },
        "delivered": { "readings": stats.delivered_readings.load(Ordering::Relaxed),
                       "messages": stats.delivered_messages.load(Ordering::Relaxed) },
        "devices": devices,
    })
}

/// Writes the status file (atomically: a reader never sees half of it).
/// `running` is false in the last write, at a clean stop.
pub fn write_file(path: &Path, gw: &Gateway, running: bool) -> std::io::Result<()> {
    let mut doc = document(&gw.outbox, &gw.registry, &gw.forwarder);
    if let Some(o) = doc.as_object_mut() {
        o.insert("gatewayId".into(), json!(gw.config.gateway.id));
        o.insert("sink".into(), json!(gw.sink_name));
        o.insert("pid".into(), json!(std::process::id()));
        o.insert("running".into(), json!(running));
        o.insert("writtenAt".into(), json!(crate::model::time::format(&crate::model::time::now_ms())));
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}
