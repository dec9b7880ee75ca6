//! The durable outbox: every reading is stored here before anything is sent.
//!
//! Storage is sled 0.34.7 with a commit journal of our own in front of it
//! ([`journal`]), both kept behind this one type so the engine is one file to
//! read and, if measurements ever demand it, one file to replace. Everything
//! lives in a single key space, and every change is one atomic list of puts
//! and removals:
//!
//! | key                    | value                                     |
//! |------------------------|-------------------------------------------|
//! | `r` + seq (u64 BE)     | commit time (ms, u64 BE) + reading JSON    |
//! | `f` + first seq (BE)   | an in-flight batch: message id + its seqs  |
//! | `a` + device + patient | how far that device's delivery got         |
//! | `m` + name             | counters (next seq, count, bytes, drops)   |
//! | `d` + seq (BE)         | a dead letter ([`dead_letters`])           |
//! | `t` + seq (BE)         | a dead letter that was queued again        |
//!
//! Guarantees:
//! - [`Outbox::append`] returns only after the readings are on stable storage:
//!   the group's changes are one record appended to the journal (`outbox/journal`,
//!   a file written to its full size once, so a commit never grows it), then
//!   `fdatasync`. One group commit of up to a page of records writes one page on
//!   the SD card. The changes are also held in memory over sled, and moved into
//!   sled at a checkpoint (journal full, clean stop, every start): sled's flush,
//!   an `fdatasync` of its log, then the journal's records are retired. A start
//!   applies the journal's committed records to sled first, so a power cut
//!   anywhere loses nothing that was reported committed, and the next start
//!   never hands out the same sequence numbers again.
//! - Every life of the outbox (every [`Outbox::open`]) gets a fresh random
//!   64-bit epoch, part of every message id made in that life, so a message id
//!   is never used for other readings even if the state folder loses its tail
//!   or is restored from an older copy.
//! - The outbox records whether the previous life ended cleanly; an unclean
//!   start (power cut, crash, `kill -9`) recounts what is stored and says so.
//! - Readings leave only through [`Outbox::ack`], which the forwarder calls after
//!   the sink confirmed delivery.
//! - A batch is recorded (and flushed) with its message id before it is sent, so
//!   after a crash it is resent with the same id and the same readings.
//! - Bounded by bytes and age; what is dropped is counted.
//! - A corrupt store is moved aside, kept for recovery, and replaced by a new one.

pub mod committer;
pub(crate) mod dead_letters;
mod inspect_copy;
mod journal;
mod lock;
pub(crate) mod salvage;
mod snapshots;
pub mod space;

use crate::config::{OutboxConfig, WhenFull};
use crate::model::Reading;
use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TREE: &str = "outbox-v1";
const READING: u8 = b'r';
/// The first byte of the counters' and other bookkeeping keys.
const META: u8 = b'm';
const INFLIGHT: u8 = b'f';
/// `a` + device id + 0 + patient id: how far that device's delivery got
/// ([`salvage::AckMark`]), for salvaging a damaged store.
const ACKED: u8 = b'a';
const META_NEXT_SEQ: &[u8] = b"mnext_seq";
const META_COUNT: &[u8] = b"mcount";
const META_BYTES: &[u8] = b"mbytes";
const META_DROPPED_FULL: &[u8] = b"mdropped_full";
const META_DROPPED_AGE: &[u8] = b"mdropped_age";
const META_REFUSED: &[u8] = b"mrefused";
const META_EPOCH: &[u8] = b"mepoch";
/// The state of the last life: [`RunRecord`] as JSON.
const META_RUN: &[u8] = b"mrun";
/// The highest sequence number dropped ([`salvage::DropFloor`]).
const META_DROP_FLOOR: &[u8] = b"mdrop_floor";
/// Bytes of bookkeeping per stored reading (key + commit time), for the bound.
const PER_READING_OVERHEAD: u64 = 9 + 8;

/// Errors of the outbox. None of them is a reason to lose a reading silently.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox storage error: {0}")]
    Storage(sled::Error),
    /// The disk refused a read or write (full, read-only, failing).
    #[error("the disk refused a write or read: {0}")]
    Disk(std::io::Error),
    #[error("another iomt-edge process is using the outbox in {0}; stop it first (systemctl stop iomt-edge)")]
    Locked(PathBuf),
    #[error("cannot use the outbox folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The store is closed after a failed write and could not be reopened yet.
    #[error("the outbox store is closed after a write error and could not be reopened yet ({0})")]
    Unavailable(String),
    /// The store's files are damaged (sled reported corruption or failed
    /// unexpectedly while reading them). The gateway salvages what it can
    /// ([`Outbox::repair`]); an inspection command only reports it.
    #[error("the outbox in {0} is damaged and cannot be read as it is; the gateway salvages what it can at its next start, or run `iomt-edge outbox salvage --from {0}`")]
    Damaged(PathBuf),
    /// [`Outbox::inspect`] found no outbox at the path (no folder, or no
    /// `db` file in it, or an empty one): inspecting never creates one, nor
    /// anything beside it.
    #[error(
        "there is no outbox in {0} (no folder with a non-empty `db` file there); check the path: a gateway's outbox is the `outbox` folder in its state_dir"
    )]
    NotFound(PathBuf),
}

impl OutboxError {
    /// Whether this error means the store's files are damaged (as opposed to
    /// a full or failing disk, or a lock held by another process).
    pub(crate) fn is_damage(&self) -> bool {
        matches!(
            self,
            OutboxError::Damaged(_) | OutboxError::Storage(sled::Error::Corruption { .. }) | OutboxError::Storage(sled::Error::ReportableBug(_))
        )
    }

    /// Whether this error means the disk has no room (ENOSPC, or the
    /// service user's quota, EDQUOT): waiting for room can cure it.
    pub(crate) fn is_no_space(&self) -> bool {
        let io = match self {
            OutboxError::Disk(e) | OutboxError::Io { source: e, .. } => e,
            OutboxError::Storage(sled::Error::Io(e)) => e,
            _ => return false,
        };
        matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) || io.kind() == std::io::ErrorKind::StorageFull
    }
}

impl From<sled::Error> for OutboxError {
    fn from(e: sled::Error) -> OutboxError {
        match e {
            sled::Error::Io(io) => OutboxError::Disk(io),
            other => OutboxError::Storage(other),
        }
    }
}

/// A batch that was handed to a sink and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub message_id: String,
    pub seqs: Vec<u64>,
}

/// What happened to an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence numbers given to the stored readings, in input order (`None`
    /// for a reading refused under `refuse_newest`).
    pub(crate) seqs: Vec<Option<u64>>,
    /// Old readings removed to make room (`drop_oldest`).
    pub(crate) dropped_oldest: u64,
    /// New readings refused (`refuse_newest`).
    pub(crate) refused: u64,
}

/// What [`Outbox::append_or_recover`] did with a group it stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupOutcome {
    /// As from [`Outbox::append`]: `seqs[i]` is the number `readings[i]` is
    /// stored under, `None` when it was refused (`refuse_newest`). After a
    /// recovery the drop and refusal counts are not known (0).
    pub(crate) appended: AppendOutcome,
    /// Whether the in-flight records are durable with the group: true when
    /// the append worked; false when it failed and the group turned out to be
    /// on disk after the reopen (the records' fate is not known then: the
    /// forwarder stores them itself).
    pub(crate) records_stored: bool,
}

/// Why [`Outbox::append_or_recover`] did not store a group. The readings'
/// numbers are cleared: append the group again (nothing of it is on disk).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupCommitError {
    /// The append failed; the store was reopened for the retry.
    #[error("{0}")]
    NotStored(OutboxError),
    /// The append failed and the store could not be reopened either (the
    /// retry reopens it again).
    #[error("{append}; reopening it failed too: {reopen}")]
    ReopenFailed { append: OutboxError, reopen: OutboxError },
}

/// Counters and sizes, as `outbox stats` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    pub(crate) queued: u64,
    pub queued_bytes: u64,
    pub(crate) in_flight_batches: u64,
    pub(crate) next_seq: u64,
    pub dropped_full: u64,
    pub dropped_age: u64,
    pub(crate) refused: u64,
    /// Readings the destination refused even alone, kept apart
    /// ([`dead_letters`]; `outbox dead-letters list`), and their bytes.
    pub dead_letters: u64,
    pub(crate) dead_letter_bytes: u64,
    pub(crate) epoch: String,
    pub(crate) disk_bytes: u64,
    /// How the life before the current one ended.
    pub(crate) previous_stop: PreviousStop,
    /// When the current (or, for an inspected outbox, the last) life started,
    /// Unix ms; 0 if not recorded.
    pub(crate) started_ms: u64,
    /// The bound in force: `max_bytes`, or less when the state filesystem
    /// cannot hold that much ([`space`]).
    pub(crate) bound: space::Bound,
}

/// How the outbox came up.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Where a corrupt outbox was moved, if one was.
    #[allow(dead_code)] // only the unit tests read it; open() logs the same fact where it decides
    pub(crate) moved_aside: Option<PathBuf>,
    pub(crate) took: Duration,
    /// How the previous life of this outbox ended.
    pub previous_stop: PreviousStop,
    /// After an unclean stop: what a recount of the store found.
    pub(crate) recount: Option<Recount>,
    /// When the store was damaged: what was salvaged into the new one.
    #[allow(dead_code)] // only the unit tests read it; open() logs the same fact where it decides
    pub(crate) salvaged: Option<SalvageReport>,
    /// When a power cut had interrupted a write (part of it on disk): how
    /// many complete readings of it were kept.
    #[allow(dead_code)] // only the unit tests read it; open() logs the same fact where it decides
    pub(crate) interrupted_write_kept: Option<u64>,
}

/// The file in a quarantined store that says its readings were already
/// salvaged into the live outbox (holds the [`SalvageReport`] as JSON).
pub(crate) const SALVAGED_MARK: &str = "SALVAGED.json";

/// What [`Outbox::repair`] (or an open that found the store damaged) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SalvageReport {
    /// Where the damaged store was moved (kept for `outbox salvage|export --from`).
    pub(crate) moved_to: PathBuf,
    /// Queued readings salvaged into the new store, with their sequence numbers.
    pub(crate) readings: u64,
    /// In-flight batches salvaged (resent with their message ids).
    pub(crate) in_flight_batches: u64,
    /// Records that looked like readings but could not be read.
    pub(crate) unreadable: u64,
    /// Old copies of readings that had already been delivered or dropped.
    pub(crate) already_gone: u64,
    /// Dead letters salvaged into the new store's dead letters.
    pub(crate) dead_letters: u64,
}

impl std::fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} queued readings salvaged ({} batches to resend with their ids, {} dead letters kept apart); {} damaged records could not be read; the damaged copy is kept in {}",
            self.readings,
            self.in_flight_batches,
            self.dead_letters,
            self.unreadable,
            self.moved_to.display()
        )
    }
}

/// How the previous life of an outbox ended, as recorded in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PreviousStop {
    /// A new outbox: there was no previous life.
    #[default]
    None,
    /// The gateway stopped cleanly (SIGTERM, end of the demo) at `at_ms`
    /// (Unix ms).
    Clean { at_ms: u64 },
    /// The life that started at `started_ms` never recorded a clean stop: a
    /// power cut, a crash, `kill -9`, or a watchdog kill.
    Unclean { started_ms: u64 },
    /// An outbox written by a version that did not record its stops.
    Unknown,
}

/// What an unclean start found when it recounted the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Recount {
    /// Readings found in the store.
    pub(crate) readings: u64,
    /// In-flight batch records found (resent with their ids).
    pub(crate) in_flight_batches: u64,
    /// Readings the stored counters claimed. Differs from `readings` only if
    /// the storage lost or kept writes the counters did not (they are written
    /// in the same atomic batch, so this is a sign of a damaged store); the
    /// counters are then corrected to the recount.
    pub(crate) counted_before: u64,
}

/// What the store says about the current or last life; stored under `mrun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunRecord {
    /// Unix ms when the life started.
    started_ms: u64,
    /// Unix ms of the clean stop, or `None` while running.
    #[serde(default)]
    clean_stop_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    next_seq: u64,
    count: u64,
    bytes: u64,
    dropped_full: u64,
    dropped_age: u64,
    refused: u64,
    /// Dead letters held and their bytes: counted from the `d` keys at
    /// every load (they are few), not stored.
    dead_letters: u64,
    dead_letter_bytes: u64,
}

impl Counters {
    /// The counters as stored in `tree`.
    fn load(st: &Store) -> Result<Counters, OutboxError> {
        Ok(Counters {
            next_seq: u64_of(st.get(META_NEXT_SEQ)?).max(1),
            count: u64_of(st.get(META_COUNT)?),
            bytes: u64_of(st.get(META_BYTES)?),
            dropped_full: u64_of(st.get(META_DROPPED_FULL)?),
            dropped_age: u64_of(st.get(META_DROPPED_AGE)?),
            refused: u64_of(st.get(META_REFUSED)?),
            dead_letters: 0,
            dead_letter_bytes: 0,
        })
        .and_then(|mut c| {
            (c.dead_letters, c.dead_letter_bytes) = dead_letters::tally(st)?;
            Ok(c)
        })
    }
}

/// The bound in force ([`space::Bound`]) and when it was computed.
struct BoundState {
    bound: space::Bound,
    checked: Option<Instant>,
    /// Tightens the modelled bound when the store grows past it
    /// ([`space::Feedback`]).
    feedback: space::Feedback,
    /// The store's sled segment as last looked at ([`space::segment_to_open`]).
    segment: u64,
}

/// How often the bound is checked against the filesystem (one `statvfs` and a
/// `stat` of the store's few files).
const BOUND_RECHECK: Duration = Duration::from_secs(1);
/// As [`BOUND_RECHECK`], when the free space is within two sled segments of
/// the reserve.
const BOUND_RECHECK_NEAR: Duration = Duration::from_millis(100);

/// A list of changes to the key space, applied together: what a sled batch
/// was, kept as plain ops so it can go to the journal ([`journal`]).
#[derive(Debug, Default)]
struct Ops(Vec<journal::Op>);

impl Ops {
    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.0.push(journal::Op::Put(k.as_ref().to_vec(), v.as_ref().to_vec()));
    }

    fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.0.push(journal::Op::Remove(k.as_ref().to_vec()));
    }
}

/// sled key: the journal generation whose records are all in sled (written
/// with each checkpoint), so a start after a power cut between a checkpoint
/// and the journal's reset does not apply them again over newer state.
const META_JOURNAL: &[u8] = b"mjournal";
/// The journal's size on a filesystem with room (written with zeros once).
const JOURNAL_BYTES: u64 = 1 << 20;
/// The journal's size on a small or nearly full filesystem (not prefilled).
const JOURNAL_BYTES_SMALL: u64 = 64 * 1024;
/// Changes per sled batch at a checkpoint ([`Store::checkpoint`]).
const CHECKPOINT_BATCH: usize = 64;
/// The least the disk bound allows: records that fit in half the smallest
/// journal ([`Outbox::bound`]).
const JOURNAL_FLOOR: u64 = JOURNAL_BYTES_SMALL / 2;

/// What is committed but not yet in sled: the changes since the last
/// checkpoint (`None`: removed), and the encoded ops not yet in the journal.
#[derive(Default)]
struct Mem {
    overlay: std::collections::BTreeMap<Vec<u8>, Option<sled::IVec>>,
    unsynced: Vec<u8>,
    unsynced_ops: u32,
}

/// The open sled database, the outbox tree in it, its log file, and the
/// commit journal in front of it.
///
/// Writes ([`Store::apply`]) go to memory; [`Store::sync`] makes them
/// durable as one journal record and one `fdatasync`; [`Store::checkpoint`]
/// moves everything into sled (sled flush, `fdatasync` of its log) and
/// retires the journal. Reads see sled with the changes since the last
/// checkpoint on top. Lock order: `journal`, then `mem`.
struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log (`{dir}/db`), opened again so we can `fdatasync` it after
    /// sled's flush. `fdatasync` acts on the file, not the descriptor.
    log: std::fs::File,
    journal: parking_lot::Mutex<journal::Journal>,
    mem: parking_lot::Mutex<Mem>,
    /// `false` only in `iomt-edge bench`, to measure what the `fdatasync` costs.
    fdatasync: bool,
    /// Syncs made since this store was opened (tests, bench).
    syncs: AtomicU64,
    /// The log file's length after we last wrote zeros ahead of sled's
    /// writes ([`Store::keep_zeros_ahead`]); 0 before the first time.
    zero_end: AtomicU64,
    /// The store's folder (for the free space check of the zeros ahead).
    dir: Option<PathBuf>,
    /// Tests: the sled batch after which a checkpoint is cut short (0: never).
    #[cfg(test)]
    cut_checkpoint_after: std::sync::atomic::AtomicUsize,
}

/// How far the log file is kept written (with zeros) beyond sled's writes:
/// the file then grows (and ext4 journals its new size) about once per MiB
/// of log instead of at every commit. (The copy of the log taken at start
/// leaves the zeros out.)
const ZEROS_AHEAD: u64 = 1 << 20;
/// Zeros are written in whole stretches of this size.
const ZEROS_STEP: u64 = 64 * 1024;
/// The most numbers one write (a group commit) can hand out: a counter this
/// far beyond sled's is taken as a write a power cut interrupted.
const MAX_INTERRUPTED_WRITE: u64 = 4096;
/// Zeros are written ahead only with at least this much free space.
const ZEROS_MIN_FREE: u64 = 64 << 20;

/// Reads over sled with the uncheckpointed changes on top, in key order.
struct Merged {
    sled: std::iter::Peekable<sled::Iter>,
    over: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<sled::IVec>)>>,
}

impl Iterator for Merged {
    type Item = Result<(sled::IVec, sled::IVec), OutboxError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_over = match (self.sled.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.sled.next().map(|r| r.map_err(OutboxError::from)),
                (Some(Ok(_)), None) => false,
                (None, Some(_)) => true,
                (Some(Ok((sk, _))), Some((ok, _))) => match sk.as_ref().cmp(ok.as_slice()) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => {
                        // The overlay is newer than sled.
                        self.sled.next();
                        true
                    }
                    std::cmp::Ordering::Greater => true,
                },
            };
            if !take_over {
                return self.sled.next().map(|r| r.map_err(OutboxError::from));
            }
            match self.over.next() {
                Some((k, Some(v))) => return Some(Ok((sled::IVec::from(k), v))),
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}

impl Store {
    /// The value of `key`: the change since the last checkpoint, else sled's.
    fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, OutboxError> {
        let mem = self.mem.lock();
        match mem.overlay.get(key.as_ref()) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(key)?),
        }
    }

    /// Keys in `lo..hi`, in order, with their values.
    fn range(&self, lo: &[u8], hi: &[u8]) -> Merged {
        use std::ops::Bound::{Excluded, Included};
        // Both under the lock: a checkpoint (which holds it) moves the
        // overlay into sled all at once, never while this takes its view.
        let mem = self.mem.lock();
        let sled = self.tree.range(lo..hi).peekable();
        let over: Vec<_> = mem.overlay.range::<[u8], _>((Included(lo), Excluded(hi))).map(|(k, v)| (k.clone(), v.clone())).collect();
        Merged { sled, over: over.into_iter().peekable() }
    }

    /// Every key starting with `prefix` (one byte).
    fn scan_prefix(&self, prefix: u8) -> Merged {
        if prefix == u8::MAX {
            return self.range(&[prefix], &[u8::MAX; 64]);
        }
        self.range(&[prefix], &[prefix + 1])
    }

    /// Applies `ops` in memory; durable with the next [`Store::sync`].
    fn apply(&self, ops: Ops) {
        let mut mem = self.mem.lock();
        for op in ops.0 {
            journal::encode_op(&op, &mut mem.unsynced);
            mem.unsynced_ops += 1;
            match op {
                journal::Op::Put(k, v) => mem.overlay.insert(k, Some(sled::IVec::from(v))),
                journal::Op::Remove(k) => mem.overlay.insert(k, None),
            };
        }
    }

    /// Makes everything applied so far durable: one journal record and one
    /// `fdatasync` (or a checkpoint when the journal is full).
    fn sync(&self) -> Result<(), OutboxError> {
        let mut j = self.journal.lock();
        let (payload, ops) = {
            let mut mem = self.mem.lock();
            (std::mem::take(&mut mem.unsynced), std::mem::take(&mut mem.unsynced_ops))
        };
        if ops == 0 {
            return Ok(());
        }
        let mut record = Vec::with_capacity(payload.len() + 4);
        record.extend_from_slice(&ops.to_le_bytes());
        record.extend_from_slice(&payload);
        let rec = j.record_for(&record);
        if !j.fits(rec.len()) {
            return self.checkpoint_locked(&mut j);
        }
        if let Err(e) = j.append(&rec, self.fdatasync) {
            // Not durable: keep the ops for the next try (the overlay has
            // them already; a reopen discards both).
            let mut mem = self.mem.lock();
            let newer = std::mem::take(&mut mem.unsynced);
            mem.unsynced = payload;
            mem.unsynced.extend_from_slice(&newer);
            mem.unsynced_ops += ops;
            return Err(OutboxError::Disk(e));
        }
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Moves every change since the last checkpoint into sled, makes sled
    /// durable (its flush, then an `fdatasync` of its log), and retires the
    /// journal's records.
    fn checkpoint(&self) -> Result<(), OutboxError> {
        let mut j = self.journal.lock();
        self.checkpoint_locked(&mut j)
    }

    fn checkpoint_locked(&self, j: &mut journal::Journal) -> Result<(), OutboxError> {
        let mut mem = self.mem.lock();
        let next_seq = match mem.overlay.get(META_NEXT_SEQ) {
            Some(v) => u64_of(v.clone()),
            None => u64_of(self.tree.get(META_NEXT_SEQ)?),
        };
        // Two stages, because a checkpoint can be cut short (a kill, a power
        // cut, a full disk) after sled wrote part of it: sled writes a batch
        // to its log as soon as its buffer fills, long before our flush. The
        // overlay holds committed changes (in the journal) and, when the
        // journal is full (`Store::sync`), the group being committed, which
        // is in no journal record yet. After a cut, a start applies the
        // journal's records again (puts and removals of whole values:
        // applying them twice is applying them once), but it cannot undo an
        // uncommitted change that reached sled.
        //
        // 1. The readings' values, in sled batches of CHECKPOINT_BATCH: one
        //    sled batch of a whole journal's changes (thousands of readings in
        //    an outage) made the daemon's memory grow with the store
        //    (measured: about 1 MB/s at 200 readings/s, against a plateau
        //    with small batches). An uncommitted put that reaches sled only
        //    adds a reading beyond the committed numbering (kept and counted
        //    at the next open, see `Outbox::adopt_cut_short_puts`).
        // 2. Everything else in one sled batch, which sled applies whole or
        //    not at all: every removal (a delivered, dropped or expired
        //    reading, a finished in-flight record), the other puts, the
        //    counters (`m` keys) and the journal's generation. An uncommitted
        //    removal (the oldest readings dropped for the group being
        //    committed) then reaches sled only with the counters that count
        //    it; before, removals went in the early batches and a cut left
        //    committed readings removed and counted nowhere (measured:
        //    64-913 readings per run on a 2-3 MiB state filesystem filled and
        //    freed). Removals are keys only, so this batch stays small. The
        //    counters stay last, with the generation, as `open_with` expects.
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut batches = 0usize;
        let is_reading_put = |k: &[u8], v: &Option<sled::IVec>| k.first() == Some(&READING) && v.is_some();
        for (k, v) in mem.overlay.iter().filter(|(k, v)| is_reading_put(k, v)) {
            if let Some(v) = v {
                batch.insert(k.as_slice(), v.clone());
            }
            in_batch += 1;
            if in_batch == CHECKPOINT_BATCH {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
                batches += 1;
                self.cut_here_in_tests(batches)?;
            }
        }
        if in_batch > 0 {
            self.tree.apply_batch(std::mem::take(&mut batch))?;
            batches += 1;
            self.cut_here_in_tests(batches)?;
        }
        for (k, v) in mem.overlay.iter().filter(|(k, v)| !is_reading_put(k, v)) {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.clone()),
                // A reading delivered before it ever reached sled costs
                // sled nothing.
                None if k.first() != Some(&META) && !self.tree.contains_key(k)? => continue,
                None => batch.remove(k.as_slice()),
            }
        }
        batch.insert(META_JOURNAL, &j.generation().to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        if self.fdatasync {
            self.keep_zeros_ahead();
            self.log.sync_data().map_err(OutboxError::Disk)?;
        }
        j.reset(next_seq, self.fdatasync).map_err(OutboxError::Disk)?;
        mem.overlay.clear();
        mem.unsynced.clear();
        mem.unsynced_ops = 0;
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Tests: ends a checkpoint after its `batches`-th sled batch as a kill
    /// would, leaving what sled was given so far in its log (sled writes a
    /// buffer to its log when it fills, without waiting for a flush).
    #[cfg(test)]
    fn cut_here_in_tests(&self, batches: usize) -> Result<(), OutboxError> {
        if self.cut_checkpoint_after.load(std::sync::atomic::Ordering::Relaxed) == batches {
            self.db.flush()?;
            return Err(OutboxError::Disk(std::io::Error::other("checkpoint cut short (test)")));
        }
        Ok(())
    }

    #[cfg(not(test))]
    fn cut_here_in_tests(&self, _batches: usize) -> Result<(), OutboxError> {
        Ok(())
    }

    /// Writes `ops` straight into sled (not durable until the next
    /// checkpoint): for building a new store from a salvage, where the
    /// readings may be far more than the journal holds. The overlay must be
    /// empty.
    fn apply_to_sled(&self, ops: Ops) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for op in ops.0 {
            match op {
                journal::Op::Put(k, v) => batch.insert(k, v),
                journal::Op::Remove(k) => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Bytes of the store's files (sled's and the journal's).
    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.journal.lock().file_len()
    }

    /// Keeps the log file written with zeros a little beyond sled's writes,
    /// so that a commit writes inside the file instead of growing it.
    ///
    /// Why: on ext4 (and other journalling filesystems) an `fdatasync` that
    /// follows a write past the end of the file must also commit the new
    /// size and the newly allocated blocks to the journal: measured on ext4
    /// with 4 KiB blocks, about 19-25 KB reach the device per commit of 0.6-3
    /// KB that grows the file, against 5-7 KB when the same commit lands on
    /// blocks already written (docs/performance.md, SD-card wear). sled
    /// appends its log, so without this every group commit grows the file.
    /// Zeros at the end are what sled itself leaves after a crash: it reads
    /// a segment whose header is not valid as unused (sled's
    /// `pagecache/iterator.rs`), and it may truncate free segments at the end
    /// of the file; the zeros are then written again at the next commit.
    /// Best effort: a failure (a full disk) only costs the saving.
    fn keep_zeros_ahead(&self) {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(len) = self.log.metadata().map(|m| m.len()) else { return };
        if len == self.zero_end.load(Relaxed) {
            return;
        }
        // Not on a small or nearly full filesystem: there the zeros would
        // take room the outbox's bound counts on (docs/design.md).
        let Some(dir) = self.dir.as_deref() else { return };
        match space::fs_space(dir) {
            Ok((_, free)) if free >= ZEROS_MIN_FREE => {}
            _ => return,
        }
        // sled wrote past the zeros (or truncated the file): write zeros from
        // its end for another stretch.
        let target = len.saturating_add(ZEROS_AHEAD).div_ceil(ZEROS_STEP).saturating_mul(ZEROS_STEP);
        let zeros = vec![0u8; 64 * 1024];
        let mut at = len;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            if self.log.write_at(&zeros[..n], at).is_err() {
                // Leave the file as sled made it: a short zero tail is harmless,
                // and we try again at the next commit.
                return;
            }
            at += n as u64;
        }
        self.zero_end.store(target, Relaxed);
    }
}

impl Drop for Store {
    /// Writes what is applied but not yet synced to the journal (without an
    /// `fdatasync`), as sled flushes its buffers when dropped: a store
    /// closed without a final sync keeps its last acknowledgements unless
    /// the power goes too.
    fn drop(&mut self) {
        let fdatasync = std::mem::replace(&mut self.fdatasync, false);
        if let Err(e) = self.sync() {
            tracing::debug!("closing the outbox: the last unsynced changes were not written ({e})");
        }
        self.fdatasync = fdatasync;
    }
}

/// `fsync`s a folder, so that files created or renamed in it survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The outbox. All methods are blocking (sled is synchronous); async callers use
/// `spawn_blocking` for anything that flushes.
///
/// Lock order: `store`, then `counters`.
pub struct Outbox {
    /// `None` only between closing a store after a write error and reopening
    /// it (see [`Outbox::recover`]).
    store: RwLock<Option<Store>>,
    dir: PathBuf,
    epoch: String,
    cache_bytes: u64,
    max_bytes: u64,
    /// The bound in force and when it was last checked ([`Outbox::bound`]).
    bound: Mutex<BoundState>,
    /// The folder whose filesystem bounds the outbox: `dir`, except for an
    /// inspected outbox (opened from a copy elsewhere).
    space_dir: PathBuf,
    max_age: Duration,
    when_full: WhenFull,
    counters: Mutex<Counters>,
    /// Acknowledgements held for the next group commit
    /// ([`Outbox::ack_deferred`]), and when the oldest arrived.
    pending_acks: Mutex<(Vec<InFlight>, Option<std::time::Instant>)>,
    previous_stop: PreviousStop,
    started_ms: u64,
    /// Opened for inspection: no run record is written, nothing is recounted.
    inspect: bool,
    _lock: lock::DirLock,
    /// The private copy an inspected outbox was opened from (removed after
    /// the store is closed: fields drop in order).
    _scratch: Option<inspect_copy::ScratchCopy>,
}

fn reading_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = READING;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The exclusive upper end of the keys `kind` + seq for seq up to `through`.
fn key_after(kind: u8, through: u64) -> Vec<u8> {
    match through.checked_add(1) {
        Some(next) => {
            let mut k = reading_key(next).to_vec();
            k[0] = kind;
            k
        }
        None => vec![kind + 1],
    }
}

fn inflight_key(first_seq: u64) -> [u8; 9] {
    let mut k = reading_key(first_seq);
    k[0] = INFLIGHT;
    k
}

fn ack_key(device_id: &str, patient_id: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + device_id.len() + patient_id.map_or(0, str::len));
    k.push(ACKED);
    k.extend_from_slice(device_id.as_bytes());
    k.push(0);
    k.extend_from_slice(patient_id.unwrap_or("").as_bytes());
    k
}

/// Everything at or below `highest` has been dropped (oldest first).
fn put_drop_floor(batch: &mut Ops, highest: u64) {
    let floor = salvage::DropFloor { dropped_through: highest };
    batch.insert(META_DROP_FLOOR, serde_json::to_vec(&floor).unwrap_or_default());
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0)
}

use crate::model::time::unix_ms as now_ms;

/// Decodes a stored value into (commit time ms, reading).
fn decode_value(v: &[u8]) -> Option<(u64, Reading)> {
    let ts = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let r = serde_json::from_slice(v.get(8..)?).ok()?;
    Some((ts, r))
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` for a gateway life: records the
    /// start (durably), gives this life a fresh epoch, and after an unclean
    /// previous stop recounts the store (see [`OpenReport::recount`]). A store
    /// that sled reports as corrupt, or that panics while opening, is renamed
    /// to `{dir}.corrupt-{time}` and a fresh one is created in its place.
    ///
    /// Errors: [`OutboxError::is_no_space`] when the state filesystem has no
    /// room for sled to open the store (the caller waits for room).
    pub fn open(dir: &Path, cfg: &OutboxConfig) -> Result<(Outbox, OpenReport), OutboxError> {
        match Self::open_with(dir, cfg, Open::Run { copy_log: true }) {
            // The copy of the log made before opening left the reserve free,
            // but sled's recovery after an unclean stop can need more. The
            // copy is only a safety net for a log that sled would damage;
            // without room to open there is nothing to protect yet: give its
            // room back and open without it at once.
            Err(e) if e.is_no_space() && std::fs::remove_file(pre_open_path(dir)).is_ok() => {
                tracing::info!("no room on the state filesystem to open the outbox beside a copy of its log ({e}); opening it without the copy");
                Self::open_with(dir, cfg, Open::Run { copy_log: false })
            }
            other => other,
        }
    }

    /// Opens an existing outbox to look into it (`outbox stats`, `peek`,
    /// `medtech preview --outbox`): no run record is written and the epoch is
    /// not renewed, so what it reports about the last life stays true.
    ///
    /// Inspecting changes nothing it inspects: a path that holds no outbox
    /// (a typo) is [`OutboxError::NotFound`], never a new store; the store is
    /// opened from a private copy in the temporary folder, made while holding
    /// the gateway's lock (sled writes to any store it opens; see
    /// `inspect_copy`), so a damaged store ([`OutboxError::Damaged`]) stays
    /// byte for byte as it was for the salvage. Only the lock file beside an
    /// existing outbox is created if it is missing. [`Outbox::dir`] is then
    /// the copy's folder; errors name `dir`.
    pub fn inspect(dir: &Path, cfg: &OutboxConfig) -> Result<(Outbox, OpenReport), OutboxError> {
        // An empty `db` (sled had not written its first segment yet) holds
        // no readings: no outbox either, and nothing is created beside it.
        if !dir.is_dir() || std::fs::metadata(dir.join("db")).map_or(true, |m| !m.is_file() || m.len() == 0) {
            return Err(OutboxError::NotFound(dir.to_path_buf()));
        }
        let copy = {
            let _lock = lock::DirLock::acquire(dir)?;
            inspect_copy::ScratchCopy::of(dir)?
        };
        match Self::open_with(&copy.outbox(), cfg, Open::Inspect) {
            Ok((mut outbox, report)) => {
                // As a start would (see open_with): after an unclean stop,
                // sled may have kept only the part of the log before a
                // damaged page. If the numbering in the raw log (the
                // original's, which sled did not touch) went further, the
                // store is damaged: the gateway salvages it at its next start.
                // A store that reads as new (no run record) from an existing
                // log lost its first pages: any counter in the log says so.
                let lost_start = report.previous_stop == PreviousStop::None;
                if lost_start || matches!(report.previous_stop, PreviousStop::Unclean { .. } | PreviousStop::Unknown) {
                    let kept_next = outbox.counters.lock().unwrap_or_else(|p| p.into_inner()).next_seq;
                    let max_write = if lost_start { 0 } else { MAX_INTERRUPTED_WRITE };
                    let verdict = std::fs::read(dir.join("db")).ok().map(|b| salvage::log_verdict(&b, kept_next, max_write));
                    if let Some(salvage::LogVerdict::CutShort { raw_next }) = verdict {
                        tracing::debug!("sled kept numbering up to {kept_next}, the raw log shows {raw_next:?}");
                        return Err(OutboxError::Damaged(dir.to_path_buf()));
                    }
                }
                outbox._scratch = Some(copy);
                outbox.space_dir = dir.to_path_buf();
                Ok((outbox, report))
            }
            Err(OutboxError::Damaged(_)) => Err(OutboxError::Damaged(dir.to_path_buf())),
            Err(e) => Err(e),
        }
    }

    fn open_with(dir: &Path, cfg: &OutboxConfig, how: Open) -> Result<(Outbox, OpenReport), OutboxError> {
        let inspect = how == Open::Inspect;
        let started = Instant::now();
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| OutboxError::Io { path: parent.to_path_buf(), source })?;
        let lock = lock::DirLock::acquire(dir)?;
        let mut moved_aside = None;
        let mut salvaged = None;
        let mut interrupted_write_kept = None;
        let created = !dir.join("db").exists();
        // sled 0.34's recovery stops at the first damaged message of its log
        // and then writes over what follows, so a damaged store loses more
        // once sled has opened it. Keep the log as it was, to salvage from if
        // the open fails or cuts the log short (a copy costs little while the
        // queue is small, which it is unless the cloud has been away long).
        let pre_open = pre_open_path(dir);
        let _ = std::fs::remove_file(&pre_open);
        let log_len = std::fs::metadata(dir.join("db")).map(|m| m.len()).unwrap_or(0);
        if how == (Open::Run { copy_log: true }) && !created && log_len <= PRE_OPEN_COPY_MAX {
            // On a small state filesystem the copy must not be what fills it
            // (sled needs room to open, and the reserve is for that): skip it
            // when it would eat into the reserve.
            let segment = space::segment_to_open(dir);
            let room = space::fs_space(parent).map(|(total, free)| free.saturating_sub(space::reserve_for(total, segment)));
            match room {
                Ok(room) if room >= log_len => {
                    if let Err(e) = copy_without_zero_tail(&dir.join("db"), &pre_open) {
                        let _ = std::fs::remove_file(&pre_open);
                        tracing::info!("no copy of the outbox log before opening it ({e}); opening it without one");
                    }
                }
                Ok(room) => tracing::info!(
                    "no copy of the outbox log before opening it: it needs {} and the state filesystem has {} free above its reserve; opening it without one",
                    crate::config::units::ByteSize(log_len),
                    crate::config::units::ByteSize(room)
                ),
                Err(e) => tracing::debug!("no copy of the outbox log before opening it (free space unknown: {e})"),
            }
        }
        let mut opened = Self::open_sled(dir, cfg.cache_bytes.bytes());
        if let Err(OpenFailure::Io(e)) = &opened {
            // No room to open beside the copy of the log: the copy goes
            // first, before the spare (see `open`).
            if e.is_no_space() && std::fs::remove_file(&pre_open).is_ok() {
                tracing::info!("no room on the state filesystem to open the outbox beside a copy of its log ({e}); opening it without the copy");
                opened = Self::open_sled(dir, cfg.cache_bytes.bytes());
            }
        }
        if let Err(OpenFailure::Io(e)) = &opened {
            // sled must write to open (its snapshot, a new log segment). At a
            // start nothing else will make room (the store may have filled
            // the disk itself, beyond the model): give back the spare file
            // kept for this (`space::keep_spare`) and try once more. Only at
            // a start: while running, a full disk is waited out (a foreign
            // file is the usual cause, and it would take the spare too).
            if !inspect && e.is_no_space() {
                let freed = space::release_spare(dir);
                if freed > 0 {
                    tracing::warn!(
                        "no room on the state filesystem to open the outbox in {} ({e}); gave back the {} spare file kept for this and trying again",
                        dir.display(),
                        crate::config::units::ByteSize(freed)
                    );
                    opened = Self::open_sled(dir, cfg.cache_bytes.bytes());
                }
            }
        }
        let mut store = match opened {
            Ok(ok) => ok,
            Err(OpenFailure::Io(e)) => return Err(e),
            Err(OpenFailure::Corrupt(why)) if inspect => {
                tracing::debug!("opening {} for inspection failed: {why}", dir.display());
                return Err(OutboxError::Damaged(dir.to_path_buf()));
            }
            Err(OpenFailure::Corrupt(why)) => {
                let (store, report) = Self::salvage_into_new(dir, cfg.cache_bytes.bytes(), &why)?;
                moved_aside = Some(report.moved_to.clone());
                salvaged = Some(report);
                store
            }
        };
        if created || moved_aside.is_some() {
            // The new store's files must be findable after a power cut too,
            // sled's `conf` (written once, never synced by sled) included.
            store.checkpoint()?;
            if let Ok(conf) = std::fs::File::open(dir.join("conf")) {
                conf.sync_all().map_err(OutboxError::Disk)?;
            }
            sync_dir(dir).and_then(|_| sync_dir(parent)).map_err(|source| OutboxError::Io { path: dir.to_path_buf(), source })?;
        }
        let mut counters = Counters::load(&store)?;
        let last_run: Option<RunRecord> = store.get(META_RUN)?.and_then(|v| serde_json::from_slice(&v).ok());
        let previous_stop = match last_run {
            _ if created => PreviousStop::None,
            Some(RunRecord { clean_stop_ms: Some(at_ms), .. }) => PreviousStop::Clean { at_ms },
            Some(RunRecord { started_ms, clean_stop_ms: None }) => PreviousStop::Unclean { started_ms },
            None if salvaged.is_some() => PreviousStop::Unknown,
            None if counters.next_seq <= 1 && store.get(META_EPOCH)?.is_none() => PreviousStop::None,
            None => PreviousStop::Unknown,
        };
        let mut previous_stop = previous_stop;
        // A store that reads as new (no run record) although its log existed
        // lost its first pages (sled then reads the whole log as unused):
        // any counter in the raw log means committed readings were there.
        let lost_start = !created && previous_stop == PreviousStop::None;
        // The journal's header says how far sled's numbering got at the last
        // checkpoint: less now means sled lost part of its log, after a clean
        // stop too (a restored copy written only in part).
        let journal_next = store.journal.lock().sled_next();
        let lost_tail = !created && salvaged.is_none() && counters.next_seq < journal_next;
        if !inspect && lost_tail {
            tracing::debug!("sled kept numbering up to {}, the journal's last checkpoint had {journal_next}", counters.next_seq);
            drop(store);
            let (st, report) = Self::salvage_into_new(dir, cfg.cache_bytes.bytes(), "log shorter than at the last checkpoint")?;
            moved_aside = Some(report.moved_to.clone());
            salvaged = Some(report);
            store = st;
            counters = Counters::load(&store)?;
            previous_stop = PreviousStop::Unknown;
        }
        if inspect && lost_tail {
            return Err(OutboxError::Damaged(dir.to_path_buf()));
        }
        if !inspect && salvaged.is_none() && (lost_start || matches!(previous_stop, PreviousStop::Unclean { .. } | PreviousStop::Unknown)) {
            // sled 0.34 recovers its log up to the first damaged message and
            // silently drops everything after it. The counters in the raw log
            // tell how far numbering really got: if they went further than
            // what sled kept, committed readings were cut off, so salvage.
            let raw = std::fs::read(&pre_open).or_else(|_| std::fs::read(dir.join("db"))).ok();
            let kept_next = counters.next_seq;
            let max_write = if lost_start { 0 } else { MAX_INTERRUPTED_WRITE };
            let verdict = raw.as_deref().map_or(salvage::LogVerdict::Intact, |b| salvage::log_verdict(b, kept_next, max_write));
            if let (salvage::LogVerdict::Interrupted { next }, Some(bytes)) = (verdict, raw.as_deref()) {
                // The write the power cut interrupted (never synced, so never
                // reported committed), part of which reached the disk (a torn
                // page): not damage. Its complete readings are kept, and
                // numbering goes on after it.
                let kept = Self::keep_interrupted_write(&store, &mut counters, bytes, next)?;
                interrupted_write_kept = Some(kept);
                tracing::info!("the power cut interrupted a write to the outbox: {kept} reading(s) from it were complete and are kept; numbering goes on at {next}");
            }
            let raw_next = match verdict {
                salvage::LogVerdict::CutShort { raw_next } => Some(raw_next),
                _ => None,
            };
            if raw_next.is_some_and(|n| n > kept_next && n <= kept_next.saturating_add(1_000_000_000)) {
                tracing::debug!("sled kept numbering up to {kept_next}, the raw log shows {raw_next:?}");
                drop(store);
                let (st, report) = Self::salvage_into_new(dir, cfg.cache_bytes.bytes(), "log cut short by recovery")?;
                moved_aside = Some(report.moved_to.clone());
                salvaged = Some(report);
                store = st;
                counters = Counters::load(&store)?;
                previous_stop = PreviousStop::Unknown;
            }
        }
        let mut recount = None;
        let (epoch, started_ms) = if inspect {
            let epoch = store.get(META_EPOCH)?.map(|e| String::from_utf8_lossy(&e).into_owned()).unwrap_or_default();
            (epoch, last_run.map(|r| r.started_ms).unwrap_or(0))
        } else {
            if salvaged.is_none() && matches!(previous_stop, PreviousStop::Unclean { .. } | PreviousStop::Unknown) {
                let found = Self::recount(&store)?;
                let before = counters.count;
                if found.count != counters.count || found.bytes != counters.bytes {
                    counters.count = found.count;
                    counters.bytes = found.bytes;
                }
                // Never hand out a number that is already stored.
                counters.next_seq = counters.next_seq.max(found.max_seq + 1);
                recount = Some(Recount { readings: found.count, in_flight_batches: found.in_flight, counted_before: before });
            } else {
                // (A recount counts them too.)
                Self::adopt_cut_short_puts(&store, &mut counters)?;
            }
            // A fresh epoch for every life: message ids made from now on can
            // never equal one made before, whatever happened to the store.
            let epoch = format!("{:016x}", rand::random::<u64>());
            let started_ms = now_ms();
            let run = RunRecord { started_ms, clean_stop_ms: None };
            let mut batch = Ops::default();
            batch.insert(META_EPOCH, epoch.as_bytes());
            batch.insert(META_RUN, serde_json::to_vec(&run).unwrap_or_default());
            Self::put_counters(&mut batch, &counters);
            store.apply(batch);
            store.sync()?;
            (epoch, started_ms)
        };
        let _ = std::fs::remove_file(&pre_open);
        let outbox = Outbox {
            store: RwLock::new(Some(store)),
            dir: dir.to_path_buf(),
            epoch,
            cache_bytes: cfg.cache_bytes.bytes(),
            max_bytes: cfg.max_bytes.bytes(),
            bound: Mutex::new(BoundState {
                bound: space::Bound::max_bytes_only(cfg.max_bytes.bytes()),
                checked: None,
                feedback: space::Feedback::default(),
                segment: space::SEGMENT_DEFAULT,
            }),
            space_dir: dir.to_path_buf(),
            max_age: cfg.max_age,
            when_full: cfg.when_full,
            counters: Mutex::new(counters),
            pending_acks: Mutex::new((Vec::new(), None)),
            previous_stop,
            started_ms,
            inspect,
            _lock: lock,
            _scratch: None,
        };
        if !inspect {
            // Check the bound now, so a filesystem too small for max_bytes is
            // reported at start.
            outbox.bound();
        }
        Ok((outbox, OpenReport { moved_aside, took: started.elapsed(), previous_stop, recount, salvaged, interrupted_write_kept }))
    }

    /// Moves the damaged store in `dir` aside, scans its raw files for what
    /// can still be read ([`salvage`]), and builds a new store in `dir` with
    /// every salvaged reading under its own sequence number and every
    /// salvaged in-flight batch under its message id. Logs one line in plain
    /// words; the storage engine's own message goes to the debug log.
    ///
    /// All or nothing: if the new store cannot be built (typically: the
    /// state filesystem has no room for a second copy of the readings), the
    /// partial new store is removed and the damaged one is put back where it
    /// was, so no reading leaves the pipeline and the next try (a retry while
    /// running, or the next start) starts from the same place.
    fn salvage_into_new(dir: &Path, cache_bytes: u64, why: &str) -> Result<(Store, SalvageReport), OutboxError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        let aside = aside_path(dir);
        std::fs::rename(dir, &aside).map_err(|source| OutboxError::Io { path: dir.to_path_buf(), source })?;
        // The log as it was before sled's recovery wrote over its damaged
        // tail, if it was copied: scanned together with what is left.
        let _ = std::fs::rename(pre_open_path(dir), aside.join("db.before-open"));
        let _ = sync_dir(parent);
        tracing::debug!("the storage engine reported: {why}");
        match Self::build_from_salvage(dir, &aside, cache_bytes) {
            Ok(done) => Ok(done),
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::rename(aside.join("db.before-open"), pre_open_path(dir));
                if let Err(back) = std::fs::rename(&aside, dir) {
                    tracing::error!(
                        "cannot put the damaged outbox back from {} ({back}); its readings stay there: `iomt-edge outbox salvage --from {}` queues them again",
                        aside.display(),
                        aside.display()
                    );
                }
                let _ = sync_dir(parent);
                Err(e)
            }
        }
    }

    /// The second half of [`Outbox::salvage_into_new`]: scan `aside`, build
    /// the new store in `dir`.
    fn build_from_salvage(dir: &Path, aside: &Path, cache_bytes: u64) -> Result<(Store, SalvageReport), OutboxError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        let aside = aside.to_path_buf();
        let (found, skipped) = salvage::scan_dir(&aside).map_err(|source| OutboxError::Io { path: aside.clone(), source })?;
        for f in &skipped {
            tracing::warn!("salvage could not read {f}");
        }
        let store = match Self::open_sled(dir, cache_bytes) {
            Ok(st) => st,
            Err(OpenFailure::Io(e)) => return Err(e),
            Err(OpenFailure::Corrupt(why)) => return Err(OutboxError::Io { path: dir.to_path_buf(), source: std::io::Error::other(why) }),
        };
        let mut c = Counters { next_seq: found.max_seq + 1, ..Counters::default() };
        let mut batch = Ops::default();
        let mut pending = 0;
        for (seq, (commit_ms, r)) in &found.readings {
            let mut value = Vec::with_capacity(256);
            value.extend_from_slice(&commit_ms.to_be_bytes());
            let _ = serde_json::to_writer(&mut value, r);
            c.count += 1;
            c.bytes += value.len() as u64 + PER_READING_OVERHEAD;
            batch.insert(reading_key(*seq), value);
            pending += 1;
            if pending == 10_000 {
                store.apply_to_sled(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        for b in &found.in_flight {
            let first = b.seqs.iter().copied().min().unwrap_or(0);
            batch.insert(inflight_key(first), serde_json::to_vec(b).unwrap_or_default());
        }
        dead_letters::salvaged_into(&mut batch, &found.dead_letters);
        Self::put_counters(&mut batch, &c);
        store.apply_to_sled(batch)?;
        store.checkpoint()?;
        sync_dir(dir).and_then(|_| sync_dir(parent)).map_err(|source| OutboxError::Io { path: dir.to_path_buf(), source })?;
        let report = SalvageReport {
            moved_to: aside,
            readings: found.readings.len() as u64,
            in_flight_batches: found.in_flight.len() as u64,
            unreadable: found.unreadable,
            already_gone: found.already_gone,
            dead_letters: found.dead_letters.len() as u64,
        };
        // Mark the damaged copy as salvaged, so a later manual
        // `outbox salvage --from` does not queue the same readings twice.
        if let Err(e) = crate::fsutil::write_durable(&report.moved_to.join(SALVAGED_MARK), &serde_json::to_vec_pretty(&report).unwrap_or_default()) {
            tracing::warn!("cannot mark {} as salvaged ({e})", report.moved_to.display());
        }
        tracing::error!("the outbox in {} was damaged and could not be read as it was; {report}", dir.display());
        Ok((store, report))
    }

    /// Keeps the complete readings of a write a power cut interrupted (those
    /// with sequence numbers from `c.next_seq` up to `next`), and moves the
    /// numbering on to `next`, so no number of that write is given again.
    /// Returns how many readings were kept.
    fn keep_interrupted_write(store: &Store, c: &mut Counters, raw: &[u8], next: u64) -> Result<u64, OutboxError> {
        let found = salvage::scan(&[raw]);
        let mut batch = Ops::default();
        let mut kept = 0u64;
        let mut kept_seqs = Vec::new();
        for (seq, (commit_ms, r)) in found.readings.range(c.next_seq..next) {
            if store.get(reading_key(*seq))?.is_some() {
                continue;
            }
            kept_seqs.push(*seq);
            let mut value = Vec::with_capacity(256);
            value.extend_from_slice(&commit_ms.to_be_bytes());
            let _ = serde_json::to_writer(&mut value, r);
            c.count += 1;
            c.bytes += value.len() as u64 + PER_READING_OVERHEAD;
            batch.insert(reading_key(*seq), value);
            kept += 1;
        }
        c.next_seq = c.next_seq.max(next);
        dead_letters::finish_interrupted_retries(store, &mut batch, &found.retried, &kept_seqs)?;
        Self::put_counters(&mut batch, c);
        store.apply(batch);
        store.checkpoint()?;
        Ok(kept)
    }

    /// Replaces a damaged store while the gateway runs: what a read or write
    /// reported as damage ([`OutboxError::is_damage`]) is handled like damage
    /// found at open. Readings keep their sequence numbers, in-flight batches
    /// their ids, and this life its epoch.
    pub(crate) fn repair(&self) -> Result<SalvageReport, OutboxError> {
        let mut slot = self.store.write();
        let fdatasync = slot.as_ref().is_none_or(|st| st.fdatasync);
        drop(slot.take());
        let (mut store, report) = Self::salvage_into_new(&self.dir, self.cache_bytes, "damage found while running")?;
        store.fdatasync = fdatasync;
        let mut c = Counters::load(&store)?;
        {
            let old = self.counters();
            // Never go back: numbers handed out before the damage stay used.
            c.next_seq = c.next_seq.max(old.next_seq);
            c.dropped_full = old.dropped_full;
            c.dropped_age = old.dropped_age;
            c.refused = old.refused;
        }
        let mut batch = Ops::default();
        batch.insert(META_EPOCH, self.epoch.as_bytes());
        let run = RunRecord { started_ms: self.started_ms, clean_stop_ms: None };
        batch.insert(META_RUN, serde_json::to_vec(&run).unwrap_or_default());
        Self::put_counters(&mut batch, &c);
        store.apply(batch);
        store.checkpoint()?;
        *self.counters() = c;
        *slot = Some(store);
        Ok(report)
    }

    /// Readings numbered at or beyond the committed next number: values a
    /// checkpoint cut short (a failed write, a kill) had already put into
    /// sled for a group that was not committed yet ([`Store::checkpoint`]).
    /// They are kept (a kill leaves them nowhere else) and counted, and
    /// numbering goes on after them, so that a number [`Outbox::recover`]
    /// finds stored is never handed out again. The changes are applied to
    /// `store` and `c`; the caller makes them durable. Returns how many.
    fn adopt_cut_short_puts(store: &Store, c: &mut Counters) -> Result<u64, OutboxError> {
        let mut n = 0u64;
        for item in store.range(&reading_key(c.next_seq), &reading_key(u64::MAX)) {
            let (k, v) = item?;
            n += 1;
            c.count += 1;
            c.bytes += v.len() as u64 + PER_READING_OVERHEAD;
            c.next_seq = c.next_seq.max(seq_of(&k).unwrap_or(0).saturating_add(1));
        }
        if n > 0 {
            tracing::info!(
                "{n} reading(s) of a write the outbox had not finished were found stored; they are kept and numbering goes on at {}",
                c.next_seq
            );
            let mut batch = Ops::default();
            Self::put_counters(&mut batch, c);
            store.apply(batch);
        }
        Ok(n)
    }

    /// Counts what the store really holds (readings, their bytes as the bound
    /// counts them, in-flight records, the highest sequence number).
    fn recount(st: &Store) -> Result<Found, OutboxError> {
        let mut found = Found::default();
        for item in st.scan_prefix(READING) {
            let (k, v) = item?;
            found.count += 1;
            found.bytes += v.len() as u64 + PER_READING_OVERHEAD;
            found.max_seq = found.max_seq.max(seq_of(&k).unwrap_or(0));
        }
        found.in_flight = st.scan_prefix(INFLIGHT).count() as u64;
        Ok(found)
    }

    /// Records that this life ended cleanly, durably. Call it last, after the
    /// final flush; the next [`Outbox::open`] then reports a clean stop.
    pub fn close_clean(&self) -> Result<(), OutboxError> {
        if self.inspect {
            return Ok(());
        }
        let st = self.store()?;
        self.apply_acks(&st)?;
        let run = RunRecord { started_ms: self.started_ms, clean_stop_ms: Some(now_ms()) };
        let mut batch = Ops::default();
        batch.insert(META_RUN, serde_json::to_vec(&run).unwrap_or_default());
        st.apply(batch);
        // Everything into sled: the next start has no journal to read.
        st.checkpoint()
    }

    /// Turns the `fdatasync` after sled's flush off, for `iomt-edge bench`
    /// only, which reports the durable and the old figures side by side.
    #[doc(hidden)]
    pub(crate) fn bench_without_fdatasync(&self) {
        if let Some(st) = self.store.write().as_mut() {
            st.fdatasync = false;
        }
    }

    fn open_sled(dir: &Path, cache_bytes: u64) -> Result<Store, OpenFailure> {
        // We hold our own lock, so no other process uses this outbox. sled's
        // lock can still be held for a moment by a previous instance in this
        // process whose background flusher has not finished: wait for it.
        let mut tries = 0;
        loop {
            match Self::open_sled_once(dir, cache_bytes) {
                Err(OpenFailure::Io(OutboxError::Io { source, .. })) if tries < 100 && source.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_sled_once(dir: &Path, cache_bytes: u64) -> Result<Store, OpenFailure> {
        // sled records a store's segment size in its `conf` and refuses
        // (as unsupported, which would read as damage) to open it with
        // another: an existing store keeps its own, a new one gets what its
        // filesystem calls for (small segments on a small filesystem, so
        // that sled's fixed part fits; `space::segment_to_open`).
        let segment = space::segment_to_open(dir);
        let sled_cfg = sled::Config::new()
            .path(dir)
            .segment_size(usize::try_from(segment).unwrap_or(space::SEGMENT_DEFAULT as usize))
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::LowSpace)
            // No background flush: every write that must be durable is
            // synced by us (append, in-flight records, the run record), and
            // what may wait (acks, expiry) rides along with the next of
            // those. sled's once-a-second flush would only add SD-card writes.
            .flush_every_ms(None);
        // An unfinished or damaged snapshot (a full disk or a crash while
        // sled wrote it) would make sled refuse the whole store.
        let set_aside = snapshots::set_aside_bad(dir);
        if !set_aside.is_empty() {
            tracing::warn!(
                "the outbox in {} had {} damaged index snapshot(s) (left by a full disk or a crash); set aside as unused-snap.*, the store is read from its log",
                dir.display(),
                set_aside.len()
            );
        }
        // sled 0.34 can panic on some corrupt files instead of returning an error.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = sled_cfg.open()?;
            let tree = db.open_tree(TREE)?;
            // Touch both ends and the counters so corruption shows up now, not later.
            tree.first()?;
            tree.last()?;
            tree.get(META_NEXT_SEQ)?;
            Ok::<_, sled::Error>((db, tree))
        }));
        match opened {
            Ok(Ok((db, tree))) => {
                // Writable for the zeros ahead of sled's writes; read-only
                // (no zeros, syncs still work) where that is refused.
                let log = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join("db"))
                    .or_else(|_| std::fs::File::open(dir.join("db")))
                    .map_err(|source| OpenFailure::Io(OutboxError::Io { path: dir.join("db"), source }))?;
                Self::with_journal(dir, db, tree, log).map_err(OpenFailure::Io)
            }
            Ok(Err(sled::Error::Io(e))) => Err(OpenFailure::Io(OutboxError::Io { path: dir.to_path_buf(), source: e })),
            Ok(Err(e)) => Err(OpenFailure::Corrupt(e.to_string())),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled panicked while opening".into());
                Err(OpenFailure::Corrupt(what))
            }
        }
    }

    /// Opens the commit journal beside sled's files and brings sled up to
    /// date with what it holds: its committed records are applied and
    /// checkpointed, unless sled already has them (a power cut between a
    /// checkpoint and the journal's reset).
    fn with_journal(dir: &Path, db: sled::Db, tree: sled::Tree, log: std::fs::File) -> Result<Store, OutboxError> {
        let io = |source| OutboxError::Io { path: dir.join(journal::FILE_NAME), source };
        let (capacity, prefill) = match space::fs_space(dir) {
            Ok((_, free)) if free >= ZEROS_MIN_FREE => (JOURNAL_BYTES, true),
            _ => (JOURNAL_BYTES_SMALL, false),
        };
        let (j, batches) = journal::Journal::open(dir, capacity, prefill).map_err(io)?;
        let in_sled = u64_of(tree.get(META_JOURNAL)?) == j.generation();
        let store = Store {
            db,
            tree,
            log,
            journal: parking_lot::Mutex::new(j),
            mem: parking_lot::Mutex::new(Mem::default()),
            fdatasync: true,
            syncs: AtomicU64::new(0),
            zero_end: AtomicU64::new(0),
            dir: Some(dir.to_path_buf()),
            #[cfg(test)]
            cut_checkpoint_after: std::sync::atomic::AtomicUsize::new(0),
        };
        if in_sled {
            let next = u64_of(store.tree.get(META_NEXT_SEQ)?);
            store.journal.lock().reset(next, true).map_err(io)?;
        } else if !batches.is_empty() {
            tracing::debug!("applying {} committed group(s) from the outbox journal", batches.len());
            for b in batches {
                store.apply(Ops(b));
            }
            store.checkpoint()?;
        }
        Ok(store)
    }

    /// The random id of this outbox's life, part of every message id.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open store, or `Unavailable` while it is closed after a write error.
    fn store(&self) -> Result<MappedRwLockReadGuard<'_, Store>, OutboxError> {
        RwLockReadGuard::try_map(self.store.read(), Option::as_ref).map_err(|_| OutboxError::Unavailable("reopening failed; retrying".into()))
    }

    /// Reopens the store after a failed write. sled 0.34 refuses every write
    /// after one I/O error (a full disk, EIO) until it is reopened, even once
    /// there is room again; reopening also discards whatever it accepted in
    /// memory but never wrote. Counters are reloaded from what is on disk.
    ///
    /// `group` is the batch whose append failed. Its readings keep the sequence
    /// numbers they were given when sled accepted the batch but the flush
    /// failed; if the batch reached the disk after all (sled's own flusher got
    /// it out), this returns `Ok(true)`: the group is committed and must not be
    /// appended again. Otherwise their numbers are cleared and it returns
    /// `Ok(false)`: append the group again.
    pub(crate) fn recover(&self, group: &mut [Reading]) -> Result<bool, OutboxError> {
        let reopened = self.guarded(|| self.reopen());
        match reopened {
            Err(e) if e.is_damage() => {
                self.repair()?;
            }
            other => other?,
        }
        let seqs: Vec<u64> = group.iter().map(|r| r.seq).filter(|s| *s != 0).collect();
        let on_disk = self.guarded(|| {
            let st = self.store()?;
            let mut n = 0;
            for q in &seqs {
                if st.get(reading_key(*q))?.is_some() {
                    n += 1;
                }
            }
            Ok(n)
        })?;
        // A sled batch is atomic: all of the group is on disk, or none of it.
        if !seqs.is_empty() && on_disk == seqs.len() {
            return Ok(true);
        }
        for r in group.iter_mut() {
            r.seq = 0;
        }
        Ok(false)
    }

    /// The committer's write: stores `readings` and `records` with one
    /// `fdatasync` ([`Outbox::append_with_records`]); when that fails, reopens
    /// the store ([`Outbox::recover`]: sled refuses every write after one I/O
    /// error until then) and tells whether the group reached the disk after
    /// all, so it is neither lost nor stored twice. `Ok`: the readings numbered
    /// in [`GroupOutcome::appended`] are committed. `Err`: none of the group is
    /// stored; append it again later.
    pub(crate) fn append_or_recover(&self, readings: &mut [Reading], records: &[InFlight]) -> Result<GroupOutcome, GroupCommitError> {
        let append = match self.append_with_records(readings, records) {
            Ok(appended) => return Ok(GroupOutcome { appended, records_stored: true }),
            Err(e) => e,
        };
        match self.recover(readings) {
            // A reading refused by the failed append kept no number (0:
            // not assigned, see `Reading::seq`); the others are on disk.
            Ok(true) => Ok(GroupOutcome {
                appended: AppendOutcome { seqs: readings.iter().map(|r| (r.seq != 0).then_some(r.seq)).collect(), ..Default::default() },
                records_stored: false,
            }),
            Ok(false) => Err(GroupCommitError::NotStored(append)),
            Err(reopen) => Err(GroupCommitError::ReopenFailed { append, reopen }),
        }
    }

    /// Closes and reopens the store, reloading the counters from disk.
    fn reopen(&self) -> Result<(), OutboxError> {
        let mut slot = self.store.write();
        // sled's file lock is released when the old handles are gone; open_sled
        // waits for its background flusher to let go.
        let fdatasync = slot.as_ref().is_none_or(|st| st.fdatasync);
        drop(slot.take());
        let mut store = match Self::open_sled(&self.dir, self.cache_bytes) {
            Ok(ok) => ok,
            Err(OpenFailure::Io(e)) => return Err(e),
            Err(OpenFailure::Corrupt(why)) => {
                tracing::debug!("reopening the outbox: {why}");
                return Err(OutboxError::Damaged(self.dir.clone()));
            }
        };
        store.fdatasync = fdatasync;
        let mut reloaded = Counters::load(&store)?;
        Self::adopt_cut_short_puts(&store, &mut reloaded)?;
        // What sled and the journal read back may still be only in the page
        // cache: make it durable before anyone calls it committed.
        store.checkpoint()?;
        *self.counters() = reloaded;
        *slot = Some(store);
        Ok(())
    }

    /// Runs `f`, turning a panic inside the storage engine (sled 0.34 panics
    /// on some damaged files instead of returning an error) into
    /// [`OutboxError::Damaged`].
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, OutboxError>) -> Result<T, OutboxError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(_) => Err(OutboxError::Damaged(self.dir.clone())),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_counters(batch: &mut Ops, c: &Counters) {
        batch.insert(META_NEXT_SEQ, c.next_seq.to_be_bytes());
        batch.insert(META_COUNT, c.count.to_be_bytes());
        batch.insert(META_BYTES, c.bytes.to_be_bytes());
        batch.insert(META_DROPPED_FULL, c.dropped_full.to_be_bytes());
        batch.insert(META_DROPPED_AGE, c.dropped_age.to_be_bytes());
        batch.insert(META_REFUSED, c.refused.to_be_bytes());
    }

    /// Stores readings, assigns their sequence numbers (written into the readings)
    /// and flushes. When this returns `Ok`, the stored readings are committed.
    pub fn append(&self, readings: &mut [Reading]) -> Result<AppendOutcome, OutboxError> {
        self.guarded(|| {
            // One guard for both steps: a reopen (`recover`) between them would
            // throw away the unflushed batch while we reported it committed.
            let st = self.store()?;
            let acks = self.take_pending_acks();
            let outcome = self.append_to(&st, readings, &acks, &[])?;
            st.sync()?;
            Ok(outcome)
        })
    }

    /// Like [`Outbox::append`] without the flush; callers doing group commit
    /// call [`Outbox::flush`] before they treat the readings as committed.
    pub fn append_unflushed(&self, readings: &mut [Reading]) -> Result<AppendOutcome, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let acks = self.take_pending_acks();
            self.append_to(&st, readings, &acks, &[])
        })
    }

    /// Stores `readings` in one sled batch, together with the removals of
    /// the batches in `acks` (delivered) and the `records` of batches about
    /// to be sent: one write to sled's log instead of one per kind (sled
    /// writes each batch as log messages of its own, each costing a page on
    /// the SD card, docs/performance.md).
    fn append_to(&self, st: &Store, readings: &mut [Reading], acks: &[InFlight], records: &[InFlight]) -> Result<AppendOutcome, OutboxError> {
        let mut batch = Ops::default();
        let outcome = self.append_into(st, &mut batch, readings, acks, records)?;
        st.apply(batch);
        Ok(outcome)
    }

    /// As [`Outbox::append_to`], adding the changes to `batch` instead of
    /// applying them (for a caller with more changes for the same write).
    /// The counters in memory are updated already.
    fn append_into(
        &self,
        st: &Store,
        batch: &mut Ops,
        readings: &mut [Reading],
        acks: &[InFlight],
        records: &[InFlight],
    ) -> Result<AppendOutcome, OutboxError> {
        let max_bytes = self.bound().bytes;
        let mut c = self.counters();
        let mut outcome = AppendOutcome::default();
        let mut delivered: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for a in acks {
            Self::ack_into(st, &mut c, batch, a)?;
            delivered.extend(a.seqs.iter().copied());
        }
        Self::in_flight_into(batch, records);
        let commit_ms = now_ms();
        // Serialize once, with the sequence numbers the readings will get if
        // admitted (admission keeps a prefix, so these are the final numbers).
        let mut encoded = Vec::with_capacity(readings.len());
        let mut incoming: u64 = 0;
        for (i, r) in readings.iter_mut().enumerate() {
            r.seq = c.next_seq + i as u64;
            let mut value = Vec::with_capacity(256);
            value.extend_from_slice(&commit_ms.to_be_bytes());
            // Serializing a Reading (plain data) into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut value, &*r);
            incoming += value.len() as u64 + PER_READING_OVERHEAD;
            encoded.push(value);
        }
        let mut evicted = Vec::new();
        let mut admit = readings.len();
        if c.bytes.saturating_add(incoming) > max_bytes {
            match self.when_full {
                WhenFull::DropOldest => {
                    let need = c.bytes.saturating_add(incoming) - max_bytes;
                    let mut freed = 0u64;
                    for item in st.range(&reading_key(0), &reading_key(u64::MAX)) {
                        if freed >= need {
                            break;
                        }
                        let (k, v) = item?;
                        // Removed by an ack in this same batch already.
                        if seq_of(&k).is_some_and(|s| delivered.contains(&s)) {
                            continue;
                        }
                        freed += v.len() as u64 + PER_READING_OVERHEAD;
                        evicted.push((k, v.len() as u64 + PER_READING_OVERHEAD));
                    }
                }
                WhenFull::RefuseNewest => {
                    let room = max_bytes.saturating_sub(c.bytes);
                    let mut used = 0u64;
                    admit = 0;
                    for value in &encoded {
                        let size = value.len() as u64 + PER_READING_OVERHEAD;
                        if used + size > room {
                            break;
                        }
                        used += size;
                        admit += 1;
                    }
                }
            }
        }
        for (k, size) in &evicted {
            batch.remove(k);
            c.count = c.count.saturating_sub(1);
            c.bytes = c.bytes.saturating_sub(*size);
            c.dropped_full += 1;
        }
        if let Some(highest) = evicted.last().and_then(|(k, _)| seq_of(k)) {
            put_drop_floor(batch, highest);
        }
        outcome.dropped_oldest = evicted.len() as u64;
        for (i, (r, value)) in readings.iter_mut().zip(encoded).enumerate() {
            if i >= admit {
                r.seq = 0;
                outcome.seqs.push(None);
                c.refused += 1;
                outcome.refused += 1;
                continue;
            }
            c.count += 1;
            c.bytes += value.len() as u64 + PER_READING_OVERHEAD;
            batch.insert(reading_key(r.seq), value);
            outcome.seqs.push(Some(r.seq));
        }
        c.next_seq += admit as u64;
        Self::put_counters(batch, &c);
        Ok(outcome)
    }

    /// Makes everything written so far durable (sled's flush, then
    /// `fdatasync` of its log).
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            self.apply_acks(&st)?;
            st.sync()
        })
    }

    /// Applies the acknowledgements [`Outbox::ack_deferred`] is holding (not
    /// made durable: they go with the next sync, as acks always did).
    pub(crate) fn apply_pending_acks(&self) -> Result<(), OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            self.apply_acks(&st)?;
            Ok(())
        })
    }

    /// How long the oldest held acknowledgement has waited (None: none held).
    pub(crate) fn pending_acks_age(&self) -> Option<std::time::Duration> {
        self.pending_acks.lock().unwrap_or_else(|p| p.into_inner()).1.map(|t| t.elapsed())
    }

    /// The destination confirmed this batch; its removal is held in memory
    /// and written with the next group commit (or by
    /// [`Outbox::apply_pending_acks`]). Lost in a crash, it means a resend
    /// under the same id, which at-least-once allows, as for [`Outbox::ack`].
    pub(crate) fn ack_deferred(&self, batch: InFlight) {
        let mut p = self.pending_acks.lock().unwrap_or_else(|p| p.into_inner());
        p.0.push(batch);
        p.1.get_or_insert_with(std::time::Instant::now);
    }

    /// Writes the held acknowledgements into `st` (not synced).
    fn apply_acks(&self, st: &Store) -> Result<(), OutboxError> {
        let acks = self.take_pending_acks();
        if !acks.is_empty() {
            self.append_to(st, &mut [], &acks, &[])?;
        }
        Ok(())
    }

    fn take_pending_acks(&self) -> Vec<InFlight> {
        let mut p = self.pending_acks.lock().unwrap_or_else(|p| p.into_inner());
        p.1 = None;
        std::mem::take(&mut p.0)
    }

    /// Up to `limit` readings with seq > `after` and seq <= `up_to`, in seq order.
    pub fn read_range(&self, after: u64, up_to: u64, limit: usize) -> Result<Vec<Reading>, OutboxError> {
        self.guarded(|| {
            if up_to <= after {
                return Ok(Vec::new());
            }
            let st = self.store()?;
            let mut out = Vec::new();
            for item in st.range(&reading_key(after.saturating_add(1)), &key_after(READING, up_to)) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item?;
                match decode_value(&v) {
                    Some((_, r)) => out.push(r),
                    None => {
                        // A record that sled returns but that is not what we
                        // wrote: the store is damaged. Skipping it would leave
                        // it queued for ever; repair salvages what is readable.
                        tracing::debug!("outbox record {:?} cannot be decoded", seq_of(&k));
                        return Err(OutboxError::Damaged(self.dir.clone()));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The readings with these sequence numbers that are still stored.
    pub(crate) fn get_many(&self, seqs: &[u64]) -> Result<Vec<Reading>, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let mut out = Vec::with_capacity(seqs.len());
            for s in seqs {
                if let Some(v) = st.get(reading_key(*s))? {
                    if let Some((_, r)) = decode_value(&v) {
                        out.push(r);
                    }
                }
            }
            Ok(out)
        })
    }

    /// How many times the store was made durable (sled flush + `fdatasync`)
    /// since it was opened or last reopened: each costs at least one page on
    /// the SD card.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.store.read().as_ref().map_or(0, |st| st.syncs.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Records (and flushes) a batch before it is sent.
    pub fn put_in_flight(&self, batch: &InFlight) -> Result<(), OutboxError> {
        self.put_in_flight_many(std::slice::from_ref(batch))
    }

    /// Records several batches before they are sent, with one write and one
    /// `fdatasync` for all of them.
    pub(crate) fn put_in_flight_many(&self, batches: &[InFlight]) -> Result<(), OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let acks = self.take_pending_acks();
            self.append_to(&st, &mut [], &acks, batches)?;
            st.sync()?;
            Ok(())
        })
    }

    /// Stores `records` (batches about to be sent) and `readings` with one
    /// `fdatasync` for both: the group commit the in-flight records of the
    /// forwarder ride along with ([`committer::GroupSync`]), so a forwarder
    /// pass does not cost a sync (and a page on the SD card) of its own.
    /// On success both are durable; on error, as [`Outbox::append`].
    pub(crate) fn append_with_records(&self, readings: &mut [Reading], records: &[InFlight]) -> Result<AppendOutcome, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let acks = self.take_pending_acks();
            let outcome = self.append_to(&st, readings, &acks, records)?;
            st.sync()?;
            Ok(outcome)
        })
    }

    fn in_flight_into(b: &mut Ops, batches: &[InFlight]) {
        for batch in batches {
            let first = batch.seqs.iter().copied().min().unwrap_or(0);
            b.insert(inflight_key(first), serde_json::to_vec(batch).unwrap_or_default());
        }
    }

    /// Batches recorded as in flight, oldest first.
    pub(crate) fn in_flight(&self) -> Result<Vec<InFlight>, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let mut out = Vec::new();
            for item in st.scan_prefix(INFLIGHT) {
                let (_, v) = item?;
                if let Ok(b) = serde_json::from_slice::<InFlight>(&v) {
                    out.push(b);
                }
            }
            Ok(out)
        })
    }

    /// The destination confirmed this batch: remove its readings and its record.
    /// Not flushed on purpose: if the removal is lost in a crash, the batch is
    /// resent under the same id, which is what at-least-once allows.
    pub(crate) fn ack(&self, batch: &InFlight) -> Result<(), OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let mut c = self.counters();
            let mut b = Ops::default();
            Self::ack_into(&st, &mut c, &mut b, batch)?;
            Self::put_counters(&mut b, &c);
            st.apply(b);
            Ok(())
        })
    }

    /// Adds the removal of a delivered batch (its readings, its record) and
    /// its delivery watermark to `b`, and counts it in `c`.
    fn ack_into(st: &Store, c: &mut Counters, b: &mut Ops, batch: &InFlight) -> Result<(), OutboxError> {
        let mut sample = None;
        for s in &batch.seqs {
            if let Some(v) = st.get(reading_key(*s))? {
                b.remove(reading_key(*s));
                c.count = c.count.saturating_sub(1);
                c.bytes = c.bytes.saturating_sub(v.len() as u64 + PER_READING_OVERHEAD);
                sample.get_or_insert(v);
            }
        }
        let first = batch.seqs.iter().copied().min().unwrap_or(0);
        b.remove(inflight_key(first));
        // A batch holds one device's readings for one patient, delivered in
        // sequence order: remember how far that delivery got, for salvage.
        if let Some((key, mark)) = sample.and_then(|v| decode_value(&v)).map(|(_, r)| {
            let last = batch.seqs.iter().copied().max().unwrap_or(0);
            (
                ack_key(&r.device_id, r.patient_id.as_deref()),
                salvage::AckMark { acked_through: last, device_id: r.device_id, patient_id: r.patient_id },
            )
        }) {
            b.insert(key, serde_json::to_vec(&mark).unwrap_or_default());
        }
        Ok(())
    }

    /// Forgets an in-flight record without removing its readings (used when a
    /// batch is split after "too large").
    pub(crate) fn cancel_in_flight(&self, batch: &InFlight) -> Result<(), OutboxError> {
        self.guarded(|| {
            let first = batch.seqs.iter().copied().min().unwrap_or(0);
            let mut b = Ops::default();
            b.remove(inflight_key(first));
            self.store()?.apply(b);
            Ok(())
        })
    }

    /// Drops readings committed longer ago than `max_age`; returns how many.
    pub fn expire(&self) -> Result<u64, OutboxError> {
        self.guarded(|| {
            // Saturating: a max_age longer than the clock's age expires nothing
            // (a plain `as u64` wrapped 18446744073709552 s to 384 ms).
            let max_age_ms = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
            let cutoff = now_ms().saturating_sub(max_age_ms);
            let st = self.store()?;
            let mut c = self.counters();
            let mut b = Ops::default();
            let mut n = 0u64;
            let mut highest = None;
            for item in st.range(&reading_key(0), &reading_key(u64::MAX)) {
                let (k, v) = item?;
                let committed = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                if committed >= cutoff || n >= 10_000 {
                    break;
                }
                highest = seq_of(&k);
                b.remove(k);
                c.count = c.count.saturating_sub(1);
                c.bytes = c.bytes.saturating_sub(v.len() as u64 + PER_READING_OVERHEAD);
                c.dropped_age += 1;
                n += 1;
            }
            if n > 0 {
                if let Some(h) = highest {
                    put_drop_floor(&mut b, h);
                }
                Self::put_counters(&mut b, &c);
                st.apply(b);
            }
            Ok(n)
        })
    }

    /// Readings currently stored.
    pub fn len(&self) -> u64 {
        self.counters().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest sequence number handed out so far (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.counters().next_seq.saturating_sub(1)
    }

    pub fn stats(&self) -> OutboxStats {
        let st = self.store().ok();
        let in_flight = st.as_ref().map(|st| st.scan_prefix(INFLIGHT).count() as u64).unwrap_or(0);
        let disk_bytes = st.as_ref().map(|st| st.size_on_disk()).unwrap_or(0);
        // Before the counters: `bound` takes them itself (lock order).
        let bound = self.bound();
        let c = self.counters();
        OutboxStats {
            queued: c.count,
            queued_bytes: c.bytes,
            in_flight_batches: in_flight,
            next_seq: c.next_seq,
            dropped_full: c.dropped_full,
            dropped_age: c.dropped_age,
            refused: c.refused,
            dead_letters: c.dead_letters,
            dead_letter_bytes: c.dead_letter_bytes,
            epoch: self.epoch.clone(),
            disk_bytes,
            previous_stop: self.previous_stop,
            started_ms: self.started_ms,
            bound,
        }
    }

    /// How many readings one write may store: the committer splits a larger
    /// group (a backlog held in memory while the disk was full, up to 4096
    /// readings) into writes of at most a sixteenth of the bound each. sled
    /// writes the whole batch before it can reuse the space of what the batch
    /// evicts, so one write much larger than that could take the reserve,
    /// and on a small state filesystem fill it. At least 1.
    pub fn group_limit(&self) -> usize {
        let bound = self.bound().bytes;
        let c = self.counters();
        let per_reading = c.bytes.checked_div(c.count).map_or(256, |b| b.max(64));
        usize::try_from((bound / 16) / per_reading).unwrap_or(usize::MAX).clamp(1, 4096)
    }

    /// The bound in force: the smaller of `max_bytes` and what the state
    /// filesystem can hold ([`space::effective_bound`]), tightened further
    /// when the store's files grow while the free space is under the reserve
    /// ([`space::Feedback`]), checked again when the last check is older than
    /// a second (a tenth of a second near the reserve). When the filesystem, not `max_bytes`, starts to bound the
    /// outbox, one warning says so; one line says when that episode ends; the
    /// same for a tightening. A gateway's outbox also keeps its spare file
    /// ([`space::keep_spare`]) at each check.
    ///
    /// Lock order: takes the bound, then the counters; call it without
    /// holding the counters.
    pub(crate) fn bound(&self) -> space::Bound {
        let mut st = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        // Near the reserve, sled's log can take a segment in less than a
        // second of churn: look more often there.
        let near = st.bound.fs_bytes > 0 && st.bound.fs_free < st.bound.reserve.saturating_add(2 * st.segment);
        let every = if near { BOUND_RECHECK_NEAR } else { BOUND_RECHECK };
        if st.checked.is_some_and(|t| t.elapsed() < every) {
            return st.bound;
        }
        let space::Look { bound: model, store_disk, segment } = space::bound_and_usage(&self.space_dir, self.max_bytes);
        st.segment = segment;
        let state_fs = self.space_dir.parent().unwrap_or(&self.space_dir);
        let new = if self.inspect {
            model
        } else {
            let was_tightened = st.feedback.is_tightened();
            let queued = self.counters().bytes;
            let new = st.feedback.apply(model, queued, store_disk, segment);
            match (was_tightened, new.tightened) {
                (false, true) => tracing::warn!(
                    "the outbox's files take more room on {} than modelled ({} on disk for {} of readings); {}; the oldest readings are dropped (or new ones refused, by when_full) before the disk is full",
                    state_fs.display(),
                    crate::config::units::ByteSize(store_disk),
                    crate::config::units::ByteSize(queued),
                    new.describe(state_fs)
                ),
                (true, false) => tracing::info!("the outbox's bound is no longer tightened: {}", new.describe(state_fs)),
                _ => {}
            }
            match (st.checked.is_some().then_some(st.bound.by), new.by) {
                (None | Some(space::BoundBy::MaxBytes), space::BoundBy::FreeSpace) => tracing::warn!(
                    "{}; when it is full, {}",
                    new.describe(state_fs),
                    match self.when_full {
                        WhenFull::DropOldest => "the oldest readings are dropped to make room (counted in `outbox stats`)",
                        WhenFull::RefuseNewest => "new readings are refused (counted in `outbox stats`)",
                    }
                ),
                (Some(space::BoundBy::FreeSpace), space::BoundBy::MaxBytes) => {
                    tracing::info!("the state filesystem has room again: {}", new.describe(state_fs))
                }
                _ => {}
            }
            space::keep_spare(&self.space_dir, &model, segment);
            // Records up to JOURNAL_FLOOR fit in the commit journal's space,
            // which is already allocated: a disk that another program filled
            // does not make the outbox drop the readings it is about to
            // deliver (their commits need no new space; sled's, at the next
            // checkpoint, wait for room with the readings held in memory).
            if new.by == space::BoundBy::FreeSpace && new.bytes < JOURNAL_FLOOR.min(self.max_bytes) {
                space::Bound { bytes: JOURNAL_FLOOR.min(self.max_bytes), ..new }
            } else {
                new
            }
        };
        st.bound = new;
        st.checked = Some(Instant::now());
        new
    }
}

/// What [`Outbox::recount`] found.
#[derive(Debug, Default)]
struct Found {
    count: u64,
    bytes: u64,
    in_flight: u64,
    max_seq: u64,
}

enum OpenFailure {
    Io(OutboxError),
    Corrupt(String),
}

/// Stores up to this size are copied before sled opens them (see `open_with`).
const PRE_OPEN_COPY_MAX: u64 = 64 << 20;

/// Copies `from` to `to` without its trailing zeros (the stretch
/// [`Store::keep_zeros_ahead`] writes past sled's log, which says nothing).
fn copy_without_zero_tail(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    std::fs::write(to, &bytes[..end])
}

/// `{dir}.pre-open`: the copy of the log taken before sled opened it.
/// How [`Outbox::open_with`] opens a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// For a gateway life; `copy_log`: keep a copy of the log as it was
    /// before sled opens it, when there is room for one.
    Run { copy_log: bool },
    /// A read-only look at a copy of the store (`outbox stats`, `peek`...).
    Inspect,
}

fn pre_open_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".pre-open");
    dir.with_file_name(name)
}

fn aside_path(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".corrupt-{stamp}"));
    let mut p = dir.with_file_name(&name);
    let mut i = 1;
    while p.exists() {
        let mut n = name.clone();
        n.push(format!("-{i}"));
        p = dir.with_file_name(n);
        i += 1;
    }
    p
}

#[cfg(test)]
mod tests;
