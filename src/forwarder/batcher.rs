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
//! - A key has at most one request in flight: its queue is not served again
//!   until the loop reports the outcome, so per-device order holds across
//!   retries.
//! - A request holds one message for most sinks. A sink that carries several
//!   messages in one request (Event Hubs batch sends, [`RequestLimits`]) gets
//!   up to `max_messages` consecutive messages of one key, each formed as
//!   below, within the request's byte limit; the request is the key's one
//!   unit in flight, confirmed or refused whole.
//! - Queues are served round-robin from the one after the last served, so that
//!   during a backlog every device gets full batches in turn.
//! - A batch holds at most `max_readings` readings and at most the queue's byte
//!   cap of serialized readings (always at least one reading).
//! - A queue is ready when it holds `max_readings` readings or its byte cap,
//!   when its oldest reading is `max_age` old, during a backlog, while draining
//!   at shutdown, or after a flush request. When one queue is due by age, or a
//!   group commit is open, queues whose oldest reading is at least `max_age / 2`
//!   old go along (their in-flight records then share one sync of the store).
//! - "Too large" for a request of several messages keeps its messages whole
//!   (same readings, same in-flight records, so the same ids) at the front of
//!   the key and halves how many messages that key's requests hold. For a
//!   request of one message it puts the readings back at the front of their
//!   queue and halves that queue's byte cap; a single reading that is too
//!   large is handed back to be removed (it can never be delivered).
//! - A key's whole messages and queued readings go out in sequence order
//!   (a queued reading older than a whole message goes first).
//! - Messages that were in flight at the last stop ([`Batcher::resume`]) go
//!   first for their key, whole and under their record (so their message id);
//!   their readings are skipped when read again from the outbox.

use crate::model::{Reading, WireReading};
use crate::outbox::InFlight;
use std::collections::{BTreeMap, HashSet, VecDeque};
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

/// Bytes of a message besides its readings (ids, schema, brackets), counted
/// against the sink's limits.
pub(crate) const MESSAGE_OVERHEAD: usize = 512;

/// How many messages one request may carry, from the sink
/// ([`crate::sinks::Sink::max_messages_per_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Messages per request, at least 1 (1: one message per request).
    pub(crate) max_messages: usize,
    /// Bytes per request: each message counts its readings' [`wire_size`]s
    /// plus [`MESSAGE_OVERHEAD`]. A request of one message may exceed it
    /// (that message is bounded by the byte cap alone).
    pub(crate) max_bytes: usize,
}

impl RequestLimits {
    /// One message per request.
    #[cfg(test)]
    pub(crate) const SINGLE: RequestLimits = RequestLimits { max_messages: 1, max_bytes: usize::MAX };
}

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

/// One message of a request: one key's readings in sequence order, never
/// empty.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) readings: Vec<Reading>,
    /// Its in-flight record when it already has one (resumed after a stop,
    /// or kept whole after a request was refused as too large): it goes out
    /// under that record's message id and needs no new record. `None`: a new
    /// message, to be recorded before it is sent.
    pub(crate) record: Option<InFlight>,
}

/// One request for one key: its messages in sequence order, never empty.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) key: Key,
    pub(crate) parts: Vec<Part>,
}

impl Batch {
    /// Every reading of the request, in order.
    #[cfg(test)]
    pub(crate) fn readings(&self) -> impl Iterator<Item = &Reading> {
        self.parts.iter().flat_map(|p| p.readings.iter())
    }
}

/// What became of a request the destination refused as too large.
#[derive(Debug)]
pub(crate) enum TooLarge {
    /// A request of several messages: they wait whole at the front of their
    /// key (records kept) and go out in requests of half as many.
    Regroup,
    /// One message: put back at the front of its queue (or split into two
    /// messages), to go out smaller. Its record is to be cancelled.
    Split,
    /// A single reading larger than the destination accepts: the caller
    /// removes it from the outbox (and counts it).
    Rejected(Vec<Reading>),
}

/// A message whose readings are fixed (resumed, or kept whole after a too
/// large request), with its bytes as the request limit counts them.
struct Held {
    part: Part,
    bytes: usize,
}

impl Held {
    fn new(part: Part) -> Held {
        let bytes = part.readings.iter().map(wire_size).sum::<usize>() + MESSAGE_OVERHEAD;
        Held { part, bytes }
    }
}

struct Queue {
    /// Whole messages that go before `readings`, in order.
    held: VecDeque<Held>,
    /// Readings with their serialized size in bytes.
    readings: VecDeque<(Reading, usize)>,
    bytes: usize,
    /// When the oldest waiting reading was queued (or the last batch taken).
    oldest: Instant,
    /// Lowered after "too large" answers.
    byte_cap: usize,
    /// Messages per request; halved after a request of several is too large.
    max_messages: usize,
}

impl Queue {
    fn new(byte_cap: usize, max_messages: usize, now: Instant) -> Queue {
        Queue { held: VecDeque::new(), readings: VecDeque::new(), bytes: 0, oldest: now, byte_cap, max_messages }
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.readings.is_empty()
    }

    /// How many readings from the front the next message would take, and
    /// their bytes (at least one reading when any waits). It stops before
    /// sequence number `before` (the first whole message waiting, which must
    /// not be overtaken).
    fn next_message(&self, max_readings: usize, before: u64) -> (usize, usize) {
        let (mut n, mut bytes) = (0usize, 0usize);
        for (r, size) in &self.readings {
            if n > 0 && (n >= max_readings || bytes + size > self.byte_cap || r.seq >= before) {
                break;
            }
            n += 1;
            bytes += size;
        }
        (n, bytes)
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
    /// Keys with a request in flight.
    busy: HashSet<Key>,
    /// Sequence numbers of resumed batches, skipped when read again.
    excluded: HashSet<u64>,
    /// Readings queued (bounded by `buffer_cap`).
    buffered: usize,
    /// Readings of whole messages waiting (resumed or regrouped; bounded by
    /// the records in flight, apart from `buffered` so they never stop the
    /// reading of the older readings they must wait for).
    held_readings: usize,
    buffer_cap: usize,
    /// The last sequence number read from the outbox.
    cursor: u64,
    byte_cap: usize,
    flush_requested: bool,
    last_served: Option<Key>,
    request: RequestLimits,
}

impl Batcher {
    /// An empty batcher: messages hold at most `byte_cap` bytes of readings,
    /// one message per request, and at most `buffer_cap` readings wait in
    /// memory.
    #[cfg(test)]
    pub(crate) fn new(byte_cap: usize, buffer_cap: usize) -> Batcher {
        Batcher::with_requests(byte_cap, buffer_cap, RequestLimits::SINGLE)
    }

    /// As [`Batcher::new`], with requests of up to `request.max_messages`
    /// messages of one key.
    pub(crate) fn with_requests(byte_cap: usize, buffer_cap: usize, request: RequestLimits) -> Batcher {
        Batcher {
            queues: BTreeMap::new(),
            busy: HashSet::new(),
            excluded: HashSet::new(),
            buffered: 0,
            held_readings: 0,
            buffer_cap: buffer_cap.max(1),
            cursor: 0,
            byte_cap,
            flush_requested: false,
            last_served: None,
            request: RequestLimits { max_messages: request.max_messages.max(1), max_bytes: request.max_bytes },
        }
    }

    /// A message recorded in flight at the last stop (`record`, its readings
    /// still in the outbox) goes out again first for `key`, whole, under its
    /// record's id; the record's sequence numbers are skipped when read.
    /// Called in record order (ascending sequence numbers per key).
    ///
    /// A key can have several such messages (a request of several, or
    /// acknowledgements deferred to a group commit and lost in a crash, so a
    /// delivered message comes back beside the one still in flight); they go
    /// out one request at a time, oldest first, so no newer message overtakes
    /// an older one.
    pub(crate) fn resume(&mut self, key: Key, record: InFlight, readings: Vec<Reading>, now: Instant) {
        self.excluded.extend(record.seqs.iter().copied());
        if readings.is_empty() {
            return;
        }
        let (byte_cap, max_messages) = (self.byte_cap, self.request.max_messages);
        let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, max_messages, now));
        self.held_readings += readings.len();
        q.held.push_back(Held::new(Part { readings, record: Some(record) }));
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
        let (byte_cap, max_messages) = (self.byte_cap, self.request.max_messages);
        let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, max_messages, now));
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

    /// Readings waiting in memory (queued, and in whole messages).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered + self.held_readings
    }

    /// Requests in flight (one per key at most).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// Nothing waits in memory and everything up to `committed` was read.
    pub(crate) fn is_idle(&self, committed: u64) -> bool {
        self.buffered == 0 && self.held_readings == 0 && self.cursor >= committed
    }

    /// Forms the requests that are ready now (at most `pass.room`), marking
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
        // Every request costs in-flight records made durable (an fdatasync,
        // a page on the SD card) before it is sent. Requests formed in one
        // pass share one record write; and when one key's batch is due by
        // age, the others whose oldest reading is at least half that old go
        // along, so N devices cost about one sync per `max_age`, not N.
        let age_due = self.queues.iter().any(|(k, q)| !self.busy.contains(k) && !q.readings.is_empty() && q.age(now) >= max_age);
        let mut batches = Vec::new();
        for key in keys {
            if batches.len() >= pass.room {
                break;
            }
            if self.busy.contains(&key) {
                continue;
            }
            let Some(q) = self.queues.get_mut(&key) else { continue };
            if q.is_empty() {
                continue;
            }
            let age = q.age(now);
            // Everything waiting may go now, not only full messages.
            let all_due = Self::held_ready(q, self.cursor)
                || age >= max_age
                || ((age_due || pass.group_open) && age >= max_age / 2)
                || backlog
                || pass.draining
                || self.flush_requested;
            let full = |q: &Queue| q.readings.len() >= max_readings || q.bytes >= q.byte_cap;
            if !all_due && !full(q) {
                continue;
            }
            let max_messages = q.max_messages.min(self.request.max_messages).max(1);
            let mut parts: Vec<Part> = Vec::new();
            let mut request_bytes = 0usize;
            let (mut taken, mut taken_held) = (0usize, 0usize);
            while parts.len() < max_messages {
                // Whole messages and queued readings go in sequence order:
                // after a restart, readings of a message split before the
                // stop (no longer recorded) are older than a recorded one.
                let held_first = q.held.front().and_then(|h| h.part.readings.first()).map_or(u64::MAX, |r| r.seq);
                let queued_first = q.readings.front().map_or(u64::MAX, |(r, _)| r.seq);
                if let Some(h) = q.held.front().filter(|_| held_first < queued_first && held_first <= self.cursor.saturating_add(1)) {
                    if !parts.is_empty() && request_bytes.saturating_add(h.bytes) > self.request.max_bytes {
                        break;
                    }
                    request_bytes = request_bytes.saturating_add(h.bytes);
                    let Some(h) = q.held.pop_front() else { break };
                    taken_held += h.part.readings.len();
                    parts.push(h.part);
                    continue;
                }
                // A second or later message goes along only when it would be
                // ready on its own (full, or everything is due). Queued
                // readings never pass a whole message waiting.
                if queued_first >= held_first || (!parts.is_empty() && !all_due && !full(q)) {
                    break;
                }
                let (n, bytes) = q.next_message(max_readings, held_first);
                if !parts.is_empty() && request_bytes.saturating_add(bytes + MESSAGE_OVERHEAD) > self.request.max_bytes {
                    break;
                }
                request_bytes = request_bytes.saturating_add(bytes + MESSAGE_OVERHEAD);
                let readings: Vec<Reading> = q.readings.drain(..n).map(|(r, _)| r).collect();
                q.bytes = q.bytes.saturating_sub(bytes);
                taken += readings.len();
                parts.push(Part { readings, record: None });
            }
            if parts.is_empty() {
                continue;
            }
            q.oldest = now;
            self.buffered -= taken;
            self.held_readings -= taken_held;
            self.busy.insert(key.clone());
            self.last_served = Some(key.clone());
            batches.push(Batch { key, parts });
        }
        if self.queues.values().all(Queue::is_empty) {
            self.flush_requested = false;
        }
        let busy = &self.busy;
        self.queues.retain(|k, q| !q.is_empty() || busy.contains(k));
        batches
    }

    /// The request in flight for `key` was delivered, or its send was given
    /// up (shutdown) and stays recorded in the outbox.
    pub(crate) fn finished(&mut self, key: &Key) {
        self.busy.remove(key);
    }

    /// The destination refused the request for `key` (its `parts`, as taken,
    /// each with its record) as too large.
    ///
    /// - Several messages: they wait whole at the front of the key, records
    ///   kept, and the key's requests hold half as many messages
    ///   ([`TooLarge::Regroup`]).
    /// - One message of several readings: its readings go back to the front
    ///   of the queue with a halved byte cap ([`TooLarge::Split`]; the caller
    ///   cancels its record). Whole messages waiting behind it stay behind
    ///   them (requests are formed in sequence order).
    /// - One reading: handed back to be removed ([`TooLarge::Rejected`]).
    pub(crate) fn too_large(&mut self, key: Key, mut parts: Vec<Part>, now: Instant) -> TooLarge {
        self.finished(&key);
        let (byte_cap, max_messages) = (self.byte_cap, self.request.max_messages);
        if parts.len() > 1 {
            let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, max_messages, now));
            q.max_messages = (parts.len() / 2).max(1);
            for p in parts.into_iter().rev() {
                self.held_readings += p.readings.len();
                q.held.push_front(Held::new(p));
            }
            return TooLarge::Regroup;
        }
        let readings = parts.pop().map(|p| p.readings).unwrap_or_default();
        if readings.len() <= 1 {
            return TooLarge::Rejected(readings);
        }
        let q = self.queues.entry(key).or_insert_with(|| Queue::new(byte_cap, max_messages, now));
        self.buffered += readings.len();
        let sizes: Vec<usize> = readings.iter().map(wire_size).collect();
        // Always below what was refused, so the next batch is smaller: the
        // floor alone let a refused batch of small readings (the message's
        // own fields, a long device id, made it too large) form again whole,
        // for ever.
        let total: usize = sizes.iter().sum();
        q.byte_cap = (total / 2).max(MIN_BYTE_CAP).min(total.saturating_sub(1));
        if q.readings.is_empty() {
            q.oldest = now;
        }
        for (r, size) in readings.into_iter().zip(sizes).rev() {
            q.bytes += size;
            q.readings.push_front((r, size));
        }
        TooLarge::Split
    }

    /// When the oldest waiting reading of a key with nothing in flight reaches
    /// `max_age`, or at once for whole messages waiting (`None`: nothing
    /// waits).
    pub(crate) fn next_deadline(&self, max_age: Duration) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|(k, q)| !q.is_empty() && !self.busy.contains(*k))
            .filter_map(|(_, q)| {
                if Self::held_ready(q, self.cursor) {
                    Some(q.oldest)
                } else if q.readings.is_empty() {
                    // Whole messages waiting for older readings to be read:
                    // the loop reads at its next wake.
                    None
                } else {
                    q.oldest.checked_add(max_age)
                }
            })
            .min()
    }

    /// A whole message waits at the front of `q` and every reading before
    /// it was read (`cursor`): nothing older of its key can still come, so
    /// it may go (and everything queued before it).
    fn held_ready(q: &Queue, cursor: u64) -> bool {
        q.held.front().and_then(|h| h.part.readings.first()).is_some_and(|r| r.seq <= cursor.saturating_add(1))
    }
}

#[cfg(test)]
mod tests;
