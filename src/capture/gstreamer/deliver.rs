//! Delivery of a GStreamer session's samples to the hub: RGB rows copied out of GStreamer's padded layout
//! (or a JPEG as it came, for camclassd's decoder) into a recycled buffer, resolution changes noted, samples
//! without a usable layout skipped and said once.

use std::time::{Instant, SystemTime};

use gstreamer as gst;

use crate::capture::supervisor::Output;
use crate::capture::{CapturedFrame, PixelFormat};

/// What delivery remembers across a camera's sessions.
#[derive(Debug, Default)]
pub(super) struct Delivery {
    size: Option<(u32, u32)>,
    resolution_changes: u64,
    warned_layout: bool,
    /// The last frame delivered was a JPEG, for camclassd's decoder.
    pub(super) jpeg: bool,
}

impl Delivery {
    /// Copies a JPEG (for camclassd's decoder) into a recycled buffer and hands it to the hub.
    fn deliver_jpeg(&mut self, bytes: &[u8], out: &mut Output<'_>) {
        self.jpeg = true;
        let mut data = out.buffer();
        data.extend_from_slice(bytes);
        let (captured_at, captured) = (SystemTime::now(), Instant::now());
        out.put(CapturedFrame { data, format: PixelFormat::Encoded, captured_at, captured });
    }

    /// Copies a sample's RGB rows (or its JPEG, for camclassd's decoder) into a recycled buffer and hands it
    /// to the hub (`camera`'s slot, through `out`); false when skipped.
    pub(super) fn deliver(&mut self, sample: &gst::Sample, camera: &str, out: &mut Output<'_>) -> bool {
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
            self.deliver_jpeg(bytes, out);
            return true;
        }
        let Some((w, h)) = size else {
            if !self.warned_layout {
                tracing::warn!(camera = %camera, "a {} frame without a size; skipped", s.name());
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
                tracing::info!(camera = %camera, "resolution changed from {}x{} to {w}x{h} ({} changes so far)", old.0, old.1, self.resolution_changes);
            }
        }
        self.size = Some((w, h));
        if jpeg {
            self.deliver_jpeg(bytes, out);
            return true;
        }
        self.jpeg = false;
        let row = w as usize * 3;
        // GStreamer pads RGB rows to 4 bytes.
        let stride = (row + 3) & !3;
        let mut data = out.buffer();
        if bytes.len() == row * h as usize {
            data.extend_from_slice(bytes);
        } else if bytes.len() >= stride * h as usize {
            for y in 0..h as usize {
                data.extend_from_slice(&bytes[y * stride..y * stride + row]);
            }
        } else {
            if !self.warned_layout {
                tracing::warn!(camera = %camera, "a {w}x{h} frame of {} bytes is not RGB rows; skipped", bytes.len());
                self.warned_layout = true;
            }
            out.recycle(data);
            return false;
        }
        out.put(CapturedFrame {
            data,
            format: PixelFormat::Rgb8 { width: w, height: h },
            captured_at: SystemTime::now(),
            captured: Instant::now(),
        });
        true
    }
}
