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
//! fixed       = SLED_FIXED_SEGMENTS x the store's segment + the commit journal
//! bound       = min(max_bytes, (disk budget - fixed) / SLED_AMPLIFICATION)
//! ```
//!
//! The budget counts the store's own usage, so it does not move when the
//! store grows or shrinks; only other files on the filesystem (or freeing
//! them) move it. The bound counts what `max_bytes` counts (the readings'
//! stored records), while sled's log on disk is a multiple of that: sled is
//! log-structured and keeps old versions of its pages until it cleans a
//! segment. The segment is the store's own, as sled recorded it in its
//! `conf` ([`store_segment`]); sled refuses to open a store with another.
//! Measured with the gateway's own traffic (two simulated devices, 200
//! readings/s, drop-oldest churn at a 1 MiB bound, the sink down): 0.7 MiB
//! of records took 4.1 MiB on disk, 1 MiB took 4.5 to 5.6 MiB, with 512 KiB
//! segments. [`fixed_bytes`] + [`SLED_AMPLIFICATION`] × records stays above
//! every figure measured.
//!
//! Smaller segments were measured too (`measure_the_stores_room_on_disk_per_record`
//! in `tests/integration/outbox_small_disk.rs`: groups of 20 readings, drop-oldest churn
//! for 12,000 readings, then a burst of 4,096), peak of the store's files:
//!
//! | records bound | 64 KiB segments | 512 KiB segments |
//! |---|---|---|
//! | 64 KiB | 580 KiB | 2,628 KiB |
//! | 128 KiB | 772 KiB | 2,628 KiB |
//! | 256 KiB | 1,220 KiB | 2,628 KiB |
//! | 512 KiB | 1,940 KiB (2,244 after the burst) | 3,140 KiB |
//! | 1 MiB | 3,012 KiB | 4,676 KiB |
//!
//! With 64 KiB segments the model (6 segments + the 64 KiB journal + 5×)
//! lets a 2 MiB filesystem hold 269 KiB of records and needs 1.0 MiB at
//! least, so a store made on a filesystem under [`SMALL_SEGMENTS_BELOW`]
//! gets them (see [`SMALL_SEGMENTS_FOR_NEW_STORES`]); a store with sled's
//! default segments needs 4.4 MiB.
//!
//! The reserve ([`reserve_for`]) is kept free for what must still be written
//! when the outbox is at its bound: sled's snapshot at open, the status file,
//! the lock files; and it lets the gateway start again after a stop at the
//! bound. The copy of the log taken before sled opens it is skipped when it
//! would eat into the reserve.

use std::path::{Path, PathBuf};

/// sled 0.34's default log segment (its `segment_size`, sled's `config.rs`):
/// the segment of every store made on a filesystem of [`SMALL_SEGMENTS_BELOW`]
/// or more, and of every store made before smaller segments were chosen.
/// sled allocates its log a segment at a time and reuses a segment only once
/// everything in it was rewritten elsewhere.
pub const SEGMENT_DEFAULT: u64 = 512 << 10;
/// The segment of a store made on a filesystem smaller than
/// [`SMALL_SEGMENTS_BELOW`]: what sled keeps beyond the records is a number
/// of segments ([`SLED_FIXED_SEGMENTS`]), so smaller segments let a 2 MiB
/// filesystem hold an outbox. sled requires a power of two of at least 256
/// bytes and stores larger than a quarter segment as separate blob files
/// (`pagecache/logger.rs`); the outbox's values (a reading, a few hundred
/// bytes) and sled's nodes (at most 16 entries in a leaf) stay far below
/// that.
pub const SEGMENT_SMALL: u64 = 64 << 10;
/// A store made on a filesystem smaller than this gets [`SEGMENT_SMALL`]
/// segments ([`SMALL_SEGMENTS_FOR_NEW_STORES`]).
/// sled records a store's segment in its `conf` file and refuses to open the
/// store with another, so the choice is made once, at creation
/// ([`segment_to_open`]); a larger filesystem keeps sled's default (what the
/// SD-card wear and power-cut figures were measured with).
pub(crate) const SMALL_SEGMENTS_BELOW: u64 = 16 << 20;
/// Whether a new store on a filesystem under [`SMALL_SEGMENTS_BELOW`] gets
/// [`SEGMENT_SMALL`] segments. On. It was off for a while: with the state
/// filesystem filled and freed under the running gateway, 64 to 913
/// committed readings went missing in most runs of
/// `tests/integration/outbox_small_disk.rs` (two tests at once). The cause was the
/// outbox's checkpoint, not sled: a refused write or a kill in the middle of
/// one left in sled the removals of the group being committed without the
/// counters, and with 64 KiB segments sled writes its buffer several times
/// within a checkpoint. Every removal now goes in the checkpoint's last sled
/// batch, with the counters (`Store::checkpoint` in `mod.rs`), and the same
/// cases kept every reading in every run since.
pub(crate) const SMALL_SEGMENTS_FOR_NEW_STORES: bool = true;
/// The least reserve, whatever the segment: room for sled's index snapshot
/// at open (a few KiB per thousand pages), the status file and the lock
/// files next to a full outbox.
pub(crate) const RESERVE_FLOOR: u64 = 256 << 10;
pub(crate) const RESERVE_MAX: u64 = 64 << 20;
/// How many segments sled's log takes on disk besides the multiple of the
/// records. sled 0.34 cleans a segment only once at most half of it is live,
/// defers the reuse of a cleaned one until the segment its pages moved to is
/// complete, and relocates pages eagerly only with more than five inactive
/// segments (`SEGMENT_CLEANUP_THRESHOLD`, `deactivate_segment` in sled's
/// `pagecache/segment.rs`). Measured with 512 KiB segments on a 3 MiB
/// filesystem with drop-oldest churn (two simulated devices, 200
/// readings/s, the sink down): the log grew at about 400 KiB/s to 5
/// segments (2.5 MiB) whether the records were bounded to 100 KiB, 204 KiB
/// or 358 KiB, and a burst (the backlog held in memory while the disk was
/// full, written at once) took it to a sixth, which filled the filesystem.
/// With 64 KiB segments see the module docs.
pub(crate) const SLED_FIXED_SEGMENTS: u64 = 6;
/// Bytes of sled's log on disk per byte of stored records, at most (see the
/// module docs for the measurement).
pub(crate) const SLED_AMPLIFICATION: u64 = 5;
/// How much sled's files must grow, while the free space is under the
/// reserve, before the bound is tightened again (a snapshot rewritten at a
/// new size is not growth).
pub(crate) const GROWTH_STEP: u64 = 64 << 10;
// The reserve holds two segments at least (one burst of log writes past the
// model still leaves room to open the store), and the spare fits in it.
const _: () = assert!(reserve_min(SEGMENT_DEFAULT) >= 2 * SEGMENT_DEFAULT && spare_bytes(SEGMENT_DEFAULT) <= reserve_min(SEGMENT_DEFAULT));
const _: () = assert!(reserve_min(SEGMENT_SMALL) >= 2 * SEGMENT_SMALL && spare_bytes(SEGMENT_SMALL) <= reserve_min(SEGMENT_SMALL));
const _: () = assert!(SEGMENT_SMALL.is_power_of_two() && SEGMENT_DEFAULT.is_power_of_two());

/// The least free space kept on the state filesystem of a store with
/// `segment`-byte segments: two segments, and at least [`RESERVE_FLOOR`].
/// Two segments: measured on a 3 MiB filesystem with 512 KiB segments,
/// sled's log went from 4 to 5 segments in one burst of writes (the backlog
/// held in memory while the disk was full, written at once) before its
/// cleaner caught up; with one segment of reserve that burst filled the
/// filesystem about 1 run in 4.
pub(crate) const fn reserve_min(segment: u64) -> u64 {
    let two = segment.saturating_mul(2);
    if two > RESERVE_FLOOR {
        two
    } else {
        RESERVE_FLOOR
    }
}

/// The spare file kept beside the outbox (`{outbox}.spare`) on a filesystem
/// that bounds the outbox: half the least reserve (a segment, or 128 KiB),
/// part of the reserve, held as a file so that it can be given back when
/// sled has no room to open (see [`release_spare`]).
pub(crate) const fn spare_bytes(segment: u64) -> u64 {
    reserve_min(segment) / 2
}

/// The commit journal's file (`outbox/journal`) on a filesystem of `total`
/// bytes, at most: 1 MiB (written with zeros) where 64 MiB are free when the
/// store opens, 64 KiB (grown as written) elsewhere; a filesystem of 64 MiB
/// or less never has 64 MiB free.
pub fn journal_bytes(total: u64) -> u64 {
    if total > super::ZEROS_MIN_FREE {
        super::JOURNAL_BYTES
    } else {
        super::JOURNAL_BYTES_SMALL
    }
}

/// What the store takes on disk besides [`SLED_AMPLIFICATION`] × its
/// records, on a filesystem of `total` bytes with `segment`-byte segments:
/// sled's [`SLED_FIXED_SEGMENTS`] segments and the commit journal.
pub(crate) fn fixed_bytes(segment: u64, total: u64) -> u64 {
    segment.saturating_mul(SLED_FIXED_SEGMENTS).saturating_add(journal_bytes(total))
}

/// The least bound a state filesystem must give when it is empty: about 300
/// readings. A filesystem smaller than [`smallest_filesystem`] would bound the
/// outbox below this (to 0 on 512 KiB), so every reading would be dropped as
/// soon as the next one is committed, even with the destination up;
/// `check-config` and `run` refuse such a state folder instead.
pub(crate) const MIN_BOUND: u64 = 64 << 10;

/// The smallest state filesystem (bytes) that holds [`MIN_BOUND`] of records
/// in a store with `segment`-byte segments: the fixed part, the
/// amplification and the (minimum) reserve. A new store there gets
/// [`SEGMENT_SMALL`] segments: `smallest_filesystem(SEGMENT_SMALL)` is the
/// least a state folder needs.
pub fn smallest_filesystem(segment: u64) -> u64 {
    let least = MIN_BOUND * SLED_AMPLIFICATION + fixed_bytes(segment, 0) + reserve_min(segment);
    // Where 5 % of the filesystem is more than the least reserve, a few
    // pages more.
    (0..4096u64).map(|pages| least + pages * 4096).find(|fs| effective_bound(u64::MAX, 0, *fs, *fs, segment).bytes >= MIN_BOUND).unwrap_or(least)
}

/// The reserve kept free on a filesystem of `total` bytes by a store with
/// `segment`-byte segments: 5 % of the filesystem, at least
/// [`reserve_min`], at most [`RESERVE_MAX`] (unless two segments are more).
pub fn reserve_for(total: u64, segment: u64) -> u64 {
    (total / 20).min(RESERVE_MAX).max(reserve_min(segment))
}

/// The segment a new store gets on a filesystem of `total` bytes (0:
/// unknown): [`SEGMENT_SMALL`] under [`SMALL_SEGMENTS_BELOW`] (while
/// [`SMALL_SEGMENTS_FOR_NEW_STORES`]), else sled's default.
pub(crate) fn segment_for_new_store(total: u64) -> u64 {
    if SMALL_SEGMENTS_FOR_NEW_STORES && total > 0 && total < SMALL_SEGMENTS_BELOW {
        SEGMENT_SMALL
    } else {
        SEGMENT_DEFAULT
    }
}

/// The segment of the store in `dir` as sled recorded it (`segment_size:` in
/// its `conf` file, which sled checks at every open and refuses to open the
/// store with another). Without a readable `conf` (damage: it is written and
/// synced when the store is made), the log tells: a valid sled segment
/// header (`pagecache/logger.rs`: CRC-32 of the next 16 bytes, the segment's
/// log sequence number, a multiple of the segment size) at
/// [`SEGMENT_SMALL`] means small segments; a longer log without one, the
/// default. `None`: no store there yet, or a log of one small segment at
/// most (which reads the same with either size).
pub fn store_segment(dir: &Path) -> Option<u64> {
    if let Ok(conf) = std::fs::read(dir.join("conf")) {
        let text = String::from_utf8_lossy(&conf);
        let parsed = text.lines().find_map(|l| l.strip_prefix("segment_size: ")).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(seg) = parsed.filter(|s| s.is_power_of_two() && *s >= 256) {
            return Some(seg);
        }
    }
    let len = std::fs::metadata(dir.join("db")).map(|m| m.len()).ok()?;
    let mut header = [0u8; 20];
    let read = std::fs::File::open(dir.join("db")).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut header, SEGMENT_SMALL)
    });
    if read.is_ok() && segment_header_at(&header, SEGMENT_SMALL) {
        return Some(SEGMENT_SMALL);
    }
    (len > SEGMENT_SMALL).then_some(SEGMENT_DEFAULT)
}

/// Whether `h` is a valid sled 0.34 segment header for a segment of
/// `segment` bytes (`SegmentHeader` in sled's `pagecache/logger.rs`: CRC-32
/// of bytes 4..20, stored little-endian and inverted; the log sequence
/// number, little-endian, XORed with `0x7FFF_FFFF_FFFF_FFFF`).
fn segment_header_at(h: &[u8; 20], segment: u64) -> bool {
    let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) ^ 0xFFFF_FFFF;
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[4..12]);
    let lsn = u64::from_le_bytes(lsn) ^ 0x7FFF_FFFF_FFFF_FFFF;
    crc32fast::hash(&h[4..20]) == stored && lsn % segment == 0
}

/// The segment to open the store in `dir` with: its own
/// ([`store_segment`]), or for a new store what its filesystem calls for
/// ([`segment_for_new_store`]; the nearest existing parent is asked).
pub fn segment_to_open(dir: &Path) -> u64 {
    store_segment(dir).unwrap_or_else(|| segment_for_new_store(fs_space(nearest_existing(dir)).map_or(0, |(total, _)| total)))
}

fn nearest_existing(dir: &Path) -> &Path {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => break,
        }
    }
    probe
}

pub(crate) use crate::model::status::{Bound, BoundBy};

impl Bound {
    /// A bound by `max_bytes` alone (the filesystem could not be asked).
    pub(crate) fn max_bytes_only(max_bytes: u64) -> Bound {
        Bound { bytes: max_bytes, by: BoundBy::MaxBytes, max_bytes, fs_bytes: 0, fs_free: 0, reserve: 0, tightened: false }
    }

    /// One sentence: `outbox bounded to 1.8 MiB by free space on /var/lib/iomt-edge (max_bytes 256.0 MiB)`.
    pub(crate) fn describe(&self, state_fs: &Path) -> String {
        use crate::config::units::ByteSize;
        match self.by {
            BoundBy::MaxBytes => format!("outbox bounded to {} by max_bytes", ByteSize(self.bytes)),
            BoundBy::FreeSpace if self.tightened => format!(
                "outbox bounded to {} by free space on {} (max_bytes {}; {} free of {}, under the {} kept in reserve: the store took more room on disk than {}x its records, so the bound was tightened)",
                ByteSize(self.bytes),
                state_fs.display(),
                ByteSize(self.max_bytes),
                ByteSize(self.fs_free),
                ByteSize(self.fs_bytes),
                ByteSize(self.reserve),
                SLED_AMPLIFICATION
            ),
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
/// times `f_frsize`), `segment` the store's sled segment
/// ([`segment_to_open`]). Saturating everywhere: any input gives an answer.
pub(crate) fn effective_bound(max_bytes: u64, store_disk: u64, fs_total: u64, fs_free: u64, segment: u64) -> Bound {
    let reserve = reserve_for(fs_total, segment);
    let budget = store_disk.saturating_add(fs_free).saturating_sub(reserve);
    let by_disk = budget.saturating_sub(fixed_bytes(segment, fs_total)) / SLED_AMPLIFICATION;
    let (bytes, by) = if by_disk < max_bytes { (by_disk, BoundBy::FreeSpace) } else { (max_bytes, BoundBy::MaxBytes) };
    Bound { bytes, by, max_bytes, fs_bytes: fs_total, fs_free, reserve, tightened: false }
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
/// alone if the filesystem cannot be asked. The spare file beside the outbox
/// ([`spare_bytes`]) is the outbox's own reserve: it counts as free space.
pub(crate) fn bound_for(dir: &Path, max_bytes: u64) -> Bound {
    bound_and_usage(dir, max_bytes).bound
}

/// One look at the state filesystem ([`bound_and_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Look {
    /// The modelled bound.
    pub(crate) bound: Bound,
    /// Bytes the store's files take on disk now.
    pub(crate) store_disk: u64,
    /// The store's sled segment, bytes ([`segment_to_open`]).
    pub(crate) segment: u64,
}

/// [`bound_for`], the bytes the store's files take on disk now, and the
/// store's segment.
pub(crate) fn bound_and_usage(dir: &Path, max_bytes: u64) -> Look {
    let probe = nearest_existing(dir);
    let usage = disk_usage(dir);
    let space = fs_space(probe);
    let segment = store_segment(dir).unwrap_or_else(|| segment_for_new_store(space.as_ref().map_or(0, |(total, _)| *total)));
    let bound = match space {
        // A filesystem that reports no size (a FUSE filesystem without
        // statfs) cannot tell its free space: as when it cannot be asked.
        Ok((0, _)) => Bound::max_bytes_only(max_bytes),
        Ok((total, free)) => effective_bound(max_bytes, usage, total, free.saturating_add(spare_usage(dir)), segment),
        Err(e) => {
            tracing::debug!("cannot ask the filesystem of {} for its free space ({e})", dir.display());
            Bound::max_bytes_only(max_bytes)
        }
    };
    Look { bound, store_disk: usage, segment }
}

/// Tightens the modelled bound when the store takes more room than the
/// model says, so that `when_full` acts before the disk is full.
///
/// Why: sled's use of its log is not a fixed multiple of the records. It
/// reuses a segment (512 KiB, or 64 KiB on a small filesystem) only when everything in it was rewritten
/// elsewhere, and it cleans a segment only once at most half of it is live
/// (sled 0.34 `SEGMENT_CLEANUP_THRESHOLD`), so a burst of writes (a backlog
/// held in memory while the disk was full, written at once, with drop-oldest
/// churn) can take several segments before the cleaner catches up. Measured
/// on a 3 MiB filesystem under load, the log reached 5 segments (2.5 MiB) and,
/// about 1 run in 4, a sixth that filled the filesystem, with the outbox
/// within its modelled bound; a restart then had no room to open.
///
/// The signal is growth: each time the store's files have grown by
/// [`GROWTH_STEP`] since the last look while the free space (the spare file
/// counted) is under the reserve, and the model thinks the records fit, the
/// bound becomes 3/4 of the smaller of itself and what is queued (never
/// below [`MIN_BOUND`]` / 2`). Growth, not the free space alone, because sled
/// keeps segments it freed inside its file (it only shortens the file at
/// its end): the free space stays low after a burst even when sled has room
/// inside, and tightening on that alone would ratchet the bound down for
/// ever. With a segment more than the reserve free again (another file
/// removed), the bound relaxes by 1/8 a look until the model is in charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Feedback {
    /// The tightened bound, bytes of records; `None`: the model is in charge.
    cap: Option<u64>,
    /// The store's disk usage the growth is measured from (`None` before
    /// the first look).
    disk_from: Option<u64>,
}

impl Feedback {
    /// One look (pure): `model` the modelled bound, `queued_bytes` the
    /// records stored now (what the bound counts), `store_disk` the bytes the
    /// store's files take, `segment` the store's sled segment. Returns the
    /// bound in force (`model`, or less with `tightened` set).
    pub(crate) fn apply(&mut self, model: Bound, queued_bytes: u64, store_disk: u64, segment: u64) -> Bound {
        if model.fs_bytes == 0 {
            // The filesystem cannot be asked: no feedback either.
            *self = Feedback::default();
            return model;
        }
        let from = *self.disk_from.get_or_insert(store_disk);
        if model.fs_free < model.reserve {
            // Only the store's own growth: a foreign file lowers the model
            // itself (then the records no longer fit it).
            if store_disk >= from.saturating_add(GROWTH_STEP) && queued_bytes <= model.bytes {
                let floor = (MIN_BOUND / 2).min(model.bytes);
                let base = self.cap.unwrap_or(model.bytes).min(queued_bytes);
                self.cap = Some((base / 4 * 3).max(floor));
                self.disk_from = Some(store_disk);
            }
        } else {
            self.disk_from = Some(store_disk);
            if model.fs_free >= model.reserve.saturating_add(segment) {
                self.cap = self.cap.map(|c| c.saturating_add((c / 8).max(4096))).filter(|c| *c < model.bytes);
            }
        }
        match self.cap {
            Some(cap) if cap < model.bytes => Bound { bytes: cap, by: BoundBy::FreeSpace, tightened: true, ..model },
            _ => model,
        }
    }

    /// Whether the bound is tightened now.
    pub(crate) fn is_tightened(&self) -> bool {
        self.cap.is_some()
    }
}

/// `{outbox}.spare`, beside the outbox folder `dir`.
pub fn spare_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".spare");
    dir.with_file_name(name)
}

/// Bytes the spare file beside the outbox `dir` takes on disk (0 if none).
pub(crate) fn spare_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(spare_path(dir)).map_or(0, |m| m.blocks().saturating_mul(512))
}

/// Keeps the spare file beside the outbox `dir` when the filesystem bounds
/// the outbox (`bound.by` is [`BoundBy::FreeSpace`]) and there is room for
/// it without going under the reserve; removes it when `max_bytes` is the
/// bound (a large disk needs none). Best effort, returns whether it exists.
///
/// Why a file: free space cannot be set aside otherwise, and sled must write
/// to open a store (its index snapshot, the start of a new log segment). If
/// the store itself filled the filesystem (sled's log grew past the model),
/// a start would otherwise wait for room for ever; [`release_spare`] gives
/// this room back so that it can open, after which the bound drops the
/// oldest readings (counted) until the store fits again. Only a start gives
/// it back: while running, a full disk is waited out. `segment` is the
/// store's sled segment ([`spare_bytes`]).
pub(crate) fn keep_spare(dir: &Path, bound: &Bound, segment: u64) -> bool {
    let path = spare_path(dir);
    if bound.by != BoundBy::FreeSpace || bound.fs_bytes == 0 {
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        return false;
    }
    let spare = spare_bytes(segment);
    if spare_usage(dir) >= spare {
        return true;
    }
    // `fs_free` counts the spare: creating it moves space from free to
    // spare. Created only with the reserve and the spare's size more free.
    let real_free = bound.fs_free.saturating_sub(spare_usage(dir));
    if real_free < bound.reserve.saturating_add(spare) || !dir.parent().is_some_and(Path::is_dir) {
        return false;
    }
    match allocate(&path, spare) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("cannot keep the spare file {} ({e})", path.display());
            let _ = std::fs::remove_file(&path);
            false
        }
    }
}

/// Removes the spare file beside the outbox `dir`; returns the bytes given
/// back (0 if there was none).
pub(crate) fn release_spare(dir: &Path) -> u64 {
    let freed = spare_usage(dir);
    match std::fs::remove_file(spare_path(dir)) {
        Ok(()) => freed,
        Err(_) => 0,
    }
}

/// Creates `path` with `len` bytes allocated on disk (`posix_fallocate`,
/// which glibc carries out by writing where the filesystem cannot allocate).
fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a descriptor we own; no memory is involved.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const L: u64 = SEGMENT_DEFAULT;
    const S: u64 = SEGMENT_SMALL;

    #[test]
    fn a_large_disk_leaves_max_bytes_in_charge() {
        let b = effective_bound(256 * MIB, 10 * MIB, 32 << 30, 20 << 30, L);
        assert_eq!(b.bytes, 256 * MIB);
        assert_eq!(b.by, BoundBy::MaxBytes);
        assert_eq!(b.reserve, RESERVE_MAX, "5 % of 32 GiB is above the cap");
    }

    #[test]
    fn a_small_disk_bounds_the_outbox_below_max_bytes() {
        // A 5 MiB state filesystem, empty, a store with sled's default
        // segments: 5 MiB - 1 MiB reserve - 3 MiB of segments - 64 KiB of
        // journal, divided by the amplification.
        let b = effective_bound(256 * MIB, 0, 5 * MIB, 5 * MIB, L);
        assert_eq!(b.by, BoundBy::FreeSpace);
        assert_eq!(b.reserve, reserve_min(L));
        assert_eq!(b.reserve, MIB);
        assert_eq!(fixed_bytes(L, 5 * MIB), 3 * MIB + (64 << 10));
        assert_eq!(b.bytes, (5 * MIB - MIB - 3 * MIB - (64 << 10)) / SLED_AMPLIFICATION);
        // Worst case on disk stays inside the filesystem, reserve kept.
        assert!(fixed_bytes(L, 5 * MIB) + SLED_AMPLIFICATION * b.bytes + b.reserve <= 5 * MIB);
        // A store with small segments may hold more.
        let small = effective_bound(256 * MIB, 0, 5 * MIB, 5 * MIB, S);
        assert_eq!(small.reserve, reserve_min(S));
        assert_eq!(small.bytes, (5 * MIB - reserve_min(S) - SLED_FIXED_SEGMENTS * S - (64 << 10)) / SLED_AMPLIFICATION);
        assert!(small.bytes > b.bytes);
        assert!(fixed_bytes(S, 5 * MIB) + SLED_AMPLIFICATION * small.bytes + small.reserve <= 5 * MIB);
    }

    #[test]
    fn the_bound_does_not_move_when_the_store_itself_grows() {
        // The store growing by X takes X from the free space: same budget.
        let a = effective_bound(256 * MIB, MIB, 64 * MIB, 40 * MIB, L);
        let b = effective_bound(256 * MIB, 5 * MIB, 64 * MIB, 36 * MIB, L);
        assert_eq!(a, Bound { fs_free: a.fs_free, ..b });
        // Another file taking space lowers it.
        let c = effective_bound(256 * MIB, MIB, 64 * MIB, 20 * MIB, L);
        assert!(c.bytes < a.bytes);
    }

    #[test]
    fn a_full_disk_or_a_tiny_one_gives_zero_not_an_underflow() {
        for seg in [S, L] {
            assert_eq!(effective_bound(256 * MIB, 0, 3 * MIB, 0, seg).bytes, 0);
            assert_eq!(effective_bound(256 * MIB, 0, 0, 0, seg).bytes, 0);
            assert_eq!(effective_bound(256 * MIB, 100, 512 << 10, 400 << 10, seg).bytes, 0);
            assert_eq!(effective_bound(0, 0, 3 * MIB, 3 * MIB, seg).bytes, 0);
        }
    }

    #[test]
    fn extreme_values_saturate() {
        let b = effective_bound(u64::MAX, u64::MAX, u64::MAX, u64::MAX, L);
        assert_eq!(b.by, BoundBy::FreeSpace);
        assert_eq!(b.bytes, (u64::MAX - RESERVE_MAX - 3 * MIB - MIB) / SLED_AMPLIFICATION);
        assert_eq!(effective_bound(1, u64::MAX, 0, u64::MAX, S).bytes, 1);
        assert_eq!(effective_bound(u64::MAX, 0, u64::MAX, 0, S).bytes, 0);
        // A segment no store has (sled refuses it) still gives an answer.
        assert_eq!(effective_bound(u64::MAX, 0, u64::MAX, u64::MAX, u64::MAX).bytes, 0);
        assert_eq!(effective_bound(u64::MAX, 0, 3 * MIB, 3 * MIB, 0).by, BoundBy::FreeSpace);
        assert_eq!(reserve_for(0, L), reserve_min(L));
        assert_eq!(reserve_for(0, S), RESERVE_FLOOR);
        assert_eq!(reserve_for(u64::MAX, L), RESERVE_MAX);
        assert_eq!(reserve_min(u64::MAX), u64::MAX);
        assert_eq!(fixed_bytes(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_sentence_names_the_filesystem_and_max_bytes() {
        let b = effective_bound(256 * MIB, 0, 3 * MIB, 3 * MIB, S);
        let s = b.describe(Path::new("/var/lib/iomt-edge"));
        assert!(s.starts_with("outbox bounded to ") && s.contains("by free space on /var/lib/iomt-edge (max_bytes 256.0 MiB"), "{s}");
        let b = effective_bound(256 * MIB, 0, 32 << 30, 20 << 30, L);
        assert_eq!(b.describe(Path::new("/x")), "outbox bounded to 256.0 MiB by max_bytes");
    }

    #[test]
    fn the_smallest_filesystem_gives_the_least_bound() {
        for seg in [S, L] {
            let min = smallest_filesystem(seg);
            assert!(effective_bound(256 * MIB, 0, min, min, seg).bytes >= MIN_BOUND);
            assert!(effective_bound(256 * MIB, 0, min - 1, min - 1, seg).bytes < MIN_BOUND);
        }
        // With sled's default segments (six of 512 KiB kept under churn) a
        // 3 MiB filesystem, which sled's log filled, holds no outbox...
        assert_eq!(smallest_filesystem(L), MIN_BOUND * SLED_AMPLIFICATION + 6 * L + (64 << 10) + MIB);
        assert!(effective_bound(256 * MIB, 0, 3 * MIB, 3 * MIB, L).bytes < MIN_BOUND);
        // ...while with small segments (what a new store gets there) 2 MiB
        // and 3 MiB are enough, the least far below 2 MiB.
        for fs in [2 * MIB, 3 * MIB] {
            assert!(effective_bound(256 * MIB, 0, fs, fs, S).bytes >= MIN_BOUND, "{fs}");
        }
        assert!(smallest_filesystem(S) < 2 * MIB);
        assert_eq!(effective_bound(256 * MIB, 0, 512 << 10, 512 << 10, S).bytes, 0, "512 KiB holds no outbox at all");
    }

    #[test]
    fn which_segment_a_new_store_gets_and_what_follows_from_the_segment() {
        let small = if SMALL_SEGMENTS_FOR_NEW_STORES { S } else { L };
        assert_eq!(segment_for_new_store(2 * MIB), small);
        assert_eq!(segment_for_new_store(SMALL_SEGMENTS_BELOW - 1), small);
        assert_eq!(segment_for_new_store(SMALL_SEGMENTS_BELOW), L);
        assert_eq!(segment_for_new_store(32 << 30), L);
        assert_eq!(segment_for_new_store(0), L, "unknown size: sled's default");
        // The reserve and the spare follow the segment.
        assert_eq!((reserve_min(L), spare_bytes(L)), (MIB, L));
        assert_eq!((reserve_min(S), spare_bytes(S)), (RESERVE_FLOOR, RESERVE_FLOOR / 2));
        assert_eq!(fixed_bytes(S, 2 * MIB), 6 * S + (64 << 10));
        assert_eq!(fixed_bytes(L, 1 << 30), 6 * L + MIB, "the prefilled 1 MiB journal where there is room");
    }

    /// What sled 0.34 writes as its `conf` (`StorageParameters::serialize`
    /// and a CRC-32, sled's `config.rs`).
    fn sled_conf(segment: u64) -> Vec<u8> {
        let mut out = format!("segment_size: {segment}\nuse_compression: false\nversion: 0.34\n").into_bytes();
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A sled 0.34 segment header for the segment starting at `lsn`.
    fn sled_header(lsn: u64) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[4..12].copy_from_slice(&(lsn ^ 0x7FFF_FFFF_FFFF_FFFF).to_le_bytes());
        // The segment's max stable lsn, 0 here, stored as sled stores it (xor).
        let max_stable_lsn = 0u64;
        h[12..20].copy_from_slice(&(max_stable_lsn ^ 0x7FFF_FFFF_FFFF_FFFF).to_le_bytes());
        let crc = crc32fast::hash(&h[4..20]) ^ 0xFFFF_FFFF;
        h[0..4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn a_stores_segment_is_read_from_its_conf_or_else_its_log() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("outbox");
        assert_eq!(store_segment(&dir), None, "no store yet");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("conf"), sled_conf(S)).unwrap();
        assert_eq!(store_segment(&dir), Some(S));
        std::fs::write(dir.join("conf"), sled_conf(L)).unwrap();
        assert_eq!(store_segment(&dir), Some(L));
        assert_eq!(segment_to_open(&dir), L, "an existing store keeps its own, whatever the filesystem");
        // No readable conf (damage): the log tells.
        std::fs::write(dir.join("conf"), b"garbage").unwrap();
        let mut log = vec![0u8; 3 * S as usize];
        log[..20].copy_from_slice(&sled_header(0));
        log[S as usize..S as usize + 20].copy_from_slice(&sled_header(S));
        std::fs::write(dir.join("db"), &log).unwrap();
        assert_eq!(store_segment(&dir), Some(S));
        // A longer log with no header at the small segment's start: sled's default.
        log[S as usize..S as usize + 20].fill(0x5A);
        std::fs::write(dir.join("db"), &log).unwrap();
        assert_eq!(store_segment(&dir), Some(L));
        // A header whose number is not a multiple of the segment is not one.
        log[S as usize..S as usize + 20].copy_from_slice(&sled_header(S + 1));
        std::fs::write(dir.join("db"), &log).unwrap();
        assert_eq!(store_segment(&dir), Some(L));
        // One small segment at most: either reads the same; the filesystem decides.
        std::fs::write(dir.join("db"), &log[..1000]).unwrap();
        assert_eq!(store_segment(&dir), None);
        std::fs::remove_file(dir.join("conf")).unwrap();
        assert_eq!(store_segment(&dir), None);
    }

    #[test]
    fn sled_refuses_another_segment_so_a_store_is_opened_with_its_own() {
        // Why the segment is read, never chosen again: sled checks it.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("outbox");
        {
            let db = sled::Config::new().path(&dir).segment_size(S as usize).open().unwrap();
            db.insert(b"k", vec![7u8; 300]).unwrap();
            db.flush().unwrap();
        }
        assert_eq!(store_segment(&dir), Some(S), "read from the conf sled wrote");
        let other = sled::Config::new().path(&dir).segment_size(L as usize).open();
        assert!(other.is_err(), "sled opened a store with another segment size");
        let db = sled::Config::new().path(&dir).segment_size(segment_to_open(&dir) as usize).open().unwrap();
        assert_eq!(db.get(b"k").unwrap().unwrap().len(), 300);
    }

    /// A bound at the model on a 16 MiB filesystem (1 MiB reserve), `free`
    /// bytes free, the store's files taking `store`.
    fn model(free: u64, store: u64) -> Bound {
        effective_bound(256 * MIB, store, 16 * MIB, free, L)
    }

    /// The store's usage the feedback tests start from.
    const D: u64 = 4 * MIB;

    #[test]
    fn the_bound_tightens_when_the_store_grows_under_the_reserve() {
        let mut f = Feedback::default();
        let m = model(8 * MIB, D);
        assert_eq!(f.apply(m, m.bytes, D, L), m, "room: the model is in charge");
        // The store's files grew by a segment and took the reserve, with the
        // records at the bound: tightened to 3/4, and said so.
        let m = model(reserve_min(L) - L / 2, D + L);
        let b = f.apply(m, m.bytes, D + L, L);
        assert!(b.tightened && b.by == BoundBy::FreeSpace, "{b:?}");
        assert_eq!(b.bytes, m.bytes / 4 * 3);
        // No further growth: the bound stays (sled keeps the segments it
        // freed inside its file, so the free space alone stays low).
        for _ in 0..100 {
            assert_eq!(f.apply(m, b.bytes, D + L, L).bytes, b.bytes, "no ratchet without growth");
        }
        // It grows again: tightened again, from what is queued.
        let c = f.apply(m, b.bytes, D + L + GROWTH_STEP, L);
        assert_eq!(c.bytes, b.bytes / 4 * 3);
        // Never below the floor.
        let mut disk = D + L + GROWTH_STEP;
        for _ in 0..100 {
            disk += GROWTH_STEP;
            let d = f.apply(m, m.bytes, disk, L);
            assert!(d.bytes >= MIN_BOUND / 2, "{d:?}");
        }
    }

    #[test]
    fn a_foreign_file_is_left_to_the_model_and_room_relaxes_the_bound() {
        let mut f = Feedback::default();
        f.apply(model(8 * MIB, D), 0, D, L);
        // Another file filled the disk: the model drops below what is
        // queued; the feedback does not tighten on top of it.
        let full = model(0, 2 * D);
        let queued = model(8 * MIB, D).bytes;
        assert!(full.bytes < queued);
        let b = f.apply(full, queued, 2 * D, L);
        assert!(!b.tightened && !f.is_tightened(), "{b:?}");
        // Tightened by growth, then the other file goes away: the bound
        // relaxes step by step back to the model.
        let m = model(reserve_min(L) - 1, D);
        f.apply(m, m.bytes, D, L);
        let t = f.apply(m, m.bytes, D + GROWTH_STEP, L);
        assert!(t.tightened);
        let roomy = model(reserve_min(L) + 2 * L, D + GROWTH_STEP);
        let mut last = t.bytes;
        for _ in 0..100 {
            let b = f.apply(roomy, last, D + GROWTH_STEP, L);
            assert!(b.bytes >= last);
            last = b.bytes;
            if !b.tightened {
                assert_eq!(b, roomy);
                return;
            }
        }
        panic!("the bound never relaxed back to the model");
    }

    #[test]
    fn a_filesystem_that_cannot_be_asked_gets_no_feedback() {
        let mut f = Feedback::default();
        let b = Bound::max_bytes_only(256 * MIB);
        assert_eq!(f.apply(b, 256 * MIB, 0, L), b);
        assert_eq!(f.apply(b, 256 * MIB, 10 * MIB, L), b);
    }

    #[test]
    fn the_spare_is_kept_only_where_the_disk_bounds_the_outbox_and_given_back() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        std::fs::create_dir(&outbox).unwrap();
        let (total, free) = fs_space(d.path()).unwrap();
        // By max_bytes (a large disk): no spare, and an old one is removed.
        std::fs::write(spare_path(&outbox), b"x").unwrap();
        assert!(!keep_spare(&outbox, &Bound::max_bytes_only(MIB), L));
        assert!(!spare_path(&outbox).exists());
        // By free space, with room: kept, allocated on disk, counted as free.
        if free < RESERVE_MAX + 4 * L {
            return; // this machine's temporary folder is nearly full
        }
        let by_disk = Bound { by: BoundBy::FreeSpace, fs_bytes: total, fs_free: free, reserve: reserve_for(total, L), ..Bound::max_bytes_only(MIB) };
        assert!(keep_spare(&outbox, &by_disk, S));
        assert!(spare_usage(&outbox) >= spare_bytes(S), "allocated, not sparse");
        assert!(spare_usage(&outbox) < spare_bytes(L), "a small store's spare is small");
        // A store with larger segments wants a larger spare: made again.
        assert!(keep_spare(&outbox, &by_disk, L));
        assert!(spare_usage(&outbox) >= spare_bytes(L));
        assert_eq!(spare_path(&outbox), d.path().join("outbox.spare"));
        // Given back.
        assert!(release_spare(&outbox) >= spare_bytes(L));
        assert!(!spare_path(&outbox).exists());
        assert_eq!(release_spare(&outbox), 0);
        // No room above the reserve: not made.
        let tight = Bound { fs_free: by_disk.reserve, ..by_disk };
        assert!(!keep_spare(&outbox, &tight, L));
        assert!(!spare_path(&outbox).exists());
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
