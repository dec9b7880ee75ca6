//! Group commit: takes readings from adapters, stores them in the outbox in
//! groups, flushes once per group, and only then announces them as committed.
//!
//! The window (`flush_interval_ms`, default 100 ms) bounds how long a reading
//! waits for company; 0 flushes every reading on its own. While a flush is under
//! way new readings queue in the channel, so under load groups grow by themselves.
//!
//! The forwarder's in-flight records (a batch and its message id, made durable
//! before the batch is sent) ride along with these groups ([`GroupSync`]): when
//! a group opens, the forwarder forms the batches that would fall due before
//! the next one and hands their records over; they are stored with the group
//! and made durable by its one `fdatasync`. On an SD card every `fdatasync`
//! rewrites at least one page, so a sync of its own per forwarder pass about
//! doubled the bytes written per reading (docs/performance.md, SD-card wear).
//!
//! Before storing, each reading passes the stamp hook (the service stamps its
//! patient there) and is checked against
//! the SampledData slots of its series ([`SeriesSlots`]): every adapter's
//! readings pass here in commit order, so one place marks a reading whose MedTech
//! slot is already taken, and the mark is stored with the reading (a resend
//! carries it unchanged).

use super::{GroupOutcome, InFlight, Outbox};
use crate::health::Health;
use crate::model::{Reading, SeriesSlots, SlotOutcome};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest group committed at once.
const MAX_GROUP: usize = 4096;

/// Writes a line per committed group on stdout, for the crash tests:
/// `{"committed":[[seq,"device","time","type"],...]}` (time and type as in the
/// message format, so a test can tell a reading from another one that was
/// given the same number). Written after the flush returned, so a line that
/// reached the pipe names readings that are durable.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitReport(pub bool);

/// In-flight records to make durable with the next group commit, or by
/// `deadline` on their own if no group comes.
struct RecordRequest {
    records: Vec<InFlight>,
    deadline: Instant,
    done: oneshot::Sender<Result<(), String>>,
}

/// The forwarder's handle to the committer's group commits.
#[derive(Clone)]
pub struct GroupSync {
    tx: mpsc::Sender<RecordRequest>,
    opened: watch::Receiver<u64>,
}

/// Why [`GroupSync::record`] did not store the records (the caller then
/// stores them itself with [`Outbox::put_in_flight_many`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupSyncError {
    #[error("the committer has stopped")]
    Closed,
    #[error("the outbox write failed: {0}")]
    Failed(String),
    #[error("no group commit within the wait")]
    TimedOut,
}

impl GroupSync {
    /// Stores `records` durably with the group being committed now (or the
    /// next one), at the latest by `deadline`. Returns once they are durable.
    /// Waits at most until `deadline` plus a few seconds.
    pub(crate) async fn record(&self, records: Vec<InFlight>, deadline: Instant) -> Result<(), GroupSyncError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(RecordRequest { records, deadline, done }).await.map_err(|_| GroupSyncError::Closed)?;
        match tokio::time::timeout_at(deadline.max(Instant::now()) + Duration::from_secs(5), rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(GroupSyncError::Failed(e)),
            Ok(Err(_)) => Err(GroupSyncError::Closed),
            Err(_) => Err(GroupSyncError::TimedOut),
        }
    }

    /// Changes each time a group opens (its first reading arrived; it is
    /// committed within the commit window).
    pub(crate) fn opened(&self) -> watch::Receiver<u64> {
        self.opened.clone()
    }
}

/// Called on each reading just before it is stored (in commit order, on the
/// committer's task: keep it short and non-blocking).
pub(crate) type StampHook = Arc<dyn Fn(&mut Reading) + Send + Sync>;

/// Called on each reading once it is durable (it has its sequence number).
pub(crate) type CommittedHook = Arc<dyn Fn(&Reading) + Send + Sync>;

/// What the stage above plugs into the committer, so the outbox knows
/// nothing of patients or devices: the service stamps each reading with its
/// patient association before the commit, and tells the device registry
/// about each reading after it. `None`: nothing to do.
#[derive(Clone, Default)]
pub struct CommitHooks {
    pub(crate) stamp: Option<StampHook>,
    pub(crate) committed: Option<CommittedHook>,
}

/// Everything the committer needs.
pub struct Committer {
    pub outbox: Arc<Outbox>,
    pub window: Duration,
    pub hooks: CommitHooks,
    pub health: Arc<Health>,
    pub report: CommitReport,
}

impl Committer {
    /// Starts the committer. The returned watch carries the highest committed
    /// sequence number; the [`GroupSync`] lets the forwarder's in-flight
    /// records ride along with the groups. The task ends when every sender of
    /// readings has been dropped and the channel is drained (records still
    /// waiting are stored first).
    pub fn spawn(self, mut rx: mpsc::Receiver<Reading>) -> (JoinHandle<()>, watch::Receiver<u64>, GroupSync) {
        let (tx, committed) = watch::channel(self.outbox.last_seq());
        let (opened_tx, opened) = watch::channel(0u64);
        let (rec_tx, mut rec_rx) = mpsc::channel::<RecordRequest>(64);
        let group_sync = GroupSync { tx: rec_tx, opened };
        let handle = tokio::spawn(async move {
            let mut failing = crate::logging::Episode::default();
            let mut dropping = 0u64;
            let mut slots = SeriesSlots::new(chrono::Utc::now());
            let mut waiting: Vec<RecordRequest> = Vec::new();
            let mut readings_open = true;
            loop {
                // A reading opens a group; records alone are stored when their
                // deadline comes (or when the readings' channel has closed).
                if !readings_open && waiting.is_empty() {
                    break;
                }
                let earliest = if readings_open { waiting.iter().map(|r| r.deadline).min() } else { Some(Instant::now()) };
                let first = tokio::select! {
                    r = rx.recv(), if readings_open => match r {
                        Some(r) => Some(r),
                        None => {
                            readings_open = false;
                            None
                        }
                    },
                    Some(req) = rec_rx.recv() => {
                        waiting.push(req);
                        continue;
                    }
                    _ = tokio::time::sleep_until(earliest.unwrap_or_else(Instant::now)), if earliest.is_some() => None,
                };
                if first.is_none() && waiting.is_empty() {
                    continue;
                }
                let mut group: Vec<Reading> = first.into_iter().collect();
                if !group.is_empty() {
                    opened_tx.send_modify(|n| *n = n.wrapping_add(1));
                    if !self.window.is_zero() {
                        let deadline = Instant::now() + self.window;
                        while group.len() < MAX_GROUP {
                            tokio::select! {
                                r = rx.recv() => match r {
                                    Some(r) => group.push(r),
                                    None => break,
                                },
                                Some(req) = rec_rx.recv() => waiting.push(req),
                                _ = tokio::time::sleep_until(deadline) => break,
                            }
                        }
                    }
                    // Records the forwarder sent in answer to the opening.
                    while let Ok(req) = rec_rx.try_recv() {
                        waiting.push(req);
                    }
                }
                let mut requests = std::mem::take(&mut waiting);
                let mut records: Arc<Vec<InFlight>> = Arc::new(requests.iter().flat_map(|r| r.records.iter().cloned()).collect());
                for r in &mut group {
                    if let Some(stamp) = &self.hooks.stamp {
                        stamp(r);
                    }
                    if slots.assign(r) == SlotOutcome::Taken {
                        tracing::debug!(
                            kind = r.kind.name(),
                            "a reading shares its SampledData slot with an earlier one; it becomes its own Observation"
                        );
                    }
                }
                // A group larger than one write may store (a small state
                // filesystem) is committed in parts, each atomic on its own
                // (the in-flight records go with the first part).
                let limit = self.outbox.group_limit().max(1);
                let mut rest = if group.len() > limit { group.split_off(limit) } else { Vec::new() };
                loop {
                    let mut attempt = 0u32;
                    loop {
                        self.health.commit_started();
                        let outbox = self.outbox.clone();
                        let recs = records.clone();
                        let joined = tokio::task::spawn_blocking(move || {
                            // A panic inside the storage engine must not take the
                            // group with it: keep the readings and retry like any
                            // other write error.
                            // On a write error the store is reopened, so the
                            // retry can work once there is room again; a group
                            // that reached the disk after all is committed and
                            // not stored twice (see `append_or_recover`).
                            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                outbox.append_or_recover(&mut group, &recs).map_err(|e| e.to_string())
                            }));
                            (group, res)
                        })
                        .await;
                        self.health.commit_finished();
                        let Ok((g, res)) = joined else {
                            // Only when the runtime is shutting down before the write ran.
                            tracing::error!("the outbox writer thread was cancelled; readings of this group are lost");
                            break;
                        };
                        group = g;
                        let res = match res {
                            Ok(r) => r,
                            Err(_) => Err("the storage engine failed unexpectedly (panic)".to_string()),
                        };
                        // The in-flight records' fate, told to the forwarder:
                        // durable, or not known (it then stores them itself).
                        let records_stored = matches!(res, Ok(GroupOutcome { records_stored: true, .. }));
                        for req in requests.drain(..) {
                            let _ = req.done.send(if records_stored { Ok(()) } else { Err("stored without them".into()) });
                        }
                        records = Arc::new(Vec::new());
                        match res.map(|done| done.appended) {
                            Ok(outcome) => {
                                if let Some(end) = failing.end() {
                                    tracing::warn!("outbox writes work again after {} failed attempts; nothing was lost", end.repeats + 1);
                                }
                                if outcome.dropped_oldest > 0 {
                                    if dropping == 0 {
                                        tracing::warn!(
                                            "the outbox is full: dropping the oldest readings to make room (policy drop_oldest); is the destination reachable?"
                                        );
                                    }
                                    dropping += outcome.dropped_oldest;
                                } else if dropping > 0 {
                                    tracing::warn!("the outbox has room again; {dropping} oldest readings were dropped while it was full");
                                    dropping = 0;
                                }
                                if outcome.refused > 0 {
                                    tracing::warn!("the outbox is full: {} new readings refused (policy refuse_newest)", outcome.refused);
                                }
                                // The readings stored, with their numbers (a
                                // refused one has none).
                                let stored: Vec<(u64, &Reading)> = group.iter().zip(&outcome.seqs).filter_map(|(r, s)| s.map(|s| (s, r))).collect();
                                if let Some(committed) = &self.hooks.committed {
                                    for (_, r) in &stored {
                                        committed(r);
                                    }
                                }
                                if self.report.0 && !group.is_empty() {
                                    report_commits(&stored);
                                }
                                let _ = tx.send(self.outbox.last_seq());
                                break;
                            }
                            Err(_) if group.is_empty() => break,
                            Err(e) => {
                                attempt += 1;
                                if failing.occurred() {
                                    tracing::error!(
                                        "cannot store readings in the outbox ({e}); holding {} readings in memory and retrying until it works again",
                                        group.len()
                                    );
                                }
                                let delay = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).delay(attempt);
                                tokio::time::sleep(delay).await;
                            }
                        }
                    }
                    if rest.is_empty() {
                        break;
                    }
                    let tail = if rest.len() > limit { rest.split_off(limit) } else { Vec::new() };
                    group = std::mem::replace(&mut rest, tail);
                }
            }
        });
        (handle, committed, group_sync)
    }
}

fn report_commits(stored: &[(u64, &Reading)]) {
    let items: Vec<serde_json::Value> =
        stored.iter().map(|(seq, r)| serde_json::json!([seq, r.device_id, crate::model::time::format(&r.time), r.kind])).collect();
    // One write for the whole line: written piecewise (stdout's line buffer
    // is 1 KiB), a kill could leave half a line in the pipe.
    let mut line = serde_json::json!({ "committed": items }).to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
