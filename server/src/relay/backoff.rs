//! Reconnect delays for relays: exponential from [`INITIAL`], capped at [`MAX`], with ±25 %
//! jitter so relays of one failed origin do not reconnect in lockstep.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_millis(500);
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the following one up to [`MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        base.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }

    /// After a connection that went live: start again from [`INITIAL`].
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= INITIAL.mul_f64(0.75) && first <= INITIAL.mul_f64(1.25));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= MAX.mul_f64(1.25));
        }
        assert!(last >= MAX.mul_f64(0.75), "capped, not stuck low: {last:?}");
        b.reset();
        assert!(b.next_delay() <= INITIAL.mul_f64(1.25));
    }
}
