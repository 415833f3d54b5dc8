//! The daemon: wires capture → preprocess → infer → postprocess → events → publish, reloads, watches
//! itself, and shuts down.
//!
//! Threads: one capture thread per camera feeding the [`FrameHub`]; per inference worker, a decode thread
//! (decode + resize + normalise) and an inference thread, joined by a one-slot channel so the next frame is
//! prepared while the current one is inferred; the tokio runtime hosts the publisher (MQTT + event queue)
//! and the watchdog. A [`Pipeline`] is everything that depends on the cameras and the model; a config
//! reload (SIGHUP, or `reload` on the command topic) builds a new one and keeps the MQTT connection when
//! the `[mqtt]` section did not change. Shutdown (the `shutdown` future, or every replay source finished):
//! capture stops, frames already captured are classified, their events queued and published, `offline`
//! is published and the client disconnects.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::capture::{self, FrameHub};
use crate::check::{self, CheckStatus, ModelCheck};
use crate::config::{Config, PublishMode};
use crate::events::{self, Event, EventClass, EventTiming, ModelRef, Policy, PolicyState, Reason, State};
use crate::health::Health;
use crate::model::{self, Model, ModelError};
use crate::pipeline::Classifier;
use crate::postprocess::{Classification, Postprocessor};
use crate::preprocess::Preprocessor;
use crate::publish::{self, Command, Control, Limits, Publication, PublishError, Queue, QueueError, Settings};

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
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Check(#[from] check::CheckLoadError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("a pipeline thread failed (see the log); stopped so that the service manager restarts camclassd")]
    Failed,
}

impl DaemonError {
    /// The process exit code: 2 for what the user must fix (config, model, library), 1 for run-time failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A full or read-only disk may be fixed by the time systemd restarts us; a config error will not.
            DaemonError::Thread(_) | DaemonError::Failed | DaemonError::Queue(QueueError::Io { .. }) => 1,
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
    /// Events left in the on-disk queue for the next start.
    pub events_queued: u64,
}

/// What the daemon listens to besides its pipeline.
#[derive(Debug)]
pub struct Signals<S> {
    /// Resolves on SIGTERM / SIGINT.
    pub shutdown: S,
    /// One message per SIGHUP.
    pub reload: mpsc::Receiver<()>,
}

/// Per-camera state shared by the inference workers.
#[derive(Debug)]
struct CameraState {
    name: String,
    policy: Policy,
    state: PolicyState,
    /// The class last published on the retained `state` topic (`Some(None)`: "nothing").
    stated: Option<Option<usize>>,
    /// Publish the next classified frame whatever the policy says (the `snapshot` command).
    snapshot: bool,
}

/// Runs until shutdown is requested or every source has finished.
pub async fn run<S: Future<Output = ()>>(
    config: Config,
    config_path: Option<PathBuf>,
    ort_lib: Option<&Path>,
    signals: Signals<S>,
) -> Result<Summary, DaemonError> {
    if config.mqtt.is_none() || config.cameras.is_empty() {
        return Err(DaemonError::Incomplete);
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut settings = Settings::from_config(&config)?;
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = model::runtime::load(ort_lib)?;
    let (models, check) = load_models(runtime, &config)?;
    let queue = open_queue(&config)?;

    let mut pipeline = Pipeline::start(&config, models, check)?;
    let (command_tx, mut commands) = mpsc::channel::<Command>(4);
    let mut publisher = PublisherHandle::spawn(settings.clone(), queue, &pipeline, command_tx.clone());
    pipeline.run(&publisher.events)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        node = %config.node_id(),
        cameras = config.cameras.len(),
        workers = config.model.workers,
        "camclassd running"
    );

    let watched = Arc::new(Mutex::new((Arc::clone(&pipeline.health), Arc::clone(&pipeline.hub))));
    let watchdog = tokio::spawn(watchdog(Arc::clone(&watched)));

    let mut summary = Summary::default();
    let Signals { shutdown, mut reload } = signals;
    tokio::pin!(shutdown);
    let queue_config = config.queue.clone();
    loop {
        let reload_now = tokio::select! {
            () = &mut shutdown => { tracing::info!("shutting down"); break }
            Some(frames) = pipeline.done.recv() => {
                // A worker ended on its own: every replay source finished (or a thread failed).
                pipeline.finished += 1;
                summary.frames += frames;
                break;
            }
            Some(()) = reload.recv() => { tracing::info!("SIGHUP: reloading the config"); true }
            Some(command) = commands.recv() => match command {
                Command::Reload => true,
                Command::Snapshot { camera } => { pipeline.snapshot(camera.as_deref()); false }
            },
        };
        if !reload_now {
            continue;
        }
        let Some(path) = config_path.as_deref() else {
            tracing::warn!("reload asked for, but camclassd was started without a config file");
            continue;
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        // Everything that can fail is prepared before the running pipeline stops.
        let prepared = Config::load_for_daemon(path).map_err(|e| e.to_string()).and_then(|new| {
            let s = Settings::from_config(&new).map_err(|e| e.to_string())?;
            let (m, check) = load_models(runtime, &new).map_err(|e| e.to_string())?;
            let p = Pipeline::start(&new, m, check).map_err(|e| e.to_string())?;
            Ok((new, s, p))
        });
        let (new, new_settings, next) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reload refused, the running config stays:\n{e}");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                continue;
            }
        };
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        if new.queue != queue_config {
            tracing::warn!("[queue] changes take effect at the next restart");
        }
        summary.frames += pipeline.stop().await;
        pipeline = next;
        if new_settings.source != settings.source {
            tracing::info!("[mqtt] changed: reconnecting with the new settings");
            let (stats, queue) = publisher.stop().await?;
            summary.add(stats);
            publisher = PublisherHandle::spawn(new_settings.clone(), queue, &pipeline, command_tx.clone());
        } else {
            let _ = publisher
                .control
                .send(Control::Pipeline { cameras: pipeline.names.clone(), health: Arc::clone(&pipeline.health) })
                .await;
        }
        pipeline.run(&publisher.events)?;
        settings = new_settings;
        if let Ok(mut w) = watched.lock() {
            *w = (Arc::clone(&pipeline.health), Arc::clone(&pipeline.hub));
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!(cameras = pipeline.names.len(), "config reloaded");
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    let failed = pipeline.hub.failed();
    summary.frames += pipeline.stop().await;
    // A publisher that died ends the daemon with an error, even when the workers then stopped "cleanly".
    let (stats, _) = publisher.stop().await?;
    summary.add(stats);
    tracing::info!(
        frames = summary.frames,
        events = summary.events,
        dropped_events = summary.events_dropped,
        queued_events = summary.events_queued,
        "stopped"
    );
    if failed {
        return Err(DaemonError::Failed);
    }
    Ok(summary)
}

impl Summary {
    fn add(&mut self, stats: publish::PublishStats) {
        self.events += stats.events;
        self.events_dropped += stats.dropped;
        self.events_queued = stats.queued;
    }
}

/// One inference session per worker. By default a worker's session gets its share of the cores minus one,
/// which its decode thread uses: on 2 cores, 1 intra-op thread classifies 233 frames/s against 213 with 2
/// (the decode thread then fights inference for a core).
///
/// The first session runs the model's own check ([`check::at_load`]); on a failure `[model]
/// on_check_failure` decides: refuse, warn, or load `[model] fallback` for every worker instead.
fn load_models(
    runtime: &'static model::runtime::Runtime,
    config: &Config,
) -> Result<(Vec<Model>, ModelCheck), DaemonError> {
    let workers = config.model.workers;
    let mut options = config.model.model_options();
    if options.threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        options.threads = Some((cores / workers).saturating_sub(1).max(1));
    }
    let mut first = Classifier::new(Model::load(runtime, &config.model.path, &options)?, 1, 0.0);
    let outcome = check::at_load(&mut first, config.model.on_check_failure)?;
    let path = match (&outcome.status, &config.model.fallback) {
        (CheckStatus::Fallback, Some(fallback)) => {
            tracing::warn!(fallback = %fallback.display(), "running the fallback model instead of {}", outcome.model);
            fallback.clone()
        }
        _ => config.model.path.clone(),
    };
    let mut models = Vec::with_capacity(workers);
    if path == config.model.path {
        models.push(first.into_model());
    }
    while models.len() < workers {
        models.push(Model::load(runtime, &path, &options)?);
    }
    Ok((models, outcome))
}

fn open_queue(config: &Config) -> Result<Queue, DaemonError> {
    let limits = Limits { max_events: config.queue.max_events, max_bytes: config.queue.max_mb * 1024 * 1024 };
    let queue = tokio::task::block_in_place(|| Queue::open(&config.queue.path, limits))?;
    Ok(queue)
}

/// The running publisher task and the channels into it.
struct PublisherHandle {
    events: mpsc::Sender<Publication>,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<(publish::PublishStats, Queue)>,
}

impl PublisherHandle {
    fn spawn(settings: Settings, queue: Queue, pipeline: &Pipeline, commands: mpsc::Sender<Command>) -> Self {
        let (events, rx) = mpsc::channel::<Publication>(256);
        let (control, control_rx) = mpsc::channel::<Control>(4);
        let task = tokio::spawn(publish::run(
            settings,
            queue,
            pipeline.names.clone(),
            Arc::clone(&pipeline.health),
            rx,
            control_rx,
            commands,
        ));
        PublisherHandle { events, control, task }
    }

    /// Ends the publisher once the pipeline's senders are gone and gives back the queue; an error if the
    /// publisher died (its queue with it), so that the service manager restarts camclassd.
    async fn stop(self) -> Result<(publish::PublishStats, Queue), DaemonError> {
        let PublisherHandle { events, control, task } = self;
        drop((events, control));
        task.await.map_err(|e| {
            tracing::error!("the publisher failed: {e}");
            DaemonError::Failed
        })
    }
}

/// Everything that depends on the cameras and the model: built by [`Pipeline::start`] (which may fail and
/// touches no device), set going by [`Pipeline::run`], and drained by [`Pipeline::stop`].
struct Pipeline {
    names: Vec<String>,
    cameras_config: Vec<crate::config::CameraConfig>,
    cameras: Arc<Mutex<Vec<CameraState>>>,
    health: Arc<Health>,
    hub: Arc<FrameHub>,
    stop: Arc<AtomicBool>,
    models: Vec<Model>,
    top_k: usize,
    min_score: f32,
    node: Arc<str>,
    captures: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<u64>,
    done_tx: Option<mpsc::Sender<u64>>,
    workers: usize,
    finished: usize,
    dropped: Arc<AtomicU64>,
    fault: Fault,
}

impl Pipeline {
    fn start(config: &Config, models: Vec<Model>, check: ModelCheck) -> Result<Pipeline, DaemonError> {
        if config.cameras.is_empty() {
            return Err(DaemonError::Incomplete);
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
                stated: None,
                snapshot: false,
            })
            .collect();
        let names: Vec<String> = cameras.iter().map(|c| c.name.clone()).collect();
        let (done_tx, done) = mpsc::channel::<u64>(models.len().max(1));
        Ok(Pipeline {
            health: Arc::new(Health::new(&names).with_model_check(check)),
            names,
            cameras_config: config.cameras.clone(),
            cameras: Arc::new(Mutex::new(cameras)),
            hub: Arc::new(FrameHub::new(config.cameras.len())),
            stop: Arc::new(AtomicBool::new(false)),
            workers: models.len(),
            models,
            top_k: config.model.top_k,
            min_score: config.model.min_score,
            node: config.node_id().into(),
            captures: Vec::new(),
            done,
            done_tx: Some(done_tx),
            finished: 0,
            dropped: Arc::new(AtomicU64::new(0)),
            fault: Fault::from_env(),
        })
    }

    /// Starts the capture threads and the workers, whose events go to `events`.
    fn run(&mut self, events: &mpsc::Sender<Publication>) -> Result<(), DaemonError> {
        self.captures = capture::spawn_all(&self.cameras_config, &self.hub, &self.stop)?;
        let Some(done_tx) = self.done_tx.take() else { return Ok(()) };
        for (i, model) in std::mem::take(&mut self.models).into_iter().enumerate() {
            let worker = Worker {
                hub: Arc::clone(&self.hub),
                cameras: Arc::clone(&self.cameras),
                health: Arc::clone(&self.health),
                events: events.clone(),
                node: Arc::clone(&self.node),
                top_k: self.top_k,
                min_score: self.min_score,
                dropped: Arc::clone(&self.dropped),
                fault: self.fault,
            };
            spawn_worker(i, worker, model, done_tx.clone())?;
        }
        Ok(())
    }

    /// Asks the next classified frame of `camera` (or of every camera) to be published.
    fn snapshot(&self, camera: Option<&str>) {
        let mut cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        for c in cameras.iter_mut().filter(|c| camera.is_none_or(|name| c.name == name)) {
            c.snapshot = true;
            found = true;
        }
        if !found {
            tracing::warn!(camera = camera.unwrap_or_default(), "snapshot: no such camera");
        }
    }

    /// Stops capture, lets the workers classify what was captured, and returns the frames classified.
    async fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.hub.close();
        let mut frames = 0;
        while self.finished < self.workers {
            match self.done.recv().await {
                Some(n) => {
                    self.finished += 1;
                    frames += n;
                }
                None => break,
            }
        }
        // A capture thread stuck in a device read must not hold the exit: give them a second.
        let captures = std::mem::take(&mut self.captures);
        let join = tokio::task::spawn_blocking(move || captures.into_iter().for_each(|h| drop(h.join())));
        if tokio::time::timeout(Duration::from_secs(1), join).await.is_err() {
            tracing::warn!("a camera did not stop within 1 s (blocked in a device read); going on without it");
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "events dropped because the publisher was behind");
        }
        frames
    }
}

/// systemd's watchdog: `WATCHDOG=1` every half period, but only while inference is moving — or has nothing
/// to do. A stuck inference (frames waiting, no run finishing) stops the pings and systemd restarts us.
async fn watchdog(watched: Arc<Mutex<(Arc<Health>, Arc<FrameHub>)>>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec) / 2;
    let mut last = None;
    let mut warned = false;
    loop {
        tokio::time::sleep(period).await;
        let (moved, idle) = {
            let Ok(w) = watched.lock() else { continue };
            let (health, hub) = &*w;
            let n = health.inferences();
            let moved = last.is_none_or(|l| l != n);
            last = Some(n);
            (moved, !health.busy() && !hub.waiting())
        };
        if moved || idle {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            tracing::error!("inference is stuck (frames waiting, none classified): watchdog pings stopped");
            warned = true;
        }
    }
}

/// Fault injection for the watchdog's integration test: `CAMCLASSD_FAULT=stall-inference-after:N` makes
/// the inference thread hang after N frames. Read once; inert unless set.
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    stall_after: Option<u64>,
}

impl Fault {
    fn from_env() -> Fault {
        let stall_after = std::env::var("CAMCLASSD_FAULT")
            .ok()
            .and_then(|v| v.strip_prefix("stall-inference-after:").and_then(|n| n.parse().ok()));
        Fault { stall_after }
    }
}

struct Worker {
    hub: Arc<FrameHub>,
    cameras: Arc<Mutex<Vec<CameraState>>>,
    health: Arc<Health>,
    events: mpsc::Sender<Publication>,
    node: Arc<str>,
    top_k: usize,
    min_score: f32,
    /// Events the publisher had no room for.
    dropped: Arc<AtomicU64>,
    fault: Fault,
}

/// A frame prepared for inference.
struct Prepared {
    camera: usize,
    tensor: Vec<f32>,
    captured_at: SystemTime,
    captured: Instant,
    preprocess: Duration,
}

fn spawn_worker(index: usize, worker: Worker, mut model: Model, done: mpsc::Sender<u64>) -> std::io::Result<()> {
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
        let _ = done.blocking_send(frames);
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
    let mut pre = Preprocessor::new(spec);
    let mut next = 0;
    // Per camera, frames skipped in a row: logged at the first and at powers of two, and at recovery.
    let mut skipped = vec![0u64; names.len()];
    while let Some((camera, frame)) = hub.take(&mut next) {
        let Ok(mut tensor) = free_rx.recv() else { break };
        let t0 = Instant::now();
        let result = pre.decode(frame.as_frame()).and_then(|_| pre.write_tensor(&mut tensor));
        let preprocess = t0.elapsed();
        let (captured_at, captured) = (frame.captured_at, frame.captured);
        hub.recycle(camera, frame.data);
        let name = || names.get(camera).map_or("?", String::as_str);
        let streak = skipped.get_mut(camera);
        if let Err(e) = result {
            if let Some(n) = streak {
                *n += 1;
                if n.is_power_of_two() {
                    tracing::warn!(camera = name(), skipped = *n, "frame skipped: {e}");
                }
            }
            let _ = free_tx.send(tensor);
            continue;
        }
        if let Some(n) = streak.filter(|n| **n > 0) {
            tracing::info!(camera = name(), "frames decode again after {n} skipped");
            *n = 0;
        }
        if ready_tx.send(Prepared { camera, tensor, captured_at, captured, preprocess }).is_err() {
            break;
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
    let mut post = Postprocessor::new(model.spec().output, worker.top_k, worker.min_score);
    let mut result = Classification::default();
    let mut frames = 0u64;
    let model_ref = ModelRef { name: model.spec().name.clone(), sha256: model.sha256().to_string() };
    // Inference failures in a row: logged at the first and at powers of two, and at recovery.
    let mut failures = 0u64;
    while let Ok(mut p) = ready_rx.recv() {
        model.input_slot_mut(0).copy_from_slice(&p.tensor);
        // The tensor goes straight back: the decode thread fills it while this frame is inferred.
        let _ = free_back.send(std::mem::take(&mut p.tensor));
        worker.health.begin();
        if worker.fault.stall_after.is_some_and(|n| frames >= n) {
            tracing::warn!("CAMCLASSD_FAULT: inference stalls here (test hook)");
            loop {
                std::thread::park();
            }
        }
        let t0 = Instant::now();
        let run = model.run().map(|_| ());
        let infer = t0.elapsed();
        let camera = p.camera;
        worker.health.end(camera, infer, run.is_ok());
        if let Err(e) = run {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::error!(camera = %worker.camera_name(camera), failures, "inference failed: {e}");
            }
            continue;
        }
        if failures > 0 {
            tracing::info!("inference works again after {failures} failures");
            failures = 0;
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
        self.health.set_dropped(camera, frames_dropped);
        let mut cameras = self.cameras.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cam = &mut cameras[camera];
        let best = result.best();
        let observed = cam.state.observe(cam.policy, best, frame.captured);
        let reason = match (std::mem::take(&mut cam.snapshot), observed) {
            (_, Some(reason)) => reason,
            (true, None) => Reason::Snapshot,
            (false, None) => return None,
        };
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
            // Assigned by the publisher's queue, which keeps counting across restarts.
            seq: 0,
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
        Some(Publication { event, state, captured: frame.captured })
    }
}
