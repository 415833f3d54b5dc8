//! Package advice: the Debian package that carries a GStreamer element (or a family of them), or a decoder
//! for a stream's caps, so that a missing plugin is reported with the line that installs it.

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
