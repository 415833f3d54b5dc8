//! Replay sources: image files played as a camera, paced at its fps, for demos, tests and offline use.
//!
//! The source is one image, a folder (its JPEG/PNG files in name order), a glob such as `/srv/frames/*.jpg`
//! (a video saved as numbered JPEG frames), or an MJPEG stream file (`.mjpeg`/`.mjpg`: JPEG frames back to
//! back, as `ffmpeg -f mjpeg` or a camera dump writes them). It loops unless `loop = false`. A named pipe
//! (`mkfifo /run/cam.mjpeg`) carries a live MJPEG stream from another program: its frames are delivered as
//! they arrive, those beyond the camera's fps skipped.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::{CapturedFrame, FrameHub, Pacer, PixelFormat, sleep_unless_stopped};
use crate::backoff::Backoff;
use crate::config::CameraConfig;

/// The image files a replay source names, in play order.
pub fn list(source: &str) -> Result<Vec<PathBuf>, String> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "mjpeg" | "mjpg"))
    };
    let path = Path::new(source);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| format!("cannot list {source}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect()
    } else if path.is_file() || is_fifo(path) {
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

/// An MJPEG stream file is read whole; larger ones are refused rather than risk the board's memory.
const MAX_STREAM_BYTES: u64 = 512 << 20;

fn captured(data: Vec<u8>) -> CapturedFrame {
    CapturedFrame { data, format: PixelFormat::Encoded, captured_at: SystemTime::now(), captured: Instant::now() }
}

/// Waits for the next frame's turn; false when the daemon is stopping.
fn pace(pacer: &mut Pacer, stop: &AtomicBool) -> bool {
    pacer.wait(stop);
    !stop.load(std::sync::atomic::Ordering::Relaxed)
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The most a named pipe may send without a JPEG frame boundary.
const MAX_PIPE_FRAME: usize = 64 << 20;

/// Reads a live MJPEG stream from a named pipe until its writer closes it (or the daemon stops), delivering
/// each frame as it completes: at the next frame's start, or at its end-of-image marker when the writer
/// paused there. Returns the frames delivered. Reads block while the writer is silent: the staleness alarm
/// (daemon/watchdog.rs) reports such a camera.
fn stream_pipe(file: &Path, index: usize, hub: &FrameHub, stop: &AtomicBool, pacer: &mut Pacer) -> Result<u64, String> {
    const SOI: [u8; 2] = [0xFF, 0xD8];
    const EOI: [u8; 2] = [0xFF, 0xD9];
    let mut pipe = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    // Where the search for a frame boundary resumes: bytes before it were searched by an earlier read.
    let mut searched = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    let mut delivered = 0u64;
    let mut deliver = |frame: &[u8], delivered: &mut u64| {
        // A live source: frames beyond the fps are skipped, not waited for.
        if frame.starts_with(&SOI) && pacer.due(Instant::now()) {
            let mut data = hub.buffer(index);
            data.extend_from_slice(frame);
            hub.put(index, captured(data));
            *delivered += 1;
        }
    };
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(delivered);
        }
        let n = pipe.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            if !pending.is_empty() {
                deliver(&pending, &mut delivered);
            }
            return Ok(delivered);
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        // A boundary may straddle the previous read's end: search again from 3 bytes before it.
        let mut from = searched.saturating_sub(3);
        while let Some(i) = frame_end(&pending[from..]) {
            let end = from + i;
            deliver(&pending[start..end], &mut delivered);
            start = end;
            from = end;
        }
        if n < chunk.len() && pending.len() > start && pending.ends_with(&EOI) {
            deliver(&pending[start..], &mut delivered);
            start = pending.len();
        }
        pending.drain(..start);
        searched = pending.len();
        if pending.len() > MAX_PIPE_FRAME {
            return Err(format!("no JPEG frame boundary in {} MiB: not an MJPEG stream", MAX_PIPE_FRAME >> 20));
        }
    }
}

/// Where the first JPEG frame of `stream` ends: at an end-of-image marker followed by the next frame's
/// start-of-image marker (`None`: no such boundary yet).
fn frame_end(stream: &[u8]) -> Option<usize> {
    stream.windows(4).position(|w| w == [0xFF, 0xD9, 0xFF, 0xD8]).map(|i| i + 2)
}

fn is_mjpeg_stream(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mjpeg") || e.eq_ignore_ascii_case("mjpg"))
}

/// Splits an MJPEG stream into its JPEG frames: a frame ends where an end-of-image marker is followed by the
/// next frame's start-of-image marker (or the file ends).
pub fn mjpeg_frames(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= stream.len() {
            return None;
        }
        let rest = &stream[start..];
        let end = frame_end(rest).unwrap_or(rest.len());
        start += end;
        Some(&rest[..end])
    })
}

/// The capture thread of a replay camera.
///
/// A pass that delivers no frame (every file empty, unreadable or too big) counts as an unavailable source:
/// it is logged once and retried with backoff, never spun on; each skipped file is named once per change of
/// the file list.
pub fn run(cam: &CameraConfig, source: &str, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    let mut backoff = Backoff::default();
    let mut failing = false;
    let mut announced = usize::MAX;
    let mut warned: std::collections::HashSet<std::path::PathBuf> = std::collections::HashSet::new();
    let mut pacer = Pacer::staggered(cam.fps, index);
    loop {
        let files = match list(source) {
            Ok(files) => files,
            Err(e) => {
                let delay = backoff.next_delay();
                if !failing {
                    // A source that slipped past validation as a mistyped URL must not show its password.
                    let e = crate::config::url::redact_text(&e);
                    tracing::warn!(camera = %cam.name, "replay source unavailable: {e}; retrying with backoff up to {}s", Backoff::MAX.as_secs());
                    failing = true;
                }
                if !sleep_unless_stopped(delay, stop) {
                    return;
                }
                continue;
            }
        };
        // Once per change of the file list, not once per pass: a one-image loop at 5 fps would flood the journal.
        if files.len() != announced {
            tracing::info!(camera = %cam.name, images = files.len(), fps = cam.fps, looping = cam.looping, "replaying {}", crate::config::url::redact(source));
            announced = files.len();
            warned.clear();
        }
        let mut skip = |file: &Path, why: String| {
            if warned.insert(file.to_path_buf()) {
                tracing::warn!(camera = %cam.name, "skipping {}: {why}", file.display());
            }
        };
        let mut delivered = 0u64;
        let mut stream = Vec::new();
        for file in &files {
            if is_fifo(file) {
                match stream_pipe(file, index, hub, stop, &mut pacer) {
                    Ok(n) => delivered += n,
                    Err(e) => skip(file, e),
                }
                continue;
            }
            if is_mjpeg_stream(file) {
                if std::fs::metadata(file).is_ok_and(|m| m.len() > MAX_STREAM_BYTES) {
                    skip(file, "MJPEG streams over 512 MiB are not replayed; split it".into());
                    continue;
                }
                stream.clear();
                if let Err(e) = std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut stream)) {
                    skip(file, e.to_string());
                    continue;
                }
                if stream.is_empty() {
                    skip(file, "empty file".into());
                }
                for frame in mjpeg_frames(&stream) {
                    if !pace(&mut pacer, stop) {
                        return;
                    }
                    let mut data = hub.buffer(index);
                    data.extend_from_slice(frame);
                    hub.put(index, captured(data));
                    delivered += 1;
                }
                continue;
            }
            if !pace(&mut pacer, stop) {
                return;
            }
            let mut data = hub.buffer(index);
            match std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut data)) {
                Ok(_) => {
                    hub.put(index, captured(data));
                    delivered += 1;
                }
                Err(e) => skip(file, e.to_string()),
            }
        }
        if delivered > 0 {
            if failing {
                tracing::info!(camera = %cam.name, "replay source available again");
                failing = false;
            }
            backoff.reset();
        } else if cam.looping {
            let delay = backoff.next_delay();
            if !failing {
                tracing::warn!(camera = %cam.name, "replay source {source} gave no frame ({} files); retrying with backoff up to {}s", files.len(), Backoff::MAX.as_secs());
                failing = true;
            }
            if !sleep_unless_stopped(delay, stop) {
                return;
            }
            continue;
        }
        if !cam.looping {
            tracing::info!(camera = %cam.name, "replay finished");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mjpeg_stream_splits_into_its_frames() {
        let a = [0xFF, 0xD8, 1, 2, 0xFF, 0x00, 0xFF, 0xD9];
        let b = [0xFF, 0xD8, 3, 0xFF, 0xD9];
        let stream: Vec<u8> = a.iter().chain(&b).copied().collect();
        let frames: Vec<&[u8]> = mjpeg_frames(&stream).collect();
        assert_eq!(frames, [&a[..], &b[..]]);
        assert_eq!(mjpeg_frames(&[]).count(), 0);
    }
}
