//! Capture: one thread per camera, each handing its newest frame to a shared [`FrameHub`].
//!
//! The hub keeps a single slot per camera: a frame the consumer has not taken when the next one arrives is
//! replaced and counted as dropped, so when inference is slower than the cameras, latency stays bounded and
//! memory flat. Frame buffers circulate between the hub and the capture threads instead of being allocated.
//! Frames beyond a camera's fps limit are skipped by its thread before they are copied or decoded.
//!
//! Sources: V4L2 devices (`v4l2`), image files (`replay`), and with the `gstreamer` feature RTSP and HTTP
//! cameras, video files and custom pipelines (`gstreamer`). Each only opens and reads; one
//! [`supervisor::Supervisor`] per camera reports it down, backs off with jitter and reopens it.

#[cfg(feature = "gstreamer")]
pub mod gstreamer;
#[cfg(feature = "gstreamer")]
pub mod keyframe;
pub mod replay;
pub mod supervisor;
pub mod v4l2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::CameraConfig;
pub use crate::config::{SourceKind, VIDEO_EXTENSIONS};

/// How a captured frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// JPEG (also MJPEG) or PNG.
    Encoded,
    Rgb8 {
        width: u32,
        height: u32,
    },
    Yuyv {
        width: u32,
        height: u32,
    },
}

/// A frame from a camera, owning its bytes.
#[derive(Debug)]
pub struct CapturedFrame {
    pub data: Vec<u8>,
    pub format: PixelFormat,
    pub captured_at: SystemTime,
    pub captured: Instant,
}

impl CapturedFrame {
    pub fn as_frame(&self) -> crate::preprocess::Frame<'_> {
        use crate::preprocess::Frame;
        match self.format {
            PixelFormat::Encoded => Frame::Encoded(&self.data),
            PixelFormat::Rgb8 { width, height } => Frame::Rgb8 { width, height, data: &self.data },
            PixelFormat::Yuyv { width, height } => Frame::Yuyv { width, height, data: &self.data },
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// The newest frame not yet taken, with its capture number.
    frame: Option<(u64, CapturedFrame)>,
    /// When the source last delivered a frame (taken or not).
    last_put: Option<Instant>,
    /// Buffers handed back by the consumer, for the capture thread to fill next.
    spare: Vec<Vec<u8>>,
    dropped: u64,
    captured: u64,
    finished: bool,
    /// The source reported a failure (and retries) and has delivered no frame since.
    down: bool,
}

#[derive(Debug)]
struct HubState {
    slots: Vec<Slot>,
    closed: bool,
    failed: bool,
}

/// The newest frame of every camera, and the consumers' wake-up.
#[derive(Debug)]
pub struct FrameHub {
    state: Mutex<HubState>,
    ready: Condvar,
}

/// Keeps at most this many spare buffers per camera (one being filled, one in flight, one waiting).
const MAX_SPARES: usize = 3;

impl FrameHub {
    pub fn new(cameras: usize) -> FrameHub {
        let slots = (0..cameras).map(|_| Slot::default()).collect();
        FrameHub { state: Mutex::new(HubState { slots, closed: false, failed: false }), ready: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panicking capture thread must not take the others down: the state stays consistent per call.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A buffer for the next frame of `camera` (reused when one is spare).
    pub fn buffer(&self, camera: usize) -> Vec<u8> {
        let mut buf = self.lock().slots[camera].spare.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Publishes `camera`'s newest frame, replacing (and counting) one that was never taken.
    pub fn put(&self, camera: usize, frame: CapturedFrame) {
        let mut state = self.lock();
        let slot = &mut state.slots[camera];
        slot.captured += 1;
        slot.last_put = Some(frame.captured);
        slot.down = false;
        if let Some((_, old)) = slot.frame.replace((slot.captured, frame)) {
            slot.dropped += 1;
            if slot.spare.len() < MAX_SPARES {
                slot.spare.push(old.data);
            }
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Returns a consumed frame's buffer for reuse.
    pub fn recycle(&self, camera: usize, data: Vec<u8>) {
        let mut state = self.lock();
        let slot = &mut state.slots[camera];
        if slot.spare.len() < MAX_SPARES {
            slot.spare.push(data);
        }
    }

    /// A camera's source has ended (a replay with `loop = false`).
    pub fn finish(&self, camera: usize) {
        self.lock().slots[camera].finished = true;
        self.ready.notify_all();
    }

    /// `camera`'s source has reported a failure and retries: disconnected until its next frame.
    pub fn report_down(&self, camera: usize) {
        self.lock().slots[camera].down = true;
    }

    /// Whether `camera`'s source reported a failure and has delivered no frame since.
    pub fn reported_down(&self, camera: usize) -> bool {
        self.lock().slots[camera].down
    }

    /// Stops the consumers once the frames already captured are taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// A pipeline thread died: stop everything, and let the daemon exit with an error (systemd restarts it).
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.closed = true;
        drop(state);
        self.ready.notify_all();
    }

    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// The next frame, visiting cameras in turn from `*next`, as (camera, capture number, frame): a camera's
    /// capture numbers increase in capture order (from 1). `None` when closed (or every source finished) and
    /// nothing is left.
    pub fn take(&self, next: &mut usize) -> Option<(usize, u64, CapturedFrame)> {
        let mut state = self.lock();
        loop {
            let n = state.slots.len();
            for i in 0..n {
                let camera = (*next + i) % n;
                if let Some((number, frame)) = state.slots[camera].frame.take() {
                    *next = (camera + 1) % n;
                    return Some((camera, number, frame));
                }
            }
            if state.closed || state.slots.iter().all(|s| s.finished) {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Whether a captured frame is waiting to be taken (the watchdog's sign that the pipeline has work).
    pub fn waiting(&self) -> bool {
        self.lock().slots.iter().any(|s| s.frame.is_some())
    }

    /// How long ago `camera`'s source last delivered a frame (`None`: never), and whether it has finished.
    pub fn last_frame(&self, camera: usize, now: Instant) -> (Option<Duration>, bool) {
        let state = self.lock();
        let slot = &state.slots[camera];
        (slot.last_put.map(|t| now.saturating_duration_since(t)), slot.finished)
    }

    /// (captured, dropped) frame counts of a camera.
    pub fn counts(&self, camera: usize) -> (u64, u64) {
        let state = self.lock();
        (state.slots[camera].captured, state.slots[camera].dropped)
    }
}

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

/// Starts a capture thread for each camera.
pub fn spawn_all(
    cameras: &[CameraConfig],
    hub: &Arc<FrameHub>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    cameras
        .iter()
        .enumerate()
        .map(|(index, cam)| {
            let (cam, hub, stop) = (cam.clone(), Arc::clone(hub), Arc::clone(stop));
            std::thread::Builder::new().name(format!("capture-{}", cam.name)).spawn(move || {
                let capture = std::panic::AssertUnwindSafe(|| match SourceKind::of(&cam) {
                    SourceKind::V4l2 { index: device, path } => v4l2::run(&cam, device, &path, index, &hub, &stop),
                    SourceKind::Replay(pattern) => replay::run(&cam, &pattern, index, &hub, &stop),
                    #[cfg(feature = "gstreamer")]
                    kind => gstreamer::run(&cam, &kind, index, &hub, &stop),
                    #[cfg(not(feature = "gstreamer"))]
                    _ => tracing::error!(camera = %cam.name, "this camclassd was built without GStreamer (cargo feature gstreamer): only V4L2 devices and image files"),
                });
                if std::panic::catch_unwind(capture).is_err() {
                    tracing::error!(camera = %cam.name, "capture thread panicked; stopping the daemon");
                    hub.fail();
                }
                hub.finish(index);
            })
        })
        .collect()
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

    fn frame(byte: u8) -> CapturedFrame {
        CapturedFrame {
            data: vec![byte],
            format: PixelFormat::Encoded,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
        }
    }

    #[test]
    fn the_newest_frame_wins_and_the_rest_are_counted() {
        let hub = FrameHub::new(2);
        hub.put(0, frame(1));
        hub.put(0, frame(2));
        hub.put(1, frame(9));
        hub.put(0, frame(3));
        let mut next = 0;
        let (cam, number, f) = hub.take(&mut next).expect("frame");
        assert_eq!((cam, number, f.data[0]), (0, 3, 3));
        assert_eq!(hub.take(&mut next).map(|(c, n, f)| (c, n, f.data[0])), Some((1, 1, 9)));
        // Capture numbers keep increasing per camera.
        hub.put(0, frame(4));
        assert_eq!(hub.take(&mut next).map(|(c, n, _)| (c, n)), Some((0, 4)));
        assert_eq!(hub.counts(0), (4, 2));
        hub.close();
        assert!(hub.take(&mut next).is_none());
        // Dropped frames' buffers come back as spares.
        assert_eq!(hub.buffer(0).capacity(), 1);
    }

    #[test]
    fn a_source_reported_down_is_up_again_at_its_next_frame() {
        let hub = FrameHub::new(2);
        assert!(!hub.reported_down(0));
        hub.report_down(0);
        assert!(hub.reported_down(0) && !hub.reported_down(1));
        hub.put(0, frame(1));
        assert!(!hub.reported_down(0));
    }

    #[test]
    fn take_ends_when_every_source_finished() {
        let hub = FrameHub::new(1);
        hub.put(0, frame(1));
        hub.finish(0);
        let mut next = 0;
        assert!(hub.take(&mut next).is_some(), "frames captured before the end are still delivered");
        assert!(hub.take(&mut next).is_none());
    }

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
