//! Adaptive parallelism: with `[model] workers` left to camclassd (0, the default) on the CPU, the pipeline
//! starts with one worker of one intra-op thread — the cheapest per frame at a camera's pace — and a
//! scaler thread watches the load. When frames wait (the hub replaces frames no worker took, while the
//! workers are busy) it opens another worker's sessions, up to the cores this process may use (the cgroup's
//! CPU quota and the affinity mask, as `std::thread::available_parallelism` reads them); when the load fits
//! fewer workers for a while it retires the newest one, whose sessions are dropped. A change neither drops
//! nor reorders a camera's events: workers already share the cameras, and a frame finished after a later one
//! of its camera is dropped as late, as with a fixed `workers = 2`. Decided every half second from two
//! counters (frames replaced in the hub, time the workers spent busy): nothing per frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::FrameHub;
use crate::health::Health;
use crate::model::Model;

/// How often the scaler looks.
const TICK: Duration = Duration::from_millis(500);
/// Frames replaced over this long, with the workers this busy, add a worker.
const UP_WINDOW: Duration = Duration::from_secs(2);
const UP_BUSY: f64 = 0.7;
/// Over this long with no frame replaced, a load that fits one worker fewer at this share of each
/// retires one.
const DOWN_WINDOW: Duration = Duration::from_secs(10);
const DOWN_BUSY: f64 = 0.5;
/// After a change, the next waits this long (a new worker's first frames are slower).
const SETTLE: Duration = Duration::from_secs(3);
/// Samples kept: the longest window at one a tick, and a few more (the queue never grows past its start).
const MAX_SAMPLES: usize = (DOWN_WINDOW.as_millis() / TICK.as_millis()) as usize + 8;

/// What the scaler decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Change {
    /// One worker more: frames were replaced (`replaced` over `over`) while the workers were busy.
    Up { replaced: u64, over: Duration },
    /// One worker fewer: the workers were busy `busy` cores' worth, on average, over `over`.
    Down { busy: f64, over: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Frames the hub replaced before a worker took them, all cameras, since the start.
    replaced: u64,
    /// Time the workers spent on batches, all of them, since the start.
    busy: Duration,
}

/// The scaler's rule, apart from its threads: fed the two counters, it says when to change.
#[derive(Debug)]
pub(super) struct Policy {
    max: usize,
    active: usize,
    last_change: Instant,
    samples: VecDeque<Sample>,
}

impl Policy {
    pub(super) fn new(max: usize, now: Instant) -> Policy {
        Policy { max: max.max(1), active: 1, last_change: now, samples: VecDeque::with_capacity(MAX_SAMPLES) }
    }

    pub(super) fn active(&self) -> usize {
        self.active
    }

    /// Takes in the counters at `now` and says whether to change the number of workers (the caller makes
    /// the change and calls [`Policy::changed`], or [`Policy::cannot_grow`] when a worker could not start).
    pub(super) fn decide(&mut self, now: Instant, replaced: u64, busy: Duration) -> Option<Change> {
        while self.samples.len() >= MAX_SAMPLES
            || self.samples.front().is_some_and(|s| now.saturating_duration_since(s.at) > DOWN_WINDOW + TICK * 2)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { at: now, replaced, busy });
        let since_change = now.saturating_duration_since(self.last_change);
        // The newest sample at least `window` old, and what happened since it.
        let since = |window: Duration| {
            self.samples.iter().rev().find(|s| now.saturating_duration_since(s.at) >= window).map(|s| {
                let over = now.saturating_duration_since(s.at);
                let busy = busy.saturating_sub(s.busy).as_secs_f64() / over.as_secs_f64().max(1e-3);
                (replaced.saturating_sub(s.replaced), busy, over)
            })
        };
        if since_change >= SETTLE
            && self.active < self.max
            && let Some((replaced, busy, over)) = since(UP_WINDOW)
            && replaced > 0
            && busy >= UP_BUSY * self.active as f64
        {
            return Some(Change::Up { replaced, over });
        }
        if since_change >= DOWN_WINDOW
            && self.active > 1
            && let Some((0, busy, over)) = since(DOWN_WINDOW)
            && busy <= DOWN_BUSY * (self.active - 1) as f64
        {
            return Some(Change::Down { busy, over });
        }
        None
    }

    /// The change was made: the windows start over with the new number of workers.
    pub(super) fn changed(&mut self, change: Change, now: Instant) {
        self.active = match change {
            Change::Up { .. } => self.active + 1,
            Change::Down { .. } => self.active.saturating_sub(1).max(1),
        };
        self.last_change = now;
        self.samples.clear();
    }

    /// A worker could not be added (its sessions did not open): no more tries.
    pub(super) fn cannot_grow(&mut self) {
        self.max = self.active;
    }
}

/// The most workers the scaler starts: the cores this process may use (cgroup CPU quota and affinity,
/// which `available_parallelism` reads on Linux), at most 8.
pub(super) fn max_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// What the scaler thread needs from the pipeline.
pub(super) struct Scaling {
    pub(super) hub: Arc<FrameHub>,
    pub(super) health: Arc<Health>,
    /// Time the workers spent on batches, all of them.
    pub(super) busy_ns: Arc<AtomicU64>,
    pub(super) max: usize,
    pub(super) threads: usize,
    /// Opens another worker's sessions (one per model), with the load policy's options.
    pub(super) open: Box<dyn FnMut() -> Result<Vec<Model>, String> + Send>,
    /// Starts a worker over those sessions; returns its hub consumer, for its retirement.
    pub(super) start: Box<dyn FnMut(Vec<Model>) -> Result<u64, String> + Send>,
    /// Retires the worker of that consumer.
    pub(super) retire: Box<dyn FnMut(u64) + Send>,
}

/// The running scaler: stopped (and joined) before the pipeline drains or hands its cameras over.
#[derive(Debug)]
pub(super) struct Scaler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scaler {
    pub(super) fn start(scaling: Scaling) -> std::io::Result<Scaler> {
        let stop = Arc::new(AtomicBool::new(false));
        let theirs = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("scaler".into()).spawn(move || run(scaling, &theirs))?;
        Ok(Scaler { stop, thread: Some(thread) })
    }

    /// Stops the scaler: no worker is added or retired after this returns.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut s: Scaling, stop: &AtomicBool) {
    let mut policy = Policy::new(s.max, Instant::now());
    // The workers the scaler started, newest last (their hub consumers).
    // The pipeline said 1×threads at its start.
    let mut added: Vec<u64> = Vec::with_capacity(s.max);
    while crate::capture::sleep_unless_stopped(TICK, stop) {
        let now = Instant::now();
        let replaced = s.hub.replaced();
        let busy = Duration::from_nanos(s.busy_ns.load(Ordering::Relaxed));
        let Some(change) = policy.decide(now, replaced, busy) else { continue };
        let (from, threads) = (policy.active(), s.threads);
        match change {
            Change::Up { replaced, over } => {
                let started = (s.open)().and_then(|models| (s.start)(models));
                match started {
                    Ok(consumer) => {
                        added.push(consumer);
                        policy.changed(change, Instant::now());
                        tracing::info!(
                            "parallelism {from}×{threads} → {}×{threads}: {replaced} frames waited and were replaced in {:.1} s",
                            from + 1,
                            over.as_secs_f64()
                        );
                    }
                    Err(e) => {
                        policy.cannot_grow();
                        tracing::warn!("parallelism stays {from}×{threads}: another worker did not start ({e})");
                    }
                }
            }
            Change::Down { busy, over } => {
                // More than one worker active means the scaler added the others.
                let Some(consumer) = added.pop() else { continue };
                (s.retire)(consumer);
                policy.changed(change, Instant::now());
                tracing::info!(
                    "parallelism {from}×{threads} → {}×{threads}: the load fits fewer workers ({:.0} % of a core busy over {:.0} s)",
                    from - 1,
                    busy * 100.0,
                    over.as_secs_f64()
                );
            }
        }
        s.health.set_parallelism(policy.active(), s.threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule fed simulated ticks: the two counters, and the clock.
    struct Sim {
        policy: Policy,
        t: Instant,
        replaced: u64,
        busy: Duration,
    }

    impl Sim {
        fn new(max: usize) -> Sim {
            let t = Instant::now();
            Sim { policy: Policy::new(max, t), t, replaced: 0, busy: Duration::ZERO }
        }

        /// `secs` seconds of ticks where frames are replaced at `replaced_per_s` and the workers are busy
        /// `busy_cores`; the first change, applied.
        fn run(&mut self, secs: f64, replaced_per_s: u64, busy_cores: f64) -> Option<Change> {
            let ticks = (secs / TICK.as_secs_f64()).round() as usize;
            for _ in 0..ticks {
                self.t += TICK;
                self.replaced += replaced_per_s / 2;
                self.busy += TICK.mul_f64(busy_cores);
                if let Some(c) = self.policy.decide(self.t, self.replaced, self.busy) {
                    self.policy.changed(c, self.t);
                    return Some(c);
                }
            }
            None
        }
    }

    #[test]
    fn a_cameras_pace_stays_at_one_worker() {
        let mut sim = Sim::new(2);
        // 5 fps at 10 ms a frame: 5 % of a core, nothing replaced.
        assert_eq!(sim.run(60.0, 0, 0.05), None);
        assert_eq!(sim.policy.active(), 1);
    }

    #[test]
    fn frames_replaced_while_busy_add_workers_up_to_the_cores_and_a_lighter_load_retires_them() {
        let mut sim = Sim::new(3);
        // Full load: 200 frames/s replaced, the one worker always busy.
        let up = sim.run(10.0, 200, 1.0);
        assert!(matches!(up, Some(Change::Up { replaced, .. }) if replaced > 0), "{up:?}");
        assert_eq!(sim.policy.active(), 2);
        // Two busy workers, frames still replaced: a third (the max).
        assert!(matches!(sim.run(10.0, 100, 2.0), Some(Change::Up { .. })));
        assert_eq!(sim.run(30.0, 100, 3.0), None, "never beyond the max");
        assert_eq!(sim.policy.active(), 3);
        // Replaced frames with idle workers (a burst the workers absorb) add nothing; a light load retires.
        let down = sim.run(30.0, 0, 0.3);
        assert!(matches!(down, Some(Change::Down { .. })), "{down:?}");
        assert!(matches!(sim.run(30.0, 0, 0.3), Some(Change::Down { .. })));
        assert_eq!(sim.run(60.0, 0, 0.3), None, "never below one");
        assert_eq!(sim.policy.active(), 1);
    }

    #[test]
    fn a_load_between_the_thresholds_does_not_flap() {
        let mut sim = Sim::new(2);
        assert!(sim.run(10.0, 50, 0.9).is_some());
        // Two workers sharing 0.9 of a core's work, nothing replaced: above half a core for one fewer.
        assert_eq!(sim.run(120.0, 0, 0.9), None);
        assert_eq!(sim.policy.active(), 2);
    }

    #[test]
    fn replaced_frames_with_idle_workers_add_none() {
        let mut sim = Sim::new(4);
        // A camera faster than it is classified on purpose (classify_every) is not load.
        assert_eq!(sim.run(30.0, 30, 0.2), None);
    }
}
