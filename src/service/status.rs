//! The gateway's state as one [`GatewayStatus`]: the twin's reported
//! properties and `getStatus` carry it to the cloud, and the running daemon
//! writes it to a status file every few seconds for `iomt-edge status` on the
//! Pi itself. No patient ids (see [`crate::model::status`]).

use super::gateway::GatewayHandle;
use crate::model::status::GatewayStatus;
use std::path::{Path, PathBuf};

/// The status file's name.
pub(crate) const FILE_NAME: &str = "status.json";

/// Where the running daemon writes its status file: systemd's
/// `RuntimeDirectory` (`/run/iomt-edge`, a tmpfs: no SD-card wear) when set,
/// else the state folder.
pub(crate) fn file_path(state_dir: &Path) -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories, separated by ':'.
        Some(d) => PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()).join(FILE_NAME),
        None => state_dir.join(FILE_NAME),
    }
}

/// Writes the status file (atomically: a reader never sees half of it).
/// `running` is false in the last write, at a clean stop.
pub(crate) fn write_file(path: &Path, gw: &GatewayHandle, running: bool) -> std::io::Result<()> {
    let doc = GatewayStatus {
        gateway_id: Some(gw.config.gateway.id.clone()),
        sink: Some(gw.sink_name().to_string()),
        pid: Some(std::process::id()),
        running: Some(running),
        written_at: Some(crate::model::time::format(&crate::model::time::now_ms())),
        ..gw.report()
    };
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}
