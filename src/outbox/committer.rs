//! Group commit: takes readings from adapters, stores them in the outbox in
//! groups, flushes once per group, and only then announces them as committed.
//!
//! The window (`flush_interval_ms`, default 100 ms) bounds how long a reading
//! waits for company; 0 flushes every reading on its own. While a flush is under
//! way new readings queue in the channel, so under load groups grow by themselves.
//!
//! Before storing, each reading is stamped with its patient and checked against
//! the SampledData slots of its series ([`SeriesSlots`]): every adapter's
//! readings pass here in commit order, so one place marks a reading whose MedTech
//! slot is already taken, and the mark is stored with the reading (a resend
//! carries it unchanged).

use super::Outbox;
use crate::adapters::DeviceRegistry;
use crate::model::{Reading, SeriesSlots, SlotOutcome};
use crate::service::associations::Associations;
use crate::service::health::Health;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest group committed at once.
const MAX_GROUP: usize = 4096;

/// Writes a line per committed group on stdout, for the crash tests:
/// `{"committed":[[seq,"device","time","type"],...]}` (time and type as in the
/// message format, so a test can tell a reading from another one that was
/// given the same number). Written after the flush returned, so a line that
/// reached the pipe names readings that are durable.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitReport(pub bool);

/// Everything the committer needs.
pub struct Committer {
    pub outbox: Arc<Outbox>,
    pub window: Duration,
    pub registry: Arc<DeviceRegistry>,
    pub associations: Arc<Associations>,
    pub health: Arc<Health>,
    pub report: CommitReport,
}

impl Committer {
    /// Starts the committer. The returned watch carries the highest committed
    /// sequence number. The task ends when every sender has been dropped and
    /// the channel is drained.
    pub fn spawn(self, mut rx: mpsc::Receiver<Reading>) -> (JoinHandle<()>, watch::Receiver<u64>) {
        let (tx, committed) = watch::channel(self.outbox.last_seq());
        let handle = tokio::spawn(async move {
            let mut failing_since: Option<u64> = None;
            let mut dropping = 0u64;
            let mut slots = SeriesSlots::new(chrono::Utc::now());
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                if !self.window.is_zero() {
                    let deadline = tokio::time::Instant::now() + self.window;
                    while group.len() < MAX_GROUP {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(r)) => group.push(r),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                for r in &mut group {
                    self.associations.stamp(r);
                    if slots.assign(r) == SlotOutcome::Taken {
                        tracing::debug!(kind = r.kind.name(), "a reading shares its SampledData slot with an earlier one; it becomes its own Observation");
                    }
                }
                // A group larger than one write may store (a small state
                // filesystem) is committed in parts, each atomic on its own.
                let limit = self.outbox.group_limit().max(1);
                let mut rest = if group.len() > limit { group.split_off(limit) } else { Vec::new() };
                loop {
                    let mut attempt = 0u32;
                    loop {
                        self.health.commit_started();
                        let outbox = self.outbox.clone();
                        let joined = tokio::task::spawn_blocking(move || {
                            // A panic inside the storage engine must not take the
                            // group with it: keep the readings and retry like any
                            // other write error.
                            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                let err = match outbox.append(&mut group) {
                                    Ok(outcome) => return Ok(outcome),
                                    Err(e) => e,
                                };
                                // sled refuses all writes after one I/O error until
                                // it is reopened; reopen now, so the retry can work
                                // once there is room again. If the group reached
                                // the disk after all, it is committed: don't store
                                // it twice.
                                match outbox.recover(&mut group) {
                                    Ok(true) => Ok(super::AppendOutcome {
                                        seqs: group.iter().map(|r| (r.seq != 0).then_some(r.seq)).collect(),
                                        ..Default::default()
                                    }),
                                    Ok(false) => Err(err.to_string()),
                                    Err(reopen) => Err(format!("{err}; reopening it failed too: {reopen}")),
                                }
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
                        match res {
                            Ok(outcome) => {
                                if let Some(n) = failing_since.take() {
                                    tracing::warn!("outbox writes work again after {n} failed attempts; nothing was lost");
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
                                    tracing::warn!(
                                        "the outbox is full: {} new readings refused (policy refuse_newest)",
                                        outcome.refused
                                    );
                                }
                                for r in group.iter().filter(|r| r.seq != 0) {
                                    self.registry.observe(r);
                                }
                                if self.report.0 {
                                    report_commits(&group);
                                }
                                let _ = tx.send(self.outbox.last_seq());
                                break;
                            }
                            Err(e) => {
                                attempt += 1;
                                let n = failing_since.get_or_insert(0);
                                *n += 1;
                                if *n == 1 {
                                    tracing::error!(
                                        "cannot store readings in the outbox ({e}); holding {} readings in memory and retrying until it works again",
                                        group.len()
                                    );
                                }
                                let delay = Duration::from_millis((100u64 << attempt.min(6)).min(5000));
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
        (handle, committed)
    }
}

fn report_commits(group: &[Reading]) {
    let items: Vec<serde_json::Value> = group
        .iter()
        .filter(|r| r.seq != 0)
        .map(|r| serde_json::json!([r.seq, r.device_id, crate::model::time::format(&r.time), r.kind]))
        .collect();
    // One write for the whole line: written piecewise (stdout's line buffer
    // is 1 KiB), a kill could leave half a line in the pipe.
    let mut line = serde_json::json!({ "committed": items }).to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
