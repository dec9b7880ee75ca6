//! The outbox's commit journal: what makes a group commit durable with one
//! small write and one `fdatasync`.
//!
//! Why it exists: sled 0.34 writes every batch as log messages of its own,
//! each followed by `sync_file_range`, rewrites whole leaves as it
//! consolidates them, and appends (so ext4 journals a new file size at every
//! `fdatasync`). Measured on an ext4 loop device that cost 2.6 KB per reading
//! for one bed, 3.75x the floor of one 4 KiB page per group commit
//! (docs/performance.md, SD-card wear). No embedded store in the project's
//! dependencies writes one page per commit, so this small layer does: each
//! group commit appends one record (the batch's puts and removals) to a file
//! that is already written to its full size, and `fdatasync`s it. sled is
//! written only at a checkpoint, with what is still stored then (readings
//! delivered within a few minutes never reach sled at all).
//!
//! File layout (little-endian):
//!
//! | offset | what |
//! |---|---|
//! | 0 | header: magic `IOMTJRN1`, generation (u64), sled's next sequence number at the checkpoint that started this generation (u64), CRC-32 of those 24 bytes (u32) |
//! | 4096 | records, one after another |
//!
//! A record: magic (u32), payload length (u32), generation (u64), CRC-32
//! (u32) of length + generation + payload, then the payload. With magic
//! `0x4A52_4543` the payload is the ops: op count (u32), then each op: tag
//! (1 = put, 2 = remove), key length (u32), key, and for a put value length
//! (u32) and value. With magic `0x5A52_4543` ([`RECORD_MAGIC_DEFLATE`]) the
//! payload is the ops' length (u32) and then the ops compressed as raw
//! DEFLATE (RFC 1951).
//!
//! A record that fits in one page but would straddle two starts at the next
//! page instead, so a group commit of up to a page writes one page on the
//! SD card, not two. A group whose ops are larger than a page (ten devices
//! commit about 29 readings at once, about 8 KB) is compressed when that
//! makes it smaller: readings of one gateway repeat the same JSON keys,
//! device ids and units, and a page or two less per commit is what the
//! SD card is spared (docs/performance.md, SD-card wear). Small records
//! stay plain: they cost a page either way, and stay readable to the
//! raw-byte salvage as they are. Recovery reads records from 4096 while magic,
//! generation and CRC match (where one does not, it looks once more at the
//! next page boundary, where such a record may start) and stops at the first
//! that does not: a record a power cut tore was never
//! synced, so never reported committed. A checkpoint makes sled durable
//! first, then writes the header with the next generation, which retires
//! every record at once (old ones still in the file no longer match). Values
//! are stored as the outbox wrote them (commit time + reading JSON), so the
//! raw-byte salvage ([`super::salvage`]) finds readings in this file too;
//! for compressed records it reads [`inflated_records`].
//!
//! The header's sequence number is a check on sled: a start whose sled
//! (with the journal applied) numbers below it lost part of its log (a
//! restored copy written only in part, a damaged card), which sled 0.34's
//! recovery does not report; the store is then salvaged.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The journal's file name in the outbox folder.
pub(crate) const FILE_NAME: &str = "journal";
const MAGIC: &[u8; 8] = b"IOMTJRN1";
const RECORD_MAGIC: u32 = 0x4A52_4543;
/// The magic of a record whose ops are compressed (raw DEFLATE).
pub(crate) const RECORD_MAGIC_DEFLATE: u32 = 0x5A52_4543;
/// The largest ops a compressed record may inflate to (a corrupt length
/// that passed the CRC must not make the reader allocate without bound).
const MAX_INFLATED: usize = 1 << 30;
/// Records start at the second page, so a header write and a record write
/// never share a page.
pub(crate) const RECORDS_START: u64 = 4096;
const RECORD_HEADER: usize = 20;

/// One change to the outbox's key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// Appends the encoding of `ops` (the payload of one record) to `out`.
#[cfg(test)]
pub(crate) fn encode_ops(ops: &[Op], out: &mut Vec<u8>) {
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        encode_op(op, out);
    }
}

/// Appends one op's encoding (without the count) to `out`.
pub(crate) fn encode_op(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Put(k, v) => {
            out.push(1);
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        Op::Remove(k) => {
            out.push(2);
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take(b, 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes)
}

/// Decodes a record's payload; `None` if it is not a whole, well-formed list.
pub(crate) fn decode_ops(mut b: &[u8]) -> Option<Vec<Op>> {
    let n = take_u32(&mut b)? as usize;
    let mut ops = Vec::with_capacity(n.min(b.len() / 6 + 1));
    for _ in 0..n {
        let tag = *take(&mut b, 1)?.first()?;
        let klen = take_u32(&mut b)? as usize;
        let key = take(&mut b, klen)?.to_vec();
        match tag {
            1 => {
                let vlen = take_u32(&mut b)? as usize;
                ops.push(Op::Put(key, take(&mut b, vlen)?.to_vec()));
            }
            2 => ops.push(Op::Remove(key)),
            _ => return None,
        }
    }
    b.is_empty().then_some(ops)
}

/// The bytes of a record holding `ops` (an [`encode_ops`] payload):
/// compressed when the plain record would be larger than a page and the
/// compressed one is smaller (see the module doc), else plain.
pub(crate) fn encode_record(generation: u64, ops: &[u8]) -> Vec<u8> {
    if (RECORD_HEADER + ops.len()) as u64 > PAGE {
        // Level 1: the fastest; JSON of one gateway compresses well at any
        // level, and a group commit must not wait on the compressor.
        let packed = miniz_oxide::deflate::compress_to_vec(ops, 1);
        if packed.len() + 4 < ops.len() {
            let mut payload = Vec::with_capacity(packed.len() + 4);
            payload.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            payload.extend_from_slice(&packed);
            return record_with(RECORD_MAGIC_DEFLATE, generation, &payload);
        }
    }
    record(generation, ops)
}

/// The bytes of a plain record holding `payload` (from [`encode_ops`]).
pub(crate) fn record(generation: u64, payload: &[u8]) -> Vec<u8> {
    record_with(RECORD_MAGIC, generation, payload)
}

fn record_with(magic: u32, generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[4..16]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header page's first bytes for `generation`, checkpointed with sled
/// numbering up to `sled_next`.
pub(crate) fn header(generation: u64, sled_next: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..24].copy_from_slice(&sled_next.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..].copy_from_slice(&crc.to_le_bytes());
    out
}

const HEADER_LEN: usize = 28;

/// What [`replay`] read from a journal's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The header's generation; `None` when the header is missing or torn
    /// (a journal being created or reset when the power went: everything it
    /// held is in sled already, see the module doc).
    pub(crate) generation: Option<u64>,
    /// sled's next sequence number when this generation started (0 unknown).
    pub(crate) sled_next: u64,
    /// The committed batches, oldest first.
    pub(crate) batches: Vec<Vec<Op>>,
    /// Where the next record goes.
    pub(crate) end: u64,
}

/// Reads the committed records out of a journal file's bytes (pure).
pub(crate) fn replay(bytes: &[u8]) -> Replayed {
    let head = bytes.get(..HEADER_LEN).filter(|h| &h[..8] == MAGIC && h[24..28] == crc32fast::hash(&h[..24]).to_le_bytes());
    let field = |h: &[u8], at: usize| h.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let generation = head.and_then(|h| field(h, 8));
    let sled_next = head.and_then(|h| field(h, 16)).unwrap_or(0);
    let mut out = Replayed { generation, sled_next, batches: Vec::new(), end: RECORDS_START };
    let Some(generation) = generation else { return out };
    let mut at = RECORDS_START as usize;
    loop {
        let found = record_at(bytes, at, generation).or_else(|| {
            // Not here: a record that would have straddled a page starts at
            // the next one.
            let page = PAGE as usize;
            let next = at.next_multiple_of(page);
            (next != at).then(|| record_at(bytes, next, generation)).flatten()
        });
        let Some((ops, end)) = found else { break };
        out.batches.push(ops);
        at = end;
        out.end = at as u64;
    }
    out
}

/// The page size records are placed by.
const PAGE: u64 = 4096;

/// The record of `generation` at `at`, with where it ends; `None` if there
/// is no whole, valid one there.
fn record_at(bytes: &[u8], at: usize, generation: u64) -> Option<(Vec<Op>, usize)> {
    let head = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let compressed = match word(0) {
        RECORD_MAGIC => false,
        RECORD_MAGIC_DEFLATE => true,
        _ => return None,
    };
    let len = word(4) as usize;
    let record_gen = u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
    if record_gen != generation {
        return None;
    }
    let start = at + RECORD_HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[4..16]);
    h.update(payload);
    if h.finalize() != word(16) {
        return None;
    }
    let ops = if compressed { decode_ops(&inflate(payload)?)? } else { decode_ops(payload)? };
    Some((ops, start + len))
}

/// The ops of a compressed record's payload (its length, then raw
/// DEFLATE); `None` unless it inflates to exactly that length.
fn inflate(payload: &[u8]) -> Option<Vec<u8>> {
    let (len, packed) = payload.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    if len > MAX_INFLATED {
        return None;
    }
    let ops = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, len).ok()?;
    (ops.len() == len).then_some(ops)
}

/// The inflated ops of every whole compressed record found anywhere in
/// `bytes` (any generation, retired or not): for the raw-byte salvage,
/// which looks for the values the outbox wrote and cannot see them
/// through the compression. Records are found by their magic and CRC,
/// not by replaying the file, because a damaged store is what salvage
/// reads.
pub(crate) fn inflated_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let magic = RECORD_MAGIC_DEFLATE.to_le_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = bytes.get(at..).and_then(|b| b.windows(4).position(|w| w == magic)) {
        let start = at + i;
        at = start + 1;
        let Some(head) = bytes.get(start..start + RECORD_HEADER) else { break };
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = word(4) as usize;
        let Some(payload) = bytes.get(start + RECORD_HEADER..).and_then(|b| b.get(..len)) else { continue };
        let mut h = crc32fast::Hasher::new();
        h.update(&head[4..16]);
        h.update(payload);
        if h.finalize() != word(16) {
            continue;
        }
        if let Some(ops) = inflate(payload) {
            out.push(ops);
            at = start + RECORD_HEADER + len;
        }
    }
    out
}

/// Where a record of `len` bytes goes when the last one ended at `end`: at
/// `end`, or at the next page when it fits in a page but would straddle two.
fn place(end: u64, len: u64) -> u64 {
    let in_page = end % PAGE;
    if in_page != 0 && in_page + len > PAGE && len <= PAGE {
        end - in_page + PAGE
    } else {
        end
    }
}

/// The open journal file and where the next record goes.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    generation: u64,
    sled_next: u64,
    end: u64,
    /// Records may fill the file up to this size; a record that does not fit
    /// needs a checkpoint first.
    capacity: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and reads its committed
    /// batches. `capacity` bounds the file; `prefill` writes it with zeros to
    /// that size once (so later commits never grow it: on ext4 an
    /// `fdatasync` after a write that grows a file also journals its new size
    /// and blocks, several times the bytes of the write itself). The caller
    /// must apply the batches and then [`Journal::reset`] after making them
    /// durable elsewhere.
    ///
    /// Errors: the file cannot be created, read or written.
    pub(crate) fn open(dir: &Path, capacity: u64, prefill: bool) -> io::Result<(Journal, Vec<Vec<Op>>)> {
        let path = dir.join(FILE_NAME);
        let existed = path.exists();
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let bytes = if existed { std::fs::read(&path)? } else { Vec::new() };
        let found = replay(&bytes);
        let capacity = capacity.max(RECORDS_START * 2);
        let mut j = Journal { file, generation: found.generation.unwrap_or(0), sled_next: found.sled_next, end: found.end, capacity };
        let len = bytes.len() as u64;
        if prefill && len < capacity {
            let zeros = vec![0u8; 64 * 1024];
            let mut at = len;
            while at < capacity {
                let n = (capacity - at).min(zeros.len() as u64) as usize;
                j.file.write_at(&zeros[..n], at)?;
                at += n as u64;
            }
            j.file.sync_all()?;
        }
        if !existed {
            // Findable after a power cut: the new file's entry in the folder.
            j.write_header(rand::random::<u64>().max(1), 0)?;
            j.file.sync_all()?;
            File::open(dir)?.sync_all()?;
        } else if found.generation.is_none() {
            // A torn header (a power cut while creating or resetting the
            // journal): its records are all in sled already. A random
            // generation no old record can carry retires them.
            j.write_header(rand::random::<u64>().max(1), 0)?;
            j.file.sync_data()?;
        }
        Ok((j, found.batches))
    }

    fn write_header(&mut self, generation: u64, sled_next: u64) -> io::Result<()> {
        self.file.write_at(&header(generation, sled_next), 0)?;
        self.generation = generation;
        self.sled_next = sled_next;
        self.end = RECORDS_START;
        Ok(())
    }

    /// The generation of the records being written now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// sled's next sequence number at the last checkpoint (0: unknown).
    pub(crate) fn sled_next(&self) -> u64 {
        self.sled_next
    }

    /// Retires every record (after their changes were made durable in sled,
    /// whose next sequence number is now `sled_next`): the header gets the
    /// next generation, synced.
    pub(crate) fn reset(&mut self, sled_next: u64, sync: bool) -> io::Result<()> {
        self.write_header(self.generation.wrapping_add(1).max(1), sled_next)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The record holding `ops` (an [`encode_ops`] payload) in the current
    /// generation, compressed when that spares pages ([`encode_record`]).
    pub(crate) fn record_for(&self, ops: &[u8]) -> Vec<u8> {
        encode_record(self.generation, ops)
    }

    /// Whether a record of `record_len` bytes (from [`Journal::record_for`]) fits.
    pub(crate) fn fits(&self, record_len: usize) -> bool {
        let len = record_len as u64;
        place(self.end, len).saturating_add(len) <= self.capacity
    }

    /// Appends one record (from [`Journal::record_for`], since the last
    /// [`Journal::reset`]) and (with `sync`) `fdatasync`s the file: when
    /// this returns `Ok` with `sync`, the record survives a power cut. Call
    /// only when [`Journal::fits`].
    pub(crate) fn append(&mut self, rec: &[u8], sync: bool) -> io::Result<()> {
        let at = place(self.end, rec.len() as u64);
        self.file.write_all_at(rec, at)?;
        if sync {
            self.file.sync_data()?;
        }
        self.end = at + rec.len() as u64;
        Ok(())
    }

    /// The file's size on disk (for `outbox stats`).
    pub(crate) fn file_len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// Appends a committed record holding `ops` to the journal in `dir` (tests
/// that need the journal to say something particular).
#[cfg(test)]
pub(crate) fn append_for_test(dir: &Path, ops: Vec<Op>) {
    let (mut j, _) = Journal::open(dir, 1 << 20, false).unwrap();
    let mut p = Vec::new();
    encode_ops(&ops, &mut p);
    j.append(&j.record_for(&p), true).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u8) -> Vec<Op> {
        vec![Op::Put(vec![b'r', n], vec![n; 30]), Op::Remove(vec![b'r', n.wrapping_sub(1)])]
    }

    fn file_with(generation: u64, batches: &[Vec<Op>]) -> Vec<u8> {
        let mut f = vec![0u8; RECORDS_START as usize];
        f[..HEADER_LEN].copy_from_slice(&header(generation, 5));
        for b in batches {
            let mut p = Vec::new();
            encode_ops(b, &mut p);
            let rec = record(generation, &p);
            let at = place(f.len() as u64, rec.len() as u64) as usize;
            f.resize(at, 0xAA);
            f.extend(rec);
        }
        f
    }

    fn big(n: u8, len: usize) -> Vec<Op> {
        vec![Op::Put(vec![b'r', n], vec![n; len])]
    }

    #[test]
    fn a_record_that_would_straddle_a_page_starts_at_the_next_and_is_replayed() {
        // 1,500-byte records: the third would straddle the first page's end.
        let batches: Vec<Vec<Op>> = (0..8).map(|i| big(i, 1500)).collect();
        let f = file_with(9, &batches);
        let r = replay(&f);
        assert!(r.batches == batches, "replayed {} batches, want 8", r.batches.len());
        // Each page holds two records; the third starts a page.
        let rec_len = (RECORD_HEADER + 4 + 1 + 4 + 2 + 4 + 1500) as u64;
        assert_eq!(place(RECORDS_START + 2 * rec_len, rec_len), RECORDS_START + PAGE);
        // Larger than a page: written where it is, straddling.
        assert_eq!(place(RECORDS_START + 100, 5000), RECORDS_START + 100);
        // The last record torn (the write a power cut interrupted), with an
        // older generation's record at the next page: the replay stops.
        let three = file_with(9, &batches[..3]);
        let mut torn = three.clone();
        let n = torn.len();
        torn[n - 30] ^= 1;
        let stale = file_with(8, &[big(7, 1500)]);
        torn.resize(RECORDS_START as usize + 2 * PAGE as usize, 0);
        torn.extend_from_slice(&stale[RECORDS_START as usize..]);
        let r = replay(&torn);
        assert!(r.batches == batches[..2], "replayed {} batches, want 2", r.batches.len());
        assert_eq!(r.end, RECORDS_START + 2 * rec_len);
    }

    #[test]
    fn records_come_back_in_order() {
        let f = file_with(7, &[ops(1), ops(2), ops(3)]);
        let r = replay(&f);
        assert_eq!(r.generation, Some(7));
        assert_eq!(r.batches, vec![ops(1), ops(2), ops(3)]);
        assert_eq!(r.end, f.len() as u64);
    }

    #[test]
    fn a_torn_last_record_is_not_replayed_and_the_next_write_goes_over_it() {
        let whole = file_with(3, &[ops(1), ops(2)]);
        let first_end = file_with(3, &[ops(1)]).len();
        for cut in first_end..whole.len() {
            let mut f = whole[..cut].to_vec();
            // A torn write: the rest of the page is old bytes or zeros.
            f.resize(whole.len() + 100, 0);
            let r = replay(&f);
            assert_eq!(r.batches, vec![ops(1)], "cut at {cut}");
            assert_eq!(r.end, first_end as u64);
        }
        // A flipped bit in the last record's payload.
        let mut f = whole.clone();
        let n = f.len();
        f[n - 3] ^= 0x10;
        assert_eq!(replay(&f).batches, vec![ops(1)]);
    }

    #[test]
    fn records_of_an_older_generation_are_retired() {
        let mut f = file_with(4, &[ops(1), ops(2)]);
        f[..HEADER_LEN].copy_from_slice(&header(5, 5));
        assert_eq!(replay(&f).batches, Vec::<Vec<Op>>::new());
        // New records overwrite from the start; an old one after them stops the replay.
        let mut p = Vec::new();
        encode_ops(&ops(9), &mut p);
        let rec = record(5, &p);
        f[RECORDS_START as usize..RECORDS_START as usize + rec.len()].copy_from_slice(&rec);
        assert_eq!(replay(&f).batches, vec![ops(9)]);
    }

    #[test]
    fn a_torn_header_replays_nothing() {
        let mut f = file_with(2, &[ops(1)]);
        f[9] ^= 1;
        let r = replay(&f);
        assert_eq!(r.generation, None);
        assert!(r.batches.is_empty());
    }

    #[test]
    fn the_file_round_trips_through_reset_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, found) = Journal::open(d.path(), 64 * 1024, true).unwrap();
        assert!(found.is_empty());
        assert_eq!(j.file_len(), 64 * 1024, "written to its full size once");
        for i in 0..3 {
            let mut p = Vec::new();
            encode_ops(&ops(i), &mut p);
            j.append(&j.record_for(&p), true).unwrap();
        }
        drop(j);
        let (mut j, found) = Journal::open(d.path(), 64 * 1024, true).unwrap();
        assert_eq!(found, vec![ops(0), ops(1), ops(2)]);
        j.reset(42, true).unwrap();
        let mut p = Vec::new();
        encode_ops(&ops(5), &mut p);
        j.append(&j.record_for(&p), true).unwrap();
        drop(j);
        let (j, found) = Journal::open(d.path(), 64 * 1024, true).unwrap();
        assert_eq!(found, vec![ops(5)]);
        assert_eq!(j.sled_next(), 42);
        assert_eq!(j.file_len(), 64 * 1024, "never grown by commits");
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused_by_fits() {
        let d = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(d.path(), 8192, false).unwrap();
        assert!(j.fits(4096));
        assert!(!j.fits(4096 + 1));
    }

    /// About what ten devices commit at once: 29 stored readings (commit
    /// time + JSON) and their in-flight removals, about 8 KB.
    fn ten_devices_group(first: u64) -> Vec<Op> {
        let mut ops = Vec::new();
        for i in 0..29u64 {
            let seq = first + i;
            let json = format!(
                r#"{{"seq":{seq},"deviceId":"ward3-bed{:02}-oximeter","patientId":"patient-{:04}","kind":"pulseOximeter","type":"spo2","time":"2026-11-30T10:05:{:02}.125Z","values":{{"spo2":{},"pulseRate":{}}},"units":{{"spo2":"%","pulseRate":"/min"}},"deviceStatus":{{"sensorContact":true}}}}"#,
                i % 10,
                i % 10,
                i % 60,
                90 + i % 9,
                60 + i % 30
            );
            let mut v = 1_764_497_100_000u64.to_be_bytes().to_vec();
            v.extend(json.as_bytes());
            ops.push(Op::Put([b"r".as_slice(), &seq.to_be_bytes()].concat(), v));
            ops.push(Op::Remove([b"f".as_slice(), &(seq - 29).to_be_bytes()].concat()));
        }
        ops
    }

    #[test]
    fn a_group_larger_than_a_page_is_compressed_into_one_and_replayed() {
        let groups: Vec<Vec<Op>> = (0..5).map(|g| ten_devices_group(100 + 29 * g)).collect();
        let mut f = vec![0u8; RECORDS_START as usize];
        f[..HEADER_LEN].copy_from_slice(&header(6, 1));
        for g in &groups {
            let mut p = Vec::new();
            encode_ops(g, &mut p);
            assert!(p.len() > 2 * PAGE as usize, "the plain group is {} bytes", p.len());
            let rec = encode_record(6, &p);
            assert_eq!(rec[..4], RECORD_MAGIC_DEFLATE.to_le_bytes());
            assert!(rec.len() <= PAGE as usize, "compressed to {} bytes, more than a page", rec.len());
            let at = place(f.len() as u64, rec.len() as u64) as usize;
            f.resize(at, 0);
            f.extend(rec);
        }
        assert_eq!(replay(&f).batches, groups);
        // The last compressed record torn anywhere: it is not replayed, the
        // others are.
        let last = f.len() - 40;
        for flip in [last, f.len() - 1] {
            let mut torn = f.clone();
            torn[flip] ^= 0x20;
            assert_eq!(replay(&torn).batches, groups[..4], "flipped byte {flip}");
        }
        let mut cut = f.clone();
        cut.truncate(f.len() - 200);
        assert_eq!(replay(&cut).batches, groups[..4]);
    }

    #[test]
    fn small_and_incompressible_records_stay_plain() {
        let mut p = Vec::new();
        encode_ops(&ops(1), &mut p);
        assert_eq!(encode_record(1, &p), record(1, &p));
        // Larger than a page but random: compression would not make it smaller.
        let noise: Vec<u8> = (0..6000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut p = Vec::new();
        encode_ops(&[Op::Put(b"r1".to_vec(), noise)], &mut p);
        let rec = encode_record(1, &p);
        if rec[..4] == RECORD_MAGIC_DEFLATE.to_le_bytes() {
            assert!(rec.len() < record(1, &p).len(), "compressed only when smaller");
        }
        let mut f = vec![0u8; RECORDS_START as usize];
        f[..HEADER_LEN].copy_from_slice(&header(1, 1));
        f.extend(rec);
        assert_eq!(replay(&f).batches.len(), 1);
    }

    #[test]
    fn a_compressed_payload_must_inflate_to_its_stated_length() {
        let mut p = Vec::new();
        encode_ops(&ten_devices_group(50), &mut p);
        let rec = encode_record(2, &p);
        let payload = &rec[RECORD_HEADER..];
        assert_eq!(inflate(payload).as_deref(), Some(p.as_slice()));
        // A stated length one short or one long is refused, not trusted.
        for len in [p.len() - 1, p.len() + 1, usize::MAX >> 1] {
            let mut wrong = payload.to_vec();
            wrong[..4].copy_from_slice(&(len as u32).to_le_bytes());
            assert_eq!(inflate(&wrong), None, "stated length {len}");
        }
    }

    #[test]
    fn salvage_sees_inside_compressed_records_of_any_generation() {
        let mut p1 = Vec::new();
        encode_ops(&ten_devices_group(200), &mut p1);
        let mut p2 = Vec::new();
        encode_ops(&ten_devices_group(300), &mut p2);
        // Junk, a retired generation's record, a plain one, a damaged
        // compressed one, then a current one.
        let mut f = b"junk\x43\x45\x52\x5a".to_vec();
        f.extend(encode_record(3, &p1));
        let mut p_plain = Vec::new();
        encode_ops(&ops(1), &mut p_plain);
        f.extend(record(4, &p_plain));
        let mut damaged = encode_record(4, &p2);
        let n = damaged.len();
        damaged[n / 2] ^= 1;
        f.extend(damaged);
        f.extend(encode_record(4, &p2));
        let found = inflated_records(&f);
        assert_eq!(found, vec![p1, p2]);
        let text = String::from_utf8_lossy(&found[1]);
        assert!(text.contains(r#"{"seq":300,"deviceId":"ward3-bed00-oximeter""#), "the salvage's marker is visible");
    }

    proptest::proptest! {
        #[test]
        fn inflated_records_never_panics_on_arbitrary_bytes(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9000), at in 0usize..9000) {
            // Give the scan a magic to find, followed by whatever comes.
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, RECORD_MAGIC_DEFLATE.to_le_bytes());
            let _ = inflated_records(&bytes);
            let _ = replay(&bytes);
        }

        #[test]
        fn any_group_round_trips_through_a_record(ops in proptest::collection::vec(
            (proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), proptest::collection::vec(0u8..4, 0..600)), 0..40)) {
            let ops: Vec<Op> = ops.into_iter().map(|(put, k, v)| if put { Op::Put(k, v) } else { Op::Remove(k) }).collect();
            let mut p = Vec::new();
            encode_ops(&ops, &mut p);
            let mut f = vec![0u8; RECORDS_START as usize];
            f[..HEADER_LEN].copy_from_slice(&header(9, 1));
            f.extend(encode_record(9, &p));
            proptest::prop_assert_eq!(replay(&f).batches, vec![ops]);
        }

        #[test]
        fn replay_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9000)) {
            let _ = replay(&bytes);
            let _ = decode_ops(&bytes);
        }
    }
}
