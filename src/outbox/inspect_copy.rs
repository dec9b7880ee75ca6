//! A private copy of an outbox for [`super::Outbox::inspect`].
//!
//! sled 0.34 has no read-only mode: opening a store writes to it (it extends
//! and rewrites the log while recovering, and may leave a snapshot file), and
//! opening a damaged store can overwrite the very bytes a salvage would read.
//! Inspection commands must not change what they inspect, so they open a copy
//! made in the temporary folder (`$TMPDIR`, else `/tmp`), readable by the
//! current user only, while holding the gateway's lock on the original; the
//! copy is removed when the inspected outbox is dropped.

use super::OutboxError;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A temporary folder holding `outbox/`, a copy of an outbox; removed on drop.
pub(super) struct ScratchCopy {
    root: PathBuf,
}

impl ScratchCopy {
    /// Copies every file of the outbox in `dir` (sled's `db`, `conf`,
    /// snapshots and blobs) into a new private temporary folder.
    pub(super) fn of(dir: &Path) -> Result<ScratchCopy, OutboxError> {
        let root = std::env::temp_dir().join(format!("iomt-edge-inspect-{}-{:016x}", std::process::id(), rand::random::<u64>()));
        std::fs::DirBuilder::new().mode(0o700).create(&root).map_err(|source| OutboxError::Io { path: root.clone(), source })?;
        // From here on, dropping `copy` removes what was made.
        let copy = ScratchCopy { root };
        copy_tree(dir, &copy.outbox()).map_err(|(path, source)| OutboxError::Io {
            path,
            source: std::io::Error::new(
                source.kind(),
                format!("{source}; inspecting works on a copy of the outbox (so that it changes nothing): set TMPDIR to a folder with room"),
            ),
        })?;
        Ok(copy)
    }

    /// The copy of the outbox folder.
    pub(super) fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
}

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Copies the regular files and folders under `from` to `to` (created).
fn copy_tree(from: &Path, to: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    std::fs::DirBuilder::new().mode(0o700).create(to).map_err(|e| (to.to_path_buf(), e))?;
    for entry in std::fs::read_dir(from).map_err(|e| (from.to_path_buf(), e))? {
        let entry = entry.map_err(|e| (from.to_path_buf(), e))?;
        let kind = entry.file_type().map_err(|e| (entry.path(), e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(|e| (target.clone(), e))?;
        }
    }
    Ok(())
}
