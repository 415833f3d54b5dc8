//! Size and byte limits on what reaches a decoder: a picture beyond the size camclassd's own decoder takes,
//! a JPEG without a frame header, a multipart part that never ends. Each is refused before any decoder or
//! demuxer allocates for it, and the session is ended (a 20000×20000 snapshot took 5 GB in jpegdec, a part
//! without a boundary grew multipartdemux by gigabytes a second).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::gate::Counters;

/// The most bytes one picture may take on its way to a decoder (a multipart part, a snapshot's body): three
/// bytes a pixel of the largest picture decoded, well beyond any JPEG of that size. A part that never ends
/// (a hostile or broken server) grew multipartdemux's buffer by gigabytes a second and then crashed it.
pub(super) const MAX_PICTURE_BYTES: usize = 3 * crate::preprocess::MAX_PIXELS as usize;
/// How far into a JPEG its frame header (SOF) is looked for: past that, with none found, it is refused.
const MAX_JPEG_HEADER: usize = 1 << 20;

/// Why a `width`×`height` picture is refused: the limit camclassd's own decoder has, applied before any
/// decoder allocates for it (a 20000×20000 snapshot took 5 GB in jpegdec and videoconvert).
pub(super) fn oversize(width: u32, height: u32) -> Option<String> {
    use crate::preprocess::{MAX_PIXELS, MAX_SIDE, PreprocessError};
    (width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS)
        .then(|| format!("refused: {}", PreprocessError::TooLarge { width, height }))
}

/// Why raw or encoded video caps are refused: a size beyond the limit (`None` when they have no size).
pub(super) fn caps_oversize(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let side = |key: &str| u32::try_from(s.get::<i32>(key).ok()?).ok();
    oversize(side("width")?, side("height")?)
}

/// Refuses caps beyond the size limit on `pad` (a decoder's input, the appsink's): the caps are dropped, so
/// nothing downstream negotiates or allocates for them, and the session ends.
pub(super) fn watch_caps(pad: &gst::Pad, counters: &Arc<Counters>) {
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
pub(super) fn limit_parts(demux: &gst::Element, counters: &Arc<Counters>) {
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

/// A JPEG picture on its way to a decoder, chunk by chunk: its bytes so far, and its first bytes until its
/// size is known.
#[derive(Debug)]
pub(super) struct JpegLimit {
    picture_bytes: usize,
    header: Vec<u8>,
    sized: bool,
}

impl Default for JpegLimit {
    fn default() -> JpegLimit {
        // Nothing to look for until a picture starts.
        JpegLimit { picture_bytes: 0, header: Vec::new(), sized: true }
    }
}

/// A JPEG chunk on its way to a decoder: the picture's size, read from its header (SOF) as soon as the chunks
/// so far hold it, and its bytes, each within its limit; `Err` says why the picture is refused.
pub(super) fn jpeg_limits(st: &mut JpegLimit, buffer: &gst::BufferRef, starts: bool) -> Result<(), String> {
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
