//! Exponential backoff with full jitter: delay = random(0.5..1.0) × min(max, initial × 2^attempt).

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let factor = rand::thread_rng().gen_range(0.5..=1.0);
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) };
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            assert!(b.delay(40) <= Duration::from_secs(5));
            assert!(b.delay(40) >= Duration::from_millis(2500));
        }
    }
}
