//! Pipeline assembly for one GStreamer session: `uridecodebin` (or the user's own pipeline) → the rate gate
//! → `videoscale` → `videoconvert` → `appsink` (RGB, one buffer, newest wins), or a JPEG stream of whole
//! frames straight to the appsink for camclassd's reduced decode; the source element configured
//! (credentials as properties, transport, latency), the decoder chosen, and the probes of [`super::rate`],
//! [`super::gate`] and [`super::limits`] put in place. Also `check-config`'s check of a user's pipeline.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::decoder::{choose_decoder, hardware_jpeg_decoder, jpeg_passthrough};
use super::failure::parse_failure;
use super::gate::{Counters, Watch, watch_decoder};
use super::limits::{limit_parts, watch_caps};
use super::packages::missing_element;
use super::rate::{RateGate, pass_gate};
use crate::capture::supervisor::{Failure, FailureKind};
use crate::config::{CameraConfig, RtspTransport};

/// What the camera's config makes of the source.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// `uridecodebin` on a URI without credentials (`shown`: as logged).
    Uri { uri: String, shown: String, user: Option<String>, live: bool, file: bool },
    /// The user's own pipeline.
    Pipeline(String),
}

/// A built pipeline and what the capture loop holds of it.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) pipeline: gst::Bin,
    pub(super) sink: gst_app::AppSink,
    pub(super) bus: gst::Bus,
    pub(super) counters: Arc<Counters>,
}

/// What a session's probes share: the rate gate and the counters, and how the gate tells time.
#[derive(Debug, Clone)]
struct Probes {
    gate: Arc<Mutex<RateGate>>,
    counters: Arc<Counters>,
    /// The gate goes by timestamps (a video file, which plays at its own pace), not by the clock.
    by_pts: bool,
    t0: Instant,
}

/// Builds a session's pipeline for `cam` as `plan` says (`password`: the source element's), or says why it
/// cannot be.
pub(super) fn build(cam: &CameraConfig, plan: &Plan, password: Option<&str>) -> Result<Session, Failure> {
    let probes = Probes {
        gate: Arc::new(Mutex::new(RateGate::new(cam.fps))),
        counters: Arc::new(Counters::default()),
        by_pts: matches!(plan, Plan::Uri { file: true, .. }),
        t0: Instant::now(),
    };
    let caps = raw_caps(cam);
    let (pipeline, sink) = match plan {
        Plan::Pipeline(description) => user_pipeline(description, caps, cam)?,
        Plan::Uri { uri, user, live, .. } => uri_pipeline(cam, uri, user.clone(), *live, password, caps, &probes)?,
    };
    watch_elements(&pipeline, cam, &probes);
    // Raw video beyond the size limit (a user's `videotestsrc`, a decoder's output) goes no further.
    if let Some(pad) = sink.static_pad("sink") {
        watch_caps(&pad, &probes.counters);
    }
    add_rate_gate(&pipeline, &sink, plan, &probes);
    let bus = pipeline.bus().ok_or_else(|| Failure::new(FailureKind::Unsupported, "the pipeline has no bus"))?;
    Ok(Session { pipeline, sink, bus, counters: probes.counters })
}

/// The raw caps the appsink takes: RGB, at `decode_size` when set.
fn raw_caps(cam: &CameraConfig) -> gst::Caps {
    let mut caps = gst::Caps::builder("video/x-raw").field("format", "RGB");
    if let Some([w, h]) = cam.decode_size {
        caps = caps.field("width", w as i32).field("height", h as i32);
    }
    caps.build()
}

/// `caps` and JPEG, for camclassd's reduced decode.
fn with_jpeg(mut caps: gst::Caps) -> gst::Caps {
    caps.make_mut().append(gst::Caps::builder("image/jpeg").build());
    caps
}

/// The user's pipeline, parsed, its `appsink name=camclassd` set to take raw RGB, or (without
/// `decode_size`) JPEG for camclassd's reduced decode, one buffer at a time, newest wins.
fn user_pipeline(
    description: &str,
    caps: gst::Caps,
    cam: &CameraConfig,
) -> Result<(gst::Bin, gst_app::AppSink), Failure> {
    let element = gst::parse::launch(description).map_err(|e| parse_failure(&e))?;
    let bin = element.downcast::<gst::Bin>().map_err(|_| {
        Failure::new(
            FailureKind::Unsupported,
            "the pipeline is a single element; it must end in appsink name=camclassd",
        )
    })?;
    let sink = bin
        .by_name("camclassd")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| Failure::new(FailureKind::Unsupported, "the pipeline has no `appsink name=camclassd`"))?;
    let sink_caps = if cam.decode_size.is_none() { with_jpeg(caps) } else { caps };
    sink.set_caps(Some(&sink_caps));
    sink.set_max_buffers(1);
    sink.set_drop(true);
    Ok((bin, sink))
}

/// The elements a URI session needs, and the configured decoder, installed; or which package to install.
fn check_elements(decoder: &str) -> Result<(), Failure> {
    for e in ["uridecodebin", "videoscale", "videoconvert", "appsink"] {
        if gst::ElementFactory::find(e).is_none() {
            return Err(Failure::new(FailureKind::MissingPlugin, missing_element(e)));
        }
    }
    if !matches!(decoder, "auto" | "software") && gst::ElementFactory::find(decoder).is_none() {
        return Err(Failure::new(
            FailureKind::MissingPlugin,
            format!("decoder = {decoder:?}: {}", missing_element(decoder)),
        ));
    }
    Ok(())
}

fn make(factory: &str) -> Result<gst::Element, Failure> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| Failure::new(FailureKind::MissingPlugin, missing_element(factory)))
}

/// `uridecodebin` on `uri` → `videoscale` → `videoconvert` → `appsink`, linked as the streams appear.
fn uri_pipeline(
    cam: &CameraConfig,
    uri: &str,
    user: Option<String>,
    live: bool,
    password: Option<&str>,
    caps: gst::Caps,
    probes: &Probes,
) -> Result<(gst::Bin, gst_app::AppSink), Failure> {
    check_elements(&cam.decoder)?;
    let passthrough = jpeg_passthrough(cam.decode_size, &cam.decoder, hardware_jpeg_decoder());
    let pipeline = gst::Pipeline::new();
    let dec = make("uridecodebin")?;
    dec.set_property("uri", uri);
    let scale = make("videoscale")?;
    scale.set_property("add-borders", false);
    let convert = make("videoconvert")?;
    let sink_caps = if passthrough { with_jpeg(caps) } else { caps };
    let sink = gst_app::AppSink::builder().caps(&sink_caps).max_buffers(1).drop(true).sync(!live).build();
    pipeline
        .add_many([&dec, &scale, &convert, sink.upcast_ref()])
        .and_then(|_| scale.link(&convert))
        .map_err(|e| Failure::new(FailureKind::Unsupported, format!("cannot assemble the pipeline: {e}")))?;
    if passthrough {
        stop_at_whole_jpeg(&dec);
    }
    configure_source(&dec, user, password.map(str::to_string), cam);
    choose_decoder(&dec, &cam.decoder, &cam.name);
    link_streams(&pipeline, &dec, &scale, convert, &sink, passthrough, probes);
    Ok((pipeline.upcast::<gst::Bin>(), sink))
}

/// JPEG for camclassd's decoder: `uridecodebin` stops at image/jpeg where a demuxer or depayloader gives it
/// whole frames (HTTP multipart, RTSP, video files). A picture that comes straight from the source (a
/// snapshot URL, in chunks) goes to jpegdec as before.
fn stop_at_whole_jpeg(dec: &gst::Element) {
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

/// Links `uridecodebin`'s streams as they appear: the first video stream to the appsink (raw through
/// `videoscale` and `videoconvert`; JPEG, for camclassd's decoder, as it is through the rate gate), anything
/// else (audio, a second video stream) to a `fakesink`.
fn link_streams(
    pipeline: &gst::Pipeline,
    dec: &gst::Element,
    scale: &gst::Element,
    convert: gst::Element,
    sink: &gst_app::AppSink,
    passthrough: bool,
    probes: &Probes,
) {
    let weak = pipeline.downgrade();
    let (scale_sink, sink_pad) = (scale.static_pad("sink"), sink.static_pad("sink"));
    let probes = probes.clone();
    dec.connect_pad_added(move |_, pad| {
        let kind = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().to_string()));
        let kind = kind.as_deref().unwrap_or("");
        if let Some(target) = sink_pad.as_ref().filter(|t| !t.is_linked()) {
            if kind.starts_with("video/")
                && let (Some(entry), Some(exit)) = (&scale_sink, convert.static_pad("src"))
                && exit.link(target).is_ok()
            {
                let _ = pad.link(entry);
                return;
            }
            if passthrough && kind == "image/jpeg" && pad.link(target).is_ok() {
                let Probes { gate, counters, by_pts, t0 } = probes.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    counters.encoded.fetch_add(1, Ordering::Relaxed);
                    // Whole pictures, each decoded on its own by camclassd's decoder, which reads the size
                    // from the header and refuses an oversized one before it allocates: one such frame in a
                    // stream is skipped and counted like any undecodable one, the stream goes on (the
                    // session is not ended for it).
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
}

/// Watches every element of the pipeline, those already there (the user's) and those added as streams
/// appear.
///
/// A decoder that joins a stream between key frames (or loses packets) outputs grey smears that would be
/// classified as something: H.264/H.265 pictures wait for a whole key frame (`watch_decoder`), RTP
/// depayloaders ask the camera for one after a loss, libav's decoders drop corrupt frames. The depayloaders'
/// own `wait-for-keyframe` stays off: after a loss it passed on only the second slice of each two-slice key
/// frame (1 whole key frame in 10 s at 1 % loss; 4 without it). Decoders get counted, and a JPEG decoder the
/// rate gate in front of it.
fn watch_elements(pipeline: &gst::Bin, cam: &CameraConfig, probes: &Probes) {
    // A stream without whole key frames (intra refresh only, or a loss in every one) is not held back beyond
    // half the stall timeout: its pictures then pass as they come.
    let give_up = Duration::from_secs_f64((cam.stall_timeout / 2.0).max(2.0));
    let watch = Watch { by_pts: probes.by_pts, t0: probes.t0, give_up, camera: cam.name.clone() };
    let (g, c, watch_added) = (Arc::clone(&probes.gate), Arc::clone(&probes.counters), watch.clone());
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
            limit_parts(&element, &probes.counters);
        }
        watch_decoder(&element, &probes.gate, &probes.counters, watch.clone());
    }
}

/// The rate gate: frames beyond `fps` are dropped before they are scaled and converted (a file by its
/// timestamps, so that it plays at its own pace; a live source by the clock); JPEG frames, each one a key
/// frame, are dropped before they are decoded (`watch_decoder`), and this gate lets them through.
fn add_rate_gate(pipeline: &gst::Bin, sink: &gst_app::AppSink, plan: &Plan, probes: &Probes) {
    let gate_pad = match plan {
        Plan::Uri { .. } => pipeline
            .iterate_elements()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "videoscale"))
            .and_then(|e| e.static_pad("sink")),
        Plan::Pipeline(_) => sink.static_pad("sink"),
    };
    let Some(pad) = gate_pad else { return };
    let Probes { gate, counters, by_pts, t0 } = probes.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if counters.early.load(Ordering::Relaxed) {
            gst::PadProbeReturn::Ok
        } else {
            pass_gate(&gate, &counters, by_pts, t0, info)
        }
    });
}

/// RTSP and HTTP: credentials, transport and latency set on the source element `uridecodebin` makes.
fn configure_source(dec: &gst::Element, user: Option<String>, password: Option<String>, cam: &CameraConfig) {
    let transport = cam.transport;
    let latency = cam.latency_ms;
    dec.connect("source-setup", false, move |args| {
        let src = args.get(1).and_then(|v| v.get::<gst::Element>().ok())?;
        let factory = src.factory().map(|f| f.name().to_string()).unwrap_or_default();
        if let (Some(user), true) = (&user, src.has_property("user-id")) {
            src.set_property("user-id", user);
            if let (Some(pw), true) = (&password, src.has_property("user-pw")) {
                src.set_property("user-pw", pw);
            }
            // souphttpsrc would answer the challenge of whatever host a redirect points to with the camera's
            // credentials: with credentials, no redirect is followed (the failure says so).
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
