//! What a camera's `source` (or `pipeline`) names: a V4L2 device, replayed images, a URL, a video file or a
//! GStreamer pipeline. Vocabulary of the config file, used by validation and by the capture supervisor.

use super::CameraConfig;

/// What a camera's `source` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A V4L2 device, by index (`/dev/videoN` or `N`).
    V4l2 { index: u32, path: String },
    /// Images replayed from a file, a folder or a glob.
    Replay(String),
    /// An `rtsp://`, `http://` (… any `scheme://`) URL: GStreamer.
    Url(String),
    /// A video file (`.mp4`, `.mkv`, `.webm`, `.mov` …): GStreamer.
    Video(String),
    /// A GStreamer pipeline description (the camera's `pipeline`).
    Pipeline(String),
}

/// Video file extensions played through GStreamer (lower case).
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "m4v", "mkv", "webm", "mov", "avi", "ts", "mts"];

impl SourceKind {
    /// What a camera's config names: its `pipeline`, else its `source`.
    pub fn of(cam: &CameraConfig) -> SourceKind {
        match &cam.pipeline {
            Some(p) => SourceKind::Pipeline(p.clone()),
            None => SourceKind::parse(&cam.source),
        }
    }

    /// Whether this source needs GStreamer.
    pub fn is_gstreamer(&self) -> bool {
        matches!(self, SourceKind::Url(_) | SourceKind::Video(_) | SourceKind::Pipeline(_))
    }

    pub fn parse(source: &str) -> SourceKind {
        SourceKind::parse_with(source, |p| std::fs::canonicalize(p).ok())
    }

    /// [`SourceKind::parse`] with the link resolution given (`canonicalize` in production).
    fn parse_with(source: &str, resolve: impl Fn(&str) -> Option<std::path::PathBuf>) -> SourceKind {
        let s = source.trim();
        if s.contains("://") {
            return SourceKind::Url(s.to_string());
        }
        if std::path::Path::new(s)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            && !s.contains(['*', '?', '['])
        {
            return SourceKind::Video(s.to_string());
        }
        if let Some(n) = s.strip_prefix("/dev/video").and_then(|n| n.parse().ok()) {
            return SourceKind::V4l2 { index: n, path: s.to_string() };
        }
        // A stable name udev keeps for one camera (`/dev/v4l/by-id/usb-…-video-index0`, `/dev/v4l/by-path/…`):
        // the /dev/videoN it points to now.
        if s.starts_with("/dev/")
            && let Some(target) = resolve(s)
            && let Some(n) = target.to_str().and_then(|t| t.strip_prefix("/dev/video")).and_then(|n| n.parse().ok())
        {
            return SourceKind::V4l2 { index: n, path: s.to_string() };
        }
        if let Ok(n) = s.parse::<u32>() {
            return SourceKind::V4l2 { index: n, path: format!("/dev/video{n}") };
        }
        SourceKind::Replay(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_recognised() {
        assert_eq!(SourceKind::parse("/dev/video2"), SourceKind::V4l2 { index: 2, path: "/dev/video2".into() });
        assert_eq!(SourceKind::parse("0"), SourceKind::V4l2 { index: 0, path: "/dev/video0".into() });
        assert_eq!(SourceKind::parse("/srv/frames/*.jpg"), SourceKind::Replay("/srv/frames/*.jpg".into()));
        assert_eq!(SourceKind::parse("rtsp://cam/x"), SourceKind::Url("rtsp://cam/x".into()));
        assert_eq!(SourceKind::parse("clip.MP4"), SourceKind::Video("clip.MP4".into()));
        assert_eq!(SourceKind::parse("/srv/*.mp4"), SourceKind::Replay("/srv/*.mp4".into()));
        // A udev by-id link is the device it points to now.
        let by_id = "/dev/v4l/by-id/usb-Logitech_C920-video-index0";
        let udev = |p: &str| (p == by_id).then(|| std::path::PathBuf::from("/dev/video2"));
        assert_eq!(SourceKind::parse_with(by_id, udev), SourceKind::V4l2 { index: 2, path: by_id.into() });
        // A link to anything else under /dev is not a camera.
        assert_eq!(
            SourceKind::parse_with("/dev/disk/by-id/x", |_| Some("/dev/sda".into())),
            SourceKind::Replay("/dev/disk/by-id/x".into())
        );
    }
}
