//! The sample store of a taught model: crops of its regions, kept on disk for labelling.
//!
//! A region of a taught model offers its crop (the pixels its model sees, before the resize) at most once
//! per `[teach] sample_every`. The store keeps it when
//!
//! - **it is new**: its 8x8 colour thumbnail differs from every kept sample's (labelled ones included) by
//!   more than `[teach] diversity` (mean absolute difference, a fraction of full scale), so that a scene that
//!   stands still keeps one picture and each new lighting or state adds one; or
//! - **the model doubts** (the review queue): since the last offer, the region's answer was under its
//!   threshold ("unknown"), its two best classes were close ([`DOUBT_MARGIN`]), or its state flipped. Such a
//!   crop is kept unless a kept one is nearly the same (a quarter of `diversity`).
//!
//! On disk, under the model's folder: `samples/<id>.jpg` (new) and `samples/<id>.review.jpg` (doubt) wait
//! for a label; labelling moves a sample to `labels/<class>/<id>.jpg`, the ImageFolder tree `camclassd
//! train` reads; deleting moves it to `trash/` (emptied at the next start), so that the page can undo. Ids
//! are the capture time in milliseconds and a sequence number: they sort by time. Everything survives a
//! restart (the thumbnails are made again from the files, on the store's own thread).
//!
//! Bounds: at most `[teach] max_samples` unlabelled samples (the oldest unlabelled one goes first), at most
//! `[teach] max_mb` of pictures in all (labelled ones are never dropped: nothing new is kept beyond it), and
//! nothing is written while the file system has less than [`MIN_FREE_BYTES`] or 5 % free. The JPEG is
//! written by the store's thread: a slow SD card never holds a camera's frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::postprocess::Classification;
use crate::preprocess::snapshot::Snap;

/// The longest side of a kept crop, in pixels (never enlarged): more than a 224-pixel model sees.
pub const SAMPLE_SIZE: u32 = 320;

/// Two best classes closer than this: the answer is doubtful.
pub const DOUBT_MARGIN: f32 = 0.3;

/// The free space a file system keeps: nothing is written below it (or below 5 % of its size).
pub const MIN_FREE_BYTES: u64 = 256 << 20;

/// A thumbnail's side: 8x8 pixels, 3 channels.
const THUMB: usize = 8;
type Signature = [u8; THUMB * THUMB * 3];

/// The store's bounds and pace (`[teach]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_samples: usize,
    pub max_bytes: u64,
    pub every: Duration,
    pub diversity: f32,
}

/// Why a sample was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Unlike every kept sample.
    New,
    /// The model was unsure of it, or its answer flipped: the review queue.
    Doubt,
}

/// A sample as the page and the API list it.
#[derive(Debug, Clone, Serialize)]
pub struct SampleInfo {
    pub id: String,
    /// Its label; `None` while it waits for one.
    pub class: Option<String>,
    pub reason: Reason,
    /// The model's answer when it doubted (this run only).
    pub guess: Option<String>,
    pub score: Option<f32>,
    pub camera: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    class: Option<usize>,
    reason: Reason,
    guess: Option<(usize, f32)>,
    signature: Signature,
    bytes: u64,
    /// The region it came from (this run only).
    from: Option<usize>,
    /// Its file is on disk (the store's thread writes it after it is kept): only then is it listed.
    written: bool,
}

/// Where a region of a taught model stands with the store.
#[derive(Debug, Clone, Default)]
struct RegionState {
    camera: String,
    region: String,
    last_offer: Option<Instant>,
    /// The class it answered last.
    last_answer: Option<usize>,
    /// A doubt since the last offer: the answer then (class, score).
    doubt: Option<(usize, f32)>,
}

#[derive(Debug)]
struct Index {
    limits: Limits,
    /// The samples on disk at the start have been read: offers wait for it (diversity needs them).
    loaded: bool,
    entries: BTreeMap<String, Entry>,
    /// Bytes of every kept picture.
    bytes: u64,
    regions: Vec<RegionState>,
    sequence: u64,
    /// Samples refused for the bounds or the disk, for the log (at powers of two).
    refused: u64,
}

/// What the store's thread does: write a kept sample.
enum Job {
    Write { path: PathBuf, jpeg: Vec<u8>, id: String },
}

/// One taught model's samples.
#[derive(Debug)]
pub struct Samples {
    name: String,
    classes: Vec<String>,
    dir: PathBuf,
    index: Mutex<Index>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    /// The store's thread, joined (for a while) at shutdown.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Why a label or delete could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("no class {0:?}: this model's classes are {1:?}")]
    Class(String, Vec<String>),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Write { path, .. } => write!(f, "Write({})", path.display()),
        }
    }
}

/// Whether `id` is a sample id (`<13 digits>-<digits>`): nothing else reaches the file system.
pub fn valid_id(id: &str) -> bool {
    let Some((ms, seq)) = id.split_once('-') else { return false };
    ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&seq.len())
        && seq.bytes().all(|b| b.is_ascii_digit())
}

/// The id and reason a file name in `samples/` or a label folder spells, if it is a sample's.
fn parse_name(name: &str) -> Option<(String, Reason)> {
    let stem = name.strip_suffix(".jpg")?;
    let (id, reason) = match stem.strip_suffix(".review") {
        Some(id) => (id, Reason::Doubt),
        None => (stem, Reason::New),
    };
    valid_id(id).then(|| (id.to_string(), reason))
}

/// The 8x8 colour thumbnail of a picture (area means).
fn signature(rgb: &[u8], width: u32, height: u32) -> Signature {
    let mut sums = [0u32; THUMB * THUMB * 3];
    let mut counts = [0u32; THUMB * THUMB];
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    for y in 0..h {
        let ty = y * THUMB / h;
        for x in 0..w {
            let tx = x * THUMB / w;
            let i = (y * w + x) * 3;
            let Some(p) = rgb.get(i..i + 3) else { continue };
            let t = ty * THUMB + tx;
            counts[t] += 1;
            for c in 0..3 {
                sums[t * 3 + c] += u32::from(p[c]);
            }
        }
    }
    let mut out = [0u8; THUMB * THUMB * 3];
    for (i, v) in out.iter_mut().enumerate() {
        *v = (sums[i] / counts[i / 3].max(1)) as u8;
    }
    out
}

/// Mean absolute difference of two thumbnails, 0–1.
fn distance(a: &Signature, b: &Signature) -> f32 {
    let sum: u32 = a.iter().zip(b).map(|(x, y)| u32::from(x.abs_diff(*y))).sum();
    sum as f32 / (a.len() as f32 * 255.0)
}

/// Whether the file system of `dir` has room for `bytes` more and still keeps its reserve.
fn room_on_disk(dir: &Path, bytes: u64) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: statvfs only writes the struct it is given; the path is a NUL-terminated string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return false;
    }
    let block = s.f_frsize as u64;
    let (free, total) = (s.f_bavail as u64 * block, s.f_blocks as u64 * block);
    free.saturating_sub(bytes) >= MIN_FREE_BYTES.max(total / 20)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Samples {
    /// The store of the taught model `name` in `dir` (made when missing, with a label folder per class);
    /// its thread reads the kept samples' thumbnails, then writes what is kept.
    pub fn open(name: &str, classes: &[String], dir: &Path, limits: Limits) -> Result<Arc<Samples>, SampleError> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| SampleError::Io(p, e)
        };
        for sub in
            ["samples", "trash"].iter().map(|s| dir.join(s)).chain(classes.iter().map(|c| dir.join("labels").join(c)))
        {
            std::fs::create_dir_all(&sub).map_err(io(&sub))?;
        }
        // What was deleted before the restart is gone for good now.
        if let Ok(entries) = std::fs::read_dir(dir.join("trash")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // A write cut by a stop or a crash.
        if let Ok(entries) = std::fs::read_dir(dir.join("samples")) {
            for e in entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "tmp")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let samples = Arc::new(Samples {
            name: name.to_string(),
            classes: classes.to_vec(),
            dir: dir.to_path_buf(),
            index: Mutex::new(Index {
                limits,
                loaded: false,
                entries: BTreeMap::new(),
                bytes: 0,
                regions: Vec::new(),
                sequence: 0,
                refused: 0,
            }),
            jobs: Mutex::new(None),
            thread: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(8);
        *samples.jobs.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let weak = Arc::downgrade(&samples);
        let handle = std::thread::Builder::new()
            .name(format!("samples-{name}"))
            .spawn(move || {
                crate::model::runtime::lower_thread_priority();
                if let Some(s) = weak.upgrade() {
                    s.load();
                }
                store_thread(&rx, &weak);
            })
            .map_err(io(dir))?;
        *samples.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(samples)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.index().limits
    }

    /// New bounds and pace (a reload), applied from the next offer.
    pub fn set_limits(&self, limits: Limits) {
        self.index().limits = limits;
    }

    /// The classes, as the config names them.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The model's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The labelled samples: an ImageFolder tree.
    pub fn labels_dir(&self) -> PathBuf {
        self.dir.join("labels")
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the store's thread once what it was given is written (the daemon's shutdown).
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Waits (for at most `limit`) for the store's thread to end after [`Samples::close`].
    pub fn join(&self, limit: Duration) {
        let Some(handle) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let deadline = Instant::now() + limit;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }

    /// Reads the samples on disk into the index (their thumbnails made from the files).
    fn load(&self) {
        let mut found = Vec::new();
        let mut scan = |folder: PathBuf, class: Option<usize>| {
            let Ok(entries) = std::fs::read_dir(&folder) else { return };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some((id, reason)) = name.to_str().and_then(parse_name) else { continue };
                found.push((id, reason, class, e.path()));
            }
        };
        scan(self.dir.join("samples"), None);
        for (c, class) in self.classes.iter().enumerate() {
            scan(self.labels_dir().join(class), Some(c));
        }
        let mut loaded = 0;
        for (id, reason, class, path) in found {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(picture) = image::load_from_memory(&bytes) else {
                tracing::warn!(sample = %path.display(), "not a readable picture: left out of the samples");
                continue;
            };
            let rgb = picture.to_rgb8();
            let signature = signature(rgb.as_raw(), rgb.width(), rgb.height());
            let entry =
                Entry { class, reason, guess: None, signature, bytes: bytes.len() as u64, from: None, written: true };
            let mut index = self.index();
            if !index.entries.contains_key(&id) {
                index.bytes += entry.bytes;
                index.entries.insert(id, entry);
                loaded += 1;
            }
        }
        self.index().loaded = true;
        self.enforce_count();
        if loaded > 0 {
            tracing::info!(model = %self.name, samples = loaded, "taught model's samples read");
        }
    }

    /// The store's slot for a region (the same slot for the same region after a reload).
    pub fn region(&self, camera: &str, region: &str) -> usize {
        let mut index = self.index();
        if let Some(i) = index.regions.iter().position(|r| r.camera == camera && r.region == region) {
            return i;
        }
        index.regions.push(RegionState { camera: camera.into(), region: region.into(), ..RegionState::default() });
        index.regions.len() - 1
    }

    /// Whether the region in `slot` offers a crop of the frame captured at `at` (once per `sample_every`, by
    /// whichever worker asks first: the turn is taken here; none before the samples on disk are read).
    pub fn claim(&self, slot: usize, at: Instant) -> bool {
        let mut index = self.index();
        let (every, loaded) = (index.limits.every, index.loaded);
        let Some(region) = index.regions.get_mut(slot) else { return false };
        if !loaded || region.last_offer.is_some_and(|t| at.saturating_duration_since(t) < every) {
            return false;
        }
        region.last_offer = Some(at);
        true
    }

    /// The model's answer for the region in `slot` (with `labels`: the model's classes in its output
    /// order): a doubt (under its threshold, close, or a flip) makes the next offer a review sample.
    pub fn observe(&self, slot: usize, answer: &Classification, labels: &[String]) {
        let Some(best) = answer.best() else { return };
        let second = answer.top.get(1).map_or(0.0, |s| s.score);
        // The config's class for the model's output.
        let class = labels.get(best.class_id).and_then(|l| self.classes.iter().position(|c| c == l));
        let Some(class) = class else { return };
        let mut index = self.index();
        let Some(region) = index.regions.get_mut(slot) else { return };
        let flipped = region.last_answer.is_some_and(|last| last != class);
        let unsure = answer.on.is_empty() || best.score - second < DOUBT_MARGIN;
        region.last_answer = Some(class);
        if flipped || unsure {
            region.doubt = Some((class, best.score));
        }
    }

    /// The region in `slot` offers `crop` (after [`Samples::claim`]): kept when new or doubted (see the
    /// module's documentation). True when kept. Called by a camera's prepare thread: the JPEG is encoded here
    /// (a few a minute at most), written by the store's thread.
    pub fn offer(&self, slot: usize, crop: &Snap) -> bool {
        let signature = signature(&crop.rgb, crop.width, crop.height);
        let (id, reason, guess) = {
            let mut index = self.index();
            let diversity = index.limits.diversity;
            let nearest =
                index.entries.values().map(|e| distance(&e.signature, &signature)).fold(f32::INFINITY, f32::min);
            let Some(region) = index.regions.get_mut(slot) else { return false };
            let doubt = region.doubt.take();
            let reason = match doubt {
                Some(_) if nearest > diversity / 4.0 => Reason::Doubt,
                _ if nearest > diversity => Reason::New,
                _ => return false,
            };
            index.sequence += 1;
            (format!("{:013}-{:04}", now_ms(), index.sequence % 10_000), reason, doubt)
        };
        let jpeg = match crop.jpeg() {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(model = %self.name, "cannot encode a sample: {e}");
                return false;
            }
        };
        let bytes = jpeg.len() as u64;
        let mut index = self.index();
        if index.bytes + bytes > index.limits.max_bytes || !room_on_disk(&self.dir, bytes) {
            index.refused += 1;
            if index.refused.is_power_of_two() {
                tracing::warn!(
                    model = %self.name,
                    refused = index.refused,
                    "a sample was not kept: the samples are at [teach] max_mb or the disk is nearly full; label or delete some"
                );
            }
            return false;
        }
        let path = self.place(&id, None, reason);
        let entry = Entry { class: None, reason, guess, signature, bytes, from: Some(slot), written: false };
        index.entries.insert(id.clone(), entry);
        index.bytes += bytes;
        drop(index);
        if !self.send(Job::Write { path, jpeg, id: id.clone() }) {
            self.forget(&id);
            return false;
        }
        true
    }

    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.as_ref().map(|tx| tx.try_send(job)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_))) => {
                tracing::debug!(model = %self.name, "the store's thread is behind: a sample was not kept");
                false
            }
            _ => false,
        }
    }

    fn forget(&self, id: &str) {
        let mut index = self.index();
        if let Some(e) = index.entries.remove(id) {
            index.bytes -= e.bytes;
        }
    }

    /// The store's thread wrote `id`'s file: it is listed from now on, and the oldest unlabelled samples
    /// beyond `max_samples` go.
    fn written(&self, id: &str) {
        if let Some(e) = self.index().entries.get_mut(id) {
            e.written = true;
        }
        self.enforce_count();
    }

    /// Drops the oldest unlabelled samples beyond `max_samples` (ids sort by time), their files with them.
    /// On the store's thread.
    fn enforce_count(&self) {
        let gone: Vec<PathBuf> = {
            let mut index = self.index();
            let unlabelled: Vec<String> = index
                .entries
                .iter()
                .filter(|(_, e)| e.class.is_none() && e.written)
                .map(|(id, _)| id.clone())
                .collect();
            let excess = unlabelled.len().saturating_sub(index.limits.max_samples);
            unlabelled[..excess]
                .iter()
                .filter_map(|id| {
                    let e = index.entries.remove(id)?;
                    index.bytes -= e.bytes;
                    Some(self.place(id, None, e.reason))
                })
                .collect()
        };
        for path in gone {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Every sample, in id (time) order.
    pub fn list(&self) -> Vec<SampleInfo> {
        let index = self.index();
        index
            .entries
            .iter()
            .filter(|(_, e)| e.written)
            .map(|(id, e)| {
                let from = e.from.and_then(|r| index.regions.get(r));
                SampleInfo {
                    id: id.clone(),
                    class: e.class.map(|c| self.classes[c].clone()),
                    reason: e.reason,
                    guess: e.guess.map(|(c, _)| self.classes[c].clone()),
                    score: e.guess.map(|(_, s)| s),
                    camera: from.map(|r| r.camera.clone()),
                    region: from.map(|r| r.region.clone()),
                }
            })
            .collect()
    }

    /// Per class (config order), the labelled samples; and the unlabelled ones.
    pub fn counts(&self) -> (Vec<usize>, usize) {
        let index = self.index();
        let mut per_class = vec![0; self.classes.len()];
        let mut unlabelled = 0;
        for e in index.entries.values().filter(|e| e.written) {
            match e.class {
                Some(c) => per_class[c] += 1,
                None => unlabelled += 1,
            }
        }
        (per_class, unlabelled)
    }

    /// Where a sample's picture is (a deleted one's too, until the next start), if it exists.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        if !valid_id(id) {
            return None;
        }
        let index = self.index();
        let candidates = match index.entries.get(id) {
            Some(e) => vec![self.place(id, e.class, e.reason)],
            None => vec![self.dir.join("trash").join(format!("{id}.jpg"))],
        };
        candidates.into_iter().find(|p| p.is_file())
    }

    fn place(&self, id: &str, class: Option<usize>, reason: Reason) -> PathBuf {
        match (class, reason) {
            (Some(c), _) => self.labels_dir().join(&self.classes[c]).join(format!("{id}.jpg")),
            (None, Reason::New) => self.dir.join("samples").join(format!("{id}.jpg")),
            (None, Reason::Doubt) => self.dir.join("samples").join(format!("{id}.review.jpg")),
        }
    }

    /// Labels the samples `ids` as `class` (`None`: back to unlabelled; a deleted sample comes back). Unknown
    /// ids are passed over; returns how many moved.
    pub fn label(&self, ids: &[String], class: Option<&str>) -> Result<usize, SampleError> {
        let class = match class {
            Some(name) => Some(
                self.classes
                    .iter()
                    .position(|c| c == name)
                    .ok_or_else(|| SampleError::Class(name.to_string(), self.classes.clone()))?,
            ),
            None => None,
        };
        let mut moved = 0;
        let mut ids: Vec<&String> = ids.iter().filter(|id| valid_id(id)).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let mut index = self.index();
            let (from, reason, bytes) = match index.entries.get(id) {
                Some(e) if !e.written => continue,
                Some(e) => (self.place(id, e.class, e.reason), e.reason, None),
                None => {
                    // A deleted sample, restored.
                    let trash = self.dir.join("trash").join(format!("{id}.jpg"));
                    let Ok(meta) = std::fs::metadata(&trash) else { continue };
                    (trash, Reason::New, Some(meta.len()))
                }
            };
            let to = self.place(id, class, reason);
            if from != to
                && let Err(e) = std::fs::rename(&from, &to)
            {
                tracing::warn!(sample = %from.display(), "cannot move a sample: {e}");
                continue;
            }
            match bytes {
                None => {
                    if let Some(e) = index.entries.get_mut(id) {
                        e.class = class;
                    }
                }
                Some(bytes) => {
                    let signature = std::fs::read(&to)
                        .ok()
                        .and_then(|b| image::load_from_memory(&b).ok())
                        .map(|p| {
                            let rgb = p.to_rgb8();
                            signature(rgb.as_raw(), rgb.width(), rgb.height())
                        })
                        .unwrap_or([0; THUMB * THUMB * 3]);
                    let entry = Entry { class, reason, guess: None, signature, bytes, from: None, written: true };
                    index.entries.insert(id.clone(), entry);
                    index.bytes += bytes;
                }
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// Deletes the samples `ids` (moved to `trash/` until the next start: [`Samples::label`] with `None`
    /// brings one back). Returns how many.
    pub fn delete(&self, ids: &[String]) -> Result<usize, SampleError> {
        let mut deleted = 0;
        let mut ids: Vec<&String> = ids.iter().filter(|id| valid_id(id)).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let mut index = self.index();
            let Some(e) = index.entries.get(id).filter(|e| e.written).cloned() else { continue };
            let from = self.place(id, e.class, e.reason);
            let to = self.dir.join("trash").join(format!("{id}.jpg"));
            if let Err(err) = std::fs::rename(&from, &to) {
                tracing::warn!(sample = %from.display(), "cannot delete a sample: {err}");
                continue;
            }
            index.entries.remove(id);
            index.bytes -= e.bytes;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// The store's thread: writes the kept samples until the store closes.
fn store_thread(rx: &Receiver<Job>, samples: &std::sync::Weak<Samples>) {
    while let Ok(Job::Write { path, jpeg, id }) = rx.recv() {
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &jpeg).and_then(|()| std::fs::rename(&tmp, &path));
        let Some(s) = samples.upgrade() else { continue };
        match written {
            Ok(()) => s.written(&id),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(sample = %path.display(), "cannot write a sample: {e}");
                s.forget(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{Picture, Rect};

    fn limits() -> Limits {
        Limits { max_samples: 3, max_bytes: 10 << 20, every: Duration::from_secs(2), diversity: 0.04 }
    }

    /// A crop of a flat colour with a bright square at `x` (a "state").
    fn crop(level: u8, x: u32) -> Snap {
        let (w, h) = (64u32, 48u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (px, py) = (i % w, i / w);
                let v = if (x..x + 16).contains(&px) && (8..24).contains(&py) { 250 } else { level };
                [v, v / 2, level]
            })
            .collect();
        let mut snap = Snap::default();
        snap.take(Picture::new(w, h, &rgb), Rect { x: 0, y: 0, width: w, height: h }, SAMPLE_SIZE, false);
        snap
    }

    /// Offers `crop` at `at` as a region's prepare thread does: its turn, then the offer.
    fn offer(store: &Samples, slot: usize, crop: &Snap, at: Instant) -> bool {
        store.claim(slot, at) && store.offer(slot, crop)
    }

    fn open(dir: &Path, limits: Limits) -> Arc<Samples> {
        let classes = vec!["closed".to_string(), "open".to_string()];
        let store = Samples::open("door", &classes, dir, limits).expect("store");
        for _ in 0..200 {
            if store.index().loaded {
                return store;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the store did not read its samples");
    }

    fn wait_written(dir: &Path, n: usize) {
        for _ in 0..200 {
            let count = std::fs::read_dir(dir.join("samples")).map_or(0, |d| d.flatten().count());
            if count == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{n} samples were not written");
    }

    #[test]
    fn ids_are_time_and_sequence_and_nothing_else() {
        assert!(valid_id("1765040000123-0007"));
        for bad in [
            "",
            "../../etc/passwd",
            "1765040000123",
            "176504000012-0007",
            "1765040000123-",
            "1765040000123-00a7",
            "1765040000123-0007/..",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(parse_name("1765040000123-0007.review.jpg"), Some(("1765040000123-0007".into(), Reason::Doubt)));
        assert_eq!(parse_name("1765040000123-0007.jpg"), Some(("1765040000123-0007".into(), Reason::New)));
        assert_eq!(parse_name("x.jpg"), None);
    }

    #[test]
    fn a_still_scene_keeps_one_sample_and_each_new_view_one_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), limits());
        let slot = store.region("garage", "door");
        let t0 = Instant::now();
        assert!(offer(&store, slot, &crop(60, 4), t0));
        assert!(!store.claim(slot, t0 + Duration::from_secs(1)), "not again within sample_every");
        // The same view, later: not kept.
        for i in 1..5 {
            assert!(!offer(&store, slot, &crop(61, 4), t0 + Duration::from_secs(2 * i)));
        }
        // A new state, and a new lighting: kept.
        assert!(offer(&store, slot, &crop(60, 40), t0 + Duration::from_secs(20)));
        assert!(offer(&store, slot, &crop(140, 4), t0 + Duration::from_secs(22)));
        wait_written(dir.path(), 3);
        assert_eq!(store.counts(), (vec![0, 0], 3));
        // Bounded: the fourth unlabelled view drops the oldest.
        let first = store.list()[0].id.clone();
        assert!(offer(&store, slot, &crop(200, 40), t0 + Duration::from_secs(24)));
        for _ in 0..200 {
            if store.list().iter().all(|s| s.id != first) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(store.list().iter().all(|s| s.id != first), "the oldest went");
        assert_eq!(store.counts(), (vec![0, 0], 3));
        wait_written(dir.path(), 3);
        assert!(store.path_of(&first).is_none());
    }

    #[test]
    fn a_doubt_keeps_a_review_sample_and_labels_are_an_image_folder_that_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = vec!["open".to_string(), "closed".to_string()]; // the model's own order
        let store = open(dir.path(), limits());
        let slot = store.region("garage", "door");
        let t0 = Instant::now();
        assert!(offer(&store, slot, &crop(60, 4), t0));
        use crate::postprocess::Scored;
        let sure = Classification {
            top: vec![Scored { class_id: 1, score: 0.95 }, Scored { class_id: 0, score: 0.05 }],
            on: vec![Scored { class_id: 1, score: 0.95 }],
            multi_label: false,
        };
        store.observe(slot, &sure, &labels);
        // Nearly the same view: not new, and no doubt.
        assert!(!offer(&store, slot, &crop(62, 4), t0 + Duration::from_secs(2)));
        // The model flips to "open" with a slightly different view: a review sample.
        let flipped = Classification {
            top: vec![Scored { class_id: 0, score: 0.9 }, Scored { class_id: 1, score: 0.1 }],
            on: vec![Scored { class_id: 0, score: 0.9 }],
            multi_label: false,
        };
        store.observe(slot, &flipped, &labels);
        assert!(offer(&store, slot, &crop(66, 4), t0 + Duration::from_secs(4)));
        wait_written(dir.path(), 2);
        let list = store.list();
        let review = list.iter().find(|s| s.reason == Reason::Doubt).expect("a review sample");
        assert_eq!(review.guess.as_deref(), Some("open"));
        assert_eq!(review.camera.as_deref(), Some("garage"));
        let ids: Vec<String> = list.iter().map(|s| s.id.clone()).collect();
        assert_eq!(store.label(&ids[..1], Some("closed")).expect("label"), 1);
        assert_eq!(store.label(&ids[1..], Some("open")).expect("label"), 1);
        assert!(matches!(store.label(&ids, Some("ajar")), Err(SampleError::Class(..))));
        assert!(dir.path().join("labels/closed").join(format!("{}.jpg", ids[0])).is_file());
        assert!(dir.path().join("labels/open").join(format!("{}.jpg", ids[1])).is_file());
        // Deleted, then brought back (undo), then deleted for good.
        assert_eq!(store.delete(&ids[1..]).expect("delete"), 1);
        assert_eq!(store.counts(), (vec![1, 0], 0));
        assert_eq!(store.label(&ids[1..], Some("open")).expect("restore"), 1);
        assert_eq!(store.counts(), (vec![1, 1], 0));
        assert_eq!(store.delete(&ids[1..]).expect("delete"), 1);
        store.close();
        drop(store);
        let again = open(dir.path(), limits());
        assert_eq!(again.counts(), (vec![1, 0], 0), "the labels survive a restart; the deleted sample is gone");
        assert_eq!(std::fs::read_dir(dir.path().join("trash")).expect("trash").count(), 0);
    }
}
