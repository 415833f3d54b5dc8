//! A model taught on the board: its samples ([`Samples`]), its training (in the background, at a low CPU
//! priority) and its files, for the page and the JSON API.
//!
//! The model's folder (`[teach] dir/<name>/`) holds, besides the samples:
//!
//! - `candidate.onnx` and `candidate.json`: the last training's model and report, waiting for **Use**;
//! - `model.onnx` and `model.json`: the model in service (what the config's `[[models]]` entry loads);
//! - `previous.onnx` and `previous.json`: the model it replaced, for **Roll back**.
//!
//! Use and Roll back are a [`Swap`]: the files move, the daemon loads the config again through the one
//! loading policy (load → check on this CPU → region plan) and swaps the pipeline; when the new model is
//! refused, [`Swap::undo`] puts every file back and the running pipeline never stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use super::samples::{Limits, SampleError, Samples};
use super::{Stage, TrainOptions, TrainReport};
use crate::config::Taught;
use crate::model::runtime::Runtime;

/// A training's state, as the page shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Training {
    /// `idle`, `running`, `done` or `failed`.
    pub state: &'static str,
    pub stage: Option<&'static str>,
    pub done: usize,
    pub total: usize,
    pub error: Option<String>,
    /// The last training's report ([`api_report`]).
    pub report: Option<Value>,
}

/// Use (the candidate into service) or Roll back (the previous model back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapKind {
    Use,
    Rollback,
}

/// The files of a swap, moved; [`Swap::commit`] once the daemon runs the new model, [`Swap::undo`] when it
/// refused it. `model.onnx` exists at every moment (a power cut in the middle leaves the old or the new model,
/// and [`recover`] undoes an unfinished swap at the next start).
#[derive(Debug)]
pub struct Swap {
    dir: PathBuf,
    kind: SwapKind,
    /// `model.onnx` (and `.json`) were there before: kept as `replaced.*` until the end of the swap.
    had_model: bool,
    /// The teacher's "a swap is under way" flag, cleared when the swap ends.
    busy: Arc<AtomicBool>,
}

/// What [`Teacher::swap`] or [`Teacher::train`] cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("there is no trained model to use: label samples of every class and Train first")]
    NoCandidate,
    #[error("there is no previous model to roll back to")]
    NoPrevious,
    #[error("a training is running: wait for it to end")]
    Training,
    #[error("another taught model is training: wait for it to end")]
    OtherTraining,
    #[error("a model is being put in service: wait for it")]
    Swapping,
    #[error("{0}")]
    Io(String),
}

fn file(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}.{ext}"))
}

/// `from.*` to `to.*` (the model and its report), each replacing its target at once.
fn mv(dir: &Path, from: &str, to: &str) -> std::io::Result<()> {
    std::fs::rename(file(dir, from, "onnx"), file(dir, to, "onnx"))?;
    match std::fs::rename(file(dir, from, "json"), file(dir, to, "json")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(file(dir, to, "json"));
            Ok(())
        }
        other => other,
    }
}

/// `to.*` made a second name of `from.*` (the model and its report); `from` stays.
fn link(dir: &Path, from: &str, to: &str) -> std::io::Result<()> {
    for ext in ["onnx", "json"] {
        let (a, b) = (file(dir, from, ext), file(dir, to, ext));
        let _ = std::fs::remove_file(&b);
        match std::fs::hard_link(&a, &b) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ext == "json" => {}
            other => other?,
        }
    }
    Ok(())
}

/// The folder's entries to the disk (an SD card loses renames on a power cut otherwise).
fn sync(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A swap a stop or a power cut left unfinished (`replaced.onnx` is there): undone, the new model back under
/// `candidate` (it never proved itself), the old one in service.
fn recover(dir: &Path) {
    if !file(dir, "replaced", "onnx").is_file() {
        return;
    }
    let back = link(dir, "model", "candidate").and_then(|()| mv(dir, "replaced", "model"));
    match back {
        Ok(()) => tracing::warn!(
            "{}: a Use or Roll back was cut short: the model it replaced is in service again, the other is the \
             candidate",
            dir.display()
        ),
        Err(e) => tracing::error!("{}: cannot finish an interrupted swap: {e}", dir.display()),
    }
    sync(dir);
}

impl Swap {
    /// The taught model's name (its folder's).
    pub fn model(&self) -> &str {
        self.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }

    fn source(&self) -> &'static str {
        match self.kind {
            SwapKind::Use => "candidate",
            SwapKind::Rollback => "previous",
        }
    }

    fn begin(dir: &Path, kind: SwapKind, busy: Arc<AtomicBool>) -> Result<Swap, SwapError> {
        let swap = Swap { dir: dir.to_path_buf(), kind, had_model: dir.join("model.onnx").is_file(), busy };
        if !file(dir, swap.source(), "onnx").is_file() {
            return Err(match kind {
                SwapKind::Use => SwapError::NoCandidate,
                SwapKind::Rollback => SwapError::NoPrevious,
            });
        }
        let io = |e: std::io::Error| SwapError::Io(format!("{}: {e}", dir.display()));
        if swap.had_model {
            link(dir, "model", "replaced").map_err(io)?;
        }
        if let Err(e) = mv(dir, swap.source(), "model") {
            for ext in ["onnx", "json"] {
                let _ = std::fs::remove_file(file(dir, "replaced", ext));
            }
            return Err(io(e));
        }
        sync(dir);
        Ok(swap)
    }

    /// The new model runs: the one it replaced becomes `previous` (a Roll back twice is a roll forward).
    pub fn commit(self) {
        if self.had_model
            && let Err(e) = mv(&self.dir, "replaced", "previous")
        {
            tracing::warn!("{}: cannot keep the replaced model for Roll back: {e}", self.dir.display());
        }
        sync(&self.dir);
    }

    /// The new model was refused: every file back where it was.
    pub fn undo(self) {
        let dir = &self.dir;
        let back = link(dir, "model", self.source()).and_then(|()| {
            if self.had_model {
                mv(dir, "replaced", "model")
            } else {
                let _ = std::fs::remove_file(file(dir, "model", "json"));
                std::fs::remove_file(file(dir, "model", "onnx"))
            }
        });
        if let Err(e) = back {
            tracing::error!("{}: cannot put the models back after a refused swap: {e}", dir.display());
        }
        sync(dir);
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// Set while a training runs, whichever taught model's: one at a time (each takes a base session and up to
/// ~80 MiB for 1,000 pictures, and they would share the trunk's cache files).
static TRAINING: AtomicBool = AtomicBool::new(false);

/// One taught model.
#[derive(Debug)]
pub struct Teacher {
    name: String,
    taught: Taught,
    pub samples: Arc<Samples>,
    runtime: &'static Runtime,
    threads: AtomicUsize,
    training: Mutex<Training>,
    /// A Use or Roll back is under way (its files moved, the daemon loading them).
    swapping: Arc<AtomicBool>,
    /// Set at shutdown: a running training stops at its next picture.
    cancel: Arc<AtomicBool>,
    /// The training's thread, joined (for a while) at shutdown.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The model in service's file (modified, length) and SHA-256, so that a poll does not hash it again.
    in_service: Mutex<Option<(SystemTime, u64, String)>>,
}

/// The report as the API gives it: [`TrainReport`]'s fields, with each suspect by its sample id.
pub fn api_report(report: &TrainReport) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    let suspects: Vec<Value> = report
        .suspect_details
        .iter()
        .map(|s| {
            let id = Path::new(&s.path).file_stem().and_then(|n| n.to_str()).unwrap_or_default();
            json!({ "id": id, "label": s.label, "predicted": s.predicted, "confidence": s.confidence })
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("suspects".into(), Value::Array(suspects));
        o.remove("suspect_details");
        // Paths on the board are no business of the page.
        o.remove("model");
        o.remove("base");
    }
    v
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn sha256_file(path: &Path) -> Option<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    Some(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

impl Teacher {
    fn open(
        name: &str,
        taught: &Taught,
        limits: Limits,
        runtime: &'static Runtime,
        threads: usize,
    ) -> Result<Teacher, SampleError> {
        let samples = Samples::open(name, &taught.classes, &taught.dir, limits)?;
        recover(&taught.dir);
        let mut training = Training { state: "idle", ..Training::default() };
        if taught.dir.join("candidate.onnx").is_file() {
            training.report = read_json(&taught.dir.join("candidate.json"));
            training.state = "done";
        }
        Ok(Teacher {
            name: name.to_string(),
            taught: taught.clone(),
            samples,
            runtime,
            threads: AtomicUsize::new(threads),
            training: Mutex::new(training),
            in_service: Mutex::new(None),
            swapping: Arc::default(),
            cancel: Arc::default(),
            thread: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn classes(&self) -> &[String] {
        &self.taught.classes
    }

    fn training(&self) -> MutexGuard<'_, Training> {
        self.training.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SHA-256 of the model in service, if there is one.
    fn in_service_sha(&self) -> Option<String> {
        let path = self.taught.model();
        let meta = std::fs::metadata(&path).ok()?;
        let key = (meta.modified().ok()?, meta.len());
        let mut cached = self.in_service.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((m, l, sha)) = cached.as_ref()
            && (*m, *l) == key
        {
            return Some(sha.clone());
        }
        let sha = sha256_file(&path)?;
        *cached = Some((key.0, key.1, sha.clone()));
        Some(sha)
    }

    /// Everything the page shows of this model.
    pub fn state(&self) -> Value {
        let (per_class, unlabelled) = self.samples.counts();
        let counts: serde_json::Map<String, Value> =
            self.taught.classes.iter().zip(per_class).map(|(c, n)| (c.clone(), json!(n))).collect();
        let training = self.training().clone();
        let in_service = self.in_service_sha().map(|sha| {
            let accuracy = read_json(&self.taught.dir.join("model.json")).and_then(|r| r.get("cv_accuracy").cloned());
            json!({ "sha256": sha, "cv_accuracy": accuracy })
        });
        json!({
            "name": self.name,
            "classes": self.taught.classes,
            "counts": counts,
            "unlabelled": unlabelled,
            "samples": self.samples.list(),
            "training": training,
            "candidate": training.state != "running" && self.taught.dir.join("candidate.onnx").is_file(),
            "in_service": in_service,
            "previous": self.taught.dir.join("previous.onnx").is_file(),
        })
    }

    /// Starts a training of the labelled samples in the background (nice 10, `[teach] train_threads`), unless
    /// one runs (of any taught model) or a swap is under way.
    pub fn train(self: &Arc<Self>) -> Result<(), SwapError> {
        {
            let mut training = self.training();
            if training.state == "running" {
                return Err(SwapError::Training);
            }
            if self.swapping.load(Ordering::Acquire) {
                return Err(SwapError::Swapping);
            }
            if TRAINING.swap(true, Ordering::AcqRel) {
                return Err(SwapError::OtherTraining);
            }
            *training = Training { state: "running", stage: Some("embedding"), report: None, ..Training::default() };
        }
        let teacher = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("train-{}", self.name)).spawn(move || {
            crate::model::runtime::lower_thread_priority();
            let result = teacher.run_training();
            // The trunk's session, the pictures and the embeddings are gone: their memory goes back too.
            crate::model::runtime::give_back_memory();
            let mut training = teacher.training();
            match result {
                Ok(report) => {
                    training.state = "done";
                    training.report = Some(report);
                }
                Err(e) => {
                    tracing::warn!(model = %teacher.name, "training failed: {e}");
                    training.state = "failed";
                    training.error = Some(e);
                }
            }
            training.stage = None;
            TRAINING.store(false, Ordering::Release);
        });
        match spawned {
            Ok(handle) => *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
            Err(e) => {
                TRAINING.store(false, Ordering::Release);
                let mut training = self.training();
                training.state = "failed";
                training.error = Some(format!("cannot start the training's thread: {e}"));
            }
        }
        Ok(())
    }

    fn run_training(&self) -> Result<Value, String> {
        let dir = &self.taught.dir;
        let threads = match self.threads.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut cache_dir = super::default_cache_dir();
        if std::fs::create_dir_all(&cache_dir).is_err() {
            cache_dir = dir.join(".cache");
        }
        // Written beside the candidate, then renamed: a failed training leaves the last candidate whole.
        // (Its file name is the model's name in its metadata.)
        let staging = dir.join(".training");
        std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        let out = staging.join(format!("{}.onnx", self.name));
        let options = TrainOptions {
            base: self.taught.base.clone(),
            out: out.clone(),
            cache_dir,
            threads,
            // The config's classes only: a folder of a class the config no longer names is not learnt.
            classes: Some(self.taught.classes.clone()),
            cancel: Some(Arc::clone(&self.cancel)),
        };
        let progress = |stage: Stage| {
            let mut training = self.training();
            match stage {
                Stage::Embedding { done, total } => {
                    (training.stage, training.done, training.total) = (Some("embedding"), done, total)
                }
                Stage::Fitting => training.stage = Some("fitting"),
                Stage::Writing => training.stage = Some("writing"),
            }
        };
        let report = super::train_with(self.runtime, &self.samples.labels_dir(), &options, &progress)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            model = %self.name,
            cv_accuracy = report.cv_accuracy,
            seconds = report.seconds,
            "trained: Use puts it in service"
        );
        let api = api_report(&report);
        let json = serde_json::to_vec_pretty(&api).map_err(|e| e.to_string())?;
        super::embed::write_atomically(&dir.join("candidate.json"), &json).map_err(|e| e.to_string())?;
        std::fs::rename(&out, dir.join("candidate.onnx")).map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(api)
    }

    /// Whether Use or Roll back can start: a model to swap in, no training running.
    pub fn ready(&self, kind: SwapKind) -> Result<(), SwapError> {
        let training = self.training();
        self.ready_with(&training, kind)
    }

    /// [`Teacher::ready`], the training's state held.
    fn ready_with(&self, training: &Training, kind: SwapKind) -> Result<(), SwapError> {
        if training.state == "running" {
            return Err(SwapError::Training);
        }
        if self.swapping.load(Ordering::Acquire) {
            return Err(SwapError::Swapping);
        }
        match kind {
            SwapKind::Use if !self.taught.dir.join("candidate.onnx").is_file() => Err(SwapError::NoCandidate),
            SwapKind::Rollback if !self.taught.dir.join("previous.onnx").is_file() => Err(SwapError::NoPrevious),
            _ => Ok(()),
        }
    }

    /// Moves the files for Use or Roll back (see the module's documentation); no training may start until
    /// the swap ends.
    pub fn swap(&self, kind: SwapKind) -> Result<Swap, SwapError> {
        let training = self.training();
        self.ready_with(&training, kind)?;
        if self.swapping.swap(true, Ordering::AcqRel) {
            return Err(SwapError::Swapping);
        }
        // On an error the flag is cleared by the dropped Swap … which does not exist yet: clear it here.
        Swap::begin(&self.taught.dir, kind, Arc::clone(&self.swapping)).inspect_err(|_| {
            self.swapping.store(false, Ordering::Release);
        })
    }

    /// The taught model's file in service, its classes and its base (for the check before a Use).
    pub fn taught(&self) -> &Taught {
        &self.taught
    }

    /// Stops a running training (at its next picture) and waits for it, for at most `limit`.
    fn stop_training(&self, limit: std::time::Duration) {
        self.cancel.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let deadline = std::time::Instant::now() + limit;
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!(model = %self.name, "the training did not stop in time; going on without it");
            }
        }
    }
}

/// Use or Roll back asked of the daemon (by the page or the API): it moves the files, loads the config
/// through the loading policy and swaps the pipeline, then answers (`Err`: refused, the old model runs).
#[derive(Debug)]
pub struct SwapRequest {
    pub model: String,
    pub kind: SwapKind,
    pub reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Every taught model, by name, kept across reloads.
///
/// A reload [`Teachers::configure`]s the new config's taught models before it knows whether it will be
/// applied: the models kept stay the same objects (their samples, their training), new ones are opened, and
/// nothing is closed until [`Teachers::commit`]; a refused reload calls [`Teachers::abort`], which puts the
/// running set back and closes only what it had opened.
#[derive(Debug, Default)]
pub struct Teachers {
    teachers: Mutex<HashMap<String, Arc<Teacher>>>,
    /// The set before the last `configure`, until it is committed or aborted.
    before: Mutex<Option<HashMap<String, Arc<Teacher>>>>,
}

impl Teachers {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Teacher>>> {
        self.teachers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The taught models of `models` (`(name, taught)`): kept when they are the same model (new limits and
    /// threads applied in place), opened when new or changed (see the type's documentation).
    pub fn configure(
        &self,
        models: &[(String, Taught)],
        limits: Limits,
        runtime: &'static Runtime,
        threads: usize,
    ) -> Result<(), SampleError> {
        let mut teachers = self.map();
        let mut next = HashMap::new();
        let mut opened: Vec<Arc<Teacher>> = Vec::new();
        for (name, taught) in models {
            let teacher = match teachers.get(name).filter(|t| t.taught == *taught) {
                Some(t) => {
                    t.samples.set_limits(limits);
                    t.threads.store(threads, Ordering::Relaxed);
                    Arc::clone(t)
                }
                None => match Teacher::open(name, taught, limits, runtime, threads) {
                    Ok(t) => {
                        let t = Arc::new(t);
                        opened.push(Arc::clone(&t));
                        t
                    }
                    Err(e) => {
                        opened.iter().for_each(|t| t.samples.close());
                        return Err(e);
                    }
                },
            };
            next.insert(name.clone(), teacher);
        }
        let before = std::mem::replace(&mut *teachers, next);
        let mut staged = self.before.lock().unwrap_or_else(|p| p.into_inner());
        // An earlier configure neither committed nor aborted keeps the older set as the one to go back to.
        staged.get_or_insert(before);
        Ok(())
    }

    /// The configured set is the running one: the models it dropped close.
    pub fn commit(&self) {
        let before = self.before.lock().unwrap_or_else(|p| p.into_inner()).take();
        let teachers = self.map();
        for old in before.into_iter().flat_map(HashMap::into_values) {
            if !teachers.values().any(|t| Arc::ptr_eq(t, &old)) {
                old.stop_training(std::time::Duration::from_secs(2));
                old.samples.close();
            }
        }
    }

    /// The configured set was refused: the running one comes back, the models opened for it close.
    pub fn abort(&self) {
        let Some(before) = self.before.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let refused = std::mem::replace(&mut *self.map(), before);
        let teachers = self.map();
        for new in refused.into_values() {
            if !teachers.values().any(|t| Arc::ptr_eq(t, &new)) {
                new.samples.close();
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Teacher>> {
        self.map().get(name).cloned()
    }

    /// The taught models' names and classes, by name.
    pub fn list(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> =
            self.map().values().map(|t| (t.name.clone(), t.taught.classes.clone())).collect();
        out.sort();
        out
    }

    /// Stops the trainings and closes every store, waiting for what they were writing (the daemon's
    /// shutdown; at most a few seconds).
    pub fn close(&self) {
        let teachers: Vec<Arc<Teacher>> = self.map().values().cloned().collect();
        for t in &teachers {
            t.stop_training(std::time::Duration::from_secs(3));
            t.samples.close();
        }
        for t in &teachers {
            t.samples.join(std::time::Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_moves_the_files_and_undo_puts_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let put = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
        let read = |name: &str| std::fs::read_to_string(d.join(name)).ok();
        assert!(matches!(Swap::begin(d, SwapKind::Use, Arc::default()), Err(SwapError::NoCandidate)));
        put("candidate.onnx", "A");
        put("candidate.json", "{\"a\":1}");
        // The first model: nothing replaced, no previous.
        Swap::begin(d, SwapKind::Use, Arc::default()).expect("use").commit();
        assert_eq!(read("model.onnx").as_deref(), Some("A"));
        assert_eq!(read("model.json").as_deref(), Some("{\"a\":1}"));
        assert!(read("candidate.onnx").is_none() && read("previous.onnx").is_none());
        put("candidate.onnx", "B");
        // Refused: all back.
        Swap::begin(d, SwapKind::Use, Arc::default()).expect("use").undo();
        assert_eq!((read("model.onnx").as_deref(), read("candidate.onnx").as_deref()), (Some("A"), Some("B")));
        Swap::begin(d, SwapKind::Use, Arc::default()).expect("use").commit();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("B"), Some("A")));
        // Roll back, and roll back again (forward).
        Swap::begin(d, SwapKind::Rollback, Arc::default()).expect("rollback").commit();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("A"), Some("B")));
        let swap = Swap::begin(d, SwapKind::Rollback, Arc::default()).expect("rollback");
        swap.undo();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("A"), Some("B")));
        // A swap cut short (no commit, no undo: a power cut) is undone at the next start.
        put("candidate.onnx", "C");
        let cut = Swap::begin(d, SwapKind::Use, Arc::default()).expect("use");
        std::mem::forget(cut);
        assert_eq!(read("model.onnx").as_deref(), Some("C"), "a model in service at every moment");
        recover(d);
        assert_eq!((read("model.onnx").as_deref(), read("candidate.onnx").as_deref()), (Some("A"), Some("C")));
        assert!(read("replaced.onnx").is_none());
        std::fs::remove_file(d.join("previous.onnx")).expect("rm");
        assert!(matches!(Swap::begin(d, SwapKind::Rollback, Arc::default()), Err(SwapError::NoPrevious)));
    }
}
