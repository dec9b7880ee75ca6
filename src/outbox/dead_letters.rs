//! Dead letters: readings the destination can never accept, kept apart from
//! the queue instead of being dropped.
//!
//! A message that the sink refuses as too large (HTTP 413, Event Hubs
//! `MessageSizeExceeded`, a body over the tier's limit) is split by the
//! forwarder until it holds one reading. If that one reading is still too
//! large, sending it again can never work, and keeping it queued would stall
//! its device's queue for ever (one message in flight per device). The
//! forwarder then moves it here ([`Outbox::dead_letter`]): its queue entry, its
//! in-flight record and the dead-letter entry change in one atomic write,
//! made durable before the forwarder moves on, so a power cut leaves it either
//! queued (it is refused again and moved again) or a dead letter, never
//! neither. An operator acts on dead letters with `iomt-edge outbox
//! dead-letters list|retry|export` (after raising the limit, or with another
//! sink).
//!
//! | key                 | value                                             |
//! |---------------------|---------------------------------------------------|
//! | `d` + seq (u64 BE)  | a [`DeadLetter`] as JSON (the reading as a string) |
//! | `t` + seq (u64 BE)  | a [`Retried`] mark: that dead letter was queued again |
//!
//! Why the reading is kept as a JSON *string* inside the record: the raw-byte
//! salvage ([`super::salvage`]) finds queued readings by the text `{"seq":`
//! after an 8-byte commit time. Inside a string that text is escaped
//! (`{\"seq\":`), so a dead letter is never found as a queued reading. The
//! salvage finds dead letters by their own leading text
//! (`{"deadLetterSeq":`) and puts them back into the dead-letter tree, and it
//! leaves out of the queue every sequence number it saw dead-lettered (the
//! stale copy of the reading's queue entry is still in sled's log). A retry
//! writes a [`Retried`] mark, kept for good (a few dozen bytes), so that an
//! old copy of a retried dead letter in the raw log is not salvaged back.
//!
//! Dead letters are not counted in the outbox's bound (`max_bytes`) and never
//! expire (`max_age`): nothing removes them but a retry.

use super::{decode_value, now_ms, reading_key, seq_of, InFlight, Ops, Outbox, OutboxError, Store, PER_READING_OVERHEAD};
use crate::model::Reading;
use serde::{Deserialize, Serialize};

/// Key prefix of a dead letter (`d` + seq, u64 big-endian).
pub(super) const DEAD: u8 = b'd';
/// Key prefix of a retried mark (`t` + seq of the dead letter).
pub(super) const RETRIED: u8 = b't';

/// One reading the destination refused even alone.
///
/// Serialized with `deadLetterSeq` first: the salvage finds dead letters by
/// the text `{"deadLetterSeq":` ([`super::salvage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetter {
    /// The sequence number the reading was queued under (never handed out again).
    pub(crate) dead_letter_seq: u64,
    /// The reading's device (for the per-device summary and `retry --device`).
    pub(crate) device_id: String,
    /// The sink that refused it (`eventhubs`, `iothub`, ...).
    pub(crate) sink: String,
    /// What the destination said (e.g. `413 ...`, `MessageSizeExceeded`).
    pub(crate) reason: String,
    /// When it was moved here, Unix ms.
    pub(crate) at_ms: u64,
    /// When it was first committed to the outbox, Unix ms.
    pub(crate) committed_ms: u64,
    /// The reading as stored in the queue (its JSON, kept as a string: see the
    /// module doc).
    pub(crate) reading: String,
}

impl DeadLetter {
    /// The reading itself (`None` if the stored JSON does not parse: never the
    /// case for what [`Outbox::dead_letter`] wrote).
    pub(crate) fn reading(&self) -> Option<Reading> {
        serde_json::from_str(&self.reading).ok()
    }
}

/// The mark a retry leaves: dead letter `dead_letter_retried` was queued again
/// as `requeued_as`. Serialized with `deadLetterRetried` first (the salvage
/// looks for `{"deadLetterRetried":`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Retried {
    pub(crate) dead_letter_retried: u64,
    pub(crate) requeued_as: u64,
}

/// Which dead letters [`Outbox::retry_dead_letters`] queues again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Which {
    All,
    Device(String),
    Seqs(Vec<u64>),
}

impl Which {
    fn matches(&self, d: &DeadLetter) -> bool {
        match self {
            Which::All => true,
            Which::Device(id) => d.device_id == *id,
            Which::Seqs(s) => s.contains(&d.dead_letter_seq),
        }
    }
}

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RetryReport {
    /// (dead letter's old seq, its new seq), in the old order.
    pub(crate) requeued: Vec<(u64, u64)>,
    /// Matching dead letters left in place because the queue had no room for
    /// them within its bound (a retry never drops queued readings).
    pub(crate) no_room: u64,
    /// Matching dead letters whose reading could not be read (left in place).
    pub(crate) unreadable: u64,
}

pub(super) fn dead_key(seq: u64) -> [u8; 9] {
    let mut k = reading_key(seq);
    k[0] = DEAD;
    k
}

fn retried_key(seq: u64) -> [u8; 9] {
    let mut k = reading_key(seq);
    k[0] = RETRIED;
    k
}

/// Bytes a dead letter counts for in `outbox stats` (value + key).
fn stored_size(value_len: usize) -> u64 {
    value_len as u64 + 9
}

/// (count, bytes) of the dead letters in `st`, for the counters.
pub(super) fn tally(st: &Store) -> Result<(u64, u64), OutboxError> {
    let mut n = 0;
    let mut bytes = 0;
    for item in st.scan_prefix(DEAD) {
        let (_, v) = item?;
        n += 1;
        bytes += stored_size(v.len());
    }
    Ok((n, bytes))
}

impl Outbox {
    /// Moves the readings of `batch` (which the destination `sink` refused as
    /// too large even as one reading, saying `reason`) out of the queue into
    /// the dead letters, in one atomic write made durable before this
    /// returns: the queue entries, the in-flight record and the held
    /// acknowledgements go, the dead-letter entries and the device's delivery
    /// mark come, all in one journal record. Returns how many readings moved
    /// (0 if none of them was still queued).
    ///
    /// Errors as [`Outbox::append`]; after an error nothing is known to have
    /// moved, and the readings are still queued once the store is reopened
    /// (the forwarder starts over, is refused again and moves them again).
    pub fn dead_letter(&self, batch: &InFlight, sink: &str, reason: &str) -> Result<u64, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let acks = self.take_pending_acks();
            let mut c = self.counters();
            let mut b = Ops::default();
            for a in &acks {
                Self::ack_into(&st, &mut c, &mut b, a)?;
            }
            let at_ms = now_ms();
            let mut moved = 0u64;
            let mut added_bytes = 0u64;
            for s in &batch.seqs {
                let Some(v) = st.get(reading_key(*s))? else { continue };
                let Some((committed_ms, r)) = decode_value(&v) else {
                    return Err(OutboxError::Damaged(self.dir.clone()));
                };
                // The stored JSON as it is (decode_value just parsed it as UTF-8 JSON).
                let reading = String::from_utf8_lossy(&v[8..]).into_owned();
                let dl = DeadLetter {
                    dead_letter_seq: *s,
                    device_id: r.device_id,
                    sink: sink.to_string(),
                    reason: reason.chars().take(500).collect(),
                    at_ms,
                    committed_ms,
                    reading,
                };
                let value = serde_json::to_vec(&dl).unwrap_or_default();
                added_bytes += stored_size(value.len());
                b.insert(dead_key(*s), value);
                moved += 1;
            }
            // The queue entries, the in-flight record and the delivery mark
            // (delivery is in order per device: everything up to here is
            // delivered or dead-lettered), as for a delivered batch.
            Self::ack_into(&st, &mut c, &mut b, batch)?;
            Self::put_counters(&mut b, &c);
            c.dead_letters += moved;
            c.dead_letter_bytes += added_bytes;
            drop(c);
            st.apply(b);
            st.sync()?;
            Ok(moved)
        })
    }

    /// Every dead letter, in sequence order.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let mut out = Vec::new();
            for item in st.scan_prefix(DEAD) {
                let (k, v) = item?;
                match serde_json::from_slice::<DeadLetter>(&v) {
                    Ok(d) => out.push(d),
                    Err(_) => {
                        tracing::debug!("dead letter {:?} cannot be decoded", seq_of(&k));
                        return Err(OutboxError::Damaged(self.dir.clone()));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Queues the chosen dead letters again, under new sequence numbers (after
    /// every reading queued now), durably, in one atomic write: each one leaves
    /// the dead letters and gets a [`Retried`] mark in the same write that
    /// queues it. Never drops a queued reading to make room: what does not fit
    /// within the bound stays a dead letter ([`RetryReport::no_room`]). The
    /// readings keep their measurement time; their commit time is now.
    pub(crate) fn retry_dead_letters(&self, which: &Which) -> Result<RetryReport, OutboxError> {
        let chosen: Vec<DeadLetter> = self.dead_letters()?.into_iter().filter(|d| which.matches(d)).collect();
        self.guarded(|| {
            let st = self.store()?;
            let mut report = RetryReport::default();
            let (queued_bytes, bound) = (self.counters().bytes, self.bound().bytes);
            let mut room = bound.saturating_sub(queued_bytes);
            let mut readings = Vec::new();
            let mut taken = Vec::new();
            for d in chosen {
                let Some(mut r) = d.reading() else {
                    report.unreadable += 1;
                    continue;
                };
                // What append will count: commit time + JSON + overhead (the
                // JSON may grow by the digits of the new number).
                let size = 8 + d.reading.len() as u64 + 20 + PER_READING_OVERHEAD;
                if size > room {
                    report.no_room += 1;
                    continue;
                }
                room -= size;
                r.seq = 0;
                readings.push(r);
                taken.push(d);
            }
            if readings.is_empty() {
                return Ok(report);
            }
            let acks = self.take_pending_acks();
            let mut b = Ops::default();
            let outcome = self.append_into(&st, &mut b, &mut readings, &acks, &[])?;
            let mut c = self.counters();
            for (d, seq) in taken.iter().zip(outcome.seqs) {
                let Some(new) = seq else {
                    report.no_room += 1;
                    continue;
                };
                if let Some(v) = st.get(dead_key(d.dead_letter_seq))? {
                    c.dead_letters = c.dead_letters.saturating_sub(1);
                    c.dead_letter_bytes = c.dead_letter_bytes.saturating_sub(stored_size(v.len()));
                }
                b.remove(dead_key(d.dead_letter_seq));
                let mark = Retried { dead_letter_retried: d.dead_letter_seq, requeued_as: new };
                b.insert(retried_key(d.dead_letter_seq), serde_json::to_vec(&mark).unwrap_or_default());
                report.requeued.push((d.dead_letter_seq, new));
            }
            drop(c);
            st.apply(b);
            st.sync()?;
            Ok(report)
        })
    }

    /// Puts dead letters found by a salvage of another store into this one
    /// (`outbox salvage --from`), durably; those already here (or already
    /// retried here) are left out. Returns how many were added.
    pub(crate) fn restore_dead_letters(&self, found: &[DeadLetter]) -> Result<u64, OutboxError> {
        self.guarded(|| {
            let st = self.store()?;
            let mut b = Ops::default();
            let mut c = self.counters();
            let mut added = 0;
            for d in found {
                if st.get(dead_key(d.dead_letter_seq))?.is_some() || st.get(retried_key(d.dead_letter_seq))?.is_some() {
                    continue;
                }
                let value = serde_json::to_vec(d).unwrap_or_default();
                c.dead_letters += 1;
                c.dead_letter_bytes += stored_size(value.len());
                b.insert(dead_key(d.dead_letter_seq), value);
                added += 1;
            }
            drop(c);
            st.apply(b);
            st.sync()?;
            Ok(added)
        })
    }
}

/// Adds the dead letters a salvage found to a new store's first write.
pub(super) fn salvaged_into(b: &mut Ops, found: &std::collections::BTreeMap<u64, DeadLetter>) {
    for (seq, d) in found {
        b.insert(dead_key(*seq), serde_json::to_vec(d).unwrap_or_default());
    }
}

/// After a write that a power cut interrupted was kept in part
/// ([`Outbox::keep_interrupted_write`]): a retry in that write whose new
/// reading was kept must not leave its dead letter behind too (it would be
/// queued twice by a second retry). Adds the removal and the mark to `b`.
pub(super) fn finish_interrupted_retries(
    st: &Store,
    b: &mut Ops,
    retried: &std::collections::BTreeMap<u64, u64>,
    kept: &[u64],
) -> Result<(), OutboxError> {
    for (old, new) in retried {
        if kept.contains(new) && st.get(dead_key(*old))?.is_some() {
            b.remove(dead_key(*old));
            let mark = Retried { dead_letter_retried: *old, requeued_as: *new };
            b.insert(retried_key(*old), serde_json::to_vec(&mark).unwrap_or_default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
