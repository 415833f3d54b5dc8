//! The camera supervisor: one loop for every kind of source — open → frames → classify the failure →
//! back off with jitter → reopen — so that a V4L2 device, a replayed folder and a GStreamer camera fail,
//! log, report themselves down and recover the same way. A [`Source`] only opens and reads; the supervisor
//! decides what a failure means for the camera: the hub marks it down (the watchdog, `/readyz` and the
//! health message see it at once), one line is logged per change of cause (a camera down for a day writes
//! one warning, not one per retry), and the next try waits a capped exponential delay with jitter that
//! starts over after a session that streamed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{CapturedFrame, FrameHub, PixelFormat, sleep_unless_stopped};
use crate::backoff::Backoff;

/// What went wrong with a source, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Refused, unreachable or lost: wait for the camera.
    Unreachable,
    /// No frame for longer than the stall timeout.
    Stalled,
    /// The stream ended (a live stream closed by the camera, a replay pass without a frame).
    Ended,
    /// The credentials were refused, or cannot be read.
    Auth,
    /// A device, file or URL path that does not exist.
    NotFound,
    /// A plugin or decoder is not installed.
    MissingPlugin,
    /// The stream cannot be decoded or negotiated (an unknown codec, a pixel format camclassd does not read).
    Unsupported,
    /// A picture beyond the size limit, or a part of a stream that never ends: refused before any decoder
    /// allocates for it.
    TooLarge,
}

impl FailureKind {
    /// The cause as far as the log is concerned: an outage that goes from a stall to a refused connection to
    /// an ended stream is one outage (the camera is away), logged once.
    fn cause(self) -> FailureKind {
        match self {
            FailureKind::Stalled | FailureKind::Ended => FailureKind::Unreachable,
            kind => kind,
        }
    }
}

/// Why a source could not be opened or stopped delivering, in the user's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

/// How a session of a source ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The daemon is stopping.
    Stopped,
    /// The source has nothing more, for good (a replay with `loop = false`, a video file played to its end):
    /// the line is logged and the camera's thread ends.
    Finished(String),
    /// The session ended as it should, and the source is opened again after this delay (a replay's next
    /// pass at once, a snapshot URL at its next frame period): no failure.
    Again(Duration),
    /// The source failed: it is reported down and reopened with backoff.
    Failed(Failure),
}

/// A camera's source: it opens and reads; the [`Supervisor`] does the rest.
pub trait Source {
    /// Opens the source (a device, a file list, a pipeline), or says why it cannot be.
    fn open(&mut self) -> Result<(), Failure>;

    /// What was opened, for the line that says the camera streams (`/dev/video0 (MJPG at 30 fps)`, a URL
    /// without its user info). Called after a successful [`Source::open`], only when that line is due.
    fn describe(&self) -> String;

    /// Reads frames into `out` until the source fails or ends, or the daemon stops ([`Output::stopping`]).
    fn stream(&mut self, out: &mut Output<'_>) -> End;
}

/// The line logged at a session's first frame when the camera starts or recovers.
#[derive(Debug)]
struct Announce<'a> {
    camera: &'a str,
    what: String,
    down_since: Option<Instant>,
}

/// Where a source delivers a session's frames: its camera's slot in the hub, counted.
#[derive(Debug)]
pub struct Output<'a> {
    hub: &'a FrameHub,
    camera: usize,
    stop: &'a AtomicBool,
    delivered: u64,
    announce: Option<Announce<'a>>,
}

impl<'a> Output<'a> {
    pub fn new(hub: &'a FrameHub, camera: usize, stop: &'a AtomicBool) -> Output<'a> {
        Output { hub, camera, stop, delivered: 0, announce: None }
    }

    /// A buffer for the next frame (a recycled one when the hub has it).
    pub fn buffer(&self) -> Vec<u8> {
        self.hub.buffer(self.camera)
    }

    /// Hands back a buffer that was not delivered.
    pub fn recycle(&self, data: Vec<u8>) {
        self.hub.recycle(self.camera, data);
    }

    /// Delivers a frame: the camera's newest, and the camera up again.
    pub fn put(&mut self, frame: CapturedFrame) {
        if let Some(a) = self.announce.take() {
            let size = match frame.format {
                PixelFormat::Rgb8 { width, height } | PixelFormat::Yuyv { width, height } => Some((width, height)),
                PixelFormat::Encoded => crate::preprocess::jpeg_size(&frame.data),
            };
            let size = size.map(|(w, h)| format!(" ({w}x{h})")).unwrap_or_default();
            let after = a.down_since.map(|t| format!(" after {:.0?} down", t.elapsed())).unwrap_or_default();
            tracing::info!(camera = %a.camera, "streaming {}{size}{after}", a.what);
        }
        if self.delivered == 0 {
            self.hub.set_step(self.camera, "reading frames");
        }
        self.delivered += 1;
        self.hub.put(self.camera, frame);
    }

    /// Says what the capture thread is about to do (a call that may block: starting or stopping a
    /// pipeline), for the watchdog's line when the camera goes stale.
    pub fn step(&self, step: &'static str) {
        self.hub.set_step(self.camera, step);
    }

    /// Frames delivered in this session.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Whether the daemon is stopping: the source returns [`End::Stopped`] promptly.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The daemon's stop flag, for waits that watch it ([`super::Pacer::wait`]).
    pub fn stop_flag(&self) -> &'a AtomicBool {
        self.stop
    }
}

/// One camera's supervision: its backoff and what was logged, across sessions.
#[derive(Debug)]
pub struct Supervisor<'a> {
    camera: &'a str,
    index: usize,
    hub: &'a FrameHub,
    stop: &'a AtomicBool,
    backoff: Backoff,
    /// The cause last logged while the camera has been down (`None`: streaming, or never tried).
    failing: Option<FailureKind>,
    down_since: Option<Instant>,
    ever_streamed: bool,
}

/// What the supervisor does after a session.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Reopen(Duration),
    Quit,
}

impl<'a> Supervisor<'a> {
    /// Supervises camera `index` (named `camera`) of `hub` until `stop` is set, with the default backoff
    /// (1 s doubling to 30 s, jittered).
    pub fn new(camera: &'a str, index: usize, hub: &'a FrameHub, stop: &'a AtomicBool) -> Supervisor<'a> {
        Supervisor {
            camera,
            index,
            hub,
            stop,
            backoff: Backoff::default(),
            failing: None,
            down_since: None,
            ever_streamed: false,
        }
    }

    /// With another backoff (the tests' short one).
    pub fn with_backoff(mut self, backoff: Backoff) -> Supervisor<'a> {
        self.backoff = backoff;
        self
    }

    /// Opens, reads and reopens `source` until it finishes or the daemon stops.
    pub fn run(&mut self, source: &mut dyn Source) {
        while !self.stop.load(Ordering::Relaxed) {
            let mut out = Output::new(self.hub, self.index, self.stop);
            self.hub.set_step(self.index, "opening the source");
            let end = match source.open() {
                Ok(()) => {
                    // Said at the first frame of the first session, and of the first after an outage.
                    if self.failing.is_some() || !self.ever_streamed {
                        out.announce = Some(Announce {
                            camera: self.camera,
                            what: source.describe(),
                            down_since: self.down_since,
                        });
                    }
                    self.hub.set_step(self.index, "waiting for the first frame");
                    source.stream(&mut out)
                }
                Err(f) => End::Failed(f),
            };
            let next = self.settle(end, out.delivered);
            self.hub.set_step(self.index, "waiting to reopen the source");
            match next {
                Next::Reopen(delay) if sleep_unless_stopped(delay, self.stop) => {}
                _ => return,
            }
        }
    }

    /// Takes in how a session ended (after `delivered` frames): logs, reports the camera down, and says how
    /// long to wait before the next try.
    fn settle(&mut self, end: End, delivered: u64) -> Next {
        if delivered > 0 {
            // Only a source that delivers counts as recovered: one that opens and fails at once backs off.
            self.ever_streamed = true;
            self.failing = None;
            self.down_since = None;
            self.backoff.reset();
        }
        match end {
            End::Stopped => Next::Quit,
            End::Finished(line) => {
                tracing::info!(camera = %self.camera, "{line}");
                Next::Quit
            }
            End::Again(delay) => Next::Reopen(delay),
            End::Failed(f) => {
                self.report(&f);
                Next::Reopen(self.backoff.next_delay_jittered())
            }
        }
    }

    /// The camera is down: logged once per change of cause while it stays down, at debug level otherwise.
    fn report(&mut self, f: &Failure) {
        self.hub.report_down(self.index);
        self.down_since.get_or_insert_with(Instant::now);
        // A source that slipped past validation as a mistyped URL, or an element that echoes its URI, must
        // not show the password.
        let message = crate::config::url::redact_text(&f.message);
        if self.failing != Some(f.kind.cause()) {
            let what = if self.ever_streamed && self.failing.is_none() { "camera lost" } else { "camera unavailable" };
            tracing::warn!(camera = %self.camera, "{what}: {message}; retrying with backoff up to {}s", Backoff::MAX.as_secs());
            self.failing = Some(f.kind.cause());
        } else {
            tracing::debug!(camera = %self.camera, "still unavailable: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    fn frame() -> CapturedFrame {
        CapturedFrame {
            data: vec![0; 12],
            format: PixelFormat::Rgb8 { width: 2, height: 2 },
            captured_at: SystemTime::now(),
            captured: Instant::now(),
        }
    }

    /// A session of the fake source: fails to open, or delivers some frames and ends so.
    #[derive(Debug)]
    enum Step {
        OpenFails(FailureKind),
        Frames(u64, End),
    }

    /// A source that plays a script, and records whether the hub had the camera down at each open.
    #[derive(Debug)]
    struct Fake {
        script: VecDeque<Step>,
        hub: Arc<FrameHub>,
        down_at_open: Vec<bool>,
        current: Option<(u64, End)>,
    }

    impl Source for Fake {
        fn open(&mut self) -> Result<(), Failure> {
            self.down_at_open.push(self.hub.reported_down(0));
            match self.script.pop_front() {
                Some(Step::OpenFails(kind)) => Err(Failure::new(kind, "made up")),
                Some(Step::Frames(n, end)) => {
                    self.current = Some((n, end));
                    Ok(())
                }
                // The script is over: wait for the stop.
                None => {
                    self.current = None;
                    Ok(())
                }
            }
        }

        fn describe(&self) -> String {
            "the fake".into()
        }

        fn stream(&mut self, out: &mut Output<'_>) -> End {
            let Some((n, end)) = self.current.take() else {
                while !out.stopping() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return End::Stopped;
            };
            for _ in 0..n {
                out.put(frame());
            }
            end
        }
    }

    fn failed(kind: FailureKind) -> End {
        End::Failed(Failure::new(kind, "made up"))
    }

    #[test]
    fn a_failure_reports_the_camera_down_until_its_next_frame_and_stop_ends_the_loop_promptly() {
        let hub = Arc::new(FrameHub::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let script = VecDeque::from([
            Step::OpenFails(FailureKind::Unreachable),
            Step::Frames(0, failed(FailureKind::Stalled)),
            Step::Frames(2, failed(FailureKind::Ended)),
            Step::Frames(1, End::Again(Duration::ZERO)),
        ]);
        let fake = Fake { script, hub: Arc::clone(&hub), down_at_open: Vec::new(), current: None };
        let (h, s) = (Arc::clone(&hub), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut fake = fake;
            Supervisor::new("cam", 0, &h, &s).with_backoff(Backoff::with_max(Duration::from_millis(20))).run(&mut fake);
            fake
        });
        // The script runs out and the fake waits in its last session, streaming.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.counts(0).0 < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(!hub.reported_down(0), "up again at the last session's frame");
        let t = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let fake = thread.join().expect("the supervisor's thread");
        assert!(t.elapsed() < Duration::from_millis(500), "stopped in {:?}", t.elapsed());
        // Down after each failure, up once a frame came (the third session delivered, then ended: down).
        assert_eq!(fake.down_at_open, [false, true, true, true, false]);
        assert_eq!(hub.counts(0).0, 3);
    }

    #[test]
    fn the_backoff_grows_while_the_camera_fails_and_starts_over_after_a_session_that_streamed() {
        let hub = FrameHub::new(1);
        let stop = AtomicBool::new(false);
        let mut sup = Supervisor::new("cam", 0, &hub, &stop);
        let delay = |next: Next| match next {
            Next::Reopen(d) => d.as_secs_f64(),
            Next::Quit => panic!("quit"),
        };
        // 1 s, 2 s, 4 s steps, each jittered to ½–1 of its step.
        let d: Vec<f64> = (0..3).map(|_| delay(sup.settle(failed(FailureKind::Unreachable), 0))).collect();
        assert!((0.5..=1.0).contains(&d[0]) && (1.0..=2.0).contains(&d[1]) && (2.0..=4.0).contains(&d[2]), "{d:?}");
        assert!(hub.reported_down(0));
        assert_eq!(sup.failing, Some(FailureKind::Unreachable));
        // A session that delivered, then failed: the next try comes after the first step again.
        let again = delay(sup.settle(failed(FailureKind::Stalled), 5));
        assert!((0.5..=1.0).contains(&again), "{again}");
        // A session that opened but delivered nothing does not reset it.
        let d = delay(sup.settle(failed(FailureKind::Auth), 0));
        assert!((1.0..=2.0).contains(&d), "{d}");
        assert_eq!(sup.failing, Some(FailureKind::Auth));
        // A pass that ended as it should, and a source that finished.
        assert_eq!(sup.settle(End::Again(Duration::from_millis(200)), 1), Next::Reopen(Duration::from_millis(200)));
        assert_eq!(sup.failing, None);
        assert_eq!(sup.settle(End::Finished("done".into()), 1), Next::Quit);
        assert_eq!(sup.settle(End::Stopped, 0), Next::Quit);
    }

    #[test]
    fn an_outage_is_one_cause_whether_the_camera_stalls_ends_or_refuses() {
        assert_eq!(FailureKind::Stalled.cause(), FailureKind::Unreachable);
        assert_eq!(FailureKind::Ended.cause(), FailureKind::Unreachable);
        assert_eq!(FailureKind::Auth.cause(), FailureKind::Auth);
    }
}
