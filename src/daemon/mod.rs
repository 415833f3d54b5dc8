//! The daemon: wires capture → prepare → infer → events → publish, reloads, watches itself, and shuts down.
//!
//! - this module: the run loop (start, reload on SIGHUP or the `reload` command, shutdown in order) and the
//!   loading of models and the queue;
//! - `pipeline`: everything that depends on the cameras and the model, started, drained and stopped as one;
//! - `worker`: an inference worker's two threads (prepare, infer) and the per-camera publish decision;
//! - `watchdog`: systemd's watchdog and the camera staleness alarm;
//! - `measure`: the pipeline under a camera load without MQTT, measured (`camclassd bench --cameras`).
//!
//! Threads: one capture thread per camera feeding the [`crate::capture::FrameHub`]; per inference worker, a
//! prepare thread and an inference thread circulating two input tensors; the tokio runtime hosts the
//! publisher (MQTT + event queue), the watchdog and this loop. A reload prepares the new config and models
//! on a blocking thread, raced against shutdown, and keeps the MQTT connection when the `[mqtt]` section did
//! not change. Shutdown: capture stops, the frames already captured are classified (for a bounded time),
//! their events queued and published, `offline` is published and the client disconnects.

mod measure;
mod pipeline;
mod report;
mod scale;
mod watchdog;
mod worker;

pub(crate) use measure::{Window, measure_load};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::check;
use crate::config::Config;
use crate::live::Live;
use crate::load::{self, Loaded, Purpose};
use crate::model::{self, ModelError};
use crate::publish::{self, Command, Control, Limits, Publication, PublishError, Queue, QueueError, Settings};
use crate::teach::teacher::{Swap, SwapRequest, Teachers};
use pipeline::Pipeline;

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
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// What the model-loading policy could not load or plan: `(key, message)` each.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    /// The same, located in the config file.
    #[error("{0}")]
    LoadAt(String),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("a pipeline thread failed (see the log); stopped so that the service manager restarts camclassd")]
    Failed,
    #[error(
        "teach.dir: cannot make a taught model's folders: {0}; set [teach] dir to a folder camclassd can write \
         (default: $STATE_DIRECTORY/teach, /var/lib/camclassd/teach)"
    )]
    Teach(#[from] crate::teach::samples::SampleError),
}

impl DaemonError {
    /// The process exit code: 2 for what the user must fix (config, model, library), 1 for run-time failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A full or read-only disk may be fixed by the time systemd restarts us; a config error will not.
            DaemonError::Thread(_) | DaemonError::Failed | DaemonError::Queue(QueueError::Io { .. }) => 1,
            // A port in use may be free when systemd tries again.
            DaemonError::Http(crate::http::HttpError::Bind { .. }) => 1,
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

/// Faults a test harness injects into a daemon it drives (in-process through [`run_with`], or through the
/// debug binary: see `test_hooks` in main.rs); the default injects nothing, and nothing here reads the
/// environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    /// Each inference thread hangs for good after classifying this many frames (the watchdog's test).
    pub stall_inference_after: Option<u64>,
    /// A reload's model loading takes this much longer (a TensorRT engine build, in tests).
    pub slow_reload: Option<Duration>,
}

/// How long shutdown waits for the workers to classify the frames already captured: an inference that
/// hangs must not keep the daemon from stopping before systemd's stop timeout (90 s) ends in SIGKILL.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs until shutdown is requested or every source has finished.
pub async fn run<S: Future<Output = ()>>(
    config: Config,
    config_path: Option<PathBuf>,
    ort_lib: Option<&Path>,
    signals: Signals<S>,
) -> Result<Summary, DaemonError> {
    run_with(config, config_path, ort_lib, signals, Hooks::default()).await
}

/// [`run`] with faults injected by a test harness.
pub async fn run_with<S: Future<Output = ()>>(
    config: Config,
    config_path: Option<PathBuf>,
    ort_lib: Option<&Path>,
    signals: Signals<S>,
    hooks: Hooks,
) -> Result<Summary, DaemonError> {
    if config.mqtt.is_none() || config.cameras.is_empty() {
        return Err(DaemonError::Incomplete);
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut settings = Settings::from_config(&config)?;
    model::runtime::return_large_blocks();
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = model::runtime::load(ort_lib)?;
    let mut http_settings = config.http.as_ref().map(crate::http::Settings::from_config).transpose()?;
    if let Some(http) = http_settings.as_mut() {
        // The cameras' descriptors first: HTTP clients get what the open-file limit leaves.
        http.limits.fit_descriptors(config.cameras.len());
    }
    let teachers = Arc::new(Teachers::default());
    tokio::task::block_in_place(|| configure_teachers(&teachers, &config, runtime))?;
    teachers.commit();
    let loaded = tokio::task::block_in_place(|| load::load(runtime, &config, Purpose::Cameras))
        .map_err(|e| locate(e.into(), config_path.as_deref()))?;
    let (swap_tx, mut swaps) = mpsc::channel::<SwapRequest>(4);
    let queue = open_queue(&config)?;
    let live = Arc::new(Live::new(&config.node_id(), config.http.is_some()));
    // `[http]` is read once (a reload keeps the running one); its classify pool follows the model.
    let http_config = config.http.clone();
    let classify = Arc::new(crate::http::classify::CurrentPool::default());
    let http = match (&http_config, &http_settings) {
        (Some(http), Some(http_settings)) => {
            let pool = tokio::task::block_in_place(|| classify_pool(runtime, &config, &loaded, http))?;
            classify.replace(pool);
            let teach = crate::http::Teach { teachers: Arc::clone(&teachers), swaps: swap_tx.clone() };
            Some(crate::http::Server::start(http_settings, Arc::clone(&live), Arc::clone(&classify), teach).await?)
        }
        _ => None,
    };
    // The page's address once bound: `listen` on port 0 gets its port only now.
    if let (Some(http), Some(server)) = (http_settings.as_mut(), &http) {
        http.bound(server.local_addr);
    }
    if let (Some(d), Some(http)) = (settings.discovery.as_mut(), &http_settings) {
        d.set_configuration_url(&http.url);
    }

    let mut pipeline = Pipeline::start(&config, loaded, hooks, &live, &teachers, None)?;
    let (command_tx, mut commands) = mpsc::channel::<Command>(4);
    let mut publisher = PublisherHandle::spawn(settings.clone(), queue, &pipeline, command_tx.clone(), &live);
    pipeline.run(&publisher.events)?;
    live.set_pipeline(Arc::clone(&pipeline.live));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        node = %config.node_id(),
        cameras = config.cameras.len(),
        workers = %match config.model.workers {
            0 => "auto".to_string(),
            n => n.to_string(),
        },
        "camclassd running"
    );

    let watched = Arc::new(Mutex::new(pipeline.watched()));
    let watchdog = tokio::spawn(watchdog::run(Arc::clone(&watched)));

    let mut summary = Summary::default();
    let Signals { shutdown, mut reload } = signals;
    tokio::pin!(shutdown);
    let mut running = config;
    'serve: loop {
        // Use or Roll back of a taught model: its files moved, waiting for the reload to load it.
        let mut swap: Option<(Swap, tokio::sync::oneshot::Sender<Result<(), String>>)> = None;
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
            Some(request) = swaps.recv() => {
                let started = match teachers.get(&request.model) {
                    Some(teacher) => teacher.swap(request.kind).map_err(|e| e.to_string()),
                    None => Err(format!("no taught model {:?}", request.model)),
                };
                match started {
                    Ok(files) => {
                        tracing::info!(model = %request.model, "{:?}: loading the taught model", request.kind);
                        swap = Some((files, request.reply));
                        true
                    }
                    Err(e) => { let _ = request.reply.send(Err(e)); false }
                }
            }
        };
        if !reload_now {
            continue;
        }
        let Some(path) = config_path.clone() else {
            tracing::warn!("reload asked for, but camclassd was started without a config file");
            refuse_swap(swap, "camclassd was started without a config file: it cannot load a model again".into());
            continue;
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        // Everything that can fail is prepared before the running pipeline stops, on a blocking thread (a
        // TensorRT build takes minutes), while this loop still answers SIGTERM.
        let reload_live = Arc::clone(&live);
        let reload_http = http_config.clone();
        let reload_teachers = Arc::clone(&teachers);
        // Cameras that capture as before keep running through the reload (their hub is handed over).
        let running_cameras = (running.cameras.clone(), pipeline.hub());
        // A Use or Roll back is refused when its model does not load or pass its check.
        let strict = swap.as_ref().map(|(files, _)| files.model().to_string());
        let preparing = tokio::task::spawn_blocking(move || {
            let context = ReloadContext {
                live: &reload_live,
                http: reload_http.as_ref(),
                teachers: &reload_teachers,
                strict: strict.as_deref(),
            };
            prepare_reload(&path, runtime, hooks, context, running_cameras)
        });
        let prepared = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutting down; the reload being prepared is abandoned");
                teachers.abort();
                refuse_swap(swap, "camclassd is shutting down".into());
                break 'serve;
            }
            prepared = preparing => prepared.unwrap_or_else(|e| Err(format!("the reload failed: {e}"))),
        };
        let (new, mut new_settings, mut next, new_pool) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reload refused, the running config stays:\n{e}");
                teachers.abort();
                refuse_swap(swap, e);
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                continue;
            }
        };
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        if let (Some(d), Some(http)) = (new_settings.discovery.as_mut(), &http_settings) {
            d.set_configuration_url(&http.url);
        }
        for change in restart_only_changes(&running, &new) {
            tracing::warn!("{change} changes take effect at the next restart");
        }
        if next.adopted() {
            // The cameras go on; only the workers change.
            summary.frames += pipeline.hand_over(&mut next, DRAIN_LIMIT).await;
        } else {
            summary.frames += pipeline.stop(DRAIN_LIMIT).await;
        }
        pipeline = next;
        // The taught models the new config dropped close now.
        teachers.commit();
        if new_settings.source != settings.source {
            tracing::info!("[mqtt] changed: reconnecting with the new settings");
            let (stats, queue) = publisher.stop().await?;
            summary.add(stats);
            publisher = PublisherHandle::spawn(new_settings.clone(), queue, &pipeline, command_tx.clone(), &live);
        } else {
            let _ = publisher
                .control
                .send(Control::Pipeline { targets: pipeline.targets.clone(), health: Arc::clone(&pipeline.health) })
                .await;
        }
        pipeline.run(&publisher.events)?;
        live.set_pipeline(Arc::clone(&pipeline.live));
        if let Some(pool) = new_pool {
            // Classify requests from now on run the reloaded model.
            classify.replace(pool);
        }
        if let Some(http) = &http_settings {
            // A rotated token takes effect now (as the MQTT secrets do); a file gone bad keeps the old one.
            http.reread_token();
        }
        settings = new_settings;
        running = new;
        if let Ok(mut w) = watched.lock() {
            *w = pipeline.watched();
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!(cameras = pipeline.names.len(), "config reloaded");
        if let Some((files, reply)) = swap.take() {
            files.commit();
            let _ = reply.send(Ok(()));
        }
    }
    // A Use or Roll back asked for now is answered "shutting down".
    swaps.close();
    teachers.close();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    let failed = pipeline.hub.failed();
    summary.frames += pipeline.stop(DRAIN_LIMIT).await;
    // A publisher that died ends the daemon with an error, even when the workers then stopped "cleanly".
    let (stats, _) = publisher.stop().await?;
    summary.add(stats);
    if let Some(http) = http {
        http.stop().await;
    }
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

/// What a reload prepares: the new config, MQTT settings, pipeline (models loaded, nothing started) and,
/// with `[http]`, the classify pool of the new `[model]`.
type Reload = (Config, Settings, Pipeline, Option<crate::http::classify::ClassifyPool>);

/// A reload, prepared, or why not. `http`: the running `[http]` (its classify pool is rebuilt with the new
/// `[model]`, so that the API answers as the cameras do).
/// What a reload prepares against: the page's view, the running `[http]`, the taught models.
struct ReloadContext<'a> {
    live: &'a Live,
    http: Option<&'a crate::config::HttpConfig>,
    teachers: &'a Teachers,
    /// The taught model of a Use or Roll back: refused, not set aside, when it fails.
    strict: Option<&'a str>,
}

fn prepare_reload(
    path: &Path,
    runtime: &'static model::runtime::Runtime,
    hooks: Hooks,
    context: ReloadContext<'_>,
    (running_cameras, hub): (Vec<crate::config::CameraConfig>, Arc<crate::capture::FrameHub>),
) -> Result<Reload, String> {
    let ReloadContext { live, http, teachers, strict } = context;
    let new = Config::load_for_daemon(path).map_err(|e| e.to_string())?;
    let settings = Settings::from_config(&new).map_err(|e| e.to_string())?;
    configure_teachers(teachers, &new, runtime).map_err(|e| e.to_string())?;
    if let Some(delay) = hooks.slow_reload {
        std::thread::sleep(delay);
    }
    let loaded = load::load_with(runtime, &new, Purpose::Cameras, strict).map_err(|e| e.located(path))?;
    let pool = http.map(|http| classify_pool(runtime, &new, &loaded, http)).transpose().map_err(|e| e.to_string())?;
    let keep = pipeline::keeps_cameras(&running_cameras, &new);
    let pipeline =
        Pipeline::start(&new, loaded, hooks, live, teachers, keep.then_some(hub)).map_err(|e| e.to_string())?;
    Ok((new, settings, pipeline, pool))
}

/// The taught models of `config` (`[[models]]` with `teach`), their sample stores opened.
fn configure_teachers(
    teachers: &Teachers,
    config: &Config,
    runtime: &'static model::runtime::Runtime,
) -> Result<(), DaemonError> {
    let t = &config.teach;
    let limits = crate::teach::samples::Limits {
        max_samples: t.max_samples,
        max_bytes: t.max_mb << 20,
        every: Duration::from_secs_f64(t.sample_every),
        diversity: t.diversity as f32,
    };
    let used = config.used_models();
    let taught: Vec<(String, crate::config::Taught)> = config
        .named_models()
        .into_iter()
        .filter(|m| used.contains(&m.name))
        .filter_map(|m| Some((m.name, m.taught?)))
        .collect();
    teachers.configure(&taught, limits, runtime, t.train_threads)?;
    Ok(())
}

/// A Use or Roll back the reload could not do: its files back, the page told why.
fn refuse_swap(swap: Option<(Swap, tokio::sync::oneshot::Sender<Result<(), String>>)>, why: String) {
    if let Some((files, reply)) = swap {
        files.undo();
        let _ = reply.send(Err(format!("refused, the running model stays: {why}")));
    }
}

/// A loading problem with the `file:line:column` of its key, as config errors are shown.
fn locate(e: DaemonError, path: Option<&Path>) -> DaemonError {
    match (e, path) {
        (DaemonError::Load(e), Some(path)) => DaemonError::LoadAt(e.located(path)),
        (e, _) => e,
    }
}

/// The sections a reload cannot apply (the running process keeps them until it restarts).
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changes = Vec::new();
    if running.queue != new.queue {
        changes.push("[queue]");
    }
    if running.http != new.http {
        // The server lives as long as the process; its token file is read again at each reload and its
        // classify sessions follow `[model]`, but its keys (the token file's path included) stay.
        changes.push("[http]");
    }
    if running.onnxruntime.library != new.onnxruntime.library {
        // The library is loaded once per process: ONNX Runtime cannot be unloaded.
        changes.push("[onnxruntime] library");
    }
    changes
}

/// The sessions `POST /api/v1/classify` runs on: the model the cameras run (the fallback when it replaced
/// the configured one), one intra-op thread each. Blocking (loads the model).
fn classify_pool(
    runtime: &'static model::runtime::Runtime,
    config: &Config,
    loaded: &Loaded,
    http: &crate::config::HttpConfig,
) -> Result<crate::http::classify::ClassifyPool, DaemonError> {
    let sessions = loaded.more_sessions(runtime, http.classify_workers.max(1))?;
    let pool = crate::http::classify::ClassifyPool::start(
        sessions,
        http.classify_queue,
        config.model.top_k,
        config.model.min_score,
    )?;
    Ok(pool)
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
    fn spawn(
        settings: Settings,
        queue: Queue,
        pipeline: &Pipeline,
        commands: mpsc::Sender<Command>,
        live: &Live,
    ) -> Self {
        let (events, rx) = mpsc::channel::<Publication>(256);
        let (control, control_rx) = mpsc::channel::<Control>(4);
        let task = tokio::spawn(publish::run(
            settings,
            queue,
            pipeline.targets.clone(),
            Arc::clone(&pipeline.health),
            rx,
            control_rx,
            commands,
            Arc::clone(&live.broker),
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
