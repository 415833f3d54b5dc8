//! GStreamer sources: RTSP cameras, HTTP MJPEG streams and snapshot URLs, video files, and pipelines of the
//! user's own (`libcamerasrc`, `nvarguscamerasrc`, `v4l2src` …), decoded, scaled and converted to RGB inside
//! GStreamer, and handed to the [`FrameHub`](super::FrameHub) like any other camera's frames.
//!
//! One pipeline per camera session: `uridecodebin` (the decoder picked by plugin rank, or as configured) →
//! a rate gate (a pad probe that drops frames beyond `fps` before they are scaled or converted; for JPEG,
//! where every frame is a key frame, before they are decoded) → `videoscale` → `videoconvert` → `appsink`
//! (RGB, one buffer, newest wins). A JPEG stream of whole frames (HTTP multipart, RTSP, a video file) stops
//! at `uridecodebin`'s output instead and goes rate gate → `appsink` still encoded, for the reduced decode of
//! [`crate::preprocess`] (`jpeg_passthrough` says when). A session that ends, fails or stalls is torn down and rebuilt with the
//! shared capped backoff with jitter; while it waits nothing of GStreamer runs, and the camera is reported
//! down to the hub (so disconnected in the health message). Credentials never reach a log line: the user and
//! password go to the source element as properties, URLs are logged with their user info replaced by `***`,
//! and GStreamer's own messages are scrubbed of the password.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::keyframe::{self, Codec, Framing};
use super::{CapturedFrame, FrameHub, PixelFormat, SourceKind, sleep_unless_stopped};
use crate::backoff::Backoff;
use crate::config::{CameraConfig, RtspTransport};

/// URLs in messages without their user info; credentials split off (percent-decoded) for the source element.
pub use crate::config::url::{redact, split_credentials};

/// The Debian package that carries a GStreamer element (or a family of them), for "install …" advice.
pub fn debian_package(element: &str) -> Option<&'static str> {
    let e = element;
    Some(match e {
        _ if e.starts_with("avdec_") || e.starts_with("avenc_") => "gstreamer1.0-libav",
        _ if e.starts_with("vaapi") => "gstreamer1.0-vaapi",
        _ if e.starts_with("nv") && (e.contains("argus") || e.contains("v4l2") || e.contains("vidconv")) => {
            "nvidia-l4t-gstreamer (NVIDIA JetPack)"
        }
        "libcamerasrc" => "gstreamer1.0-libcamera",
        "uridecodebin" | "uridecodebin3" | "decodebin" | "decodebin3" | "playbin" | "videoconvert" | "videoscale"
        | "videorate" | "appsink" | "appsrc" | "videotestsrc" | "typefind" | "theoradec" | "oggdemux" => {
            "gstreamer1.0-plugins-base"
        }
        "capsfilter" | "queue" | "queue2" | "fakesink" | "filesrc" | "filesink" | "identity" | "tee" | "multiqueue" => {
            "libgstreamer1.0-0"
        }
        _ if e.starts_with("rtp") || e.starts_with("v4l2") => "gstreamer1.0-plugins-good",
        "rtspsrc" | "souphttpsrc" | "jpegdec" | "jpegenc" | "multipartdemux" | "qtdemux" | "matroskademux"
        | "avidemux" | "vp8dec" | "vp9dec" | "pngdec" | "udpsrc" | "rtpbin" | "mp4mux" => "gstreamer1.0-plugins-good",
        _ if e.starts_with("va") || e.starts_with("nv") => "gstreamer1.0-plugins-bad",
        "h264parse" | "h265parse" | "jpegparse" | "openh264dec" | "tsdemux" | "dav1ddec" | "av1dec" | "msdkh264dec" => {
            "gstreamer1.0-plugins-bad"
        }
        "x264enc" | "mpeg2dec" => "gstreamer1.0-plugins-ugly",
        _ => return None,
    })
}

/// The Debian package with a decoder for `caps` (a `missing-plugin` message's detail).
fn decoder_package(caps: &str) -> Option<&'static str> {
    let media = caps.split(',').next().unwrap_or(caps).trim();
    Some(match media {
        "video/x-h264" | "video/x-h265" | "video/mpeg" | "video/x-divx" => "gstreamer1.0-libav",
        "image/jpeg" | "image/png" | "video/x-vp8" | "video/x-vp9" | "application/x-rtp" => "gstreamer1.0-plugins-good",
        "video/x-av1" => "gstreamer1.0-plugins-bad",
        _ => return None,
    })
}

fn missing_element(element: &str) -> String {
    match debian_package(element) {
        Some(p) => format!("the GStreamer element {element} is not installed: install the Debian package {p}"),
        None => format!("the GStreamer element {element} is not installed (no Debian package known for it)"),
    }
}

/// What went wrong in a session, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Refused, unreachable, lost, ended or stalled: wait for the camera.
    Unreachable,
    /// 401: the credentials.
    Auth,
    /// 404 or a missing file: the URL or path.
    NotFound,
    /// A plugin or decoder is missing, or the stream cannot be decoded.
    Setup,
    /// A picture beyond the size limit, or a part of a stream that never ends: refused before any decoder
    /// allocates for it, the connection dropped.
    TooLarge,
}

#[derive(Debug)]
struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

/// A session's frame counts, kept by pad probes on GStreamer's streaming threads.
#[derive(Debug, Default)]
struct Counters {
    /// Frames that reached the rate gate (kept or dropped).
    gated: AtomicU64,
    /// Frames offered to a video decoder (JPEG pictures dropped by its gate included), and frames out of it.
    received: AtomicU64,
    decoded: AtomicU64,
    /// Pictures not decoded while the stream waited for a whole key frame.
    before_key: AtomicU64,
    /// The gate sits before the decoder (JPEG): the one after it lets every frame through.
    early: AtomicBool,
    /// JPEG frames that reached the gate still encoded, for camclassd's own decoder ([`jpeg_passthrough`]).
    encoded: AtomicU64,
    /// Why the session was refused by a probe (a picture too large, a part that never ends): the capture loop
    /// ends it and retries with backoff; until then the probes drop what comes.
    refused: Mutex<Option<String>>,
}

impl Counters {
    /// Ends the session for `why` (the first reason given wins).
    fn refuse(&self, why: impl FnOnce() -> String) {
        if let Ok(mut r) = self.refused.lock()
            && r.is_none()
        {
            *r = Some(why());
        }
    }

    fn is_refused(&self) -> bool {
        self.refused.lock().is_ok_and(|r| r.is_some())
    }
}

/// The most bytes one picture may take on its way to a decoder (a multipart part, a snapshot's body): three
/// bytes a pixel of the largest picture decoded, well beyond any JPEG of that size. A part that never ends
/// (a hostile or broken server) grew multipartdemux's buffer by gigabytes a second and then crashed it.
const MAX_PICTURE_BYTES: usize = 3 * crate::preprocess::MAX_PIXELS as usize;
/// How far into a JPEG its frame header (SOF) is looked for: past that, with none found, it is refused.
const MAX_JPEG_HEADER: usize = 1 << 20;

/// Why a `width`×`height` picture is refused: the limit camclassd's own decoder has, applied before any
/// decoder allocates for it (a 20000×20000 snapshot took 5 GB in jpegdec and videoconvert).
fn oversize(width: u32, height: u32) -> Option<String> {
    use crate::preprocess::{MAX_PIXELS, MAX_SIDE, PreprocessError};
    (width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS)
        .then(|| format!("refused: {}", PreprocessError::TooLarge { width, height }))
}

/// Why raw or encoded video caps are refused: a size beyond the limit (`None` when they have no size).
fn caps_oversize(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let side = |key: &str| u32::try_from(s.get::<i32>(key).ok()?).ok();
    oversize(side("width")?, side("height")?)
}

/// Refuses caps beyond the size limit on `pad` (a decoder's input, the appsink's): the caps are dropped, so
/// nothing downstream negotiates or allocates for them, and the session ends.
fn watch_caps(pad: &gst::Pad, counters: &Arc<Counters>) {
    let c = Arc::clone(counters);
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER, move |_, info| match &info.data {
        Some(gst::PadProbeData::Event(e)) => {
            if let gst::EventView::Caps(caps) = e.view()
                && let Some(why) = caps_oversize(caps.caps())
            {
                c.refuse(|| why);
                return gst::PadProbeReturn::Drop;
            }
            gst::PadProbeReturn::Ok
        }
        Some(gst::PadProbeData::Buffer(_)) if c.is_refused() => gst::PadProbeReturn::Handled,
        _ => gst::PadProbeReturn::Ok,
    });
}

/// Caps on the bytes multipartdemux holds for one part: counted from its input since it last gave a part out;
/// beyond [`MAX_PICTURE_BYTES`] the session is refused and the rest dropped before multipartdemux sees it.
fn limit_parts(demux: &gst::Element, counters: &Arc<Counters>) {
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = Arc::clone(&pending);
    demux.connect_pad_added(move |_, pad| {
        let p = Arc::clone(&p);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            p.store(0, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    });
    let Some(sink) = demux.static_pad("sink") else { return };
    let c = Arc::clone(counters);
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let n = match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => b.size(),
            _ => 0,
        };
        if c.is_refused() || pending.fetch_add(n, Ordering::Relaxed) + n > MAX_PICTURE_BYTES {
            c.refuse(|| {
                format!(
                    "refused: a part of the multipart stream went on for more than {} MiB without a boundary (no \
                     picture camclassd decodes is that large)",
                    MAX_PICTURE_BYTES >> 20
                )
            });
            return gst::PadProbeReturn::Handled;
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a decoder's sink pad carries, as far as its gates are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Unknown,
    /// Every picture a key frame: the rate gate sits here.
    Jpeg,
    /// Pictures reach the decoder from a whole key frame on ([`keyframe`]).
    H26x(Codec, Framing),
    Other,
}

impl Media {
    fn of(caps: &gst::CapsRef) -> Media {
        let Some(s) = caps.structure(0) else { return Media::Other };
        let codec = match s.name().as_str() {
            "image/jpeg" => return Media::Jpeg,
            "video/x-h264" => Codec::H264,
            "video/x-h265" => Codec::H265,
            _ => return Media::Other,
        };
        match s.get::<&str>("stream-format") {
            Ok("byte-stream") | Err(_) => Media::H26x(codec, Framing::AnnexB),
            // avc, avc3, hvc1, hev1: length-prefixed, the prefix size in codec_data.
            Ok(_) => s
                .get::<gst::Buffer>("codec_data")
                .ok()
                .and_then(|b| b.map_readable().ok().and_then(|m| keyframe::length_size(codec, m.as_slice())))
                .map_or(Media::Other, |n| Media::H26x(codec, Framing::Length(n))),
        }
    }
}

/// A decoder input's state, kept by its pad probe.
#[derive(Debug)]
struct DecoderInput {
    media: Media,
    /// Whether the JPEG picture being received was let through.
    keep: bool,
    /// H.264/H.265: a whole key frame went to the decoder since the stream started or lost data.
    whole: bool,
    /// Since when pictures wait for a whole key frame.
    waiting_since: Option<Instant>,
    /// A whole key frame came in this session: the stream has them, and waiting for the next one never ends
    /// in giving up (a camera that stops sending them stalls and is reconnected).
    ever_whole: bool,
    /// No whole key frame came within the limit, and never did: pictures pass as they come for the rest of
    /// the session (a stream without key frames, such as intra refresh).
    given_up: bool,
    /// JPEG: the bytes of the picture being received so far, and its first bytes until its size is known.
    picture_bytes: usize,
    header: Vec<u8>,
    sized: bool,
}

impl DecoderInput {
    /// Before the first buffer: nothing known, nothing let through yet.
    fn new() -> DecoderInput {
        DecoderInput {
            media: Media::Unknown,
            keep: true,
            whole: false,
            waiting_since: None,
            ever_whole: false,
            given_up: false,
            picture_bytes: 0,
            header: Vec::new(),
            // Nothing to look for until a picture starts.
            sized: true,
        }
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    Stopped,
    /// End of stream after `frames` frames reached the rate gate.
    Eos {
        frames: u64,
    },
    Failed(Failure),
}

/// What the camera's config makes of the source.
#[derive(Debug, Clone)]
enum Plan {
    /// `uridecodebin` on a URI without credentials.
    Uri { uri: String, shown: String, user: Option<String>, live: bool, file: bool },
    /// The user's own pipeline.
    Pipeline(String),
}

/// Lets through at most one frame per period of time `t` (ns): a jump backwards or far ahead (a loop, a
/// restart) starts the schedule again.
#[derive(Debug)]
struct RateGate {
    period: u64,
    next: Option<u64>,
}

impl RateGate {
    fn new(fps: f64) -> RateGate {
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

/// The value `autoplug-select` returns: 0 try, 2 skip (`GstAutoplugSelectResult`).
fn select_value(skip: bool) -> Option<glib::Value> {
    let ty = glib::Type::from_name("GstAutoplugSelectResult")?;
    glib::EnumClass::with_type(ty)?.to_value(if skip { 2 } else { 0 })
}

fn is_video_decoder(f: &gst::ElementFactory) -> bool {
    let klass = f.klass();
    klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"))
}

fn is_hardware(f: &gst::ElementFactory) -> bool {
    f.klass().contains("Hardware")
}

/// Whether a JPEG stream's frames go to the hub still encoded, for camclassd's own decoder (libjpeg-turbo,
/// reduced in the DCT domain to the pixels the camera's models need: a 1080p frame at 480×270), rather than
/// decoded at full size and converted to RGB by GStreamer. Not with `decode_size` (its frames, and the crops
/// given in their pixels, are that size), not when `decoder` names an element, and with `"auto"` not when the
/// board has a hardware JPEG decoder (which `"auto"` prefers).
fn jpeg_passthrough(decode_size: Option<[u32; 2]>, decoder: &str, hardware_jpeg: bool) -> bool {
    decode_size.is_none()
        && match decoder {
            "software" => true,
            "auto" => !hardware_jpeg,
            _ => false,
        }
}

/// Whether a hardware decoder for JPEG is installed (`v4l2jpegdec`, `vajpegdec`, `nvjpegdec` …); the
/// registry is read once (a snapshot URL builds a session per picture).
fn hardware_jpeg_decoder() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let jpeg = gst::Caps::builder("image/jpeg").build();
        gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
            .into_iter()
            .any(|f| is_video_decoder(&f) && is_hardware(&f) && f.can_sink_any_caps(&jpeg))
    })
}

/// One camera's GStreamer state across sessions: what was logged, so that each change is logged once.
#[derive(Debug)]
struct Camera<'a> {
    cam: &'a CameraConfig,
    plan: Plan,
    index: usize,
    hub: &'a FrameHub,
    stop: &'a AtomicBool,
    /// The password from `password_file` (or the URL), scrubbed from every message.
    password: Option<String>,
    decoder_logged: Option<String>,
    size: Option<(u32, u32)>,
    resolution_changes: u64,
    warned_layout: bool,
    /// Since the daemon started: frames into the decoder, out of it, and delivered to the hub.
    received: u64,
    decoded: u64,
    delivered: u64,
    before_key: u64,
    /// JPEG frames that came still encoded ([`jpeg_passthrough`]), kept or dropped by the rate gate.
    encoded: u64,
    /// The last frame delivered was a JPEG, for camclassd's decoder.
    delivered_jpeg: bool,
}

/// The capture thread of a GStreamer camera.
pub fn run(cam: &CameraConfig, kind: &SourceKind, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    if let Err(e) = gst::init() {
        tracing::error!(camera = %cam.name, "GStreamer does not start: {e}; install libgstreamer1.0-0");
        return;
    }
    let (plan, url_password) = match kind {
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
        index,
        hub,
        stop,
        password: url_password,
        decoder_logged: None,
        size: None,
        resolution_changes: 0,
        warned_layout: false,
        received: 0,
        decoded: 0,
        delivered: 0,
        before_key: 0,
        encoded: 0,
        delivered_jpeg: false,
    };
    camera.run();
    camera.log_totals();
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

    /// GStreamer's text with the password, if any, replaced, and any URL in it without its user info (an
    /// element that echoes a URI).
    fn scrub(&self, text: &str) -> String {
        let text = crate::config::url::redact_text(text);
        match self.password.as_deref().filter(|p| p.len() >= 2) {
            Some(p) => text.replace(p, "***"),
            None => text,
        }
    }

    /// Where the frames went, once, when the camera stops: beyond `fps`, a JPEG stream's frames are dropped
    /// before the decoder, other codecs' after it.
    fn log_totals(&mut self) {
        let received = std::mem::take(&mut self.received);
        if received > 0 {
            let before_key = match self.before_key {
                0 => String::new(),
                n => format!("; {n} waited for a whole key frame"),
            };
            tracing::info!(
                camera = %self.name(),
                "stopped: {received} frames came to the decoder, {} were decoded, {} delivered (fps = {}){before_key}",
                self.decoded,
                self.delivered,
                self.cam.fps
            );
        }
        let encoded = std::mem::take(&mut self.encoded);
        if encoded > 0 {
            tracing::info!(
                camera = %self.name(),
                "stopped: {encoded} JPEG frames came, {} went to camclassd's decoder (fps = {})",
                self.delivered,
                self.cam.fps
            );
        }
    }

    fn run(&mut self) {
        let mut backoff = Backoff::default();
        // The kind of failure last logged while the camera has been down (`None`: streaming, or never tried).
        let mut failing: Option<Kind> = None;
        let mut down_since: Option<Instant> = None;
        let mut ever_streamed = false;
        let mut snapshot_announced = false;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(file) = &self.cam.password_file {
                match std::fs::read_to_string(file) {
                    Ok(text) => self.password = text.lines().next().map(|l| l.trim_end().to_string()),
                    Err(e) => {
                        let f = Failure::new(Kind::Setup, format!("cannot read password_file {}: {e}", file.display()));
                        if !self.report(&f, &mut failing, ever_streamed) {
                            return;
                        }
                        if !sleep_unless_stopped(backoff.next_delay_jittered(), self.stop) {
                            return;
                        }
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let mut delivered = 0u64;
            let end = match self.build() {
                Ok(session) => self.stream(session, &mut delivered, &mut failing, &mut down_since, ever_streamed),
                Err(f) => End::Failed(f),
            };
            if delivered > 0 {
                ever_streamed = true;
                backoff.reset();
            }
            match end {
                End::Stopped => return,
                End::Eos { frames } => {
                    if let Plan::Uri { file: true, .. } = self.plan {
                        // A video file that does not loop is finished (looping ones seek inside `stream`).
                        tracing::info!(camera = %self.name(), "video {} finished", self.shown());
                        return;
                    }
                    if frames == 1 && matches!(&self.plan, Plan::Uri { uri, .. } if uri.starts_with("http")) {
                        // A still image per request: a snapshot URL, fetched once per frame period.
                        if !snapshot_announced {
                            tracing::info!(camera = %self.name(), "{} is a snapshot URL: fetching it {} times a second", self.shown(), self.cam.fps);
                            snapshot_announced = true;
                        }
                        let period = Duration::from_secs_f64(1.0 / self.cam.fps);
                        if !sleep_unless_stopped(period.saturating_sub(started.elapsed()), self.stop) {
                            return;
                        }
                        continue;
                    }
                    let f = Failure::new(Kind::Unreachable, format!("the stream from {} ended", self.shown()));
                    if !self.report(&f, &mut failing, ever_streamed) {
                        return;
                    }
                }
                End::Failed(f) => {
                    if !self.report(&f, &mut failing, ever_streamed) {
                        return;
                    }
                }
            }
            if down_since.is_none() {
                down_since = Some(Instant::now());
            }
            if !sleep_unless_stopped(backoff.next_delay_jittered(), self.stop) {
                return;
            }
        }
    }

    /// Logs a failure once per change of its kind while the camera is down; false when the daemon stops.
    fn report(&self, f: &Failure, failing: &mut Option<Kind>, ever_streamed: bool) -> bool {
        let message = self.scrub(&f.message);
        self.hub.report_down(self.index);
        if *failing != Some(f.kind) {
            let what = if ever_streamed && failing.is_none() { "camera lost" } else { "camera unavailable" };
            tracing::warn!(camera = %self.name(), "{what}: {message}; retrying with backoff up to {}s", Backoff::MAX.as_secs());
            *failing = Some(f.kind);
        } else {
            tracing::debug!(camera = %self.name(), "still unavailable: {message}");
        }
        !self.stop.load(Ordering::Relaxed)
    }

    /// Builds the session's pipeline, or says why it cannot be.
    fn build(&self) -> Result<Session, Failure> {
        let gate = Arc::new(Mutex::new(RateGate::new(self.cam.fps)));
        let counters = Arc::new(Counters::default());
        let t0 = Instant::now();
        let mut caps = gst::Caps::builder("video/x-raw").field("format", "RGB");
        if let Some([w, h]) = self.cam.decode_size {
            caps = caps.field("width", w as i32).field("height", h as i32);
        }
        let caps = caps.build();
        let (pipeline, sink, by_pts) = match &self.plan {
            Plan::Pipeline(description) => {
                let element = gst::parse::launch(description).map_err(|e| parse_failure(&e))?;
                let bin = element.downcast::<gst::Bin>().map_err(|_| {
                    Failure::new(Kind::Setup, "the pipeline is a single element; it must end in appsink name=camclassd")
                })?;
                let sink = bin
                    .by_name("camclassd")
                    .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                    .ok_or_else(|| Failure::new(Kind::Setup, "the pipeline has no `appsink name=camclassd`"))?;
                // Raw RGB, or (without decode_size) JPEG for camclassd's reduced decode.
                let mut sink_caps = caps.clone();
                if self.cam.decode_size.is_none() {
                    sink_caps.make_mut().append(gst::Caps::builder("image/jpeg").build());
                }
                sink.set_caps(Some(&sink_caps));
                sink.set_max_buffers(1);
                sink.set_drop(true);
                (bin, sink, false)
            }
            Plan::Uri { uri, user, live, file, .. } => {
                for e in ["uridecodebin", "videoscale", "videoconvert", "appsink"] {
                    if gst::ElementFactory::find(e).is_none() {
                        return Err(Failure::new(Kind::Setup, missing_element(e)));
                    }
                }
                let decoder = self.cam.decoder.as_str();
                if !matches!(decoder, "auto" | "software") && gst::ElementFactory::find(decoder).is_none() {
                    return Err(Failure::new(
                        Kind::Setup,
                        format!("decoder = {decoder:?}: {}", missing_element(decoder)),
                    ));
                }
                let make = |f: &str| {
                    gst::ElementFactory::make(f).build().map_err(|_| Failure::new(Kind::Setup, missing_element(f)))
                };
                let passthrough = jpeg_passthrough(self.cam.decode_size, decoder, hardware_jpeg_decoder());
                let pipeline = gst::Pipeline::new();
                let dec = make("uridecodebin")?;
                dec.set_property("uri", uri);
                let scale = make("videoscale")?;
                scale.set_property("add-borders", false);
                let convert = make("videoconvert")?;
                let mut sink_caps = caps.clone();
                if passthrough {
                    sink_caps.make_mut().append(gst::Caps::builder("image/jpeg").build());
                }
                let sink = gst_app::AppSink::builder().caps(&sink_caps).max_buffers(1).drop(true).sync(!*live).build();
                pipeline
                    .add_many([&dec, &scale, &convert, sink.upcast_ref()])
                    .and_then(|_| scale.link(&convert))
                    .map_err(|e| Failure::new(Kind::Setup, format!("cannot assemble the pipeline: {e}")))?;
                // JPEG for camclassd's decoder: uridecodebin stops at image/jpeg where a demuxer or depayloader
                // gives it whole frames (HTTP multipart, RTSP, video files). A picture that comes straight from
                // the source (a snapshot URL, in chunks) goes to jpegdec as before.
                if passthrough {
                    dec.connect("autoplug-continue", false, |args| {
                        let pad = args.get(1).and_then(|v| v.get::<gst::Pad>().ok());
                        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
                        let jpeg = caps.is_some_and(|c| c.structure(0).is_some_and(|s| s.name() == "image/jpeg"));
                        // The pad is decodebin's ghost pad: its target is the element's own.
                        let whole = pad
                            .and_then(|p| p.downcast_ref::<gst::GhostPad>().and_then(|g| g.target()).or(Some(p)))
                            .and_then(|p| p.parent_element())
                            .and_then(|e| e.factory())
                            .is_some_and(|f| f.klass().contains("Demuxer") || f.klass().contains("Depayloader"));
                        Some((!jpeg || !whole).to_value())
                    });
                }
                self.configure_source(&dec, user.clone());
                self.choose_decoder(&dec);
                let weak = pipeline.downgrade();
                let (scale_sink, sink_pad) = (scale.static_pad("sink"), sink.static_pad("sink"));
                let (gate, counters) = (Arc::clone(&gate), Arc::clone(&counters));
                let by_pts = *file;
                dec.connect_pad_added(move |_, pad| {
                    let kind = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().to_string()));
                    let kind = kind.as_deref().unwrap_or("");
                    // The first video stream goes to the appsink: raw through videoscale and videoconvert, JPEG
                    // (for camclassd's decoder) as it is, through the rate gate.
                    if let Some(target) = sink_pad.as_ref().filter(|t| !t.is_linked()) {
                        if kind.starts_with("video/")
                            && let (Some(entry), Some(exit)) = (&scale_sink, convert.static_pad("src"))
                            && exit.link(target).is_ok()
                        {
                            let _ = pad.link(entry);
                            return;
                        }
                        if passthrough && kind == "image/jpeg" && pad.link(target).is_ok() {
                            let (gate, counters) = (Arc::clone(&gate), Arc::clone(&counters));
                            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                                counters.encoded.fetch_add(1, Ordering::Relaxed);
                                // Whole pictures, each decoded on its own by camclassd's decoder, which reads
                                // the size from the header and refuses an oversized one before it allocates:
                                // one such frame in a stream is skipped and counted like any undecodable one,
                                // the stream goes on (the session is not ended for it).
                                pass_gate(&gate, &counters, by_pts, t0, info)
                            });
                            return;
                        }
                    }
                    // Audio, or a second video stream: consumed and thrown away.
                    if let (Some(pipeline), Ok(fake)) =
                        (weak.upgrade(), gst::ElementFactory::make("fakesink").property("sync", false).build())
                        && pipeline.add(&fake).is_ok()
                    {
                        let _ = fake.sync_state_with_parent();
                        if let Some(p) = fake.static_pad("sink") {
                            let _ = pad.link(&p);
                        }
                    }
                });
                (pipeline.upcast::<gst::Bin>(), sink, *file)
            }
        };
        // A decoder that joins a stream between key frames (or loses packets) outputs grey smears that would be
        // classified as something: H.264/H.265 pictures wait for a whole key frame (`watch_decoder`), RTP
        // depayloaders ask the camera for one after a loss, libav's decoders drop corrupt frames. The
        // depayloaders' own `wait-for-keyframe` stays off: after a loss it passed on only the second slice of
        // each two-slice key frame (1 whole key frame in 10 s at 1 % loss; 4 without it). Decoders get counted,
        // and a JPEG decoder the rate gate in front of it.
        let (g, c) = (Arc::clone(&gate), Arc::clone(&counters));
        // A stream without whole key frames (intra refresh only, or a loss in every one) is not held back
        // beyond half the stall timeout: its pictures then pass as they come.
        let give_up = Duration::from_secs_f64((self.cam.stall_timeout / 2.0).max(2.0));
        let watch = Watch { by_pts, t0, give_up, camera: self.name().to_string() };
        let watch_added = watch.clone();
        pipeline.connect_deep_element_added(move |_, _, element| {
            for (property, value) in [("output-corrupt", false), ("request-keyframe", true)] {
                if element.has_property_with_type(property, bool::static_type()) {
                    element.set_property(property, value);
                }
            }
            // An HTTP MJPEG stream is one stream: without this, decodebin holds its frames back (seconds of them)
            // until its queue fills, waiting for more streams.
            if element.factory().is_some_and(|f| f.name() == "multipartdemux") {
                element.set_property("single-stream", true);
                limit_parts(element, &c);
            }
            watch_decoder(element, &g, &c, watch_added.clone());
        });
        // The user's pipeline has its elements already.
        for element in pipeline.iterate_recurse().into_iter().flatten() {
            if element.factory().is_some_and(|f| f.name() == "multipartdemux") {
                limit_parts(&element, &counters);
            }
            watch_decoder(&element, &gate, &counters, watch.clone());
        }
        // Raw video beyond the size limit (a user's `videotestsrc`, a decoder's output) goes no further.
        if let Some(pad) = sink.static_pad("sink") {
            watch_caps(&pad, &counters);
        }
        // The rate gate: frames beyond `fps` are dropped before they are scaled and converted (a file by its
        // timestamps, so that it plays at its own pace; a live source by the clock); JPEG frames, each one a
        // key frame, are dropped before they are decoded (`watch_decoder`), and this gate lets them through.
        let gate_pad = match &self.plan {
            Plan::Uri { .. } => pipeline
                .iterate_elements()
                .into_iter()
                .flatten()
                .find(|e| e.factory().is_some_and(|f| f.name() == "videoscale"))
                .and_then(|e| e.static_pad("sink")),
            Plan::Pipeline(_) => sink.static_pad("sink"),
        };
        if let Some(pad) = gate_pad {
            let (gate, counters) = (Arc::clone(&gate), Arc::clone(&counters));
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if counters.early.load(Ordering::Relaxed) {
                    gst::PadProbeReturn::Ok
                } else {
                    pass_gate(&gate, &counters, by_pts, t0, info)
                }
            });
        }
        let bus = pipeline.bus().ok_or_else(|| Failure::new(Kind::Setup, "the pipeline has no bus"))?;
        Ok(Session { pipeline, sink, bus, counters })
    }

    /// RTSP and HTTP: credentials, transport and latency set on the source element `uridecodebin` makes.
    fn configure_source(&self, dec: &gst::Element, user: Option<String>) {
        let password = self.password.clone();
        let transport = self.cam.transport;
        let latency = self.cam.latency_ms;
        dec.connect("source-setup", false, move |args| {
            let src = args.get(1).and_then(|v| v.get::<gst::Element>().ok())?;
            let factory = src.factory().map(|f| f.name().to_string()).unwrap_or_default();
            if let (Some(user), true) = (&user, src.has_property("user-id")) {
                src.set_property("user-id", user);
                if let (Some(pw), true) = (&password, src.has_property("user-pw")) {
                    src.set_property("user-pw", pw);
                }
                // souphttpsrc would answer the challenge of whatever host a redirect points to with the
                // camera's credentials: with credentials, no redirect is followed (the failure says so).
                if src.has_property_with_type("automatic-redirect", bool::static_type()) {
                    src.set_property("automatic-redirect", false);
                }
            }
            if factory == "rtspsrc" {
                src.set_property("latency", latency);
                src.set_property("drop-on-latency", true);
                match transport {
                    RtspTransport::Tcp => src.set_property_from_str("protocols", "tcp"),
                    RtspTransport::Udp => src.set_property_from_str("protocols", "udp+udp-mcast"),
                    RtspTransport::Auto => {}
                }
            }
            None
        });
    }

    /// `decoder = "software"` skips hardware decoders; a named one skips every other video decoder.
    fn choose_decoder(&self, dec: &gst::Element) {
        let mode = self.cam.decoder.clone();
        if mode == "auto" {
            return;
        }
        if select_value(false).is_none() {
            tracing::warn!(camera = %self.name(), "this GStreamer cannot be told which decoder to use; decoder = {mode:?} is ignored");
            return;
        }
        dec.connect("autoplug-select", false, move |args| {
            let factory = args.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok());
            let skip = factory.is_some_and(|f| {
                is_video_decoder(&f) && if mode == "software" { is_hardware(&f) } else { f.name() != mode.as_str() }
            });
            select_value(skip)
        });
    }

    /// Plays a session until it ends, fails, stalls or the daemon stops; delivers its frames to the hub.
    fn stream(
        &mut self,
        session: Session,
        delivered: &mut u64,
        failing: &mut Option<Kind>,
        down_since: &mut Option<Instant>,
        ever_streamed: bool,
    ) -> End {
        let Session { pipeline, sink, bus, counters } = session;
        let end = self.play(&pipeline, &sink, &bus, &counters, delivered, failing, down_since, ever_streamed);
        // A refusal is why the session ended, whatever the elements said after it (caps dropped, data cut).
        let end = match (end, counters.refused.lock().ok().and_then(|r| r.clone())) {
            (End::Stopped, _) => End::Stopped,
            (_, Some(why)) => End::Failed(Failure::new(Kind::TooLarge, format!("{}: {why}", self.shown()))),
            (end, None) => end,
        };
        self.received += counters.received.load(Ordering::Relaxed);
        self.decoded += counters.decoded.load(Ordering::Relaxed);
        self.before_key += counters.before_key.load(Ordering::Relaxed);
        self.encoded += counters.encoded.load(Ordering::Relaxed);
        self.delivered += *delivered;
        if let End::Stopped = end {
            // Before the teardown, which the daemon's shutdown may not wait for.
            self.log_totals();
        }
        let _ = pipeline.set_state(gst::State::Null);
        end
    }

    #[allow(clippy::too_many_arguments)]
    fn play(
        &mut self,
        pipeline: &gst::Bin,
        sink: &gst_app::AppSink,
        bus: &gst::Bus,
        counters: &Counters,
        delivered: &mut u64,
        failing: &mut Option<Kind>,
        down_since: &mut Option<Instant>,
        ever_streamed: bool,
    ) -> End {
        if pipeline.set_state(gst::State::Playing).is_err() {
            return End::Failed(
                self.bus_failure(bus)
                    .unwrap_or_else(|| Failure::new(Kind::Unreachable, format!("{} does not start", self.shown()))),
            );
        }
        let stall = Duration::from_secs_f64(self.cam.stall_timeout.max(3.0 / self.cam.fps));
        let mut last_frame = Instant::now();
        let mut missing: Vec<String> = Vec::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return End::Stopped;
            }
            // Before the bus: a refusal's dropped caps make the elements fail too, less clearly.
            if let Some(why) = counters.refused.lock().ok().and_then(|r| r.clone()) {
                return End::Failed(Failure::new(Kind::TooLarge, format!("{}: {why}", self.shown())));
            }
            while let Some(msg) = bus.pop() {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        return End::Failed(self.error_failure(err, &missing));
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
                        return End::Eos { frames: counters.gated.load(Ordering::Relaxed) };
                    }
                    gst::MessageView::Element(e) => {
                        if let Some(s) = e.structure().filter(|s| s.name() == "missing-plugin") {
                            let detail = s.get::<String>("detail").unwrap_or_default();
                            missing.push(detail);
                        }
                    }
                    _ => {}
                }
            }
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
                if last_frame.elapsed() > stall {
                    return End::Failed(Failure::new(
                        Kind::Unreachable,
                        format!("no frame from {} for {:.0?} (stall_timeout)", self.shown(), stall),
                    ));
                }
                continue;
            };
            last_frame = Instant::now();
            if self.deliver(&sample) {
                *delivered += 1;
                if *delivered == 1 {
                    if failing.is_some() || !ever_streamed {
                        let after = down_since.map(|t| format!(" after {:.0?} down", t.elapsed())).unwrap_or_default();
                        let (w, h) = self.size.unwrap_or_default();
                        tracing::info!(camera = %self.name(), "streaming {} ({w}x{h}){after}", self.shown());
                    }
                    *failing = None;
                    *down_since = None;
                    self.log_decoder(pipeline);
                }
            }
        }
    }

    /// Copies a JPEG (for camclassd's decoder) into a recycled buffer and hands it to the hub.
    fn deliver_jpeg(&mut self, bytes: &[u8]) {
        self.delivered_jpeg = true;
        let mut data = self.hub.buffer(self.index);
        data.extend_from_slice(bytes);
        let (captured_at, captured) = (SystemTime::now(), Instant::now());
        self.hub.put(self.index, CapturedFrame { data, format: PixelFormat::Encoded, captured_at, captured });
    }

    /// Copies a sample's RGB rows (or its JPEG, for camclassd's decoder) into a recycled buffer and hands it
    /// to the hub; false when skipped.
    fn deliver(&mut self, sample: &gst::Sample) -> bool {
        let Some(s) = sample.caps().and_then(|c| c.structure(0)) else { return false };
        let jpeg = s.name() == "image/jpeg";
        let side = |key: &str| u32::try_from(s.get::<i32>(key).ok()?).ok();
        let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) else { return false };
        let bytes = map.as_slice();
        // A JPEG straight from a source (a user's pipeline without jpegparse) may have no size in its caps.
        let size =
            side("width").zip(side("height")).or_else(|| jpeg.then(|| crate::preprocess::jpeg_size(bytes)).flatten());
        if jpeg && size.is_none() {
            // A damaged header (a zero side, a cut-off segment): camclassd's decoder gives the reason, and the
            // frame is skipped and counted there like any undecodable one.
            self.deliver_jpeg(bytes);
            return true;
        }
        let Some((w, h)) = size else {
            if !self.warned_layout {
                tracing::warn!(camera = %self.name(), "a {} frame without a size; skipped", s.name());
                self.warned_layout = true;
            }
            return false;
        };
        if let Some(old) = self.size
            && old != (w, h)
        {
            // Frames go on at the new size (preprocessing takes any); logged at the 1st, 2nd, 4th … change.
            self.resolution_changes += 1;
            if self.resolution_changes.is_power_of_two() {
                tracing::info!(camera = %self.name(), "resolution changed from {}x{} to {w}x{h} ({} changes so far)", old.0, old.1, self.resolution_changes);
            }
        }
        self.size = Some((w, h));
        if jpeg {
            self.deliver_jpeg(bytes);
            return true;
        }
        self.delivered_jpeg = false;
        let row = w as usize * 3;
        // GStreamer pads RGB rows to 4 bytes.
        let stride = (row + 3) & !3;
        let mut data = self.hub.buffer(self.index);
        if bytes.len() == row * h as usize {
            data.extend_from_slice(bytes);
        } else if bytes.len() >= stride * h as usize {
            for y in 0..h as usize {
                data.extend_from_slice(&bytes[y * stride..y * stride + row]);
            }
        } else {
            if !self.warned_layout {
                tracing::warn!(camera = %self.name(), "a {w}x{h} frame of {} bytes is not RGB rows; skipped", bytes.len());
                self.warned_layout = true;
            }
            self.hub.recycle(self.index, data);
            return false;
        }
        self.hub.put(
            self.index,
            CapturedFrame {
                data,
                format: PixelFormat::Rgb8 { width: w, height: h },
                captured_at: SystemTime::now(),
                captured: Instant::now(),
            },
        );
        true
    }

    /// Names the decoder the session uses and why, when it differs from the one logged last.
    fn log_decoder(&mut self, pipeline: &gst::Bin) {
        if self.delivered_jpeg {
            if self.decoder_logged.as_deref() != Some("camclassd") {
                let why = match (&self.plan, self.cam.decoder.as_str()) {
                    (Plan::Pipeline(_), _) => "the pipeline gives JPEG",
                    (_, "software") => "decoder = \"software\"",
                    _ => "decoder = \"auto\" and no hardware JPEG decoder installed",
                };
                tracing::info!(camera = %self.name(), "decoding image/jpeg with camclassd's libjpeg-turbo, reduced to the pixels the models need ({why}; no decode_size)");
                self.decoder_logged = Some("camclassd".into());
            }
            return;
        }
        let Some(decoder) = pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| is_video_decoder(&f)))
        else {
            return;
        };
        let Some(factory) = decoder.factory() else { return };
        let name = factory.name().to_string();
        if self.decoder_logged.as_deref() == Some(name.as_str()) {
            return;
        }
        let caps = decoder.static_pad("sink").and_then(|p| p.current_caps());
        let media = caps.as_ref().and_then(|c| c.structure(0)).map(|s| s.name().to_string()).unwrap_or_default();
        let mut candidates: Vec<gst::ElementFactory> =
            gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
                .into_iter()
                .filter(|f| is_video_decoder(f) && caps.as_ref().is_none_or(|c| f.can_sink_any_caps(c)))
                .collect();
        candidates.sort_by_key(|f| std::cmp::Reverse(f.rank()));
        let list: Vec<String> = candidates
            .iter()
            .map(|f| format!("{} ({}{})", f.name(), f.rank(), if is_hardware(f) { ", hardware" } else { "" }))
            .collect();
        let kind = if is_hardware(&factory) { "hardware" } else { "software" };
        let why = match self.cam.decoder.as_str() {
            "auto" => "decoder = \"auto\": the highest-ranked installed decoder".to_string(),
            "software" => "decoder = \"software\": the highest-ranked software decoder".to_string(),
            other => format!("decoder = {other:?}"),
        };
        tracing::info!(camera = %self.name(), "decoding {media} with {name} ({kind}; {why}; candidates: {})", list.join(", "));
        self.decoder_logged = Some(name);
    }

    /// The first error waiting on the bus, as a failure.
    fn bus_failure(&self, bus: &gst::Bus) -> Option<Failure> {
        let mut missing = Vec::new();
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(err) => return Some(self.error_failure(err, &missing)),
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure().filter(|s| s.name() == "missing-plugin") {
                        missing.push(s.get::<String>("detail").unwrap_or_default());
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// A GStreamer error in the user's terms: what happened and what to check.
    fn error_failure(&self, err: &gst::message::Error, missing: &[String]) -> Failure {
        let e = err.error();
        let shown = self.shown();
        let detail = err.debug().map(|d| d.to_string()).unwrap_or_default();
        let detail_line = detail.lines().last().unwrap_or("").trim().to_string();
        if let Some(caps) = missing.first() {
            let advice = match decoder_package(caps) {
                Some(p) => format!("install the Debian package {p}"),
                None => "unknown codec: no GStreamer decoder for it is known".into(),
            };
            return Failure::new(Kind::Setup, format!("{shown}: no decoder for {caps}: {advice}"));
        }
        // souphttpsrc with automatic-redirect off (credentials set, `configure_source`).
        if detail.lines().any(|l| l.contains("Redirect to:")) {
            return Failure::new(
                Kind::NotFound,
                format!(
                    "{shown} redirects elsewhere ({}): with credentials, camclassd follows no redirect (the \
                     password would go wherever it points); set source to the URL the camera redirects to",
                    e.message()
                ),
            );
        }
        // The status as souphttpsrc ("Unauthorized (401), URL: …") and rtspsrc word it, not any "401" (a port).
        if e.matches(gst::ResourceError::NotAuthorized)
            || detail.contains("(401)")
            || detail.contains("401 Unauthorized")
            || e.message().contains("Unauthorized")
        {
            return Failure::new(
                Kind::Auth,
                format!(
                    "{shown} refused the credentials (401 Unauthorized): check the user name in source and password_file"
                ),
            );
        }
        if e.matches(gst::ResourceError::NotFound) || detail.contains("(404)") || detail.contains("404 Not Found") {
            return Failure::new(
                Kind::NotFound,
                format!("{shown}: not found ({}): check the URL or path", e.message()),
            );
        }
        if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
            return Failure::new(
                Kind::Setup,
                format!("{shown}: {} ({detail_line}): unknown codec or a missing plugin", e.message()),
            );
        }
        if e.matches(gst::CoreError::Negotiation) || detail.contains("not-negotiated") {
            return Failure::new(
                Kind::Setup,
                format!(
                    "{shown}: {} ({detail_line}); a pipeline must give raw video or JPEG: end it with `videoconvert ! appsink name=camclassd` (or `image/jpeg ! appsink name=camclassd`)",
                    e.message()
                ),
            );
        }
        // souphttpsrc reports a refused, reset or timed-out connection only as its streaming task stopping
        // ("Internal data stream error"): the camera is unreachable, not undecodable.
        let from_network_source = err
            .src()
            .and_then(|s| s.downcast_ref::<gst::Element>())
            .and_then(|e| e.factory())
            .is_some_and(|f| f.klass().contains("Source/Network"));
        if from_network_source && e.matches(gst::StreamError::Failed) {
            return Failure::new(
                Kind::Unreachable,
                format!(
                    "{shown}: no connection, or the connection was lost ({detail_line}): is the camera on, and the \
                     host and port right?"
                ),
            );
        }
        if e.kind::<gst::StreamError>().is_some() {
            return Failure::new(
                Kind::Setup,
                format!("{shown}: cannot decode the stream: {} ({detail_line})", e.message()),
            );
        }
        Failure::new(Kind::Unreachable, format!("{shown}: {} ({detail_line})", e.message()))
    }
}

/// One frame at the rate gate: counted, and let through when due (a file by its timestamps, a live source
/// by the clock) or dropped.
fn pass_gate(
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

/// How a decoder's input is watched.
#[derive(Debug, Clone)]
struct Watch {
    /// The rate gate goes by timestamps (a file), not by the clock.
    by_pts: bool,
    t0: Instant,
    /// How long H.264/H.265 pictures may wait for a whole key frame.
    give_up: Duration,
    camera: String,
}

/// Counts what goes into a video decoder and what comes out. When what goes in is JPEG (every frame a key
/// frame), the rate gate sits on the decoder's input so that frames beyond `fps` are never decoded. H.264 and
/// H.265 pictures reach the decoder only from a whole key frame on, at the start and after a loss upstream
/// (a buffer marked discontinuous): a decoder that starts in the middle of a key frame turns it and the
/// pictures after it into smears ([`keyframe`]).
fn watch_decoder(element: &gst::Element, gate: &Arc<Mutex<RateGate>>, counters: &Arc<Counters>, watch: Watch) {
    if !element.factory().is_some_and(|f| is_video_decoder(&f)) {
        return;
    }
    let (Some(input), Some(output)) = (element.static_pad("sink"), element.static_pad("src")) else { return };
    let c = Arc::clone(counters);
    output.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        c.decoded.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    let (gate, c) = (Arc::clone(gate), Arc::clone(counters));
    let state = Mutex::new(DecoderInput::new());
    input.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        let Ok(mut st) = state.lock() else { return gst::PadProbeReturn::Ok };
        match &info.data {
            Some(gst::PadProbeData::Event(e)) => {
                if let gst::EventView::Caps(caps) = e.view() {
                    st.media = Media::of(caps.caps());
                    c.early.store(st.media == Media::Jpeg, Ordering::Relaxed);
                    // Video caps with a size beyond the limit (an H.264 file's): the decoder never gets them.
                    if let Some(why) = caps_oversize(caps.caps()) {
                        c.refuse(|| why);
                        return gst::PadProbeReturn::Drop;
                    }
                }
                gst::PadProbeReturn::Ok
            }
            Some(gst::PadProbeData::Buffer(buffer)) => {
                if st.media == Media::Unknown {
                    // Caps that arrived before this probe did.
                    st.media = pad.current_caps().map_or(Media::Other, |caps| Media::of(&caps));
                    c.early.store(st.media == Media::Jpeg, Ordering::Relaxed);
                }
                match st.media {
                    Media::Jpeg => {}
                    Media::H26x(codec, framing) => {
                        c.received.fetch_add(1, Ordering::Relaxed);
                        return key_gate(&mut st, buffer, codec, framing, &c, &watch);
                    }
                    Media::Other | Media::Unknown => {
                        c.received.fetch_add(1, Ordering::Relaxed);
                        return gst::PadProbeReturn::Ok;
                    }
                }
                // A JPEG picture starts with SOI (FF D8). A source that hands a picture over in chunks (a
                // snapshot URL, unparsed) has the other chunks follow the fate of the first.
                let mut soi = [0u8; 2];
                let starts = buffer.copy_to_slice(0, &mut soi).is_ok() && soi == [0xFF, 0xD8];
                if let Err(why) = jpeg_limits(&mut st, buffer, starts) {
                    c.refuse(|| why);
                    st.keep = false;
                }
                if c.is_refused() {
                    return gst::PadProbeReturn::Handled;
                }
                if !starts {
                    return if st.keep { gst::PadProbeReturn::Ok } else { gst::PadProbeReturn::Handled };
                }
                c.received.fetch_add(1, Ordering::Relaxed);
                let verdict = pass_gate(&gate, &c, watch.by_pts, watch.t0, info);
                st.keep = verdict == gst::PadProbeReturn::Ok;
                verdict
            }
            _ => gst::PadProbeReturn::Ok,
        }
    });
}

/// A JPEG chunk on its way to a decoder: the picture's size, read from its header (SOF) as soon as the chunks
/// so far hold it, and its bytes, each within its limit; `Err` says why the picture is refused.
fn jpeg_limits(st: &mut DecoderInput, buffer: &gst::BufferRef, starts: bool) -> Result<(), String> {
    if starts {
        st.picture_bytes = 0;
        st.header.clear();
        st.sized = false;
    }
    st.picture_bytes = st.picture_bytes.saturating_add(buffer.size());
    if st.picture_bytes > MAX_PICTURE_BYTES {
        return Err(format!(
            "refused: a JPEG picture went on for more than {} MiB without its end",
            MAX_PICTURE_BYTES >> 20
        ));
    }
    if st.sized {
        return Ok(());
    }
    let Ok(map) = buffer.map_readable() else { return Ok(()) };
    let room = MAX_JPEG_HEADER.saturating_sub(st.header.len());
    // A picture given whole (most) is read in place; one in chunks is gathered until its header is complete.
    let size = if st.header.is_empty() && starts { crate::preprocess::jpeg_size(map.as_slice()) } else { None };
    let size = size.or_else(|| {
        st.header.extend_from_slice(&map.as_slice()[..map.len().min(room)]);
        crate::preprocess::jpeg_size(&st.header)
    });
    match size {
        Some((w, h)) => {
            st.sized = true;
            st.header = Vec::new();
            oversize(w, h).map_or(Ok(()), Err)
        }
        None if st.header.len() >= MAX_JPEG_HEADER => {
            Err(format!("refused: a JPEG picture with no frame header in its first {} MiB", MAX_JPEG_HEADER >> 20))
        }
        None => Ok(()),
    }
}

/// An H.264/H.265 buffer on its way to the decoder: through once a whole key frame went (since the start or
/// the last discontinuity), or when it carries no picture (parameter sets); dropped otherwise, unless the
/// stream never sent a whole key frame in `give_up`.
fn key_gate(
    st: &mut DecoderInput,
    buffer: &gst::BufferRef,
    codec: Codec,
    framing: Framing,
    counters: &Counters,
    watch: &Watch,
) -> gst::PadProbeReturn {
    if buffer.flags().contains(gst::BufferFlags::DISCONT) && st.whole {
        st.whole = false;
    }
    if st.whole || st.given_up {
        return gst::PadProbeReturn::Ok;
    }
    let start = buffer.map_readable().ok().and_then(|m| keyframe::first_slice(codec, framing, m.as_slice()));
    let Some(start) = start else { return gst::PadProbeReturn::Ok };
    let key = start.key || !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
    if key && start.first_slice {
        st.whole = true;
        st.ever_whole = true;
        st.waiting_since = None;
        return gst::PadProbeReturn::Ok;
    }
    let since = *st.waiting_since.get_or_insert_with(Instant::now);
    if !st.ever_whole && since.elapsed() >= watch.give_up {
        st.given_up = true;
        tracing::warn!(
            camera = %watch.camera,
            "no whole key frame for {:?}: pictures go to the decoder as they come (a stream without key frames?)",
            watch.give_up
        );
        return gst::PadProbeReturn::Ok;
    }
    counters.before_key.fetch_add(1, Ordering::Relaxed);
    gst::PadProbeReturn::Handled
}

/// A pipeline description GStreamer cannot build: a missing element names its Debian package.
fn parse_failure(e: &glib::Error) -> Failure {
    let text = e.message();
    if e.matches(gst::ParseError::NoSuchElement)
        && let Some(name) = text.split('"').nth(1)
    {
        return Failure::new(Kind::Setup, format!("pipeline: {}", missing_element(name)));
    }
    Failure::new(Kind::Setup, format!("pipeline: {text}"))
}

/// Whether a camera's `pipeline` builds as `run` builds it (parsed, never started): a syntax error, an element
/// not installed (with its Debian package), no `appsink name=camclassd`. For `check-config`.
pub fn check_pipeline(description: &str) -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer does not start: {e}; install libgstreamer1.0-0"))?;
    let element = gst::parse::launch(description)
        .map_err(|e| parse_failure(&e).message.trim_start_matches("pipeline: ").to_string())?;
    let sink = match element.downcast_ref::<gst::Bin>() {
        Some(bin) => bin.by_name("camclassd"),
        None => None,
    };
    let _ = element.set_state(gst::State::Null);
    match sink {
        Some(s) if s.is::<gst_app::AppSink>() => Ok(()),
        Some(s) => Err(format!(
            "the element named camclassd is a {}, not an appsink: end the pipeline in `appsink name=camclassd`",
            s.factory().map_or_else(|| "?".into(), |f| f.name().to_string())
        )),
        None => {
            Err("the pipeline has no `appsink name=camclassd`: end it with `… ! videoconvert ! appsink name=camclassd`"
                .into())
        }
    }
}

/// A built pipeline and what the capture loop holds of it.
#[derive(Debug)]
struct Session {
    pipeline: gst::Bin,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    counters: Arc<Counters>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_elements_name_their_debian_package() {
        assert_eq!(debian_package("avdec_h264"), Some("gstreamer1.0-libav"));
        assert_eq!(debian_package("libcamerasrc"), Some("gstreamer1.0-libcamera"));
        assert_eq!(debian_package("vaapih264dec"), Some("gstreamer1.0-vaapi"));
        assert_eq!(debian_package("rtspsrc"), Some("gstreamer1.0-plugins-good"));
        assert_eq!(debian_package("vah264dec"), Some("gstreamer1.0-plugins-bad"));
        assert_eq!(debian_package("nvarguscamerasrc"), Some("nvidia-l4t-gstreamer (NVIDIA JetPack)"));
        assert_eq!(decoder_package("video/x-h265, stream-format=(string)byte-stream"), Some("gstreamer1.0-libav"));
        assert_eq!(debian_package("jpegparse"), Some("gstreamer1.0-plugins-bad"));
        assert_eq!(debian_package("nosuchthing"), None);
    }

    #[test]
    fn jpeg_frames_stay_encoded_unless_scaled_in_the_pipeline_or_a_decoder_is_named() {
        // (decode_size, decoder, a hardware JPEG decoder installed) → camclassd decodes.
        assert!(jpeg_passthrough(None, "auto", false));
        assert!(jpeg_passthrough(None, "software", true));
        // "auto" prefers the board's hardware decoder; a named decoder is used as named.
        assert!(!jpeg_passthrough(None, "auto", true));
        assert!(!jpeg_passthrough(None, "jpegdec", false));
        assert!(!jpeg_passthrough(None, "avdec_h264", false));
        // decode_size: the frames (and crops in their pixels) are that size, scaled by GStreamer.
        assert!(!jpeg_passthrough(Some([640, 360]), "auto", false));
    }

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

    /// An Annex B H.264 buffer: an IDR or a delta picture, whole or without its first slice.
    fn h264(key: bool, first_slice: bool, flags: gst::BufferFlags) -> gst::Buffer {
        let slice = [if key { 0x65 } else { 0x41 }, if first_slice { 0x88 } else { 0x00 }, 0x84, 0x21];
        let mut data = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1];
        data.extend_from_slice(&slice);
        let mut buffer = gst::Buffer::from_mut_slice(data);
        if let Some(b) = buffer.get_mut() {
            b.set_flags(if key { flags } else { flags | gst::BufferFlags::DELTA_UNIT });
        }
        buffer
    }

    /// One Annex B H.264 buffer through the key-frame gate.
    fn gate(st: &mut DecoderInput, b: gst::Buffer, counters: &Counters, watch: &Watch) -> gst::PadProbeReturn {
        key_gate(st, &b, Codec::H264, Framing::AnnexB, counters, watch)
    }

    #[test]
    fn h264_pictures_wait_for_a_whole_key_frame_at_the_start_and_after_a_loss() {
        gst::init().expect("GStreamer");
        let watch = Watch { by_pts: false, t0: Instant::now(), give_up: Duration::from_secs(3600), camera: "c".into() };
        let counters = Counters::default();
        let mut st = DecoderInput::new();
        let none = gst::BufferFlags::empty();
        let pass = |b: gst::Buffer, st: &mut DecoderInput| gate(st, b, &counters, &watch) == gst::PadProbeReturn::Ok;
        // Joined in the middle: a key frame without its first slice, then the pictures that refer to it.
        assert!(!pass(h264(true, false, gst::BufferFlags::DISCONT), &mut st));
        assert!(!pass(h264(false, true, none), &mut st));
        // Parameter sets alone carry no picture: the decoder needs them.
        assert!(pass(gst::Buffer::from_slice([0u8, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE]), &mut st));
        assert!(pass(h264(true, true, none), &mut st));
        assert!(pass(h264(false, true, none), &mut st));
        // A loss upstream: wait again.
        assert!(!pass(h264(false, true, gst::BufferFlags::DISCONT), &mut st));
        assert!(!pass(h264(true, false, none), &mut st));
        // A whole key frame that starts the stream after a loss goes through at once.
        assert!(pass(h264(true, true, gst::BufferFlags::DISCONT), &mut st));
        assert_eq!(counters.before_key.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_stream_without_whole_key_frames_is_held_back_no_longer_than_the_limit() {
        gst::init().expect("GStreamer");
        let watch = Watch { by_pts: false, t0: Instant::now(), give_up: Duration::from_millis(50), camera: "c".into() };
        let counters = Counters::default();
        let mut st = DecoderInput::new();
        let delta = || h264(false, true, gst::BufferFlags::empty());
        assert_eq!(gate(&mut st, delta(), &counters, &watch), gst::PadProbeReturn::Handled);
        std::thread::sleep(Duration::from_millis(60));
        for _ in 0..3 {
            assert_eq!(gate(&mut st, delta(), &counters, &watch), gst::PadProbeReturn::Ok);
        }
        assert!(st.given_up);
        // A stream that did send a whole key frame waits for the next one however long it takes (a camera
        // that stops sending them stalls and is reconnected).
        let mut st = DecoderInput::new();
        assert_eq!(
            gate(&mut st, h264(true, true, gst::BufferFlags::empty()), &counters, &watch),
            gst::PadProbeReturn::Ok
        );
        assert_eq!(
            gate(&mut st, h264(false, true, gst::BufferFlags::DISCONT), &counters, &watch),
            gst::PadProbeReturn::Handled
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(gate(&mut st, delta(), &counters, &watch), gst::PadProbeReturn::Handled);
        assert!(!st.given_up);
    }
}
