//! The forwarder's delivery decisions as a synchronous state machine: which
//! readings go into which message, and when.
//!
//! It exists apart from the async loop in `forwarder/mod.rs` so that the rules
//! that hold the delivery guarantee can be tested alone, deterministically and
//! with arbitrary sequences of events (the property tests below), without a
//! store, a sink or a runtime. It does no I/O and never reads the clock: the
//! caller passes the time in. The loop reads the outbox, feeds readings in with
//! [`Batcher::admit`], asks [`Batcher::take_ready`] for batches, records and
//! sends them, and reports each outcome back ([`Batcher::finished`],
//! [`Batcher::too_large`]). rumqttc's `MqttState` (pure) beside its `EventLoop`
//! (I/O) is the model, as in `sinks/iothub/session.rs`.
//!
//! The rules:
//! - Readings are queued per device and patient association ([`Key`]), in
//!   sequence order; a batch is taken from the front of one queue, so a message
//!   holds one device's readings in order.
//! - A key has at most one batch in flight: its queue is not served again until
//!   the loop reports the outcome, so per-device order holds across retries.
//! - Queues are served round-robin from the one after the last served, so that
//!   during a backlog every device gets full batches in turn.
//! - A batch holds at most `max_readings` readings and at most the queue's byte
//!   cap of serialized readings (always at least one reading).
//! - A queue is ready when it holds `max_readings` readings or its byte cap,
//!   when its oldest reading is `max_age` old, during a backlog, while draining
//!   at shutdown, or after a flush request. When one queue is due by age, or a
//!   group commit is open, queues whose oldest reading is at least `max_age / 2`
//!   old go along (their in-flight records then share one sync of the store).
//! - "Too large" from the destination puts the readings back at the front of
//!   their queue and halves that queue's byte cap; a single reading that is too
//!   large is handed back to be removed (it can never be delivered).
//! - Readings of batches that were in flight at the last stop
//!   ([`Batcher::resume`]) are skipped when read again from the outbox: they go
//!   out again only under their recorded message id.

use crate::model::{Reading, WireReading};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// A queue's identity: device id and patient association.
pub(crate) type Key = (String, Option<String>);

/// How many readings the forwarder holds in memory at most (bounded memory
/// during a large backlog drain).
pub(crate) const BUFFER_CAP: usize = 20_000;

/// At most this many readings are asked of the outbox in one read.
const READ_CHUNK: usize = 2000;

/// The smallest byte cap a "too large" answer can lower a queue to.
const MIN_BYTE_CAP: usize = 256;

/// Limits read at each pass (they can change while running).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Readings per message, at least 1.
    pub(crate) max_readings: usize,
    /// How long a live reading may wait before its batch is sent.
    pub(crate) max_age: Duration,
}

/// What the loop knows at one pass besides the queues.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    /// The highest committed sequence number in the outbox.
    pub(crate) committed: u64,
    /// Shutdown was requested: everything queued is ready.
    pub(crate) draining: bool,
    /// A group of readings is being committed right now: batches half due go
    /// along, so their in-flight records ride with that group's sync.
    pub(crate) group_open: bool,
    /// At most this many batches may be formed (recorded batches the sink has
    /// not taken yet count against the loop's limit).
    pub(crate) room: usize,
}

/// One batch for one key, in sequence order; never empty.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) key: Key,
    pub(crate) readings: Vec<Reading>,
}

/// What became of a batch the destination refused as too large.
#[derive(Debug)]
pub(crate) enum TooLarge {
    /// Put back at the front of its queue, to go out in smaller batches.
    Split,
    /// A single reading larger than the destination accepts: the caller
    /// removes it from the outbox (and counts it).
    Rejected(Vec<Reading>),
}

struct Queue {
    /// Readings with their serialized size in bytes.
    readings: VecDeque<(Reading, usize)>,
    bytes: usize,
    /// When the oldest waiting reading was queued (or the last batch taken).
    oldest: Instant,
    /// Lowered after "too large" answers.
    byte_cap: usize,
}

impl Queue {
    fn new(byte_cap: usize, now: Instant) -> Queue {
        Queue { readings: VecDeque::new(), bytes: 0, oldest: now, byte_cap }
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.oldest)
    }
}

/// Bytes a reading takes in a message (its JSON plus a separator).
pub(crate) fn wire_size(r: &Reading) -> usize {
    serde_json::to_vec(&WireReading::from(r)).map(|v| v.len() + 1).unwrap_or(MIN_BYTE_CAP)
}

/// The forwarder's queues and in-flight bookkeeping for one life of the loop.
pub(crate) struct Batcher {
    queues: BTreeMap<Key, Queue>,
    /// Keys with batches in flight, and how many (more than one only for
    /// batches resumed after a stop: see [`Batcher::resume`]).
    busy: HashMap<Key, usize>,
    /// Sequence numbers of resumed batches, skipped when read again.
    excluded: HashSet<u64>,
    buffered: usize,
    buffer_cap: usize,
    /// The last sequence number read from the outbox.
    cursor: u64,
    byte_cap: usize,
    flush_requested: bool,
    last_served: Option<Key>,
}

impl Batcher {
    /// An empty batcher: batches hold at most `byte_cap` bytes of readings,
    /// and at most `buffer_cap` readings wait in memory.
    pub(crate) fn new(byte_cap: usize, buffer_cap: usize) -> Batcher {
        Batcher {
            queues: BTreeMap::new(),
            busy: HashMap::new(),
            excluded: HashSet::new(),
            buffered: 0,
            buffer_cap: buffer_cap.max(1),
            cursor: 0,
            byte_cap,
            flush_requested: false,
            last_served: None,
        }
    }

    /// A batch recorded in flight at the last stop is being resent under its
    /// id: `key` is busy until its outcome, and `seqs` are skipped when read.
    ///
    /// A key can have several such batches (acknowledgements deferred to a
    /// group commit are lost in a crash, so a delivered batch comes back beside
    /// the one that was still in flight); it stays busy until all of them have
    /// an outcome, so no newer batch overtakes an older one.
    pub(crate) fn resume(&mut self, key: Key, seqs: &[u64]) {
        self.excluded.extend(seqs.iter().copied());
        *self.busy.entry(key).or_insert(0) += 1;
    }

    /// Where to read the outbox from next (exclusive).
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How many readings to read from the outbox next, or `None` when the
    /// buffer is full or everything up to `committed` was read.
    pub(crate) fn wants(&self, committed: u64) -> Option<usize> {
        (self.buffered < self.buffer_cap && self.cursor < committed).then(|| (self.buffer_cap - self.buffered).min(READ_CHUNK))
    }

    /// Queues one reading read from the outbox (in sequence order).
    pub(crate) fn admit(&mut self, r: Reading, now: Instant) {
        self.cursor = self.cursor.max(r.seq);
        if self.excluded.remove(&r.seq) {
            return;
        }
        let size = wire_size(&r);
        let key: Key = (r.device_id.clone(), r.patient_id.clone());
        let byte_cap = self.byte_cap;
        let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, now));
        if q.readings.is_empty() {
            q.oldest = now;
        }
        q.bytes += size;
        q.readings.push_back((r, size));
        self.buffered += 1;
    }

    /// The outbox holds nothing more up to `committed` (all acknowledged).
    pub(crate) fn caught_up(&mut self, committed: u64) {
        self.cursor = self.cursor.max(committed);
    }

    /// Everything queued is ready at the next pass (until the queues empty).
    pub(crate) fn request_flush(&mut self) {
        self.flush_requested = true;
    }

    /// Readings waiting in memory.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Batches in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.busy.values().sum()
    }

    /// Nothing waits in memory and everything up to `committed` was read.
    pub(crate) fn is_idle(&self, committed: u64) -> bool {
        self.buffered == 0 && self.cursor >= committed
    }

    /// Forms the batches that are ready now (at most `pass.room`), marking
    /// their keys busy. Each must be reported back once: [`Batcher::finished`]
    /// or [`Batcher::too_large`].
    pub(crate) fn take_ready(&mut self, limits: Limits, pass: Pass, now: Instant) -> Vec<Batch> {
        let max_readings = limits.max_readings.max(1);
        let max_age = limits.max_age;
        let backlog = self.cursor < pass.committed;
        // Round-robin from the key after the last one served.
        let mut keys: Vec<Key> = match &self.last_served {
            Some(k) => self.queues.range::<Key, _>((Bound::Excluded(k.clone()), Bound::Unbounded)).map(|(k, _)| k.clone()).collect(),
            None => Vec::new(),
        };
        let wrapped: Vec<Key> = self.queues.keys().filter(|k| !keys.contains(k)).cloned().collect();
        keys.extend(wrapped);
        // Every batch costs an in-flight record made durable (an fdatasync, a
        // page on the SD card) before it is sent. Batches formed in one pass
        // share one record write; and when one key's batch is due by age, the
        // others whose oldest reading is at least half that old go along, so
        // N devices cost about one sync per `max_age`, not N.
        let age_due = self.queues.iter().any(|(k, q)| !self.busy.contains_key(k) && !q.readings.is_empty() && q.age(now) >= max_age);
        let mut batches = Vec::new();
        for key in keys {
            if batches.len() >= pass.room {
                break;
            }
            if self.busy.contains_key(&key) {
                continue;
            }
            let Some(q) = self.queues.get_mut(&key) else { continue };
            if q.readings.is_empty() {
                continue;
            }
            let age = q.age(now);
            let ready = q.readings.len() >= max_readings
                || q.bytes >= q.byte_cap
                || age >= max_age
                || ((age_due || pass.group_open) && age >= max_age / 2)
                || backlog
                || pass.draining
                || self.flush_requested;
            if !ready {
                continue;
            }
            let mut readings = Vec::new();
            let mut bytes = 0usize;
            while let Some((_, size)) = q.readings.front() {
                if !readings.is_empty() && (readings.len() >= max_readings || bytes + size > q.byte_cap) {
                    break;
                }
                bytes += *size;
                if let Some((r, _)) = q.readings.pop_front() {
                    readings.push(r);
                }
            }
            q.bytes = q.bytes.saturating_sub(bytes);
            q.oldest = now;
            self.buffered -= readings.len();
            self.busy.insert(key.clone(), 1);
            self.last_served = Some(key.clone());
            batches.push(Batch { key, readings });
        }
        if self.queues.values().all(|q| q.readings.is_empty()) {
            self.flush_requested = false;
        }
        let busy = &self.busy;
        self.queues.retain(|k, q| !q.readings.is_empty() || busy.contains_key(k));
        batches
    }

    /// The batch in flight for `key` was delivered, or its send was given up
    /// (shutdown) and stays recorded in the outbox.
    pub(crate) fn finished(&mut self, key: &Key) {
        if let Some(n) = self.busy.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(key);
            }
        }
    }

    /// The destination refused the batch for `key` as too large: its readings
    /// go back to the front of the queue with a halved byte cap, or, if it was
    /// a single reading, come back to be removed.
    pub(crate) fn too_large(&mut self, key: Key, readings: Vec<Reading>, now: Instant) -> TooLarge {
        self.finished(&key);
        if readings.len() <= 1 {
            return TooLarge::Rejected(readings);
        }
        let byte_cap = self.byte_cap;
        let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, now));
        let sizes: Vec<usize> = readings.iter().map(wire_size).collect();
        // Always below what was refused, so the next batch is smaller: the
        // floor alone let a refused batch of small readings (the message's
        // own fields, a long device id, made it too large) form again whole,
        // for ever.
        let total: usize = sizes.iter().sum();
        q.byte_cap = (total / 2).max(MIN_BYTE_CAP).min(total.saturating_sub(1));
        for (r, size) in readings.into_iter().zip(sizes).rev() {
            q.bytes += size;
            q.readings.push_front((r, size));
            self.buffered += 1;
        }
        TooLarge::Split
    }

    /// When the oldest waiting reading of a key with nothing in flight reaches
    /// `max_age` (`None`: nothing waits).
    pub(crate) fn next_deadline(&self, max_age: Duration) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|(k, q)| !q.readings.is_empty() && !self.busy.contains_key(*k))
            .filter_map(|(_, q)| q.oldest.checked_add(max_age))
            .min()
    }
}

#[cfg(test)]
mod tests;
