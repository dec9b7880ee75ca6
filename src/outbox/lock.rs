//! An exclusive lock on the outbox folder, so two gateways never share one
//! outbox, and so "in use" is never mistaken for "corrupt".

use super::OutboxError;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for the life of the outbox; released when dropped (or the process dies).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `{dir}.lock` beside the outbox folder.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, OutboxError> {
        let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let path: PathBuf = dir.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| OutboxError::Io { path: path.clone(), source })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(OutboxError::Locked(dir.to_path_buf()));
        }
        Ok(DirLock { _file: file })
    }
}
