//! Small file-system helpers shared by every stage that keeps state on disk.
//!
//! Why a hand-written part: `std::fs::write` followed by `rename` is atomic
//! for readers but not durable. After a power cut on ext4 (default
//! `data=ordered`, and more so with delayed allocation) or on an SD card, the
//! rename can reach the disk before the data, leaving an empty or truncated
//! file, or the rename itself can be lost and the old contents come back.
//! The POSIX recipe for a durable replace is: write a temporary file in the
//! same directory, `fsync` it, `rename` it over the target, then `fsync` the
//! directory so the new directory entry is on disk too (see fsync(2) and
//! rename(2): "calling fsync() does not necessarily ensure that the entry in
//! the directory containing the file has also reached disk; for that an
//! explicit fsync() on a file descriptor for the directory is also needed").

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` so that after a crash or power cut the file
/// holds either the old contents or the new ones, never a mix, an empty file,
/// or a rewound version.
///
/// Steps: write `<name>.tmp` next to `path`, `fsync` it, rename it over
/// `path`, `fsync` the directory (Unix; elsewhere the rename is the last
/// step). The temporary name is fixed, so a crash leaves at most one stale
/// `.tmp` file, which the next write replaces; callers must therefore not
/// write the same `path` from two threads at once (hold a lock around the
/// call).
///
/// Errors: any I/O error of these steps (directory missing, disk full,
/// read-only file system...). On error before the rename, `path` is untouched
/// and the temporary file is removed. An error from the final directory sync
/// means the new contents are in place but may not survive a power cut.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent(path))
}

/// `dir/<name>.tmp` for `dir/<name>`.
fn temp_path(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(parent(path).join(tmp))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or a new file in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_durable(&p, b"first").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_durable(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        write_durable(&p, b"3").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"3", "a shorter write must not keep the old tail");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_leftover_temporary_from_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(dir.path().join("a.json.tmp"), b"half a docu").unwrap();
        write_durable(&p, b"whole").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert!(!dir.path().join("a.json.tmp").exists());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temporary was written.
        let p = dir.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"keep").unwrap();
        assert!(write_durable(&p, b"new").is_err());
        assert_eq!(std::fs::read(p.join("x")).unwrap(), b"keep");
        assert!(!dir.path().join("taken.tmp").exists(), "the temporary is cleaned up");
        // A missing directory is an error, not a panic.
        assert!(write_durable(&dir.path().join("no/such/dir/f.json"), b"x").is_err());
        assert!(write_durable(Path::new("/"), b"x").is_err());
    }
}
