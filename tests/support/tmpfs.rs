//! A small tmpfs mounted for one test: a filesystem of a chosen size that the
//! test can fill (a full disk, a USB stick, a state folder too small for an
//! outbox) without touching the machine's own disks.
//!
//! Needs root (`mount -t tmpfs`); [`mount_or_skip`] says SKIPPED elsewhere,
//! or fails under `IOMT_REQUIRE_ALL=1` ([`super::skip`]). No loop device is
//! involved: tmpfs needs none, and its `size=` is a hard limit (a write past
//! it fails with `ENOSPC`).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at [`Tmpfs::path`], unmounted when dropped (lazily,
/// `umount -l`: a gateway that still holds a file open there does not keep
/// the mount alive in the test's folder, which the temporary folder's own
/// cleanup then removes).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Unmounts it now, lazily (as a USB stick pulled out under a program
    /// that holds a file on it: the program's open file lives on, detached,
    /// where no one can reach it by name); fails the test if `umount` does.
    /// The guard is used up, so it cannot unmount a later mount at the same
    /// place.
    pub fn pull_out(self) {
        let at = self.0.clone();
        std::mem::forget(self);
        let status = Command::new("umount").arg("-l").arg(&at).status();
        assert!(status.as_ref().is_ok_and(|s| s.success()), "umount -l {}: {status:?}", at.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `768k`, `2m`,
/// `24m`) at `at`, making the folder first if it is missing. Where this
/// machine cannot (not root, no `mount`), says why through [`super::skip`]
/// for `test` and returns `None`.
pub fn mount_or_skip(test: &str, at: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(at).unwrap();
    let why = match Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output() {
        Ok(out) if out.status.success() => return Some(Tmpfs(at.to_path_buf())),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("cannot run mount: {e}"),
    };
    super::skip(test, format!("cannot mount a tmpfs (needs root): {why}"));
    None
}

/// Writes a new file at `path` until its filesystem is full (the write
/// fails with `ENOSPC`, any other error fails the test); returns how many
/// bytes it wrote.
pub fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    written
}
