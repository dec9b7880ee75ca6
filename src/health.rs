//! Liveness of the pipeline, for the systemd watchdog: the watchdog is fed only
//! while the forwarder loop turns and no outbox write is stuck. A leaf (it uses
//! nothing of the crate) so that the committer and the forwarder can beat it
//! without depending on `service`, which reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on the monotonic clock since the first call in this process,
/// plus one (0 stays free to mean "no commit running"). Not the wall clock: a
/// Raspberry Pi has no real-time clock and steps its wall clock at the first
/// NTP sync after boot, by minutes or more; measured on the wall clock, a step
/// back would hide a stuck loop for as long as the step.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let ms = START.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
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
        self.forwarder_tick.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub(crate) fn commit_started(&self) {
        self.commit_started.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub(crate) fn commit_finished(&self) {
        self.commit_started.store(0, Ordering::Relaxed);
    }

    /// Healthy when the forwarder turned within `max_ms` and no commit has been
    /// running for longer than that. Returns the reason when not.
    pub(crate) fn check(&self, max_ms: u64) -> Result<(), &'static str> {
        let now = monotonic_ms();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_health_is_healthy_and_a_commit_older_than_the_limit_is_stuck() {
        let h = Health::new();
        assert_eq!(h.check(10_000), Ok(()));
        h.commit_started();
        assert_eq!(h.check(10_000), Ok(()));
        // Limits well apart from the sleeps, so a loaded machine cannot flip them.
        std::thread::sleep(std::time::Duration::from_millis(1200));
        h.forwarder_tick();
        assert_eq!(h.check(1000), Err("an outbox write is stuck"));
        h.commit_finished();
        assert_eq!(h.check(1000), Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(1200));
        assert_eq!(h.check(1000), Err("the forwarder loop is stuck"));
    }

    #[test]
    fn the_clock_never_reads_zero_and_never_goes_back() {
        let a = monotonic_ms();
        let b = monotonic_ms();
        assert!(a >= 1 && b >= a);
    }
}
