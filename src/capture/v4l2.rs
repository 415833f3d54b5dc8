//! V4L2 cameras through `nokhwa`: open, stream MJPEG or YUYV frames, reopen with backoff when it fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

use super::{CapturedFrame, FrameHub, Pacer, PixelFormat, sleep_unless_stopped};
use crate::backoff::Backoff;
use crate::config::{self, CameraConfig};

/// Opens the device with the configured format, or the fastest MJPEG/YUYV mode it offers.
fn open(cam: &CameraConfig, device: u32) -> Result<nokhwa::Camera, String> {
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
    let mut camera = nokhwa::Camera::new(CameraIndex::Index(device), requested).map_err(|e| e.to_string())?;
    camera.open_stream().map_err(|e| e.to_string())?;
    Ok(camera)
}

/// The capture thread of a V4L2 camera.
pub fn run(cam: &CameraConfig, device: u32, path: &str, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    let mut backoff = Backoff::default();
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let mut camera = match open(cam, device) {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                if !failing {
                    tracing::warn!(camera = %cam.name, device = path, "cannot open camera: {e}; retrying with backoff up to {}s", Backoff::MAX.as_secs());
                    failing = true;
                } else {
                    tracing::debug!(camera = %cam.name, "still cannot open {path}: {e}; next try in {delay:?}");
                }
                if !sleep_unless_stopped(delay, stop) {
                    return;
                }
                continue;
            }
        };
        let format = camera.camera_format();
        tracing::info!(camera = %cam.name, device = path, format = %format, "camera streaming");
        let mut delivered = false;
        let mut pacer = Pacer::new(cam.fps);
        while !stop.load(Ordering::Relaxed) {
            let buffer = match camera.frame() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(camera = %cam.name, device = path, "camera stopped delivering frames: {e}; reopening");
                    break;
                }
            };
            if !delivered {
                // Only a camera that delivers counts as recovered: one that opens and fails at once backs off.
                delivered = true;
                backoff.reset();
            }
            // The fps limit: frames not needed are dropped here, before any copy or decode.
            if !pacer.due(Instant::now()) {
                continue;
            }
            let res = buffer.resolution();
            let pixel_format = match buffer.source_frame_format() {
                FrameFormat::MJPEG => PixelFormat::Encoded,
                FrameFormat::YUYV => PixelFormat::Yuyv { width: res.width(), height: res.height() },
                FrameFormat::RAWRGB => PixelFormat::Rgb8 { width: res.width(), height: res.height() },
                other => {
                    tracing::warn!(camera = %cam.name, "unsupported pixel format {other}; ask for mjpeg or yuyv");
                    break;
                }
            };
            let mut data = hub.buffer(index);
            data.extend_from_slice(buffer.buffer());
            hub.put(
                index,
                CapturedFrame { data, format: pixel_format, captured_at: SystemTime::now(), captured: Instant::now() },
            );
        }
        let _ = camera.stop_stream();
        failing = true;
        if !sleep_unless_stopped(backoff.next_delay(), stop) {
            return;
        }
    }
}
