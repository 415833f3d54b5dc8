//! The daemon: wires capture → preprocess → infer → postprocess → events → publish, and shuts it down.
//!
//! Threads: one capture thread per camera feeding the [`FrameHub`]; per inference worker, a decode thread
//! (decode + resize + normalise) and an inference thread, joined by a one-slot channel so the next frame is
//! prepared while the current one is inferred; the tokio runtime hosts the MQTT tasks. Shutdown (the
//! `shutdown` future, or every replay source finished): capture stops, frames already captured are
//! classified, their events published, `offline` is published and the client disconnects.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::capture::{self, FrameHub};
use crate::config::{Config, PublishMode};
use crate::events::{self, Event, EventClass, EventTiming, ModelRef, Policy, PolicyState, Reason, State};
use crate::model::{self, Model, ModelError};
use crate::postprocess::{Classification, Postprocessor};
use crate::preprocess::Preprocessor;
use crate::publish::{self, Publication, PublishError, Settings};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the config has no [mqtt] section or no cameras")]
    Incomplete,
    #[error(transparent)]
    Runtime(#[from] model::runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("a pipeline thread failed (see the log); stopped so that the service manager restarts camclassd")]
    Failed,
}

impl DaemonError {
    /// The process exit code: 2 for what the user must fix (config, model, library), 1 for run-time failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Thread(_) | DaemonError::Failed => 1,
            _ => 2,
        }
    }
}

/// What a run did, for the exit log line and the tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub frames: u64,
    pub events: u64,
    pub events_dropped: u64,
}

/// Per-camera state shared by the inference workers.
#[derive(Debug)]
struct CameraState {
    name: String,
    policy: Policy,
    state: PolicyState,
    seq: u64,
    /// The class last published on the retained `state` topic (`Some(None)`: "nothing").
    stated: Option<Option<usize>>,
}

/// Runs until `shutdown` resolves or every source has finished.
pub async fn run(
    config: Config,
    ort_lib: Option<&Path>,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, DaemonError> {
    let mqtt = config.mqtt.as_ref().ok_or(DaemonError::Incomplete)?;
    if config.cameras.is_empty() {
        return Err(DaemonError::Incomplete);
    }
    let node = config.node_id();
    let settings = Settings::from_config(mqtt, &node)?;
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = model::runtime::load(ort_lib)?;

    // Each worker has its own session and decode thread. By default a worker's session gets its share of
    // the cores minus one, which its decode thread uses: on 2 cores, 1 intra-op thread classifies 233
    // frames/s against 213 with 2 (the decode thread then fights inference for a core).
    let workers = config.model.workers;
    let mut options = config.model.model_options();
    if options.threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        options.threads = Some((cores / workers).saturating_sub(1).max(1));
    }
    let mut models = Vec::with_capacity(workers);
    for _ in 0..workers {
        models.push(Model::load(runtime, &config.model.path, &options)?);
    }

    let cameras: Vec<CameraState> = config
        .cameras
        .iter()
        .map(|c| CameraState {
            name: c.name.clone(),
            policy: match c.publish {
                PublishMode::EveryFrame => Policy::EveryFrame,
                PublishMode::OnChange => Policy::OnChange {
                    debounce: c.debounce,
                    heartbeat: (c.interval > 0.0).then(|| Duration::from_secs_f64(c.interval)),
                    min_score: c.min_score.unwrap_or(config.model.min_score),
                },
            },
            state: PolicyState::default(),
            seq: 0,
            stated: None,
        })
        .collect();
    let names: Vec<String> = cameras.iter().map(|c| c.name.clone()).collect();
    let cameras = Arc::new(Mutex::new(cameras));

    let (tx, rx) = mpsc::channel::<Publication>(256);
    let publisher = tokio::spawn(publish::run(settings, names, rx));

    let hub = Arc::new(FrameHub::new(config.cameras.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let captures = capture::spawn_all(&config.cameras, &hub, &stop)?;

    let (done_tx, mut done_rx) = mpsc::channel::<Summary>(workers);
    let node: Arc<str> = node.into();
    let dropped = Arc::new(AtomicU64::new(0));
    for (i, model) in models.into_iter().enumerate() {
        let worker = Worker {
            hub: Arc::clone(&hub),
            cameras: Arc::clone(&cameras),
            events: tx.clone(),
            node: Arc::clone(&node),
            top_k: config.model.top_k,
            min_score: config.model.min_score,
            dropped: Arc::clone(&dropped),
        };
        let done = done_tx.clone();
        spawn_worker(i, worker, model, done)?;
    }
    drop((tx, done_tx));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(node = %node, cameras = config.cameras.len(), workers, "camclassd running");

    // Wait for a stop request, or for the workers to end on their own (every replay finished).
    let mut summary = Summary::default();
    let mut finished = 0;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(s) = done_rx.recv() => { finished += 1; summary.frames += s.frames; }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::Relaxed);
    hub.close();
    while finished < workers {
        match done_rx.recv().await {
            Some(s) => {
                finished += 1;
                summary.frames += s.frames;
            }
            None => break,
        }
    }
    let stats = publisher.await.unwrap_or_default();
    summary.events = stats.events;
    summary.events_dropped = stats.dropped + dropped.load(Ordering::Relaxed);
    // A capture thread stuck in a device read must not hold the exit: give them a second.
    let join = tokio::task::spawn_blocking(move || captures.into_iter().for_each(|h| drop(h.join())));
    if tokio::time::timeout(Duration::from_secs(1), join).await.is_err() {
        tracing::warn!("a camera did not stop within 1 s (blocked in a device read); exiting without it");
    }
    tracing::info!(
        frames = summary.frames,
        events = summary.events,
        dropped_events = summary.events_dropped,
        "stopped"
    );
    if hub.failed() {
        return Err(DaemonError::Failed);
    }
    Ok(summary)
}

struct Worker {
    hub: Arc<FrameHub>,
    cameras: Arc<Mutex<Vec<CameraState>>>,
    events: mpsc::Sender<Publication>,
    node: Arc<str>,
    top_k: usize,
    min_score: f32,
    /// Events the publisher had no room for.
    dropped: Arc<AtomicU64>,
}

/// A frame prepared for inference.
struct Prepared {
    camera: usize,
    tensor: Vec<f32>,
    captured_at: SystemTime,
    captured: Instant,
    preprocess: Duration,
}

fn spawn_worker(index: usize, worker: Worker, mut model: Model, done: mpsc::Sender<Summary>) -> std::io::Result<()> {
    // Two tensors circulate: one being filled by the decode thread, one being inferred.
    let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Prepared>(1);
    let (free_tx, free_rx) = std_mpsc::channel::<Vec<f32>>();
    let len = model.input_len_per_image();
    for _ in 0..2 {
        let _ = free_tx.send(vec![0.0; len]);
    }
    let spec = model.spec().clone();
    let hub = Arc::clone(&worker.hub);
    let names: Vec<String> =
        worker.cameras.lock().map(|c| c.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
    let free_back = free_tx.clone();
    let decode_hub = Arc::clone(&hub);
    std::thread::Builder::new().name(format!("decode-{index}")).spawn(move || {
        let decode = AssertUnwindSafe(|| decode_loop(&hub, &spec, &names, &free_rx, &free_tx, &ready_tx));
        if catch_unwind(decode).is_err() {
            tracing::error!("decode thread panicked; stopping the daemon");
            decode_hub.fail();
        }
    })?;
    let infer_hub = Arc::clone(&worker.hub);
    std::thread::Builder::new().name(format!("infer-{index}")).spawn(move || {
        let infer = AssertUnwindSafe(|| infer_loop(&worker, &mut model, &ready_rx, &free_back));
        let frames = catch_unwind(infer).unwrap_or_else(|_| {
            tracing::error!("inference thread panicked; stopping the daemon");
            infer_hub.fail();
            0
        });
        let _ = done.blocking_send(Summary { frames, ..Summary::default() });
    })?;
    Ok(())
}

/// Takes frames from the hub, decodes and preprocesses them into free tensors, hands them to inference.
fn decode_loop(
    hub: &FrameHub,
    spec: &crate::model::ModelSpec,
    names: &[String],
    free_rx: &std_mpsc::Receiver<Vec<f32>>,
    free_tx: &std_mpsc::Sender<Vec<f32>>,
    ready_tx: &std_mpsc::SyncSender<Prepared>,
) {
    {
        let mut pre = Preprocessor::new(spec);
        let mut next = 0;
        while let Some((camera, frame)) = hub.take(&mut next) {
            let Ok(mut tensor) = free_rx.recv() else { break };
            let t0 = Instant::now();
            let result = pre.decode(frame.as_frame()).and_then(|_| pre.write_tensor(&mut tensor));
            let preprocess = t0.elapsed();
            let (captured_at, captured) = (frame.captured_at, frame.captured);
            hub.recycle(camera, frame.data);
            if let Err(e) = result {
                let name = names.get(camera).map_or("?", String::as_str);
                tracing::warn!(camera = name, "frame skipped: {e}");
                let _ = free_tx.send(tensor);
                continue;
            }
            if ready_tx.send(Prepared { camera, tensor, captured_at, captured, preprocess }).is_err() {
                break;
            }
        }
    }
}

/// Runs inference on prepared frames, applies the publish policy, hands events to the publisher.
/// Returns the number of frames classified.
fn infer_loop(
    worker: &Worker,
    model: &mut Model,
    ready_rx: &std_mpsc::Receiver<Prepared>,
    free_back: &std_mpsc::Sender<Vec<f32>>,
) -> u64 {
    {
        let mut post = Postprocessor::new(model.spec().output, worker.top_k, worker.min_score);
        let mut result = Classification::default();
        let mut frames = 0u64;
        let model_ref = ModelRef { name: model.spec().name.clone(), sha256: model.sha256().to_string() };
        while let Ok(mut p) = ready_rx.recv() {
            model.input_slot_mut(0).copy_from_slice(&p.tensor);
            // The tensor goes straight back: the decode thread fills it while this frame is inferred.
            let _ = free_back.send(std::mem::take(&mut p.tensor));
            let t0 = Instant::now();
            let run = model.run().map(|_| ());
            let infer = t0.elapsed();
            let camera = p.camera;
            if let Err(e) = run {
                tracing::error!(camera = %worker.camera_name(camera), "inference failed: {e}");
                continue;
            }
            frames += 1;
            post.process(model.scores(0), &mut result);
            if let Some(publication) = worker.decide(camera, &result, model, &model_ref, &p, infer) {
                match worker.events.try_send(publication) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => worker.dropped_event(camera),
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
        frames
    }
}

impl Worker {
    fn camera_name(&self, camera: usize) -> String {
        self.cameras.lock().map(|c| c[camera].name.clone()).unwrap_or_default()
    }

    /// The publisher had no room: count it, warn at powers of two, and make the next event re-state.
    fn dropped_event(&self, camera: usize) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(camera = %self.camera_name(camera), dropped = n, "publisher is behind: events dropped");
        }
        if let Ok(mut cameras) = self.cameras.lock() {
            cameras[camera].stated = None;
        }
    }

    /// Applies the camera's publish policy to a classified frame; builds the event when it says so.
    fn decide(
        &self,
        camera: usize,
        result: &Classification,
        model: &Model,
        model_ref: &ModelRef,
        frame: &Prepared,
        infer: Duration,
    ) -> Option<Publication> {
        let (_, frames_dropped) = self.hub.counts(camera);
        let mut cameras = self.cameras.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cam = &mut cameras[camera];
        let best = result.best();
        let reason = cam.state.observe(cam.policy, best, frame.captured)?;
        cam.seq += 1;
        let shown = match cam.policy {
            Policy::OnChange { min_score, .. } => best.filter(|b| b.score >= min_score),
            Policy::EveryFrame => best,
        };
        let class = shown.map(|b| b.class_id);
        let captured_at = events::rfc3339(frame.captured_at);
        let state = (cam.stated != Some(class) || reason == Reason::Change).then(|| {
            cam.stated = Some(class);
            State {
                schema: events::STATE_SCHEMA,
                class_id: class,
                label: class.map(|c| model.label(c).into_owned()),
                score: shown.map_or(0.0, |b| b.score),
                since: captured_at.clone(),
            }
        });
        let event = Event {
            schema: events::SCHEMA,
            node: self.node.to_string(),
            camera: cam.name.clone(),
            seq: cam.seq,
            captured_at,
            reason,
            top: result
                .top
                .iter()
                .map(|s| EventClass {
                    class_id: s.class_id,
                    label: model.label(s.class_id).into_owned(),
                    score: s.score,
                })
                .collect(),
            model: model_ref.clone(),
            timing_ms: EventTiming {
                capture_to_publish: 0.0,
                preprocess: events::millis(frame.preprocess),
                infer: events::millis(infer),
            },
            frames_dropped,
        };
        Some(Publication { camera, event, state, captured: frame.captured })
    }
}
