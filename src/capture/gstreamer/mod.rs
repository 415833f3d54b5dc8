//! GStreamer sources: RTSP cameras, HTTP MJPEG streams and snapshot URLs, video files, and pipelines of the
//! user's own (`libcamerasrc`, `nvarguscamerasrc`, `v4l2src` …), decoded, scaled and converted to RGB inside
//! GStreamer, and handed to the [`FrameHub`](super::FrameHub) like any other camera's frames.
//!
//! One pipeline per camera session: `uridecodebin` (the decoder picked by plugin rank, or as configured) →
//! a rate gate (a pad probe that drops frames beyond `fps` before they are scaled or converted; for JPEG,
//! where every frame is a key frame, before they are decoded) → `videoscale` → `videoconvert` → `appsink`
//! (RGB, one buffer, newest wins). A JPEG stream of whole frames (HTTP multipart, RTSP, a video file) stops
//! at `uridecodebin`'s output instead and goes rate gate → `appsink` still encoded, for the reduced decode of
//! [`crate::preprocess`] (`decoder::jpeg_passthrough` says when). This file is the [`Source`]: it opens a
//! session (builds its pipeline) and plays it until it ends, fails or stalls; the
//! [`Supervisor`](super::supervisor::Supervisor) tears it down, reports the camera down and rebuilds it with
//! the shared capped backoff with jitter, while nothing of GStreamer runs. Credentials never reach a log
//! line: the user and password go to the source element as properties, URLs are logged with their user info
//! replaced by `***`, and GStreamer's own messages are scrubbed of the password.
//!
//! The other files, one job each: pipeline assembly (`build`), the decoder's choice (`decoder`), failure
//! classification (`failure`), Debian package advice (`packages`), the rate gate (`rate`), the decoder watch
//! and key-frame gate (`gate`), size and byte limits (`limits`), delivery to the hub (`deliver`).

mod build;
mod decoder;
mod deliver;
mod failure;
mod gate;
mod limits;
mod packages;
mod rate;
mod teardown;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

pub use build::check_pipeline;
use build::{Plan, Session};
use decoder::DecoderLog;
use deliver::Delivery;
use failure::{bus_failure, error_failure};
use gate::Counters;
pub use packages::debian_package;

use super::supervisor::{End, Failure, FailureKind, Output, Source, Supervisor};
use super::{FrameHub, SourceKind};
use crate::config::CameraConfig;
use crate::config::url::{redact, redact_text, split_credentials};

/// One camera's GStreamer source: its plan, the session open now, and what was counted and logged across
/// sessions, so that each change is logged once.
#[derive(Debug)]
struct Camera<'a> {
    cam: &'a CameraConfig,
    plan: Plan,
    /// The password from `password_file` (or the URL), scrubbed from every message.
    password: Option<String>,
    /// The session built by `open`, with when it was opened (a snapshot URL is fetched once per period).
    session: Option<(Session, Instant)>,
    snapshot_announced: bool,
    delivery: Delivery,
    decoder_log: DecoderLog,
    totals: Totals,
    /// Failed sessions' pipelines being stopped.
    teardown: teardown::Teardown,
}

/// Since the daemon started: frames into the decoder, out of it, and delivered to the hub.
#[derive(Debug, Default)]
struct Totals {
    received: u64,
    decoded: u64,
    delivered: u64,
    before_key: u64,
    /// JPEG frames that came still encoded (`decoder::jpeg_passthrough`), kept or dropped by the rate gate.
    encoded: u64,
}

/// How a session's play ended, before it is told to the supervisor.
#[derive(Debug)]
enum Played {
    Stopped,
    /// End of stream after `frames` frames reached the rate gate.
    Eos {
        frames: u64,
    },
    Failed(Failure),
}

/// The capture thread of a GStreamer camera.
pub fn run(cam: &CameraConfig, kind: &SourceKind, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    if let Err(e) = gst::init() {
        tracing::error!(camera = %cam.name, "GStreamer does not start: {e}; install libgstreamer1.0-0");
        return;
    }
    let (plan, password) = match kind {
        SourceKind::Url(url) => {
            let (uri, user, password) = split_credentials(url);
            (Plan::Uri { shown: redact(url), uri, user, live: true, file: false }, password)
        }
        SourceKind::Video(path) => {
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| Path::new(path).to_path_buf());
            let uri = glib::filename_to_uri(&abs, None).map(|u| u.to_string()).unwrap_or_default();
            (Plan::Uri { uri, shown: path.clone(), user: None, live: false, file: true }, None)
        }
        SourceKind::Pipeline(p) => (Plan::Pipeline(p.clone()), None),
        _ => return,
    };
    let mut camera = Camera {
        cam,
        plan,
        password,
        session: None,
        snapshot_announced: false,
        delivery: Delivery::default(),
        decoder_log: DecoderLog::default(),
        totals: Totals::default(),
        teardown: teardown::Teardown::default(),
    };
    Supervisor::new(&cam.name, index, hub, stop).run(&mut camera);
    camera.log_totals();
}

impl Source for Camera<'_> {
    /// Reads the password (a `password_file` may change while the camera is down) and builds the pipeline.
    fn open(&mut self) -> Result<(), Failure> {
        if let Some(file) = &self.cam.password_file {
            match std::fs::read_to_string(file) {
                Ok(text) => self.password = text.lines().next().map(|l| l.trim_end().to_string()),
                Err(e) => {
                    let why = format!("cannot read password_file {}: {e}", file.display());
                    return Err(Failure::new(FailureKind::Auth, why));
                }
            }
        }
        if let Some(why) = self.teardown.blocked() {
            return Err(Failure::new(FailureKind::Stalled, format!("{}: {why}", self.shown())));
        }
        let started = Instant::now();
        let session = build::build(self.cam, &self.plan, self.password.as_deref()).map_err(|f| self.scrubbed(f))?;
        self.session = Some((session, started));
        Ok(())
    }

    fn describe(&self) -> String {
        self.shown()
    }

    fn stream(&mut self, out: &mut Output<'_>) -> End {
        let Some((session, started)) = self.session.take() else {
            return End::Failed(Failure::new(FailureKind::Unreachable, format!("{} is not open", self.shown())));
        };
        match self.stream_session(session, out) {
            Played::Stopped => End::Stopped,
            // A video file that does not loop is finished (looping ones seek inside `play`).
            Played::Eos { .. } if matches!(self.plan, Plan::Uri { file: true, .. }) => {
                End::Finished(format!("video {} finished", self.shown()))
            }
            // A still image per request: a snapshot URL, fetched once per frame period.
            Played::Eos { frames: 1 } if matches!(&self.plan, Plan::Uri { uri, .. } if uri.starts_with("http")) => {
                if !self.snapshot_announced {
                    tracing::info!(camera = %self.name(), "{} is a snapshot URL: fetching it {} times a second", self.shown(), self.cam.fps);
                    self.snapshot_announced = true;
                }
                let period = Duration::from_secs_f64(1.0 / self.cam.fps);
                End::Again(period.saturating_sub(started.elapsed()))
            }
            Played::Eos { .. } => {
                End::Failed(Failure::new(FailureKind::Ended, format!("the stream from {} ended", self.shown())))
            }
            Played::Failed(f) => End::Failed(self.scrubbed(f)),
        }
    }
}

impl Camera<'_> {
    fn name(&self) -> &str {
        &self.cam.name
    }

    fn shown(&self) -> String {
        match &self.plan {
            Plan::Uri { shown, .. } => shown.clone(),
            Plan::Pipeline(_) => "the pipeline".into(),
        }
    }

    /// A failure whose message has the password, if any, replaced, and any URL in it without its user info
    /// (an element that echoes a URI).
    fn scrubbed(&self, f: Failure) -> Failure {
        let text = redact_text(&f.message);
        let message = match self.password.as_deref().filter(|p| p.len() >= 2) {
            Some(p) => text.replace(p, "***"),
            None => text,
        };
        Failure { message, ..f }
    }

    /// Where the frames went, once, when the camera stops: beyond `fps`, a JPEG stream's frames are dropped
    /// before the decoder, other codecs' after it.
    fn log_totals(&mut self) {
        let received = std::mem::take(&mut self.totals.received);
        let t = &self.totals;
        if received > 0 {
            let before_key = match t.before_key {
                0 => String::new(),
                n => format!("; {n} waited for a whole key frame"),
            };
            tracing::info!(
                camera = %self.name(),
                "stopped: {received} frames came to the decoder, {} were decoded, {} delivered (fps = {}){before_key}",
                t.decoded,
                t.delivered,
                self.cam.fps
            );
        }
        let encoded = std::mem::take(&mut self.totals.encoded);
        if encoded > 0 {
            tracing::info!(
                camera = %self.name(),
                "stopped: {encoded} JPEG frames came, {} went to camclassd's decoder (fps = {})",
                self.totals.delivered,
                self.cam.fps
            );
        }
    }

    /// Plays a session until it ends, fails, stalls or the daemon stops; counts it, and tears it down.
    fn stream_session(&mut self, session: Session, out: &mut Output<'_>) -> Played {
        let Session { pipeline, sink, bus, counters } = session;
        let end = self.play(&pipeline, &sink, &bus, &counters, out);
        // A refusal is why the session ended, whatever the elements said after it (caps dropped, data cut).
        let end = match (end, refusal(&counters)) {
            (Played::Stopped, _) => Played::Stopped,
            (_, Some(why)) => Played::Failed(Failure::new(FailureKind::TooLarge, format!("{}: {why}", self.shown()))),
            (end, None) => end,
        };
        let t = &mut self.totals;
        t.received += counters.received.load(Ordering::Relaxed);
        t.decoded += counters.decoded.load(Ordering::Relaxed);
        t.before_key += counters.before_key.load(Ordering::Relaxed);
        t.encoded += counters.encoded.load(Ordering::Relaxed);
        t.delivered += out.delivered();
        if let Played::Stopped = end {
            // Before the teardown, which the daemon's shutdown may not wait for.
            self.log_totals();
            out.step("stopping the pipeline");
            let _ = pipeline.set_state(gst::State::Null);
        } else {
            out.step("stopping the pipeline");
            self.teardown.stop(pipeline, &self.cam.name);
        }
        end
    }

    /// Reads a playing session: the bus for errors and the end of the stream, the appsink for frames, the
    /// clock for a stall.
    fn play(
        &mut self,
        pipeline: &gst::Bin,
        sink: &gst_app::AppSink,
        bus: &gst::Bus,
        counters: &Counters,
        out: &mut Output<'_>,
    ) -> Played {
        out.step("starting the pipeline");
        let started = pipeline.set_state(gst::State::Playing);
        out.step("waiting for the first frame");
        if started.is_err() {
            let shown = self.shown();
            return Played::Failed(
                bus_failure(bus, &shown)
                    .unwrap_or_else(|| Failure::new(FailureKind::Unreachable, format!("{shown} does not start"))),
            );
        }
        let stall = Duration::from_secs_f64(self.cam.stall_timeout.max(3.0 / self.cam.fps));
        let mut last_frame = Instant::now();
        let mut missing: Vec<String> = Vec::new();
        loop {
            if out.stopping() {
                return Played::Stopped;
            }
            // Before the bus: a refusal's dropped caps make the elements fail too, less clearly.
            if let Some(why) = refusal(counters) {
                return Played::Failed(Failure::new(FailureKind::TooLarge, format!("{}: {why}", self.shown())));
            }
            while let Some(msg) = bus.pop() {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        return Played::Failed(error_failure(err, &missing, &self.shown()));
                    }
                    gst::MessageView::Eos(_) => {
                        // A video file loops by seeking back to its start, without rebuilding.
                        if let Plan::Uri { file: true, .. } = self.plan
                            && self.cam.looping
                            && pipeline
                                .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO)
                                .is_ok()
                        {
                            last_frame = Instant::now();
                            continue;
                        }
                        return Played::Eos { frames: counters.gated.load(Ordering::Relaxed) };
                    }
                    gst::MessageView::Element(e) => {
                        if let Some(s) = e.structure().filter(|s| s.name() == "missing-plugin") {
                            missing.push(s.get::<String>("detail").unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
                if last_frame.elapsed() > stall {
                    return Played::Failed(Failure::new(
                        FailureKind::Stalled,
                        format!("no frame from {} for {:.0?} (stall_timeout)", self.shown(), stall),
                    ));
                }
                continue;
            };
            last_frame = Instant::now();
            if self.delivery.deliver(&sample, &self.cam.name, out) && out.delivered() == 1 {
                let user_pipeline = matches!(self.plan, Plan::Pipeline(_));
                let jpeg = self.delivery.jpeg;
                self.decoder_log.log(&self.cam.name, pipeline, jpeg, &self.cam.decoder, user_pipeline);
            }
        }
    }
}

/// Why a probe refused the session, if one did.
fn refusal(counters: &Counters) -> Option<String> {
    counters.refused.lock().ok().and_then(|r| r.clone())
}
