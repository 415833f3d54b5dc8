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
/// refused it.
#[derive(Debug)]
pub struct Swap {
    dir: PathBuf,
    kind: SwapKind,
    /// `model.onnx` (and `.json`) were there before: kept as `replaced.*` until the end of the swap.
    had_model: bool,
}

/// What [`Teacher::swap`] cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("there is no trained model to use: label samples of every class and Train first")]
    NoCandidate,
    #[error("there is no previous model to roll back to")]
    NoPrevious,
    #[error("a training is running: wait for it to end")]
    Training,
    #[error("{0}")]
    Io(String),
}

fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from.extension().is_some_and(|x| x == "json") => Ok(()),
        other => other,
    }
}

impl Swap {
    fn file(&self, stem: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{stem}.{ext}"))
    }

    /// Moves `stem.*` to `to.*` (the model and its report).
    fn mv(&self, stem: &str, to: &str) -> std::io::Result<()> {
        for ext in ["onnx", "json"] {
            rename(&self.file(stem, ext), &self.file(to, ext))?;
        }
        Ok(())
    }

    fn begin(dir: &Path, kind: SwapKind) -> Result<Swap, SwapError> {
        let swap = Swap { dir: dir.to_path_buf(), kind, had_model: dir.join("model.onnx").is_file() };
        let source = match kind {
            SwapKind::Use => "candidate",
            SwapKind::Rollback => "previous",
        };
        if !swap.file(source, "onnx").is_file() {
            return Err(match kind {
                SwapKind::Use => SwapError::NoCandidate,
                SwapKind::Rollback => SwapError::NoPrevious,
            });
        }
        let io = |e: std::io::Error| SwapError::Io(format!("{}: {e}", dir.display()));
        if swap.had_model {
            swap.mv("model", "replaced").map_err(io)?;
        }
        if let Err(e) = swap.mv(source, "model") {
            if swap.had_model {
                let _ = swap.mv("replaced", "model");
            }
            return Err(io(e));
        }
        Ok(swap)
    }

    /// The new model runs: the one it replaced becomes `previous` (a Roll back twice is a roll forward).
    pub fn commit(self) {
        if self.had_model
            && let Err(e) = self.mv("replaced", "previous")
        {
            tracing::warn!("{}: cannot keep the replaced model for Roll back: {e}", self.dir.display());
        }
    }

    /// The new model was refused: every file back where it was.
    pub fn undo(self) {
        let source = match self.kind {
            SwapKind::Use => "candidate",
            SwapKind::Rollback => "previous",
        };
        let back =
            self.mv("model", source).and_then(|()| if self.had_model { self.mv("replaced", "model") } else { Ok(()) });
        if let Err(e) = back {
            tracing::error!("{}: cannot put the models back after a refused swap: {e}", self.dir.display());
        }
    }
}

/// One taught model.
#[derive(Debug)]
pub struct Teacher {
    name: String,
    taught: Taught,
    pub samples: Arc<Samples>,
    runtime: &'static Runtime,
    threads: usize,
    training: Mutex<Training>,
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
            threads,
            training: Mutex::new(training),
            in_service: Mutex::new(None),
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

    /// Starts a training of the labelled samples in the background (nice 10, `[teach] train_threads`);
    /// false when one is running.
    pub fn train(self: &Arc<Self>) -> bool {
        {
            let mut training = self.training();
            if training.state == "running" {
                return false;
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
        });
        if let Err(e) = spawned {
            let mut training = self.training();
            training.state = "failed";
            training.error = Some(format!("cannot start the training's thread: {e}"));
        }
        true
    }

    fn run_training(&self) -> Result<Value, String> {
        let dir = &self.taught.dir;
        let threads = match self.threads {
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
        let options = TrainOptions { base: self.taught.base.clone(), out: out.clone(), cache_dir, threads };
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
        if self.training().state == "running" {
            return Err(SwapError::Training);
        }
        match kind {
            SwapKind::Use if !self.taught.dir.join("candidate.onnx").is_file() => Err(SwapError::NoCandidate),
            SwapKind::Rollback if !self.taught.dir.join("previous.onnx").is_file() => Err(SwapError::NoPrevious),
            _ => Ok(()),
        }
    }

    /// Moves the files for Use or Roll back (see the module's documentation).
    pub fn swap(&self, kind: SwapKind) -> Result<Swap, SwapError> {
        self.ready(kind)?;
        Swap::begin(&self.taught.dir, kind)
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
#[derive(Debug, Default)]
pub struct Teachers {
    teachers: Mutex<HashMap<String, Arc<Teacher>>>,
}

impl Teachers {
    /// The taught models of `models` (`(name, taught)`), opened when new or changed.
    pub fn configure(
        &self,
        models: &[(String, Taught)],
        limits: Limits,
        runtime: &'static Runtime,
        threads: usize,
    ) -> Result<(), SampleError> {
        let mut teachers = self.teachers.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for (name, taught) in models {
            let kept = teachers
                .remove(name)
                .filter(|t| t.taught == *taught && t.threads == threads && t.samples.limits() == limits);
            let teacher = match kept {
                Some(t) => t,
                None => {
                    if let Some(old) = teachers.get(name) {
                        old.samples.close();
                    }
                    Arc::new(Teacher::open(name, taught, limits, runtime, threads)?)
                }
            };
            next.insert(name.clone(), teacher);
        }
        for (_, old) in teachers.drain() {
            old.samples.close();
        }
        *teachers = next;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Teacher>> {
        self.teachers.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The taught models' names and classes, by name.
    pub fn list(&self) -> Vec<(String, Vec<String>)> {
        let teachers = self.teachers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Vec<String>)> =
            teachers.values().map(|t| (t.name.clone(), t.taught.classes.clone())).collect();
        out.sort();
        out
    }

    /// Closes every store (the daemon's shutdown).
    pub fn close(&self) {
        for t in self.teachers.lock().unwrap_or_else(|p| p.into_inner()).values() {
            t.samples.close();
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
        assert!(matches!(Swap::begin(d, SwapKind::Use), Err(SwapError::NoCandidate)));
        put("candidate.onnx", "A");
        put("candidate.json", "{\"a\":1}");
        // The first model: nothing replaced, no previous.
        Swap::begin(d, SwapKind::Use).expect("use").commit();
        assert_eq!(read("model.onnx").as_deref(), Some("A"));
        assert_eq!(read("model.json").as_deref(), Some("{\"a\":1}"));
        assert!(read("candidate.onnx").is_none() && read("previous.onnx").is_none());
        put("candidate.onnx", "B");
        // Refused: all back.
        Swap::begin(d, SwapKind::Use).expect("use").undo();
        assert_eq!((read("model.onnx").as_deref(), read("candidate.onnx").as_deref()), (Some("A"), Some("B")));
        Swap::begin(d, SwapKind::Use).expect("use").commit();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("B"), Some("A")));
        // Roll back, and roll back again (forward).
        Swap::begin(d, SwapKind::Rollback).expect("rollback").commit();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("A"), Some("B")));
        let swap = Swap::begin(d, SwapKind::Rollback).expect("rollback");
        swap.undo();
        assert_eq!((read("model.onnx").as_deref(), read("previous.onnx").as_deref()), (Some("A"), Some("B")));
        std::fs::remove_file(d.join("previous.onnx")).expect("rm");
        assert!(matches!(Swap::begin(d, SwapKind::Rollback), Err(SwapError::NoPrevious)));
    }
}
