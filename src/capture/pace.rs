//! Waiting: a source paced to its camera's fps limit (frames beyond it skipped before they are copied or
//! decoded), and sleeps that end early when the daemon stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Paces a source to its fps limit.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub fn new(fps: f64) -> Pacer {
        Pacer { period: Duration::from_secs_f64(1.0 / fps), next: Instant::now() }
    }

    /// A pacer whose first frame is due a share of a period from now that differs by `index`: replayed
    /// cameras started together do not all deliver at the same instant, as real cameras do not (several in
    /// step made every frame of `camclassd bench --cameras` wait for the others, a worst case for latency).
    /// The shares follow the golden ratio, spread evenly whatever the number of cameras.
    pub fn staggered(fps: f64, index: usize) -> Pacer {
        let mut pacer = Pacer::new(fps);
        let share = (index as f64 * 0.618_033_988_749_895).fract();
        pacer.next += pacer.period.mul_f64(share);
        pacer
    }

    /// True when a frame arriving now is due; a live camera skips the frames in between.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        // Schedule from the plan, not from `now`, so the average rate holds; resync after a stall.
        self.next += self.period;
        if self.next < now {
            self.next = now + self.period;
        }
        true
    }

    /// Sleeps until the next frame is due (replay sources), or until `stop` is set.
    pub fn wait(&mut self, stop: &AtomicBool) {
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || self.due(now) {
                return;
            }
            std::thread::sleep((self.next - now).min(Duration::from_millis(100)));
        }
    }
}

/// Sleeps `d` in short steps; false if `stop` was set meanwhile.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_skips_early_frames_and_keeps_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer { period: Duration::from_millis(100), next: t0 };
        let due: Vec<bool> = (0..10).map(|i| p.due(t0 + Duration::from_millis(i * 30))).collect();
        // 30 fps in, 10 fps out: frames at 0, 120, 210 ms (the first at or after each 100 ms mark).
        assert_eq!(due, [true, false, false, false, true, false, false, true, false, false]);
    }

    #[test]
    fn staggered_pacers_start_apart_and_keep_the_rate() {
        let period = Duration::from_millis(100);
        let mut starts: Vec<Duration> = (0..8)
            .map(|i| {
                let p = Pacer::staggered(10.0, i);
                p.next.saturating_duration_since(Instant::now())
            })
            .collect();
        assert!(starts[0] < Duration::from_millis(5), "camera 0 starts at once: {starts:?}");
        starts.sort();
        // Eight cameras over one period: no two closer than a twentieth of it.
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] > period / 20, "{starts:?}");
        }
        assert!(starts.iter().all(|s| *s < period));
        let mut p = Pacer::staggered(10.0, 3);
        let first = p.next;
        assert!(p.due(first) && !p.due(first + period / 2) && p.due(first + period));
    }
}
