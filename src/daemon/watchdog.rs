//! The daemon watching itself: systemd's watchdog (pings only while inference moves, or has nothing to do)
//! and the staleness alarm (a camera whose source stopped delivering frames without an error: a read
//! blocked for ever, a stream that went silent; or one whose source reported a failure and is retrying).
//! A stale camera is logged once, reported in the health message (`connected: false`, `last_frame_age_s`)
//! and, through it, in Home Assistant's connectivity sensor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::FrameHub;
use crate::config::CameraConfig;
use crate::health::Health;

/// What the watchdog looks at; replaced when a reload starts a new pipeline.
#[derive(Debug)]
pub(super) struct Watched {
    pub(super) health: Arc<Health>,
    pub(super) hub: Arc<FrameHub>,
    /// Per camera: no frame for this long means stale.
    pub(super) stall_after: Vec<Duration>,
    /// Per camera: the capture step already named as stuck (said once per step).
    pub(super) told_stuck: Vec<Option<&'static str>>,
}

/// A capture step that lasts this many stall periods is named in its own line: a source blocked inside a
/// library call (a GStreamer state change) says where, for the bug report.
const STUCK_PERIODS: u32 = 6;

/// ", its capture thread has been STEP for D" for a line about a stale camera.
fn step_text(step: Option<(&'static str, Duration)>) -> String {
    step.map(|(s, d)| format!("; its capture thread has been {s} for {:.0?}", secs(d))).unwrap_or_default()
}

/// Whole seconds, for log lines.
fn secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// A camera is stale after ten frame periods without a frame, and never sooner than 10 s (a camera opening,
/// or reconnecting with backoff, takes seconds).
pub(super) fn stall_after(camera: &CameraConfig) -> Duration {
    let periods = if camera.fps > 0.0 { 10.0 / camera.fps } else { 0.0 };
    Duration::from_secs_f64(periods.max(10.0))
}

impl Watched {
    /// Marks cameras stale or live again at `now`, logging each change once.
    pub(super) fn check_cameras(&mut self, now: Instant) {
        for (camera, &limit) in self.stall_after.iter().enumerate() {
            let (age, finished) = self.hub.last_frame(camera, now);
            let since_start = self.health.uptime(now);
            // Before its first frame a camera is measured from the pipeline's start.
            let silent = age.unwrap_or(since_start);
            // A source that reported a failure (a GStreamer camera lost, retrying) is disconnected at once.
            let down = self.hub.reported_down(camera);
            // Frames that come but none of which decodes (a camera sending corrupt JPEGs) are no better.
            let failing = self.health.failing_for(camera, now).filter(|f| *f > limit);
            let stale = !finished && (down || silent > limit || failing.is_some());
            if let Some(at) = age.and_then(|a| now.checked_sub(a)) {
                self.health.frame_seen(camera, at);
            }
            // Logged on each change only: the health counters remember the last verdict.
            let was_stale = !self.health.set_connected(camera, !stale);
            let name = self.health.cameras.get(camera).map_or("?", |c| c.name.as_str());
            if stale && !was_stale && down {
                tracing::error!(
                    camera = name,
                    "no frame for {:.0?} (the source reported why, above, and is retrying): the camera is disconnected",
                    silent
                );
            } else if let Some(failing) = failing.filter(|_| stale && !was_stale) {
                tracing::error!(
                    camera = name,
                    undecodable = self.health.undecodable(camera),
                    "frames arrive but none decodes for {:.0?} (see \"frame skipped\" above): the camera is disconnected",
                    failing
                );
            } else if stale && !was_stale {
                tracing::error!(
                    camera = name,
                    "no frame for {:.0?} (the source delivers nothing and reports no error{}): the camera is stale",
                    secs(silent),
                    step_text(self.hub.step(camera, now))
                );
            } else if !stale && was_stale {
                tracing::info!(camera = name, "frames arrive again");
            }
            let step = self.hub.step(camera, now);
            let told = self.told_stuck.get_mut(camera);
            if let (true, Some((s, lasted)), Some(told)) = (stale, step, told)
                && lasted.min(silent) > limit * STUCK_PERIODS
                && *told != Some(s)
            {
                *told = Some(s);
                tracing::error!(
                    camera = name,
                    "still no frame after {:.0?}{}: a call into the source's library does not return",
                    secs(silent),
                    step_text(step)
                );
            }
        }
    }
}

/// Runs for the daemon's life: the staleness check every second, and `WATCHDOG=1` every half watchdog
/// period while inference is moving or has nothing to do. A stuck inference (frames waiting, no run
/// finishing) stops the pings and systemd restarts us.
pub(super) async fn run(watched: Arc<Mutex<Watched>>) {
    let mut usec = 0;
    let ping = (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec) / 2);
    let tick = ping.map_or(Duration::from_secs(1), |p| p.min(Duration::from_secs(1)));
    let mut last_ping = Instant::now();
    let mut last = None;
    let mut warned = false;
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let (n, idle) = {
            let Ok(mut w) = watched.lock() else { continue };
            w.check_cameras(now);
            (w.health.inferences(), !w.health.busy() && !w.hub.waiting())
        };
        let Some(period) = ping else { continue };
        if now.duration_since(last_ping) + tick / 2 < period {
            continue;
        }
        last_ping = now;
        // Moved since the last ping.
        let moved = last.is_none_or(|l| l != n);
        last = Some(n);
        if moved || idle {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            tracing::error!("inference is stuck (frames waiting, none classified): watchdog pings stopped");
            warned = true;
        }
    }
}
