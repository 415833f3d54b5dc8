//! `POST /api/v1/classify`: pictures sent over HTTP, classified by a small pool of threads with their own
//! ONNX Runtime sessions (one intra-op thread each), so that requests never take the cameras' sessions or
//! block the async runtime.
//!
//! The cameras come first: the pool's threads run at a lower CPU priority (nice 10) than the pipeline, and
//! at most `classify_workers` requests are classified at once with `classify_queue` more waiting; a request
//! beyond that is answered 429 (`Retry-After: 1`) at once, before its body is read. A request takes its place
//! only once its body is in (`http::conn::read_body`), so that slow uploads hold none.
//!
//! A config reload builds a new pool with the new `[model]` and puts it in [`CurrentPool`] in place of the
//! old one.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::HttpError;
use crate::model::Model;
use crate::pipeline::Classifier;
use crate::pipeline::report::ImageReport;
use crate::preprocess::{CropSpec, Frame};

/// The most classes a request may ask for (`top`).
pub const MAX_TOP: usize = 100;

/// One request for the pool.
struct Job {
    body: axum::body::Bytes,
    top: usize,
    crop: Option<[u32; 4]>,
    reply: oneshot::Sender<Result<ImageReport, String>>,
    _permit: OwnedSemaphorePermit,
}

/// The classify threads and the admission limit in front of them.
#[derive(Debug)]
pub struct ClassifyPool {
    jobs: std_mpsc::SyncSender<Job>,
    slots: Arc<Semaphore>,
    /// The model the pool runs (a request's `model=` must name it, or say `default`).
    pub model: String,
    /// `top` when a request does not say.
    pub default_top: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("bytes", &self.body.len()).field("top", &self.top).finish()
    }
}

/// The pool stopped (the daemon is shutting down).
#[derive(Debug)]
pub struct Gone;

/// The pool requests go to now: a config reload puts a new one (with the new `[model]`) in its place;
/// requests already in the old one finish there, and its threads end once the last of them answered.
#[derive(Debug, Default)]
pub struct CurrentPool(std::sync::RwLock<Option<Arc<ClassifyPool>>>);

impl CurrentPool {
    pub fn new(pool: Option<ClassifyPool>) -> CurrentPool {
        CurrentPool(std::sync::RwLock::new(pool.map(Arc::new)))
    }

    pub fn get(&self) -> Option<Arc<ClassifyPool>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests from now on go to `pool`.
    pub fn replace(&self, pool: ClassifyPool) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pool));
    }
}

impl ClassifyPool {
    /// Starts one thread per session (the loading policy opens them: [`crate::load::Loaded::more_sessions`]),
    /// with `queue` more requests allowed to wait.
    pub fn start(
        sessions: Vec<Model>,
        queue: usize,
        default_top: usize,
        min_score: f32,
    ) -> Result<ClassifyPool, HttpError> {
        let workers = sessions.len().max(1);
        let (tx, rx) = std_mpsc::sync_channel::<Job>(workers + queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut model_name = String::new();
        for (i, model) in sessions.into_iter().enumerate() {
            model_name = model.spec().name.clone();
            let classifier = Classifier::new(model, MAX_TOP, min_score)?;
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("http-classify-{i}"))
                .spawn(move || serve(classifier, &rx))
                .map_err(HttpError::Thread)?;
        }
        Ok(ClassifyPool { jobs: tx, slots: Arc::new(Semaphore::new(workers + queue)), model: model_name, default_top })
    }

    /// Whether [`ClassifyPool::admit`] would give a place now.
    pub fn has_room(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// A place in the pool, or `None` at once when every worker is busy and the queue is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Classifies `body` (a JPEG or PNG), `crop` = x, y, width, height in its pixels.
    pub async fn classify(
        &self,
        permit: OwnedSemaphorePermit,
        body: axum::body::Bytes,
        top: usize,
        crop: Option<[u32; 4]>,
    ) -> Result<Result<ImageReport, String>, Gone> {
        let (reply, answer) = oneshot::channel();
        // Never blocks: the permits bound what is in the channel to its capacity.
        self.jobs.try_send(Job { body, top, crop, reply, _permit: permit }).map_err(|_| Gone)?;
        answer.await.map_err(|_| Gone)
    }
}

/// After requests, each of the next quiet seconds (as many as [`TRIMS`]) gives the memory they used back to
/// the system; the connections that carried them close during those seconds too.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);
const TRIMS: u32 = 3;

/// A classify thread: lower priority than the cameras, then one job at a time.
fn serve(mut classifier: Classifier, jobs: &Mutex<std_mpsc::Receiver<Job>>) {
    crate::model::runtime::lower_thread_priority();
    let mut trims_due = 0;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv_timeout(IDLE),
            Err(_) => return,
        };
        let job = match job {
            Ok(job) => job,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                if trims_due > 0 {
                    trims_due -= 1;
                    crate::model::runtime::give_back_memory();
                }
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let result = classify(&mut classifier, &job.body, job.top, job.crop);
        let _ = job.reply.send(result);
        trims_due = TRIMS;
    }
}

fn classify(
    classifier: &mut Classifier,
    body: &[u8],
    top: usize,
    crop: Option<[u32; 4]>,
) -> Result<ImageReport, String> {
    // The stage chain `classify --crop` and the cameras' regions run: the crop is taken from the decoded
    // picture before the model's resize (and the picture decoded no larger than the crop needs).
    let crop = match crop {
        // `CropSpec` reads four values of at most 1 as fractions of the picture: in pixels that is a 1×1 crop.
        Some([x, y, w, h]) if w <= 1 && h <= 1 && x <= 1 && y <= 1 => {
            return Err(format!("crop {x},{y},{w},{h} is too small: at least 2 pixels wide or high"));
        }
        Some(c) => Some(CropSpec(c.map(f64::from))),
        None => None,
    };
    let (result, timings) = classifier.classify_crop(Frame::Encoded(body), crop).map_err(|e| e.to_string())?;
    let top_classes: Vec<_> = result.top.iter().take(top).copied().collect();
    // As `classify --json`: a multi-label model lists the classes at or over their thresholds.
    let on = result.multi_label.then(|| result.on.clone());
    Ok(ImageReport::new("request".into(), classifier.model(), top_classes, on, timings, None))
}
