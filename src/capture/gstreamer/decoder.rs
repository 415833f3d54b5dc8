//! Which video decoder a session uses, and why: `decoder = "auto"` (the highest-ranked installed one, a
//! hardware JPEG decoder preferred), `"software"` (hardware ones skipped), or an element by name; whether a
//! JPEG stream skips GStreamer's decoders for camclassd's own reduced decode; and the line that names the
//! decoder chosen and its candidates, once per change.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

/// The value `autoplug-select` returns: 0 try, 2 skip (`GstAutoplugSelectResult`).
fn select_value(skip: bool) -> Option<glib::Value> {
    let ty = glib::Type::from_name("GstAutoplugSelectResult")?;
    glib::EnumClass::with_type(ty)?.to_value(if skip { 2 } else { 0 })
}

pub(super) fn is_video_decoder(f: &gst::ElementFactory) -> bool {
    let klass = f.klass();
    klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"))
}

pub(super) fn is_hardware(f: &gst::ElementFactory) -> bool {
    f.klass().contains("Hardware")
}

/// Whether a JPEG stream's frames go to the hub still encoded, for camclassd's own decoder (libjpeg-turbo,
/// reduced in the DCT domain to the pixels the camera's models need: a 1080p frame at 480×270), rather than
/// decoded at full size and converted to RGB by GStreamer. Not with `decode_size` (its frames, and the crops
/// given in their pixels, are that size), not when `decoder` names an element, and with `"auto"` not when the
/// board has a hardware JPEG decoder (which `"auto"` prefers).
pub(super) fn jpeg_passthrough(decode_size: Option<[u32; 2]>, decoder: &str, hardware_jpeg: bool) -> bool {
    decode_size.is_none()
        && match decoder {
            "software" => true,
            "auto" => !hardware_jpeg,
            _ => false,
        }
}

/// Whether a hardware decoder for JPEG is installed (`v4l2jpegdec`, `vajpegdec`, `nvjpegdec` …); the
/// registry is read once (a snapshot URL builds a session per picture).
pub(super) fn hardware_jpeg_decoder() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let jpeg = gst::Caps::builder("image/jpeg").build();
        gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
            .into_iter()
            .any(|f| is_video_decoder(&f) && is_hardware(&f) && f.can_sink_any_caps(&jpeg))
    })
}

/// `decoder = "software"` (`mode`) skips hardware decoders; a named one skips every other video decoder.
pub(super) fn choose_decoder(dec: &gst::Element, mode: &str, camera: &str) {
    let mode = mode.to_string();
    if mode == "auto" {
        return;
    }
    if select_value(false).is_none() {
        tracing::warn!(camera = %camera, "this GStreamer cannot be told which decoder to use; decoder = {mode:?} is ignored");
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

/// The decoder last named in the log, so that each change is named once.
#[derive(Debug, Default)]
pub(super) struct DecoderLog {
    logged: Option<String>,
}

impl DecoderLog {
    /// Names the decoder a session uses and why, when it differs from the one logged last: camclassd's own
    /// when the frames delivered are JPEG (`jpeg`), otherwise the video decoder in `pipeline`. `mode` is the
    /// camera's `decoder`, `user_pipeline` whether the pipeline is the user's own.
    pub(super) fn log(&mut self, camera: &str, pipeline: &gst::Bin, jpeg: bool, mode: &str, user_pipeline: bool) {
        if jpeg {
            if self.logged.as_deref() != Some("camclassd") {
                let why = match (user_pipeline, mode) {
                    (true, _) => "the pipeline gives JPEG",
                    (_, "software") => "decoder = \"software\"",
                    _ => "decoder = \"auto\" and no hardware JPEG decoder installed",
                };
                tracing::info!(camera = %camera, "decoding image/jpeg with camclassd's libjpeg-turbo, reduced to the pixels the models need ({why}; no decode_size)");
                self.logged = Some("camclassd".into());
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
        if self.logged.as_deref() == Some(name.as_str()) {
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
        let why = match mode {
            "auto" => "decoder = \"auto\": the highest-ranked installed decoder".to_string(),
            "software" => "decoder = \"software\": the highest-ranked software decoder".to_string(),
            other => format!("decoder = {other:?}"),
        };
        tracing::info!(camera = %camera, "decoding {media} with {name} ({kind}; {why}; candidates: {})", list.join(", "));
        self.logged = Some(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
