//! Liveness of the pipeline, for the systemd watchdog: the watchdog is fed only
//! while the forwarder loop turns and no outbox write is stuck. A leaf (it uses
//! nothing of the crate) so that the committer and the forwarder can beat it
//! without depending on `service`, which reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Health {
    forwarder_tick: AtomicU64,
    /// 0 when no commit is running, else when the running one started.
    commit_started: AtomicU64,
}

impl Health {
    pub fn new() -> Health {
        let h = Health::default();
        h.forwarder_tick();
        h
    }

    /// The forwarder loop went round (it does at least once a second).
    pub(crate) fn forwarder_tick(&self) {
        self.forwarder_tick.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn commit_started(&self) {
        self.commit_started.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn commit_finished(&self) {
        self.commit_started.store(0, Ordering::Relaxed);
    }

    /// Healthy when the forwarder turned within `max_ms` and no commit has been
    /// running for longer than that. Returns the reason when not.
    pub(crate) fn check(&self, max_ms: u64) -> Result<(), &'static str> {
        let now = now_ms();
        if now.saturating_sub(self.forwarder_tick.load(Ordering::Relaxed)) > max_ms {
            return Err("the forwarder loop is stuck");
        }
        let c = self.commit_started.load(Ordering::Relaxed);
        if c != 0 && now.saturating_sub(c) > max_ms {
            return Err("an outbox write is stuck");
        }
        Ok(())
    }
}
