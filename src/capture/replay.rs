//! Replay sources: image files played as a camera, paced at its fps, for demos, tests and offline use.
//!
//! The source is one image, a folder (its JPEG/PNG files in name order), or a glob such as
//! `/srv/frames/*.jpg` — a video saved as a sequence of JPEG frames is a glob. It loops unless `loop = false`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::{Backoff, CapturedFrame, FrameHub, Pacer, PixelFormat, sleep_unless_stopped};
use crate::config::CameraConfig;

/// The image files a replay source names, in play order.
pub fn list(source: &str) -> Result<Vec<PathBuf>, String> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
    };
    let path = Path::new(source);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| format!("cannot list {source}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else if source.contains(['*', '?', '[']) {
        glob::glob(source)
            .map_err(|e| format!("bad glob {source:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else {
        return Err(format!("{source} does not exist"));
    };
    files.sort();
    if files.is_empty() {
        return Err(format!("no JPEG or PNG images in {source}"));
    }
    Ok(files)
}

/// The capture thread of a replay camera.
pub fn run(cam: &CameraConfig, source: &str, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    let mut backoff = Backoff::default();
    let mut failing = false;
    let mut pacer = Pacer::new(cam.fps);
    loop {
        let files = match list(source) {
            Ok(files) => files,
            Err(e) => {
                let delay = backoff.next_delay();
                if !failing {
                    tracing::warn!(camera = %cam.name, "replay source unavailable: {e}; retrying with backoff up to {}s", Backoff::MAX.as_secs());
                    failing = true;
                }
                if !sleep_unless_stopped(delay, stop) {
                    return;
                }
                continue;
            }
        };
        if failing {
            tracing::info!(camera = %cam.name, "replay source available again");
            failing = false;
        }
        backoff.reset();
        tracing::info!(camera = %cam.name, images = files.len(), fps = cam.fps, looping = cam.looping, "replaying {source}");
        for file in &files {
            pacer.wait(stop);
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let mut data = hub.buffer(index);
            let read = std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut data));
            match read {
                Ok(_) => hub.put(
                    index,
                    CapturedFrame {
                        data,
                        format: PixelFormat::Encoded,
                        captured_at: SystemTime::now(),
                        captured: Instant::now(),
                    },
                ),
                Err(e) => tracing::warn!(camera = %cam.name, "skipping {}: {e}", file.display()),
            }
        }
        if !cam.looping {
            tracing::info!(camera = %cam.name, "replay finished");
            return;
        }
    }
}
