//! Salvage: reading what can still be read out of a damaged outbox store.
//!
//! sled 0.34 offers no recovery tool: a store whose log is damaged (a zeroed
//! page, a flipped bit, a torn write on a full disk) may refuse to open, panic
//! while opening, or open and then fail every read of the damaged part. This
//! module does not use sled to read the damaged store. It scans the raw bytes
//! of sled's files for the values the outbox itself wrote, which are plain and
//! self-describing:
//!
//! | value | how it is found |
//! |---|---|
//! | a reading: commit time (u64 BE) + `{"seq":…}` JSON | the text `{"seq":` |
//! | an in-flight batch: `{"message_id":…,"seqs":[…]}` | the text `{"message_id":` |
//! | an acknowledgement watermark: `{"ackedThrough":N,"deviceId":…,"patientId":…}` | the text `{"ackedThrough":` |
//! | a drop floor: `{"droppedThrough":N}` | the text `{"droppedThrough":` |
//! | a dead letter: `{"deadLetterSeq":N,…,"reading":"<JSON as a string>"}` | the text `{"deadLetterSeq":` |
//! | a retried dead letter: `{"deadLetterRetried":N,"requeuedAs":M}` | the text `{"deadLetterRetried":` |
//!
//! The commit journal's records that are compressed
//! ([`super::journal::inflated_records`]) are inflated and scanned the same way.
//!
//! sled is log-structured, so old versions of nodes are still in the file:
//! readings that were delivered long ago, and old watermarks. Those are told
//! apart without understanding sled's format, because each kind of record only
//! ever grows:
//! - a reading is written once and never changed, so every copy of one
//!   sequence number is the same reading (a copy whose JSON is damaged fails
//!   to parse and is skipped; another copy may still be intact);
//! - each device's readings (per patient association) are delivered in sequence
//!   order, so the highest `ackedThrough` seen for a device and patient is how
//!   far its delivery got: readings at or below it were delivered;
//! - drops (full outbox, `max_age`) remove the oldest readings first, so the
//!   highest `droppedThrough` seen is the floor below which nothing is queued.
//!
//! - a reading moved to the dead letters ([`super::dead_letters`]) is never
//!   queued again under its number, and a retried dead letter is never a dead
//!   letter again (the retry queues it under a new number).
//!
//! What is salvaged is therefore every reading found that is above both marks
//! and was never dead-lettered; dead letters go back to the dead letters
//! unless a retry mark for them is found.
//! When the page holding the newest watermark is the damaged one, an older
//! watermark is used and some delivered readings come back: they are sent again
//! under a new message id, the only case where a reading can arrive twice under
//! two ids. Nothing that was queued is dropped for that reason.

use super::dead_letters::{DeadLetter, Retried};
use super::InFlight;
use crate::model::Reading;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The acknowledgement watermark stored for one device and patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AckMark {
    /// Every reading of this device and patient with a lower or equal
    /// sequence number has been delivered.
    pub(crate) acked_through: u64,
    pub(crate) device_id: String,
    #[serde(default)]
    pub(crate) patient_id: Option<String>,
}

/// The drop floor: no reading with a lower or equal sequence number is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DropFloor {
    pub(crate) dropped_through: u64,
}

/// What a raw scan found.
#[derive(Debug, Default)]
pub(crate) struct Salvaged {
    /// Readings still queued, by sequence number, with their commit time (Unix ms).
    pub(crate) readings: BTreeMap<u64, (u64, Reading)>,
    /// In-flight batches whose readings were all salvaged (resent with their ids).
    pub(crate) in_flight: Vec<InFlight>,
    /// Readings found that had already been delivered or dropped.
    pub(crate) already_gone: u64,
    /// Readings that could not be read: places that looked like a reading but
    /// did not parse, plus sequence numbers that must have been queued (above
    /// every delivery watermark) and left no trace at all.
    pub(crate) unreadable: u64,
    /// The highest sequence number seen anywhere (the next one must be above it).
    pub(crate) max_seq: u64,
    /// Dead letters (not retried), by the sequence number they were queued under.
    pub(crate) dead_letters: BTreeMap<u64, DeadLetter>,
    /// Retried dead letters: old sequence number -> the new one.
    pub(crate) retried: BTreeMap<u64, u64>,
}

const READING_MARK: &[u8] = b"{\"seq\":";
const INFLIGHT_MARK: &[u8] = b"{\"message_id\":";
const ACK_MARK: &[u8] = b"{\"ackedThrough\":";
const FLOOR_MARK: &[u8] = b"{\"droppedThrough\":";
const DEAD_MARK: &[u8] = b"{\"deadLetterSeq\":";
const RETRIED_MARK: &[u8] = b"{\"deadLetterRetried\":";
/// The next-sequence-number counter as sled 0.34 serializes a key-value pair
/// in a node: key length (9), key, value length (8), then the u64 big-endian.
/// The counter only grows, so the highest copy found is the latest.
const NEXT_SEQ_MARK: &[u8] = b"\x09mnext_seq\x08";

/// Every start of `needle` in `hay`.
fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle[0];
    let mut from = 0;
    std::iter::from_fn(move || {
        while from + needle.len() <= hay.len() {
            let i = from + hay[from..].iter().position(|b| *b == first)?;
            from = i + 1;
            if hay.get(i..i + needle.len()) == Some(needle) {
                return Some(i);
            }
        }
        None
    })
}

/// The first JSON value at the start of `bytes`, if it parses as `T`.
fn json_at<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::Deserializer::from_slice(bytes).into_iter::<T>().next()?.ok()
}

/// Scans the raw bytes of a store's files (pure: bytes in, findings out).
pub(crate) fn scan(files: &[&[u8]]) -> Salvaged {
    let mut found: BTreeMap<u64, (u64, Reading)> = BTreeMap::new();
    let mut unreadable_at: BTreeMap<u64, u64> = BTreeMap::new();
    let mut unparsed = 0u64;
    let mut acked: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut floor = 0u64;
    let mut flights: BTreeMap<String, InFlight> = BTreeMap::new();
    let mut next_seq_seen: Vec<u64> = Vec::new();
    let mut dead: BTreeMap<u64, DeadLetter> = BTreeMap::new();
    let mut retried: BTreeMap<u64, u64> = BTreeMap::new();
    for bytes in files {
        for at in find_all(bytes, DEAD_MARK) {
            if let Some(d) = json_at::<DeadLetter>(&bytes[at..]) {
                if d.dead_letter_seq > 0 {
                    dead.entry(d.dead_letter_seq).or_insert(d);
                }
            }
        }
        for at in find_all(bytes, RETRIED_MARK) {
            if let Some(m) = json_at::<Retried>(&bytes[at..]) {
                retried.insert(m.dead_letter_retried, m.requeued_as);
            }
        }
        for at in find_all(bytes, READING_MARK) {
            let parsed = (at >= 8)
                .then(|| json_at::<Reading>(&bytes[at..]))
                .flatten()
                .and_then(|r| Some((u64::from_be_bytes(bytes.get(at - 8..at)?.try_into().ok()?), r)));
            match parsed {
                Some((commit_ms, r)) if r.seq > 0 => {
                    unreadable_at.remove(&r.seq);
                    found.entry(r.seq).or_insert((commit_ms, r));
                }
                _ => {
                    // Count a damaged copy once per sequence number when the
                    // number itself is still legible.
                    match json_at::<serde_json::Value>(&bytes[at + READING_MARK.len()..]).and_then(|v| v.as_u64()) {
                        Some(seq) if !found.contains_key(&seq) => {
                            unreadable_at.insert(seq, 1);
                        }
                        Some(_) => {}
                        None => unparsed += 1,
                    }
                }
            }
        }
        for at in find_all(bytes, ACK_MARK) {
            if let Some(m) = json_at::<AckMark>(&bytes[at..]) {
                let e = acked.entry((m.device_id, m.patient_id)).or_insert(0);
                *e = (*e).max(m.acked_through);
            }
        }
        for at in find_all(bytes, NEXT_SEQ_MARK) {
            let v = at + NEXT_SEQ_MARK.len();
            if let Some(next) = bytes.get(v..v + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) {
                // A damaged copy, or the next key of a consolidated node,
                // could read as anything: see `next_seq_values`.
                if next < SEQ_LIMIT {
                    next_seq_seen.push(next);
                }
            }
        }
        for at in find_all(bytes, FLOOR_MARK) {
            if let Some(f) = json_at::<DropFloor>(&bytes[at..]) {
                floor = floor.max(f.dropped_through);
            }
        }
        for at in find_all(bytes, INFLIGHT_MARK) {
            if let Some(b) = json_at::<InFlight>(&bytes[at..]) {
                if !b.seqs.is_empty() {
                    flights.insert(b.message_id.clone(), b);
                }
            }
        }
    }
    let mut out = Salvaged { max_seq: found.keys().next_back().copied().unwrap_or(0), ..Default::default() };
    out.max_seq = out.max_seq.max(unreadable_at.keys().next_back().copied().unwrap_or(0));
    // Numbers of dead letters and of their retries were handed out too.
    out.max_seq = out.max_seq.max(dead.keys().chain(retried.keys()).chain(retried.values()).copied().max().unwrap_or(0));
    // Numbers handed out after the last reading found (its copy is gone):
    // the counter says how far they went. A counter more than a million above
    // what was seen is taken as damaged.
    let plausible = out.max_seq.saturating_add(1_000_000);
    if let Some(next) = next_seq_seen.into_iter().filter(|n| *n <= plausible).max() {
        out.max_seq = out.max_seq.max(next.saturating_sub(1));
    }
    // Numbers moved to the dead letters (retried or not) are not queued
    // under that number any more: the copy found is the stale queue entry.
    let dead_lettered = |seq: &u64| dead.contains_key(seq) || retried.contains_key(seq);
    for (seq, (ms, r)) in found {
        if dead_lettered(&seq) {
            continue;
        }
        let mark = acked.get(&(r.device_id.clone(), r.patient_id.clone())).copied().unwrap_or(0);
        if seq <= floor || seq <= mark {
            out.already_gone += 1;
        } else {
            out.readings.insert(seq, (ms, r));
        }
    }
    // Numbers above every delivery watermark and the drop floor were queued
    // (delivery is in order per device): one that is not found at all sat in
    // a part of the file that is gone. Count those as unreadable too.
    let delivered_below = acked.values().copied().max().unwrap_or(0).max(floor);
    let gone_entirely = (delivered_below + 1..=out.max_seq)
        .take(10_000_000)
        .filter(|q| !out.readings.contains_key(q) && !unreadable_at.contains_key(q) && !dead_lettered(q))
        .count() as u64;
    out.unreadable = unreadable_at.len() as u64 + unparsed + gone_entirely;
    out.dead_letters = dead.into_iter().filter(|(seq, _)| !retried.contains_key(seq)).collect();
    out.retried = retried;
    // A batch is resent with its id only if it can be resent unchanged; one
    // per first sequence number (the key it was stored under), and no reading
    // in two batches.
    let mut taken = std::collections::HashSet::new();
    let mut by_first: BTreeMap<u64, InFlight> = BTreeMap::new();
    for b in flights.into_values() {
        if b.seqs.iter().all(|s| out.readings.contains_key(s)) {
            let first = b.seqs.iter().copied().min().unwrap_or(0);
            by_first.entry(first).or_insert(b);
        }
    }
    for b in by_first.into_values() {
        if b.seqs.iter().all(|s| !taken.contains(s)) {
            taken.extend(b.seqs.iter().copied());
            out.in_flight.push(b);
        }
    }
    out
}

/// What the counters in a raw log say about the store sled recovered from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogVerdict {
    /// sled kept numbering as far as the log went.
    Intact,
    /// One write beyond what sled kept (at most `max_write` numbers): the
    /// write a power cut interrupted before its sync, part of which reached
    /// the disk. Never reported committed; numbering goes on at `next`.
    Interrupted { next: u64 },
    /// The log went several writes (or one impossible jump) further: sled
    /// stopped at damage and dropped committed readings after it: salvage.
    CutShort { raw_next: u64 },
}

/// Compares the counters in the raw log `bytes` with `kept_next`, the next
/// sequence number of the store sled recovered.
pub(crate) fn log_verdict(bytes: &[u8], kept_next: u64, max_write: u64) -> LogVerdict {
    let ahead: Vec<u64> = next_seq_values(bytes).into_iter().filter(|n| *n > kept_next && *n <= kept_next.saturating_add(1_000_000_000)).collect();
    match ahead.as_slice() {
        [] => LogVerdict::Intact,
        [only] if *only <= kept_next.saturating_add(max_write) => LogVerdict::Interrupted { next: *only },
        more => LogVerdict::CutShort { raw_next: more.iter().copied().max().unwrap_or(kept_next) },
    }
}

/// Every distinct next-sequence-number counter value in a raw log: how far
/// numbering got, whatever sled's own recovery kept. Cheap (a byte search).
pub(crate) fn next_seq_values(bytes: &[u8]) -> std::collections::BTreeSet<u64> {
    find_all(bytes, NEXT_SEQ_MARK)
        .filter_map(|at| {
            let v = at + NEXT_SEQ_MARK.len();
            bytes.get(v..v + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
        })
        // A consolidated node lists its keys apart from their values, so the
        // bytes after the mark can be the next key ("mrefused..."): no real
        // counter comes near 2^48.
        .filter(|n| *n < SEQ_LIMIT)
        .collect()
}

/// Sequence numbers stay far below this (2^48: a million readings a second
/// for nine years); larger "counters" are misreadings of other bytes.
const SEQ_LIMIT: u64 = 1 << 48;

/// Reads every file of a (damaged) store folder and scans it. Files that
/// cannot be read are skipped and named in the returned list.
pub(crate) fn scan_dir(dir: &Path) -> std::io::Result<(Salvaged, Vec<String>)> {
    let mut contents = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                match std::fs::read(&path) {
                    Ok(b) => {
                        // The journal's compressed records, inflated, are
                        // scanned beside the raw bytes.
                        contents.extend(super::journal::inflated_records(&b));
                        contents.push(b)
                    }
                    Err(e) => skipped.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }
    let slices: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    Ok((scan(&slices), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKind, ReadingType};

    fn stored(seq: u64, device: &str, v: f64) -> Vec<u8> {
        let mut r = Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", v);
        r.seq = seq;
        let mut out = 1_700_000_000_000u64.to_be_bytes().to_vec();
        out.extend(serde_json::to_vec(&r).unwrap());
        out
    }

    #[test]
    fn finds_queued_readings_and_leaves_out_delivered_and_dropped_ones() {
        let mut file = b"\x00\x01garbage".to_vec();
        for seq in 1..=10 {
            file.extend(stored(seq, if seq % 2 == 0 { "a" } else { "b" }, seq as f64));
            file.extend(b"\xffnoise");
        }
        // An old copy of reading 4 (sled keeps old node versions) and an old
        // watermark below the newer one.
        file.extend(stored(4, "a", 4.0));
        file.extend(br#"{"ackedThrough":2,"deviceId":"a","patientId":null}"#);
        file.extend(br#"{"ackedThrough":6,"deviceId":"a","patientId":null}"#);
        file.extend(br#"{"droppedThrough":1}"#);
        file.extend(br#"{"message_id":"m-9","seqs":[9]}"#);
        file.extend(br#"{"message_id":"m-2","seqs":[2]}"#);
        let s = scan(&[&file]);
        assert_eq!(s.readings.keys().copied().collect::<Vec<_>>(), vec![3, 5, 7, 8, 9, 10]);
        assert_eq!(s.already_gone, 4, "1 dropped, 2 4 6 delivered");
        assert_eq!(s.in_flight, vec![InFlight { message_id: "m-9".into(), seqs: vec![9] }], "m-2 was delivered");
        assert_eq!(s.max_seq, 10);
        assert_eq!(s.unreadable, 0);
        assert_eq!(s.readings[&5].1.values["heartRate"], 5.0);
    }

    #[test]
    fn a_damaged_copy_is_counted_unless_another_copy_is_intact() {
        let mut good = stored(7, "a", 70.0);
        let mut bad = stored(8, "a", 80.0);
        let n = bad.len();
        bad[n - 5] = 0; // torn inside the JSON
        let mut file = Vec::new();
        file.append(&mut bad.clone());
        file.append(&mut good.clone());
        let s = scan(&[&file]);
        assert_eq!(s.readings.keys().copied().collect::<Vec<_>>(), vec![7]);
        // The damaged copy of 8, and 1 to 6, which were queued (nothing was
        // delivered) and left no trace.
        assert_eq!(s.unreadable, 1 + 6);
        assert_eq!(s.max_seq, 8, "a legible number is never handed out again");
        // A second, intact copy of 8 elsewhere wins.
        let mut other = stored(8, "a", 80.0);
        let s = scan(&[&file, &other]);
        assert_eq!(s.readings.len(), 2);
        assert_eq!(s.unreadable, 6);
        good.clear();
        other.clear();
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
                                           cut in 0usize..400) {
            let mut file = bytes.clone();
            let r = stored(3, "a", 1.0);
            file.extend(&r[..cut.min(r.len())]);
            let _ = scan(&[&file, &bytes]);
        }
    }
}
