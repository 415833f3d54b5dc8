//! V4L2 cameras through `nokhwa`: open the device with the configured (or its fastest MJPEG/YUYV) mode and
//! read its frames; the [`Supervisor`](super::supervisor::Supervisor) reopens it with backoff when it fails.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

use super::supervisor::{End, Failure, FailureKind, Output, Source, Supervisor};
use super::{CapturedFrame, FrameHub, Pacer, PixelFormat};
use crate::config::{self, CameraConfig};

/// A V4L2 device: `/dev/video<device>`, open while a session lasts.
struct V4l2<'a> {
    cam: &'a CameraConfig,
    device: u32,
    path: &'a str,
    camera: Option<nokhwa::Camera>,
}

impl Source for V4l2<'_> {
    /// Opens the device with the configured format, or the fastest MJPEG/YUYV mode it offers.
    fn open(&mut self) -> Result<(), Failure> {
        let cam = self.cam;
        let formats: &[FrameFormat] = match cam.format {
            Some(config::CameraFormat::Mjpeg) => &[FrameFormat::MJPEG],
            Some(config::CameraFormat::Yuyv) => &[FrameFormat::YUYV],
            None => &[FrameFormat::MJPEG, FrameFormat::YUYV],
        };
        let fps = cam.fps.ceil() as u32;
        let requested = match cam.resolution {
            Some([w, h]) => RequestedFormatType::Closest(CameraFormat::new(Resolution::new(w, h), formats[0], fps)),
            None => RequestedFormatType::AbsoluteHighestFrameRate,
        };
        let requested = RequestedFormat::with_formats(requested, formats);
        let cannot = |e: nokhwa::NokhwaError| {
            // A device node that is not there is a wrong path (or an unplugged camera), not a busy device.
            let kind = if Path::new(self.path).exists() { FailureKind::Unreachable } else { FailureKind::NotFound };
            Failure::new(kind, format!("cannot open camera {}: {e}", self.path))
        };
        let mut camera = nokhwa::Camera::new(CameraIndex::Index(self.device), requested).map_err(cannot)?;
        camera.open_stream().map_err(cannot)?;
        self.camera = Some(camera);
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.camera {
            Some(c) => {
                let f = c.camera_format();
                format!("{} ({} at {} fps)", self.path, f.format(), f.frame_rate())
            }
            None => self.path.to_string(),
        }
    }

    fn stream(&mut self, out: &mut Output<'_>) -> End {
        let Some(mut camera) = self.camera.take() else {
            return End::Failed(Failure::new(FailureKind::Unreachable, format!("{} is not open", self.path)));
        };
        let end = read(&mut camera, self.path, self.cam.fps, out);
        let _ = camera.stop_stream();
        end
    }
}

/// Reads an open device's frames into `out`, those beyond `fps` dropped before any copy or decode.
fn read(camera: &mut nokhwa::Camera, path: &str, fps: f64, out: &mut Output<'_>) -> End {
    let mut pacer = Pacer::new(fps);
    while !out.stopping() {
        let buffer = match camera.frame() {
            Ok(b) => b,
            Err(e) => {
                return End::Failed(Failure::new(
                    FailureKind::Unreachable,
                    format!("{path} stopped delivering frames: {e}"),
                ));
            }
        };
        if !pacer.due(Instant::now()) {
            continue;
        }
        let res = buffer.resolution();
        let format = match buffer.source_frame_format() {
            FrameFormat::MJPEG => PixelFormat::Encoded,
            FrameFormat::YUYV => PixelFormat::Yuyv { width: res.width(), height: res.height() },
            FrameFormat::RAWRGB => PixelFormat::Rgb8 { width: res.width(), height: res.height() },
            other => {
                return End::Failed(Failure::new(
                    FailureKind::Unsupported,
                    format!("{path}: unsupported pixel format {other}; ask for mjpeg or yuyv"),
                ));
            }
        };
        let mut data = out.buffer();
        data.extend_from_slice(buffer.buffer());
        out.put(CapturedFrame { data, format, captured_at: SystemTime::now(), captured: Instant::now() });
    }
    End::Stopped
}

/// The capture thread of a V4L2 camera.
pub fn run(cam: &CameraConfig, device: u32, path: &str, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    let mut source = V4l2 { cam, device, path, camera: None };
    Supervisor::new(&cam.name, index, hub, stop).run(&mut source);
}
