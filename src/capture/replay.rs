//! Replay sources: image files played as a camera, paced at its fps, for demos, tests and offline use.
//!
//! The source is one image, a folder (its JPEG/PNG files in name order), a glob such as `/srv/frames/*.jpg`
//! (a video saved as numbered JPEG frames), or an MJPEG stream file (`.mjpeg`/`.mjpg`: JPEG frames back to
//! back, as `ffmpeg -f mjpeg` or a camera dump writes them). It loops unless `loop = false`. A named pipe
//! (`mkfifo /run/cam.mjpeg`) carries a live MJPEG stream from another program: its frames are delivered as
//! they arrive, those beyond the camera's fps skipped. A replay only lists and reads its files; the
//! [`Supervisor`] retries one that gives nothing.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use super::supervisor::{End, Failure, FailureKind, Output, Source, Supervisor};
use super::{CapturedFrame, FrameHub, Pacer, PixelFormat};
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
fn pace(pacer: &mut Pacer, out: &Output<'_>) -> bool {
    pacer.wait(out.stop_flag());
    !out.stopping()
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The most a named pipe may send without a JPEG frame boundary.
const MAX_PIPE_FRAME: usize = 64 << 20;

/// Reads a live MJPEG stream from a named pipe until its writer closes it (or the daemon stops), delivering
/// each frame as it completes: at the next frame's start, or at its end-of-image marker when the writer
/// paused there. Reads block while the writer is silent: the staleness alarm
/// (daemon/watchdog.rs) reports such a camera.
fn stream_pipe(file: &Path, out: &mut Output<'_>, pacer: &mut Pacer) -> Result<(), String> {
    const SOI: [u8; 2] = [0xFF, 0xD8];
    const EOI: [u8; 2] = [0xFF, 0xD9];
    let mut pipe = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    // Where the search for a frame boundary resumes: bytes before it were searched by an earlier read.
    let mut searched = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    let mut deliver = |frame: &[u8], out: &mut Output<'_>| {
        // A live source: frames beyond the fps are skipped, not waited for.
        if frame.starts_with(&SOI) && pacer.due(Instant::now()) {
            let mut data = out.buffer();
            data.extend_from_slice(frame);
            out.put(captured(data));
        }
    };
    loop {
        if out.stopping() {
            return Ok(());
        }
        let n = pipe.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            if !pending.is_empty() {
                deliver(&pending, out);
            }
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        // A boundary may straddle the previous read's end: search again from 3 bytes before it.
        let mut from = searched.saturating_sub(3);
        while let Some(i) = frame_end(&pending[from..]) {
            let end = from + i;
            deliver(&pending[start..end], out);
            start = end;
            from = end;
        }
        if n < chunk.len() && pending.len() > start && pending.ends_with(&EOI) {
            deliver(&pending[start..], out);
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

/// A replay source: each session is one pass over the files it names, listed again at each open (files
/// added to a folder join the loop).
///
/// A looping pass that delivers no frame (every file empty, unreadable or too big) is a failure: logged
/// once and retried with backoff, never spun on; each skipped file is named once per change of the file
/// list.
#[derive(Debug)]
struct Replay<'a> {
    cam: &'a CameraConfig,
    source: &'a str,
    files: Vec<PathBuf>,
    /// The length of the file list last announced.
    announced: usize,
    warned: HashSet<PathBuf>,
    pacer: Pacer,
    /// An MJPEG stream file's bytes, the buffer kept between passes.
    stream: Vec<u8>,
}

impl Replay<'_> {
    fn skip(&mut self, file: &Path, why: String) {
        if self.warned.insert(file.to_path_buf()) {
            tracing::warn!(camera = %self.cam.name, "skipping {}: {why}", file.display());
        }
    }

    /// Plays one file (an image, an MJPEG stream file, a named pipe) into `out`; false when the daemon stops.
    fn play(&mut self, file: &Path, out: &mut Output<'_>) -> bool {
        if is_fifo(file) {
            if let Err(e) = stream_pipe(file, out, &mut self.pacer) {
                self.skip(file, e);
            }
            return !out.stopping();
        }
        if is_mjpeg_stream(file) {
            if std::fs::metadata(file).is_ok_and(|m| m.len() > MAX_STREAM_BYTES) {
                self.skip(file, "MJPEG streams over 512 MiB are not replayed; split it".into());
                return true;
            }
            let mut stream = std::mem::take(&mut self.stream);
            stream.clear();
            let mut going = true;
            match std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut stream)) {
                Err(e) => self.skip(file, e.to_string()),
                Ok(0) => self.skip(file, "empty file".into()),
                Ok(_) => {
                    for frame in mjpeg_frames(&stream) {
                        if !pace(&mut self.pacer, out) {
                            going = false;
                            break;
                        }
                        let mut data = out.buffer();
                        data.extend_from_slice(frame);
                        out.put(captured(data));
                    }
                }
            }
            self.stream = stream;
            return going;
        }
        if !pace(&mut self.pacer, out) {
            return false;
        }
        let mut data = out.buffer();
        match std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut data)) {
            Ok(_) => out.put(captured(data)),
            Err(e) => {
                out.recycle(data);
                self.skip(file, e.to_string());
            }
        }
        true
    }
}

impl Source for Replay<'_> {
    fn open(&mut self) -> Result<(), Failure> {
        self.files =
            list(self.source).map_err(|e| Failure::new(FailureKind::NotFound, format!("replay source: {e}")))?;
        // Once per change of the file list, not once per pass: a one-image loop at 5 fps would flood the journal.
        if self.files.len() != self.announced {
            let cam = self.cam;
            tracing::info!(camera = %cam.name, images = self.files.len(), fps = cam.fps, looping = cam.looping, "replaying {}", crate::config::url::redact(self.source));
            self.announced = self.files.len();
            self.warned.clear();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the replay of {}", crate::config::url::redact(self.source))
    }

    /// One pass over the files.
    fn stream(&mut self, out: &mut Output<'_>) -> End {
        let files = std::mem::take(&mut self.files);
        let going = files.iter().all(|file| self.play(file, out));
        let count = files.len();
        self.files = files;
        if !going {
            return End::Stopped;
        }
        if !self.cam.looping {
            return End::Finished("replay finished".into());
        }
        if out.delivered() == 0 {
            return End::Failed(Failure::new(
                FailureKind::Ended,
                format!("replay source {} gave no frame ({count} files)", self.source),
            ));
        }
        End::Again(Duration::ZERO)
    }
}

/// The capture thread of a replay camera.
pub fn run(cam: &CameraConfig, source: &str, index: usize, hub: &FrameHub, stop: &AtomicBool) {
    let mut replay = Replay {
        cam,
        source,
        files: Vec::new(),
        announced: usize::MAX,
        warned: HashSet::new(),
        pacer: Pacer::staggered(cam.fps, index),
        stream: Vec::new(),
    };
    Supervisor::new(&cam.name, index, hub, stop).run(&mut replay);
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
