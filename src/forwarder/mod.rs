//! The forwarder: reads committed readings from the outbox in order, batches
//! them per device, sends each batch to the sink, and acknowledges it in the
//! outbox only after the sink confirmed delivery.
//!
//! - One message holds one device's readings (and one patient association), in
//!   sequence order; a device has at most one request in flight, so
//!   per-device order holds even across retries. A request is one message,
//!   or, for a sink that says it can carry more
//!   ([`Sink::max_messages_per_request`], Event Hubs), up to that many
//!   consecutive messages of one device, confirmed or refused together.
//! - Each message is recorded in the outbox with its message id before it is
//!   sent; after a crash those messages are resent first, with the same ids.
//! - Failures are retried forever with exponential backoff and jitter; nothing
//!   is dropped on a send error. "Too large" halves a request of several
//!   messages (each kept whole, under its id), then splits a message.
//!
//! The delivery decisions (per-device queues, one request in flight per
//! device, which messages form a request, round-robin, the age/size/count
//! limits, the "too large" splits, the next deadline) live in [`batcher`], a synchronous state machine with no I/O and
//! no clock of its own, tested there with property tests. This file is the
//! async loop around it: it reads the outbox, asks the batcher, records the
//! messages in flight (with a group commit when one is open), calls the sink,
//! and acknowledges.

pub(crate) mod batcher;

use crate::backoff::Backoff;
use crate::health::Health;
use crate::logging::{Episode, SharedEpisode};
use crate::model::Message;
use crate::outbox::committer::GroupSync;
use crate::outbox::{InFlight, Outbox, OutboxError};
use crate::sinks::{Sink, SinkError};
use batcher::{Batch, Batcher, Key, Limits, Part, Pass, RequestLimits, TooLarge, BUFFER_CAP, MESSAGE_OVERHEAD};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Batch limits that can change while running (IoT Hub desired properties).
#[derive(Debug)]
pub struct LiveBatching {
    max_readings: std::sync::atomic::AtomicUsize,
    max_age_ms: AtomicU64,
}

impl LiveBatching {
    pub fn new(max_readings: usize, max_age: Duration) -> Arc<LiveBatching> {
        Arc::new(LiveBatching {
            max_readings: std::sync::atomic::AtomicUsize::new(max_readings.max(1)),
            max_age_ms: AtomicU64::new(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    pub(crate) fn max_readings(&self) -> usize {
        self.max_readings.load(Ordering::Relaxed)
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms.load(Ordering::Relaxed))
    }

    /// Changes the limits; refuses values outside 1..=100000 readings and
    /// 0..=600000 ms.
    pub(crate) fn set(&self, max_readings: Option<u64>, max_age_ms: Option<u64>) -> Result<(), String> {
        if let Some(n) = max_readings {
            if !(1..=100_000).contains(&n) {
                return Err(format!("maxReadings must be between 1 and 100000, got {n}"));
            }
        }
        if let Some(ms) = max_age_ms {
            if ms > 600_000 {
                return Err(format!("maxDelayMs must be at most 600000, got {ms}"));
            }
        }
        if let Some(n) = max_readings {
            self.max_readings.store(n as usize, Ordering::Relaxed);
        }
        if let Some(ms) = max_age_ms {
            self.max_age_ms.store(ms, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// How long acknowledgements may wait for a group commit to ride along with
/// before they are written on their own.
const ACK_HOLD: Duration = Duration::from_secs(2);

/// Default for [`ForwarderSettings::idle_tick`].
pub const IDLE_TICK: Duration = Duration::from_millis(500);

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct ForwarderSettings {
    pub gateway_id: String,
    /// Readings per message and how long a live reading may wait (changeable live).
    pub batching: Arc<LiveBatching>,
    pub batch_max_bytes: usize,
    pub retry: Backoff,
    pub auth_retry: Duration,
    /// How long in-flight sends may finish after shutdown was requested.
    pub shutdown_grace: Duration,
    /// The loop also wakes this often with nothing to do (watchdog heartbeat,
    /// reading a backlog that is larger than the buffer).
    pub idle_tick: Duration,
}

impl ForwarderSettings {
    pub fn from_config(c: &crate::config::Config) -> ForwarderSettings {
        let f = &c.forwarder;
        ForwarderSettings {
            gateway_id: c.gateway.id.clone(),
            batching: LiveBatching::new(f.batch_max_readings, Duration::from_millis(f.batch_max_age_ms)),
            batch_max_bytes: f.batch_max_bytes.bytes() as usize,
            retry: Backoff::new(Duration::from_millis(f.retry_initial_ms), Duration::from_millis(f.retry_max_ms)).with_jitter(),
            auth_retry: Duration::from_millis(f.auth_retry_ms),
            shutdown_grace: Duration::from_secs(5),
            idle_tick: IDLE_TICK,
        }
    }
}

/// Counters for status output.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub delivered_readings: AtomicU64,
    pub delivered_messages: AtomicU64,
    pub failed_sends: AtomicU64,
    /// Readings moved to the outbox's dead letters because even alone they
    /// exceed the destination's limit (this life; the outbox counts what it
    /// holds).
    pub(crate) dead_lettered_readings: AtomicU64,
    /// Open while sends are failing (one log line per episode).
    pub(crate) failing: SharedEpisode,
    /// Open while the destination refuses the credentials (an auth episode:
    /// from the first 401/403 to the next delivery). Apart from `failing`,
    /// so a refusal always gets its own error line, even in an episode that
    /// began with a reset or a timeout.
    pub(crate) auth_failing: SharedEpisode,
    /// The last delivery error, in words, while failing.
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
}

/// A handle to ask for an immediate send of everything pending.
#[derive(Clone, Default)]
pub struct FlushHandle(Arc<Notify>);

impl FlushHandle {
    pub(crate) fn flush_now(&self) {
        self.0.notify_one();
    }
}

/// At most this many batches recorded in flight and waiting for the sink
/// (the rest wait as readings in their queues).
const MAX_RECORDED: usize = 64;

/// The forwarder task.
pub struct Forwarder {
    pub outbox: Arc<Outbox>,
    pub sink: Arc<dyn Sink>,
    pub settings: ForwarderSettings,
    pub committed: watch::Receiver<u64>,
    pub stats: Arc<ForwarderStats>,
    pub health: Arc<Health>,
    pub flush: FlushHandle,
    /// The committer's group commits, for in-flight records to ride along
    /// with (one `fdatasync` instead of two). `None`: every record is made
    /// durable on its own.
    pub group_sync: Option<GroupSync>,
}

enum Outcome {
    Delivered,
    TooLarge(String),
    Cancelled,
}

/// One request: its key, its messages (each part recorded in flight) and
/// the messages as sent.
struct Unit {
    key: Key,
    parts: Vec<Part>,
    messages: Vec<Message>,
}

impl Unit {
    /// The in-flight records of its messages, in order.
    fn records(&self) -> Vec<InFlight> {
        self.parts.iter().filter_map(|p| p.record.clone()).collect()
    }

    fn readings(&self) -> u64 {
        self.parts.iter().map(|p| p.readings.len() as u64).sum()
    }
}

/// Why one life of the forwarder ended early: the outbox failed (read, record
/// in flight, acknowledge), or a blocking outbox task did not finish.
/// [`Forwarder::run`] rides these out itself; each text is the cause's own.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// The outbox refused a read or write.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A blocking outbox task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl Forwarder {
    /// Runs until `shutdown` is cancelled and in-flight sends have finished (or
    /// the grace period ran out). Readings not confirmed stay in the outbox.
    ///
    /// An outbox error (a full disk, a failing card) does not stop it: it says
    /// so once, waits with backoff and starts over from what the outbox holds.
    /// Batches that were in flight are resent under their ids, so the worst
    /// case is a duplicate with the same message id, never a lost reading.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ForwarderError> {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).with_jitter();
        let mut failures = 0u32;
        // A salvage that keeps failing is logged once until one succeeds or the
        // pipeline runs a minute without error.
        let mut salvage_failing = Episode::default();
        loop {
            let started = Instant::now();
            let err = match self.run_once(&shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // A minute of work since the last error: this is a new episode.
            if started.elapsed() >= Duration::from_secs(60) {
                failures = 0;
                salvage_failing.end();
            }
            failures += 1;
            let damaged = matches!(&err, ForwarderError::Outbox(e) if e.is_damage());
            let mut stuck = false;
            if damaged {
                // Damage found while reading: handled like damage found at
                // open. Salvage what is readable into a new store (same
                // sequence numbers, same ids) and carry on delivering.
                tracing::debug!("outbox damage: {err:#}");
                let outbox = self.outbox.clone();
                match tokio::task::spawn_blocking(move || outbox.repair()).await {
                    Ok(Ok(_report)) => {
                        salvage_failing.end();
                        // repair() logged what it salvaged; start over at once
                        // (after a wait if repairs keep coming back).
                        if failures < 3 {
                            continue;
                        }
                    }
                    Ok(Err(e)) => {
                        if salvage_failing.occurred() {
                            tracing::error!("the outbox is damaged and salvaging it failed ({e}); readings stay where they are, retrying (logged once until it works)");
                        } else {
                            tracing::debug!("salvaging the outbox failed again: {e}");
                        }
                        stuck = true;
                    }
                    Err(e) => {
                        if salvage_failing.occurred() {
                            tracing::error!("the outbox is damaged and the salvage task failed ({e}); retrying (logged once until it works)");
                        } else {
                            tracing::debug!("the salvage task failed again: {e}");
                        }
                        stuck = true;
                    }
                }
            } else {
                if failures == 1 {
                    tracing::error!("the forwarder cannot use the outbox ({err:#}); readings stay queued, retrying");
                }
                // sled refuses all writes after one I/O error until reopened. The
                // committer reopens it when a write of readings fails; reopen here
                // too, so a backlog drains even when no new readings arrive.
                let outbox = self.outbox.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || outbox.recover(&mut [])).await {
                    tracing::debug!("reopening the outbox failed: {e}");
                }
            }
            // At most an hour, as the config allows: no deadline can overflow.
            let until = Instant::now() + backoff.delay(failures - 1).min(Duration::from_secs(3600));
            // Keep telling the health check we are alive: this is a wait, not
            // a hang. Except when the store is damaged beyond what a salvage
            // could fix while running: then the watchdog restarts the service,
            // and the start salvages it.
            while Instant::now() < until {
                if !stuck {
                    self.health.forwarder_tick();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500).min(until - Instant::now())) => {}
                }
            }
            tracing::debug!("forwarder starting over after {failures} outbox error(s)");
        }
    }

    /// One life of the forwarder: returns on shutdown, or with the first
    /// outbox error.
    ///
    /// The decisions (what goes into which message, and when) are the
    /// [`Batcher`]'s; this loop does the I/O around it: it reads the outbox
    /// into the batcher, records the batches it forms in flight, hands them to
    /// the sink, reports each outcome back and sleeps until the next deadline.
    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<(), ForwarderError> {
        let sink_cap = self.sink.max_message_bytes().saturating_sub(MESSAGE_OVERHEAD).max(256);
        let byte_cap = self.settings.batch_max_bytes.min(sink_cap);
        let max_in_flight = self.sink.max_in_flight().max(1);
        let send_cancel = CancellationToken::new();

        let request = RequestLimits { max_messages: self.sink.max_messages_per_request().max(1), max_bytes: self.sink.max_request_bytes() };
        let mut batcher = Batcher::with_requests(byte_cap, BUFFER_CAP, request);
        let mut tasks = FuturesUnordered::new();
        // Requests recorded in flight (durably) but not handed to the sink
        // yet, because the sink takes fewer at once than were recorded together.
        let mut recorded: VecDeque<Unit> = VecDeque::new();
        let mut shutting_down: Option<Instant> = None;

        // Messages that were in flight when the gateway stopped go first for
        // their device, unchanged and under their ids (the batcher holds them).
        let leftovers = self.outbox.in_flight()?;
        if !leftovers.is_empty() {
            tracing::info!("resending {} message(s) that were in flight at the last stop, with their original ids", leftovers.len());
        }
        for rec in leftovers {
            let readings = self.outbox.get_many(&rec.seqs)?;
            let Some(first) = readings.first() else {
                // None of its readings is left: nothing to resend.
                self.outbox.cancel_in_flight(&rec)?;
                continue;
            };
            let key: Key = (first.device_id.clone(), first.patient_id.clone());
            batcher.resume(key, rec, readings, Instant::now().into_std());
        }

        // Each change: a group of readings is being committed right now.
        let mut opened = self.group_sync.as_ref().map(|g| g.opened());
        if let Some(o) = opened.as_mut() {
            o.borrow_and_update();
        }
        let mut group_opened = false;

        let mut tick = tokio::time::interval(self.settings.idle_tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.forwarder_tick();
            // 1. Pull committed readings into the batcher (bounded).
            let committed = *self.committed.borrow_and_update();
            let draining = shutting_down.is_some();
            let grace_over = shutting_down.is_some_and(|t| t.elapsed() >= self.settings.shutdown_grace);
            while let Some(n) = batcher.wants(committed).filter(|_| !grace_over) {
                let chunk = self.outbox.read_range(batcher.cursor(), committed, n)?;
                if chunk.is_empty() {
                    batcher.caught_up(committed);
                    break;
                }
                let now = Instant::now().into_std();
                for r in chunk {
                    batcher.admit(r, now);
                }
            }

            let limits = Limits { max_readings: self.settings.batching.max_readings(), max_age: self.settings.batching.max_age() };
            // 2. Send what is ready, one message per device at a time. When
            //    stopping, everything is ready (best effort within the grace period).
            if !grace_over {
                // When a group of readings is being committed, batches that
                // would fall due before the next group (half their age or
                // more) are formed now, so that their records ride along with
                // that group's `fdatasync` instead of costing their own.
                let group_open = std::mem::take(&mut group_opened) || opened.as_mut().is_some_and(|o| o.has_changed().unwrap_or(false));
                if group_open {
                    if let Some(o) = opened.as_mut() {
                        o.borrow_and_update();
                    }
                }
                let pass = Pass { committed, draining, group_open, room: MAX_RECORDED.saturating_sub(recorded.len()) };
                let mut pending: Vec<Unit> = Vec::new();
                // Records of new messages (resumed or regrouped ones have theirs).
                let mut recs: Vec<InFlight> = Vec::new();
                for Batch { key, mut parts } in batcher.take_ready(limits, pass, Instant::now().into_std()) {
                    let mut messages = Vec::with_capacity(parts.len());
                    for part in &mut parts {
                        let Some(mut msg) = Message::from_batch(&self.settings.gateway_id, self.outbox.epoch(), &part.readings) else {
                            continue;
                        };
                        match &part.record {
                            Some(rec) => msg.message_id = rec.message_id.clone(),
                            None => {
                                let rec = InFlight { message_id: msg.message_id.clone(), seqs: part.readings.iter().map(|r| r.seq).collect() };
                                recs.push(rec.clone());
                                part.record = Some(rec);
                            }
                        }
                        messages.push(msg);
                    }
                    if messages.is_empty() {
                        // Parts are never empty; should all be, nothing is in flight.
                        batcher.finished(&key);
                        continue;
                    }
                    parts.retain(|p| !p.readings.is_empty());
                    pending.push(Unit { key, parts, messages });
                }
                if !recs.is_empty() {
                    // All messages of one pass share one record write.
                    let mut stored = false;
                    if let (true, Some(gs)) = (group_open, self.group_sync.as_ref()) {
                        // Committed with the open group (within its window);
                        // should it be missed, with the next group or alone
                        // within half the batch age.
                        let deadline = Instant::now() + (limits.max_age / 2).min(Duration::from_millis(500));
                        match gs.record(recs.clone(), deadline).await {
                            Ok(()) => stored = true,
                            Err(e) => tracing::debug!("in-flight records not stored with a group ({e}); storing them on their own"),
                        }
                    }
                    if !stored {
                        let outbox = self.outbox.clone();
                        tokio::task::spawn_blocking(move || outbox.put_in_flight_many(&recs)).await??;
                    }
                }
                recorded.extend(pending);
                // Hand recorded requests to the sink as it has room.
                while tasks.len() < max_in_flight {
                    let Some(unit) = recorded.pop_front() else { break };
                    tasks.push(self.deliver(unit, send_cancel.clone()));
                }
            }

            if draining && tasks.is_empty() && (grace_over || (recorded.is_empty() && batcher.is_idle(committed))) {
                if grace_over && (!batcher.is_idle(committed) || !recorded.is_empty()) {
                    tracing::info!("stopping with readings still queued; they stay in the outbox and are sent on the next start");
                }
                break;
            }
            if grace_over && !tasks.is_empty() && !send_cancel.is_cancelled() {
                tracing::info!("{} message(s) still unconfirmed at shutdown; they stay in the outbox and are resent on the next start", tasks.len());
                send_cancel.cancel();
            }

            // 3. Wait for something to happen, or for the oldest waiting
            //    reading of an idle device to reach `max_age`.
            let next_due = batcher.next_deadline(limits.max_age).map(Instant::from_std);
            tokio::select! {
                Some((unit, outcome)) = tasks.next() => {
                    match outcome {
                        Outcome::Delivered => {
                            batcher.finished(&unit.key);
                            let n = unit.readings();
                            let recs = unit.records();
                            let messages = recs.len() as u64;
                            if self.group_sync.is_some() {
                                // Written with the next group commit (one
                                // write to sled's log instead of two).
                                for rec in recs {
                                    self.outbox.ack_deferred(rec);
                                }
                            } else {
                                let outbox = self.outbox.clone();
                                tokio::task::spawn_blocking(move || recs.iter().try_for_each(|rec| outbox.ack(rec))).await??;
                            }
                            self.stats.delivered_readings.fetch_add(n, Ordering::Relaxed);
                            self.stats.delivered_messages.fetch_add(messages, Ordering::Relaxed);
                        }
                        Outcome::TooLarge(detail) => {
                            let count = unit.parts.len();
                            // The one message's record, when the request held one.
                            let single = unit.records().pop().filter(|_| count == 1);
                            match batcher.too_large(unit.key, unit.parts, Instant::now().into_std()) {
                                TooLarge::Regroup => {
                                    // Its messages stay recorded and go out
                                    // again whole, under the same ids.
                                    tracing::warn!("the destination said a request of {count} messages was too large ({detail}); sending fewer per request");
                                }
                                TooLarge::Rejected(readings) => {
                                    let Some(rec) = single else { continue };
                                    self.outbox.cancel_in_flight(&rec)?;
                                    // Sending it again can never work: keep it
                                    // apart, durably, and let the device go on.
                                    let outbox = self.outbox.clone();
                                    let sink = self.sink.name();
                                    let reason = detail.clone();
                                    let rec2 = rec.clone();
                                    let moved = tokio::task::spawn_blocking(move || outbox.dead_letter(&rec2, sink, &reason)).await??;
                                    tracing::error!(
                                        "a single reading (seq {:?}, device {}) is larger than {} accepts ({detail}); moved to the outbox's dead letters, see `iomt-edge outbox dead-letters list`",
                                        rec.seqs.first(),
                                        readings.first().map(|r| crate::redact::device(&r.device_id)).unwrap_or_default(),
                                        self.sink.name()
                                    );
                                    self.stats.dead_lettered_readings.fetch_add(moved, Ordering::Relaxed);
                                }
                                TooLarge::Split => {
                                    if let Some(rec) = &single {
                                        self.outbox.cancel_in_flight(rec)?;
                                    }
                                    tracing::warn!("the destination said a message was too large ({detail}); splitting it");
                                }
                            }
                        }
                        Outcome::Cancelled => batcher.finished(&unit.key),
                    }
                }
                res = self.committed.changed(), if shutting_down.is_none() => {
                    if res.is_err() {
                        // The committer is gone: the gateway is stopping.
                        shutting_down.get_or_insert_with(Instant::now);
                    }
                }
                _ = self.flush.0.notified() => batcher.request_flush(),
                changed = async {
                    match opened.as_mut() {
                        Some(o) => o.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if changed {
                        group_opened = true;
                    } else {
                        // The committer has stopped: no more groups.
                        opened = None;
                    }
                }
                _ = shutdown.cancelled(), if shutting_down.is_none() => {
                    shutting_down = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                _ = tick.tick() => {
                    // No group commit came for a while (quiet devices): write
                    // the held acknowledgements on their own.
                    if self.outbox.pending_acks_age().is_some_and(|age| age >= ACK_HOLD) {
                        let outbox = self.outbox.clone();
                        tokio::task::spawn_blocking(move || outbox.apply_pending_acks()).await??;
                    }
                }
            }
        }
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || outbox.apply_pending_acks()).await??;
        Ok(())
    }

    /// Sends one request (one message, or several of one device in one
    /// request) until the sink confirms it (or says it is too large).
    fn deliver(&self, unit: Unit, cancel: CancellationToken) -> impl std::future::Future<Output = (Unit, Outcome)> {
        let sink = self.sink.clone();
        let stats = self.stats.clone();
        let retry = self.settings.retry;
        let auth_retry = self.settings.auth_retry;
        async move {
            let mut attempt = 0u32;
            loop {
                let send = async {
                    match unit.messages.as_slice() {
                        [one] => sink.send(one).await,
                        many => sink.send_many(many).await,
                    }
                };
                let result = tokio::select! {
                    r = send => r,
                    _ = cancel.cancelled() => return (unit, Outcome::Cancelled),
                };
                let err = match result {
                    Ok(()) => {
                        stats.auth_failing.end();
                        if stats.failing.end().is_some() {
                            tracing::info!("delivery to {} works again", sink.name());
                            if let Ok(mut e) = stats.last_error.lock() {
                                *e = None;
                            }
                        }
                        return (unit, Outcome::Delivered);
                    }
                    Err(SinkError::TooLarge(d)) => return (unit, Outcome::TooLarge(d)),
                    Err(e) => e,
                };
                stats.failed_sends.fetch_add(1, Ordering::Relaxed);
                let delay = match &err {
                    SinkError::Retryable(_) => retry.delay(attempt),
                    SinkError::Throttled { retry_after, .. } => retry.delay(attempt).max(retry_after.unwrap_or_default()),
                    SinkError::FatalAuth(_) => auth_retry,
                    SinkError::TooLarge(_) => Duration::ZERO,
                };
                if let SinkError::FatalAuth(what) = &err {
                    // Once per auth episode, whatever failed before it: the
                    // operator has something to fix. `what` names what to
                    // check (the sink's text for its kind of credential).
                    stats.failing.occurred();
                    if stats.auth_failing.occurred() {
                        tracing::error!(
                            "{} refused the gateway's credentials: {what}; readings stay in the outbox, retrying every {:.1} s (logged once until a delivery works)",
                            sink.name(),
                            delay.as_secs_f64()
                        );
                    } else {
                        tracing::debug!("delivery to {} refused again: {err}", sink.name());
                    }
                } else if stats.failing.occurred() {
                    tracing::warn!(
                        "delivery to {} failed: {err}; readings stay in the outbox and are retried (next try in {:.1} s)",
                        sink.name(),
                        delay.as_secs_f64()
                    );
                } else {
                    tracing::debug!("delivery to {} failed again: {err}", sink.name());
                }
                if let Ok(mut e) = stats.last_error.lock() {
                    *e = Some(err.to_string());
                }
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return (unit, Outcome::Cancelled),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
