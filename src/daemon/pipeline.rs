//! A pipeline: everything that depends on the cameras and the model. Built by [`Pipeline::start`] (which may
//! fail and touches no device), set going by [`Pipeline::run`], drained and stopped by [`Pipeline::stop`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::scale::{self, Scaler, Scaling};
use super::worker::{Batching, Camera, LastClassified, Layout, Worker};
use super::{DaemonError, Hooks, watchdog};
use crate::capture::{self, FrameHub};
use crate::config::{CameraConfig, Config};
use crate::events::Tracker;
use crate::health::Health;
use crate::live::{Live, LivePipeline, RegionInfo};
use crate::load::{Loaded, Reopen};
use crate::model::{Model, Provider};
use crate::publish::{Publication, Target};
use crate::teach::teacher::Teachers;

pub(super) struct Pipeline {
    pub(super) names: Vec<String>,
    /// What speaks: each camera's whole frame, or its regions.
    pub(super) targets: Vec<Target>,
    cameras_config: Vec<CameraConfig>,
    cameras: Arc<Mutex<Vec<Camera>>>,
    layout: Arc<Layout>,
    pub(super) health: Arc<Health>,
    pub(super) hub: Arc<FrameHub>,
    stop: Arc<AtomicBool>,
    /// Per worker, one session per model (by [`region::Region::model`]).
    models: Vec<Vec<Model>>,
    top_k: usize,
    min_score: f32,
    node: Arc<str>,
    captures: Vec<JoinHandle<()>>,
    pub(super) done: mpsc::Receiver<u64>,
    done_tx: Option<mpsc::Sender<u64>>,
    /// Workers started, those the scaler added and retired included (each reports on `done` when it ends).
    spawned: Arc<AtomicUsize>,
    pub(super) finished: usize,
    /// With `[model] workers = 0` on the CPU: what the scaler needs, until [`Pipeline::run`] starts it.
    adapt: Option<Adapt>,
    scaler: Option<Scaler>,
    /// Intra-op threads per worker.
    threads: usize,
    /// Time the workers' inference threads spent on batches.
    busy_ns: Arc<AtomicU64>,
    /// Frames classified by the workers the scaler retired.
    retired_frames: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    hooks: Hooks,
    /// What the HTTP server reads of this pipeline.
    pub(super) live: Arc<LivePipeline>,
    /// Started on a running pipeline's hub: its capture threads are handed over, not started.
    adopted: bool,
}

/// The adaptive parallelism's plan: more workers from `reopen`, up to `max`.
struct Adapt {
    reopen: Reopen,
    max: usize,
}

impl Pipeline {
    /// The pipeline of `config` over the models the loading policy loaded and planned ([`crate::load`]).
    pub(super) fn start(
        config: &Config,
        loaded: Loaded,
        hooks: Hooks,
        live: &Live,
        teachers: &Teachers,
        hub: Option<Arc<FrameHub>>,
    ) -> Result<Pipeline, DaemonError> {
        if config.cameras.is_empty() || loaded.sessions.is_empty() {
            return Err(DaemonError::Incomplete);
        }
        let infos = loaded.infos();
        let threads = loaded.threads();
        // Automatic on the CPU only: a GPU's sessions are not multiplied by the load.
        let auto = config.model.workers == 0 && config.model.execution_providers.iter().all(|p| *p == Provider::Cpu);
        // Workers of `threads` intra-op threads each (1 unless `threads` is set) fill the cores, no more.
        let adapt = auto.then(|| Adapt { reopen: loaded.reopen.clone(), max: (scale::max_workers() / threads).max(1) });
        let Loaded { sessions: models, names: model_names, check, plan, .. } = loaded;
        let first = &models[0];
        let mut targets = Vec::new();
        let mut ranges = Vec::new();
        let mut all = Vec::new();
        let mut cameras = Vec::new();
        // What the HTTP page shows of each camera's regions.
        let mut shown = Vec::new();
        let labels: Vec<Arc<[String]>> = infos.iter().map(|m| m.labels.as_slice().into()).collect();
        for (c, regions) in config.cameras.iter().zip(plan) {
            let views = regions
                .iter()
                .map(|r| RegionInfo {
                    name: r.name.clone(),
                    model: match &r.name {
                        Some(_) => infos[r.model].name.clone(),
                        None => first.get(r.model).map_or_else(String::new, |m| m.spec().name.clone()),
                    },
                    labels: Arc::clone(&labels[r.model]),
                })
                .collect();
            shown.push((c.name.clone(), views));
            ranges.push(all.len()..all.len() + regions.len());
            cameras.push(Camera {
                name: c.name.clone(),
                trackers: regions.iter().map(|r| Tracker::new(r.policy)).collect(),
            });
            for r in &regions {
                targets.push(Target {
                    camera: c.name.clone(),
                    region: r.name.clone(),
                    binary: r.binary.clone(),
                    snapshot: r.snapshot.is_some(),
                });
            }
            all.extend(regions);
        }
        let batching =
            Batching { max: config.model.max_batch, delay: Duration::from_millis(config.model.max_batch_delay_ms) };
        let classified = LastClassified::new(all.len());
        // Each region of a taught model feeds its model's samples.
        let mut samples = Vec::with_capacity(all.len());
        for (c, range) in config.cameras.iter().zip(&ranges) {
            for region in &all[range.clone()] {
                let store = teachers.get(&model_names[region.model]).map(|t| Arc::clone(&t.samples));
                samples.push(store.map(|s| {
                    let slot = s.region(&c.name, region.name.as_deref().unwrap_or_default());
                    (s, slot)
                }));
            }
        }
        let layout = Arc::new(Layout { regions: all, cameras: ranges, model_names, batching, classified, samples });
        let names: Vec<String> = cameras.iter().map(|c| c.name.clone()).collect();
        let (done_tx, done) = mpsc::channel::<u64>(models.len().max(1));
        let health = Arc::new(Health::new(&names).with_model_check(check));
        health.set_parallelism(models.len(), threads);
        // The running cameras' hub when a reload keeps them ([`Pipeline::hand_over`]).
        let adopted = hub.is_some();
        let hub = hub.unwrap_or_else(|| Arc::new(FrameHub::new(config.cameras.len())));
        // `[model]` is always loaded, first: its recipe is the one the page shows.
        let spec = first.first().map(|m| m.spec().clone()).ok_or(DaemonError::Incomplete)?;
        let live = live.pipeline_view(shown, &health, &hub, &spec);
        Ok(Pipeline {
            health,
            names,
            targets,
            layout,
            cameras_config: config.cameras.clone(),
            cameras: Arc::new(Mutex::new(cameras)),
            hub,
            live,
            stop: Arc::new(AtomicBool::new(false)),
            spawned: Arc::new(AtomicUsize::new(0)),
            adapt,
            scaler: None,
            threads,
            busy_ns: Arc::new(AtomicU64::new(0)),
            retired_frames: Arc::new(AtomicU64::new(0)),
            models,
            top_k: config.model.top_k,
            min_score: config.model.min_score,
            node: config.node_id().into(),
            captures: Vec::new(),
            done,
            done_tx: Some(done_tx),
            finished: 0,
            dropped: Arc::new(AtomicU64::new(0)),
            hooks,
            adopted,
        })
    }

    /// Started on a running pipeline's hub ([`Pipeline::hand_over`] gives it the cameras).
    pub(super) fn adopted(&self) -> bool {
        self.adopted
    }

    /// The hub the next pipeline takes over when it keeps the cameras.
    pub(super) fn hub(&self) -> Arc<FrameHub> {
        Arc::clone(&self.hub)
    }

    /// Hands the running cameras to `next` (started on this pipeline's hub): this pipeline's workers end
    /// (classifying nothing more; the frames waiting are `next`'s), its capture threads and their stop flag
    /// go to `next`, whose [`Pipeline::run`] starts only its workers. The cameras never stop: no reconnect,
    /// no gap but the workers' hand-over. Returns the frames this pipeline classified.
    pub(super) async fn hand_over(&mut self, next: &mut Pipeline, limit: Duration) -> u64 {
        self.stop_scaler().await;
        // A worker that does not end in time (a hung inference) can never take a frame again.
        self.hub.retire_consumers();
        let frames = self.wait_workers(limit).await;
        next.captures = std::mem::take(&mut self.captures);
        next.stop = Arc::clone(&self.stop);
        frames
    }

    /// What the watchdog and the staleness alarm look at.
    pub(super) fn watched(&self) -> watchdog::Watched {
        watchdog::Watched {
            health: Arc::clone(&self.health),
            hub: Arc::clone(&self.hub),
            stall_after: self.cameras_config.iter().map(watchdog::stall_after).collect(),
            told_stuck: vec![None; self.cameras_config.len()],
        }
    }

    /// Starts the capture threads and the workers, whose events go to `events`.
    pub(super) fn run(&mut self, events: &mpsc::Sender<Publication>) -> Result<(), DaemonError> {
        if !self.adopted {
            self.captures = capture::spawn_all(&self.cameras_config, &self.hub, &self.stop)?;
        }
        let Some(done_tx) = self.done_tx.take() else { return Ok(()) };
        let worker = Worker {
            hub: Arc::clone(&self.hub),
            cameras: Arc::clone(&self.cameras),
            layout: Arc::clone(&self.layout),
            health: Arc::clone(&self.health),
            events: events.clone(),
            node: Arc::clone(&self.node),
            top_k: self.top_k,
            min_score: self.min_score,
            dropped: Arc::clone(&self.dropped),
            stall_after: self.hooks.stall_inference_after,
            live: Arc::clone(&self.live),
            busy_ns: Arc::clone(&self.busy_ns),
            retired_frames: Arc::clone(&self.retired_frames),
        };
        for (i, model) in std::mem::take(&mut self.models).into_iter().enumerate() {
            worker.clone().spawn(i, model, done_tx.clone())?;
            self.spawned.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(Adapt { reopen, max }) = self.adapt.take().filter(|a| a.max > 1) {
            let (spawned, counted, hub) = (Arc::clone(&self.spawned), Arc::clone(&self.spawned), Arc::clone(&self.hub));
            // Thread names: never one of a worker still running (the count goes down when one retires).
            let mut next_index = self.spawned.load(Ordering::Acquire);
            let scaling = Scaling {
                hub: Arc::clone(&self.hub),
                health: Arc::clone(&self.health),
                busy_ns: Arc::clone(&self.busy_ns),
                max,
                threads: self.threads,
                open: Box::new(move || reopen.open().map_err(|e| e.to_string())),
                start: Box::new(move |models| {
                    let id = worker.clone().spawn(next_index, models, done_tx.clone()).map_err(|e| e.to_string())?;
                    next_index += 1;
                    spawned.fetch_add(1, Ordering::AcqRel);
                    Ok(id)
                }),
                // Not waited for at the drain: it reports its frames in `retired_frames`, not on `done`.
                retire: Box::new(move |id| {
                    counted.fetch_sub(1, Ordering::AcqRel);
                    hub.retire_consumer(id);
                }),
            };
            self.scaler = Some(Scaler::start(scaling)?);
        }
        Ok(())
    }

    /// Stops the adaptive parallelism's scaler (no worker comes or goes after this).
    async fn stop_scaler(&mut self) {
        if let Some(mut scaler) = self.scaler.take() {
            let _ = tokio::task::spawn_blocking(move || scaler.stop()).await;
        }
    }

    /// Asks the next classified frame of `camera` (or of every camera) to be published.
    pub(super) fn snapshot(&self, camera: Option<&str>) {
        let mut cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        for c in cameras.iter_mut().filter(|c| camera.is_none_or(|name| c.name == name)) {
            c.trackers.iter_mut().for_each(Tracker::request_snapshot);
            found = true;
        }
        if !found {
            tracing::warn!(camera = camera.unwrap_or_default(), "snapshot: no such camera");
        }
    }

    /// Stops capture, lets the workers classify what was captured (for at most `limit`), and returns the
    /// frames classified.
    pub(super) async fn stop(&mut self, limit: Duration) -> u64 {
        self.stop_scaler().await;
        self.stop.store(true, Ordering::Relaxed);
        self.hub.close();
        let frames = self.wait_workers(limit).await;
        // A capture thread stuck in a device read must not hold the exit: give them a second.
        let captures = std::mem::take(&mut self.captures);
        let join = tokio::task::spawn_blocking(move || captures.into_iter().for_each(|h| drop(h.join())));
        if tokio::time::timeout(Duration::from_secs(1), join).await.is_err() {
            tracing::warn!(
                "a camera did not stop within 1 s (blocked reading its device or pipe); going on without it"
            );
        }
        frames
    }

    /// Waits for the workers to end (for at most `limit`) and returns the frames they classified.
    async fn wait_workers(&mut self, limit: Duration) -> u64 {
        let mut frames = 0;
        let deadline = tokio::time::Instant::now() + limit;
        let workers = self.spawned.load(Ordering::Acquire);
        while self.finished < workers {
            match tokio::time::timeout_at(deadline, self.done.recv()).await {
                Ok(Some(n)) => {
                    self.finished += 1;
                    frames += n;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::error!(
                        "{} inference worker(s) did not finish within {limit:?} (inference stuck?); going on without them",
                        workers - self.finished
                    );
                    // The threads are left behind: the process exits (or the next pipeline runs) without them.
                    self.finished = workers;
                    break;
                }
            }
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "events the publisher had no room for were decided again on later frames (changes are not lost)"
            );
        }
        frames + self.retired_frames.swap(0, Ordering::Relaxed)
    }
}

/// Whether `config`'s cameras capture as `running` do (same cameras, same order, same sources and settings):
/// a reload to it keeps them running ([`Pipeline::hand_over`]).
pub(super) fn keeps_cameras(running: &[CameraConfig], config: &Config) -> bool {
    running.len() == config.cameras.len() && running.iter().zip(&config.cameras).all(|(a, b)| a.same_capture(b))
}
