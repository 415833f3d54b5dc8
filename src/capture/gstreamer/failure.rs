//! What went wrong with a GStreamer session, in the user's terms: GStreamer's errors and missing-plugin
//! messages classified by what the user can do (check the credentials, the URL, install a package, wait for
//! the camera), and the Debian package that carries a missing element or decoder.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

use crate::capture::supervisor::{Failure, FailureKind};

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
pub(super) fn decoder_package(caps: &str) -> Option<&'static str> {
    let media = caps.split(',').next().unwrap_or(caps).trim();
    Some(match media {
        "video/x-h264" | "video/x-h265" | "video/mpeg" | "video/x-divx" => "gstreamer1.0-libav",
        "image/jpeg" | "image/png" | "video/x-vp8" | "video/x-vp9" | "application/x-rtp" => "gstreamer1.0-plugins-good",
        "video/x-av1" => "gstreamer1.0-plugins-bad",
        _ => return None,
    })
}

pub(super) fn missing_element(element: &str) -> String {
    match debian_package(element) {
        Some(p) => format!("the GStreamer element {element} is not installed: install the Debian package {p}"),
        None => format!("the GStreamer element {element} is not installed (no Debian package known for it)"),
    }
}

/// A pipeline description GStreamer cannot build: a missing element names its Debian package.
pub(super) fn parse_failure(e: &glib::Error) -> Failure {
    let text = e.message();
    if e.matches(gst::ParseError::NoSuchElement)
        && let Some(name) = text.split('"').nth(1)
    {
        return Failure::new(FailureKind::MissingPlugin, format!("pipeline: {}", missing_element(name)));
    }
    Failure::new(FailureKind::Unsupported, format!("pipeline: {text}"))
}

/// The first error waiting on the bus, as a failure of the source `shown`.
pub(super) fn bus_failure(bus: &gst::Bus, shown: &str) -> Option<Failure> {
    let mut missing = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(err) => return Some(error_failure(err, &missing, shown)),
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

/// A GStreamer error from the source `shown` in the user's terms: what happened and what to check
/// (`missing`: the caps of the `missing-plugin` messages that came before it).
pub(super) fn error_failure(err: &gst::message::Error, missing: &[String], shown: &str) -> Failure {
    let e = err.error();
    let detail = err.debug().map(|d| d.to_string()).unwrap_or_default();
    let detail_line = detail.lines().last().unwrap_or("").trim().to_string();
    if let Some(caps) = missing.first() {
        let advice = match decoder_package(caps) {
            Some(p) => format!("install the Debian package {p}"),
            None => "unknown codec: no GStreamer decoder for it is known".into(),
        };
        return Failure::new(FailureKind::MissingPlugin, format!("{shown}: no decoder for {caps}: {advice}"));
    }
    // souphttpsrc with automatic-redirect off (credentials set, `configure_source`).
    if detail.lines().any(|l| l.contains("Redirect to:")) {
        return Failure::new(
            FailureKind::NotFound,
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
            FailureKind::Auth,
            format!(
                "{shown} refused the credentials (401 Unauthorized): check the user name in source and password_file"
            ),
        );
    }
    if e.matches(gst::ResourceError::NotFound) || detail.contains("(404)") || detail.contains("404 Not Found") {
        return Failure::new(
            FailureKind::NotFound,
            format!("{shown}: not found ({}): check the URL or path", e.message()),
        );
    }
    if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
        return Failure::new(
            FailureKind::MissingPlugin,
            format!("{shown}: {} ({detail_line}): unknown codec or a missing plugin", e.message()),
        );
    }
    if e.matches(gst::CoreError::Negotiation) || detail.contains("not-negotiated") {
        return Failure::new(
            FailureKind::Unsupported,
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
            FailureKind::Unreachable,
            format!(
                "{shown}: no connection, or the connection was lost ({detail_line}): is the camera on, and the \
                     host and port right?"
            ),
        );
    }
    if e.kind::<gst::StreamError>().is_some() {
        return Failure::new(
            FailureKind::Unsupported,
            format!("{shown}: cannot decode the stream: {} ({detail_line})", e.message()),
        );
    }
    Failure::new(FailureKind::Unreachable, format!("{shown}: {} ({detail_line})", e.message()))
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
}
