//! How long to wait before trying again after a failure: one exponential
//! backoff for every stage (the forwarder's sends, the IoT Hub connection, the
//! Event Hubs token, BLE and serial reconnects, the committer's outbox writes).
//!
//! The delay before retry `n` (0-based) is `min(max, initial × factor^n)`;
//! with jitter, each delay is drawn uniformly from 50–100 % of that, so it is
//! never more than `max` and never less than half of it. Half, not "full"
//! jitter (0–100 %): many gateways that lost the same network spread their
//! reconnects, yet none retries at once in a tight loop.
//!
//! Why hand-written: the same policy is asked two ways, by attempt number
//! from a caller that keeps its own count ([`Backoff::delay`]) and as a
//! running sequence that a success resets ([`Backoff::next_delay`],
//! [`Backoff::reset`]), and the delays are part of the tested behaviour (a
//! reconnect loop's timings are asserted by the end-to-end tests); a dozen
//! lines do that without an async retry framework.

use rand::Rng;
use std::time::Duration;

/// An exponential backoff: `initial`, multiplied by `factor` after each
/// failure, capped at `max`, optionally jittered; it also counts the
/// failures of a running sequence for [`Backoff::next_delay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: u32,
    jitter: bool,
    /// Delays handed out by [`Backoff::next_delay`] since the last reset.
    attempts: u32,
}

impl Backoff {
    /// `initial` before the first retry, doubling up to `max`, without
    /// jitter. A `max` below `initial` caps every delay at `max`.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, factor: 2, jitter: false, attempts: 0 }
    }

    /// The same backoff growing by `factor` (at least 1: 1 waits `initial`
    /// every time) instead of 2.
    #[cfg(test)]
    pub(crate) const fn factor(self, factor: u32) -> Backoff {
        Backoff { factor: if factor == 0 { 1 } else { factor }, ..self }
    }

    /// The same backoff with each delay drawn from 50–100 % of its value.
    pub const fn with_jitter(self) -> Backoff {
        Backoff { jitter: true, ..self }
    }

    /// The first delay, before jitter.
    #[cfg(test)]
    pub(crate) const fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap, before jitter.
    pub(crate) const fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry `attempt` (0-based) without jitter:
    /// `min(max, initial × factor^attempt)`, exact for any `attempt`.
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        let mut d = self.initial.min(self.max);
        for _ in 0..attempt {
            if d >= self.max || self.factor == 1 {
                break;
            }
            d = d.saturating_mul(self.factor).min(self.max);
        }
        d
    }

    /// The delay before retry `attempt` (0-based): [`Backoff::ceiling`],
    /// and with jitter a uniform draw from 50–100 % of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.ceiling(attempt);
        if self.jitter {
            d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
        } else {
            d
        }
    }

    /// The delay for the next retry of a running sequence (`initial` first),
    /// counting it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        d
    }

    /// Starts the sequence over (it worked): the next delay is `initial`.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Delays handed out by [`Backoff::next_delay`] since the last reset.
    #[cfg(test)]
    pub(crate) const fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_initial_up_to_max() {
        let b = Backoff::new(500 * MS, 10 * 1000 * MS);
        let got: Vec<u128> = (0..8).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(b.delay(u32::MAX), 10 * 1000 * MS, "a huge attempt number neither overflows nor loops long");
    }

    #[test]
    fn the_cap_is_exact_beyond_any_shift_limit() {
        // 1 ms doubling to an hour: 2^21 ms is still under the hour, so a
        // shift capped at 20 would stop at about 17 minutes.
        let b = Backoff::new(MS, Duration::from_secs(3600));
        assert_eq!(b.delay(21), 2_097_152 * MS);
        assert_eq!(b.delay(22), Duration::from_secs(3600));
        assert_eq!(b.delay(100), Duration::from_secs(3600));
    }

    #[test]
    fn factor_and_a_cap_below_initial() {
        let b = Backoff::new(100 * MS, 5000 * MS).factor(3);
        assert_eq!((0..5).map(|n| b.delay(n).as_millis()).collect::<Vec<_>>(), [100, 300, 900, 2700, 5000]);
        let flat = Backoff::new(100 * MS, 5000 * MS).factor(1);
        assert_eq!(flat.delay(50), 100 * MS);
        assert_eq!(Backoff::new(100 * MS, 5000 * MS).factor(0).delay(3), 100 * MS, "factor 0 is taken as 1");
        assert_eq!(Backoff::new(900 * MS, 300 * MS).delay(0), 300 * MS, "max caps even the first delay");
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_delay() {
        let b = Backoff::new(100 * MS, 5000 * MS).with_jitter();
        let mut below = false;
        for _ in 0..200 {
            let d0 = b.delay(0);
            assert!(d0 >= 50 * MS && d0 <= 100 * MS, "{d0:?}");
            let d3 = b.delay(3);
            assert!(d3 >= 400 * MS && d3 <= 800 * MS, "{d3:?}");
            let d40 = b.delay(40);
            assert!(d40 >= 2500 * MS && d40 <= 5000 * MS, "{d40:?}");
            below |= d40 < 4900 * MS;
        }
        assert!(below, "200 draws all within 2 % of the cap: no jitter applied");
        assert_eq!(b.ceiling(3), 800 * MS);
    }

    #[test]
    fn next_runs_the_sequence_and_reset_starts_it_over() {
        let mut b = Backoff::new(500 * MS, 2000 * MS);
        assert_eq!(b.attempts(), 0);
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 2000]);
        assert_eq!(b.attempts(), 4);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), 500 * MS);
        assert_eq!((b.initial(), b.max()), (500 * MS, 2000 * MS));
    }
}
