//! Capped exponential backoff with jitter, shared by the cameras (reopening a source) and MQTT (reconnecting).

use std::time::Duration;

/// Capped exponential backoff for reopening a source or reconnecting: 1 s, 2 s, 4 s … up to a cap (30 s).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::with_max(Self::MAX)
    }
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn with_max(max: Duration) -> Backoff {
        Backoff { next: Duration::from_secs(1).min(max), max }
    }

    /// The delay to wait now; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// [`Backoff::next_delay`] scaled by a random ½–1: clients that lost the same server at the same moment
    /// do not all come back in lockstep.
    pub fn next_delay_jittered(&mut self) -> Duration {
        self.next_delay().mul_f64(0.5 + 0.5 * fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::default();
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn jittered_backoff_stays_within_half_to_full_step_and_its_cap() {
        let mut b = Backoff::with_max(Duration::from_secs(4));
        let steps = [1.0, 2.0, 4.0, 4.0, 4.0];
        for step in steps {
            let d = b.next_delay_jittered().as_secs_f64();
            assert!((step / 2.0..=step).contains(&d), "{d} s for a {step} s step");
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
