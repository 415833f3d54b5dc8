//! Capture: one thread per camera, each handing its newest frame to a shared [`FrameHub`] (`hub`).
//!
//! Sources: V4L2 devices (`v4l2`), image files (`replay`), and with the `gstreamer` feature RTSP and HTTP
//! cameras, video files and custom pipelines (`gstreamer`). Each only opens and reads; one
//! [`supervisor::Supervisor`] per camera reports it down, backs off with jitter and reopens it. Frames beyond
//! a camera's fps limit are skipped by its thread before they are copied or decoded (`pace`).

#[cfg(feature = "gstreamer")]
pub mod gstreamer;
mod hub;
#[cfg(feature = "gstreamer")]
pub mod keyframe;
mod pace;
pub mod replay;
pub mod supervisor;
pub mod v4l2;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

pub use hub::{CapturedFrame, Consumer, FrameHub, PixelFormat};
pub use pace::{Pacer, sleep_unless_stopped};

use crate::config::CameraConfig;
pub use crate::config::{SourceKind, VIDEO_EXTENSIONS};

/// Starts a capture thread for each camera.
pub fn spawn_all(
    cameras: &[CameraConfig],
    hub: &Arc<FrameHub>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    cameras
        .iter()
        .enumerate()
        .map(|(index, cam)| {
            let (cam, hub, stop) = (cam.clone(), Arc::clone(hub), Arc::clone(stop));
            std::thread::Builder::new().name(format!("capture-{}", cam.name)).spawn(move || {
                let capture = std::panic::AssertUnwindSafe(|| match SourceKind::of(&cam) {
                    SourceKind::V4l2 { index: device, path } => v4l2::run(&cam, device, &path, index, &hub, &stop),
                    SourceKind::Replay(pattern) => replay::run(&cam, &pattern, index, &hub, &stop),
                    #[cfg(feature = "gstreamer")]
                    kind => gstreamer::run(&cam, &kind, index, &hub, &stop),
                    #[cfg(not(feature = "gstreamer"))]
                    _ => tracing::error!(camera = %cam.name, "this camclassd was built without GStreamer (cargo feature gstreamer): only V4L2 devices and image files"),
                });
                if std::panic::catch_unwind(capture).is_err() {
                    tracing::error!(camera = %cam.name, "capture thread panicked; stopping the daemon");
                    hub.fail();
                }
                hub.finish(index);
            })
        })
        .collect()
}
