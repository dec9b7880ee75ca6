//! How much the outbox may hold: the smaller of `max_bytes` and what the
//! state filesystem can hold.
//!
//! Why this exists: `max_bytes` (default 256 MiB) can be larger than an SD
//! card partition or a small state filesystem. Before, the store then filled
//! its own disk: sled refused every write, could not even reopen (sled writes
//! when it opens), drop-oldest never triggered because `max_bytes` was never
//! reached, and nothing was delivered any more. Now the bound is
//!
//! ```text
//! disk budget = store's own disk usage + free space (statvfs f_bavail) - reserve
//! bound       = min(max_bytes, (disk budget - SLED_FIXED_BYTES) / SLED_AMPLIFICATION)
//! ```
//!
//! The budget counts the store's own usage, so it does not move when the
//! store grows or shrinks; only other files on the filesystem (or freeing
//! them) move it. The bound counts what `max_bytes` counts (the readings'
//! stored records), while sled's log on disk is a multiple of that: sled is
//! log-structured and keeps old versions of its pages until it cleans a
//! segment (512 KiB each). Measured with the gateway's own traffic (two
//! simulated devices, 200 readings/s, drop-oldest churn at a 1 MiB bound, the
//! sink down): 0.7 MiB of records took 4.1 MiB on disk, 1 MiB took 4.5 to 5.6
//! MiB. [`SLED_FIXED_BYTES`] + [`SLED_AMPLIFICATION`] × records stays above
//! every figure measured.
//!
//! The reserve ([`reserve_for`]) is kept free for what must still be written
//! when the outbox is at its bound: sled's snapshot at open, the status file,
//! the lock files; and it lets the gateway start again after a stop at the
//! bound. The copy of the log taken before sled opens it is skipped when it
//! would eat into the reserve.

use std::path::Path;

/// Free space kept on the state filesystem: 5 % of its size, at least
/// 256 KiB, at most 64 MiB.
pub const RESERVE_MIN: u64 = 256 << 10;
pub const RESERVE_MAX: u64 = 64 << 20;
/// What sled's log takes on disk besides the multiple of the records: two
/// segments of 512 KiB (the one being written and one being cleaned).
pub const SLED_FIXED_BYTES: u64 = 1 << 20;
/// Bytes of sled's log on disk per byte of stored records, at most (see the
/// module docs for the measurement).
pub const SLED_AMPLIFICATION: u64 = 5;

/// The least bound a state filesystem must give when it is empty: about 300
/// readings. A filesystem smaller than [`smallest_filesystem`] would bound the
/// outbox below this (to 0 on 1 MiB), so every reading would be dropped as
/// soon as the next one is committed, even with the destination up;
/// `check-config` and `run` refuse such a state folder instead.
pub const MIN_BOUND: u64 = 64 << 10;

/// The smallest state filesystem (bytes) that holds [`MIN_BOUND`] of records:
/// sled's fixed part, the amplification and the (minimum) reserve.
pub fn smallest_filesystem() -> u64 {
    MIN_BOUND * SLED_AMPLIFICATION + SLED_FIXED_BYTES + RESERVE_MIN
}

/// The reserve kept free on a filesystem of `total` bytes.
pub fn reserve_for(total: u64) -> u64 {
    (total / 20).clamp(RESERVE_MIN, RESERVE_MAX)
}

pub use crate::model::status::{Bound, BoundBy};

impl Bound {
    /// A bound by `max_bytes` alone (the filesystem could not be asked).
    pub fn max_bytes_only(max_bytes: u64) -> Bound {
        Bound { bytes: max_bytes, by: BoundBy::MaxBytes, max_bytes, fs_bytes: 0, fs_free: 0, reserve: 0 }
    }

    /// One sentence: `outbox bounded to 1.8 MiB by free space on /var/lib/iomt-edge (max_bytes 256.0 MiB)`.
    pub fn describe(&self, state_fs: &Path) -> String {
        use crate::config::units::ByteSize;
        match self.by {
            BoundBy::MaxBytes => format!("outbox bounded to {} by max_bytes", ByteSize(self.bytes)),
            BoundBy::FreeSpace => format!(
                "outbox bounded to {} by free space on {} (max_bytes {}; {} free of {}, {} kept in reserve, the store takes up to {}x its records on disk)",
                ByteSize(self.bytes),
                state_fs.display(),
                ByteSize(self.max_bytes),
                ByteSize(self.fs_free),
                ByteSize(self.fs_bytes),
                ByteSize(self.reserve),
                SLED_AMPLIFICATION
            ),
        }
    }
}

/// The bound (pure): `max_bytes` from the config, `store_disk` the bytes the
/// store's files take on disk now, `fs_total` and `fs_free` the filesystem's
/// size and the space free for the service (statvfs `f_blocks`, `f_bavail`,
/// times `f_frsize`). Saturating everywhere: any input gives an answer.
pub fn effective_bound(max_bytes: u64, store_disk: u64, fs_total: u64, fs_free: u64) -> Bound {
    let reserve = reserve_for(fs_total);
    let budget = store_disk.saturating_add(fs_free).saturating_sub(reserve);
    let by_disk = budget.saturating_sub(SLED_FIXED_BYTES) / SLED_AMPLIFICATION;
    let (bytes, by) = if by_disk < max_bytes { (by_disk, BoundBy::FreeSpace) } else { (max_bytes, BoundBy::MaxBytes) };
    Bound { bytes, by, max_bytes, fs_bytes: fs_total, fs_free, reserve }
}

/// (size, free for unprivileged users) of the filesystem holding `path`, bytes.
pub fn fs_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = s.f_frsize as u64;
    Ok(((s.f_blocks as u64).saturating_mul(unit), (s.f_bavail as u64).saturating_mul(unit)))
}

/// Bytes the files under `dir` take on disk (allocated blocks, as the
/// filesystem counts them); 0 for a folder that does not exist.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(m.blocks().saturating_mul(512));
            }
        }
    }
    total
}

/// The bound for an outbox in `dir` (which may not exist yet: then its
/// nearest existing parent's filesystem is asked). Falls back to `max_bytes`
/// alone if the filesystem cannot be asked.
pub fn bound_for(dir: &Path, max_bytes: u64) -> Bound {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => break,
        }
    }
    match fs_space(probe) {
        // A filesystem that reports no size (a FUSE filesystem without
        // statfs) cannot tell its free space: as when it cannot be asked.
        Ok((0, _)) => Bound::max_bytes_only(max_bytes),
        Ok((total, free)) => effective_bound(max_bytes, disk_usage(dir), total, free),
        Err(e) => {
            tracing::debug!("cannot ask the filesystem of {} for its free space ({e})", dir.display());
            Bound::max_bytes_only(max_bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_large_disk_leaves_max_bytes_in_charge() {
        let b = effective_bound(256 * MIB, 10 * MIB, 32 << 30, 20 << 30);
        assert_eq!(b.bytes, 256 * MIB);
        assert_eq!(b.by, BoundBy::MaxBytes);
        assert_eq!(b.reserve, RESERVE_MAX, "5 % of 32 GiB is above the cap");
    }

    #[test]
    fn a_small_disk_bounds_the_outbox_below_max_bytes() {
        // A 3 MiB state filesystem, empty: 3 MiB - 256 KiB reserve - 1 MiB
        // fixed, divided by the amplification.
        let b = effective_bound(256 * MIB, 0, 3 * MIB, 3 * MIB);
        assert_eq!(b.by, BoundBy::FreeSpace);
        assert_eq!(b.reserve, RESERVE_MIN);
        assert_eq!(b.bytes, (3 * MIB - RESERVE_MIN - SLED_FIXED_BYTES) / SLED_AMPLIFICATION);
        // Worst case on disk stays inside the filesystem, reserve kept.
        assert!(SLED_FIXED_BYTES + SLED_AMPLIFICATION * b.bytes + b.reserve <= 3 * MIB);
    }

    #[test]
    fn the_bound_does_not_move_when_the_store_itself_grows() {
        // The store growing by X takes X from the free space: same budget.
        let a = effective_bound(256 * MIB, MIB, 64 * MIB, 40 * MIB);
        let b = effective_bound(256 * MIB, 5 * MIB, 64 * MIB, 36 * MIB);
        assert_eq!(a, Bound { fs_free: a.fs_free, ..b });
        // Another file taking space lowers it.
        let c = effective_bound(256 * MIB, MIB, 64 * MIB, 20 * MIB);
        assert!(c.bytes < a.bytes);
    }

    #[test]
    fn a_full_disk_or_a_tiny_one_gives_zero_not_an_underflow() {
        assert_eq!(effective_bound(256 * MIB, 0, 3 * MIB, 0).bytes, 0);
        assert_eq!(effective_bound(256 * MIB, 0, 0, 0).bytes, 0);
        assert_eq!(effective_bound(256 * MIB, 100, 512 << 10, 400 << 10).bytes, 0);
        assert_eq!(effective_bound(0, 0, 3 * MIB, 3 * MIB).bytes, 0);
    }

    #[test]
    fn extreme_values_saturate() {
        let b = effective_bound(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(b.by, BoundBy::FreeSpace);
        assert_eq!(b.bytes, (u64::MAX - RESERVE_MAX - SLED_FIXED_BYTES) / SLED_AMPLIFICATION);
        assert_eq!(effective_bound(1, u64::MAX, 0, u64::MAX).bytes, 1);
        assert_eq!(effective_bound(u64::MAX, 0, u64::MAX, 0).bytes, 0);
        assert_eq!(reserve_for(0), RESERVE_MIN);
        assert_eq!(reserve_for(u64::MAX), RESERVE_MAX);
    }

    #[test]
    fn the_sentence_names_the_filesystem_and_max_bytes() {
        let b = effective_bound(256 * MIB, 0, 3 * MIB, 3 * MIB);
        let s = b.describe(Path::new("/var/lib/iomt-edge"));
        assert!(s.starts_with("outbox bounded to ") && s.contains("by free space on /var/lib/iomt-edge (max_bytes 256.0 MiB"), "{s}");
        let b = effective_bound(256 * MIB, 0, 32 << 30, 20 << 30);
        assert_eq!(b.describe(Path::new("/x")), "outbox bounded to 256.0 MiB by max_bytes");
    }

    #[test]
    fn the_smallest_filesystem_gives_the_least_bound() {
        let min = smallest_filesystem();
        assert_eq!(effective_bound(256 * MIB, 0, min, min).bytes, MIN_BOUND);
        assert!(effective_bound(256 * MIB, 0, min - 1, min - 1).bytes < MIN_BOUND);
        assert_eq!(effective_bound(256 * MIB, 0, MIB, MIB).bytes, 0, "1 MiB holds no outbox at all");
    }

    #[test]
    fn a_filesystem_that_reports_no_size_leaves_max_bytes_in_charge() {
        // /proc reports 0 blocks, as a FUSE filesystem without statfs does.
        let b = bound_for(Path::new("/proc/self"), 256 * MIB);
        assert_eq!((b.bytes, b.by), (256 * MIB, BoundBy::MaxBytes));
    }

    #[test]
    fn a_real_folder_is_measured() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![1u8; 10_000]).unwrap();
        assert!(disk_usage(d.path()) >= 8192);
        assert_eq!(disk_usage(&d.path().join("missing")), 0);
        let b = bound_for(&d.path().join("not-yet").join("outbox"), 1 << 20);
        assert!(b.fs_bytes > 0, "the nearest existing parent's filesystem was asked");
    }
}
