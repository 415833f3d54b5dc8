//! The watch on each video decoder of a session, kept by pad probes on GStreamer's streaming threads: what
//! goes in and comes out is counted, JPEG pictures meet the rate gate and their limits before the decoder,
//! and H.264/H.265 pictures reach it only from a whole key frame on (the key-frame gate). The session's
//! counters live here, read by the capture loop when the session ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::decoder::is_video_decoder;
use super::limits::{JpegLimit, caps_oversize, jpeg_limits};
use super::rate::{RateGate, pass_gate};
use crate::capture::keyframe::{self, Codec, Framing};

/// A session's frame counts, kept by pad probes on GStreamer's streaming threads.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Frames that reached the rate gate (kept or dropped).
    pub(super) gated: AtomicU64,
    /// Frames offered to a video decoder (JPEG pictures dropped by its gate included), and frames out of it.
    pub(super) received: AtomicU64,
    pub(super) decoded: AtomicU64,
    /// Pictures not decoded while the stream waited for a whole key frame.
    pub(super) before_key: AtomicU64,
    /// The gate sits before the decoder (JPEG): the one after it lets every frame through.
    pub(super) early: AtomicBool,
    /// JPEG frames that reached the gate still encoded, for camclassd's own decoder ([`super::decoder::jpeg_passthrough`]).
    pub(super) encoded: AtomicU64,
    /// Why the session was refused by a probe (a picture too large, a part that never ends): the capture loop
    /// ends it and retries with backoff; until then the probes drop what comes.
    pub(super) refused: Mutex<Option<String>>,
}

impl Counters {
    /// Ends the session for `why` (the first reason given wins).
    pub(super) fn refuse(&self, why: impl FnOnce() -> String) {
        if let Ok(mut r) = self.refused.lock()
            && r.is_none()
        {
            *r = Some(why());
        }
    }

    pub(super) fn is_refused(&self) -> bool {
        self.refused.lock().is_ok_and(|r| r.is_some())
    }
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
    /// JPEG: the picture being received, within its limits.
    jpeg: JpegLimit,
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
            jpeg: JpegLimit::default(),
        }
    }
}

/// How a decoder's input is watched.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    /// The rate gate goes by timestamps (a file), not by the clock.
    pub(super) by_pts: bool,
    pub(super) t0: Instant,
    /// How long H.264/H.265 pictures may wait for a whole key frame.
    pub(super) give_up: Duration,
    pub(super) camera: String,
}

/// Counts what goes into a video decoder and what comes out. When what goes in is JPEG (every frame a key
/// frame), the rate gate sits on the decoder's input so that frames beyond `fps` are never decoded. H.264 and
/// H.265 pictures reach the decoder only from a whole key frame on, at the start and after a loss upstream
/// (a buffer marked discontinuous): a decoder that starts in the middle of a key frame turns it and the
/// pictures after it into smears ([`keyframe`]).
pub(super) fn watch_decoder(
    element: &gst::Element,
    gate: &Arc<Mutex<RateGate>>,
    counters: &Arc<Counters>,
    watch: Watch,
) {
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
                if let Err(why) = jpeg_limits(&mut st.jpeg, buffer, starts) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
