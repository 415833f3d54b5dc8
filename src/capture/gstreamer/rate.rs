//! The rate gate: a pad probe that lets through at most `fps` frames a second, by the stream's timestamps
//! (a video file, which plays at its own pace) or by the clock (a live source), so that the frames beyond it
//! are dropped before they are scaled, converted or (JPEG) decoded.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use gstreamer as gst;

use super::gate::Counters;

/// Lets through at most one frame per period of time `t` (ns): a jump backwards or far ahead (a loop, a
/// restart) starts the schedule again.
#[derive(Debug)]
pub(super) struct RateGate {
    period: u64,
    next: Option<u64>,
}

impl RateGate {
    pub(super) fn new(fps: f64) -> RateGate {
        RateGate { period: (1e9 / fps) as u64, next: None }
    }

    fn due(&mut self, t: u64) -> bool {
        // A tenth of a period early still counts: a snapshot polled each period must not miss its turn.
        let tolerance = self.period / 10;
        if let Some(n) = self.next
            && t + tolerance < n
            && n - t <= self.period
        {
            return false;
        }
        let base = match self.next {
            Some(n) if t + tolerance >= n && t < n + self.period => n,
            _ => t,
        };
        self.next = Some(base + self.period);
        true
    }
}

/// One frame at the rate gate: counted, and let through when due (a file by its timestamps, a live source
/// by the clock) or dropped.
pub(super) fn pass_gate(
    gate: &Mutex<RateGate>,
    counters: &Counters,
    by_pts: bool,
    t0: Instant,
    info: &gst::PadProbeInfo,
) -> gst::PadProbeReturn {
    let t = match (&info.data, by_pts) {
        (Some(gst::PadProbeData::Buffer(b)), true) => b.pts().map_or(0, |p| p.nseconds()),
        _ => t0.elapsed().as_nanos() as u64,
    };
    counters.gated.fetch_add(1, Ordering::Relaxed);
    if gate.lock().map(|mut g| g.due(t)).unwrap_or(true) {
        gst::PadProbeReturn::Ok
    } else {
        // Handled: the buffer is released here and the pad reports OK upstream.
        gst::PadProbeReturn::Handled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_gate_keeps_the_rate_and_resyncs_after_a_jump() {
        let ms = 1_000_000u64;
        let mut g = RateGate::new(10.0);
        // 30 fps in, 10 fps out.
        let due: Vec<bool> = (0..10).map(|i| g.due(i * 33 * ms)).collect();
        assert_eq!(due, [true, false, false, true, false, false, true, false, false, true]);
        // A file that loops starts again at 0.
        assert!(g.due(0));
        assert!(!g.due(33 * ms));
        // A snapshot polled each period, a little early, still counts.
        let mut s = RateGate::new(5.0);
        assert!(s.due(0));
        assert!(s.due(195 * ms));
        assert!(s.due(390 * ms));
    }
}
