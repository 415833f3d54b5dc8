//! What the daemon is doing right now, for readers outside the pipeline (the HTTP page, `/metrics`, the
//! JSON API): one [`Live`] per process, written by the pipeline and the publisher with atomics and
//! short-held locks, read on request. Nothing here blocks a frame or allocates per frame after warm-up.
//!
//! - [`BrokerStats`]: the publisher's side (connection, reconnects, events, queue, capture→publish time);
//! - [`LivePipeline`]: the running pipeline (its counters, frame hub, model), replaced at a config reload;
//! - [`CameraLive`]: per camera, the newest frame's bytes and its regions ([`RegionLive`]: each region's
//!   box in the frame and newest classification; a camera without regions has one, the whole frame).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::histogram::Histogram;

use crate::capture::{CapturedFrame, FrameHub, PixelFormat};
use crate::check::ModelCheck;
use crate::health::Health;
use crate::postprocess::Classification;
use crate::preprocess::Rect;

/// Histogram buckets for inference and capture→publish times, seconds (1 ms … ~16 s).
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

/// The publisher's counters. Totals count from the daemon's start; gauges are the current value.
#[derive(Debug)]
pub struct BrokerStats {
    pub connected: AtomicBool,
    /// Connections opened after the first.
    pub reconnects: AtomicU64,
    /// Events the broker acknowledged.
    pub events_published: AtomicU64,
    /// Events written to the on-disk queue.
    pub events_queued: AtomicU64,
    /// Events the full queue dropped (its own count, which survives restarts with the queue file).
    pub events_dropped: AtomicU64,
    pub queue_depth: AtomicU64,
    pub queue_bytes: AtomicU64,
    /// From a frame's capture to its event's hand-over to the MQTT client.
    pub capture_to_publish: Histogram,
}

impl Default for BrokerStats {
    fn default() -> Self {
        BrokerStats {
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            events_queued: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            capture_to_publish: Histogram::new(latency_buckets()),
        }
    }
}

impl BrokerStats {
    pub fn set_queue(&self, depth: u64, bytes: u64, dropped: u64) {
        self.queue_depth.store(depth, Ordering::Relaxed);
        self.queue_bytes.store(bytes, Ordering::Relaxed);
        self.events_dropped.store(dropped, Ordering::Relaxed);
    }
}

/// A camera's newest frame, as captured (JPEG, PNG or raw pixels).
#[derive(Debug, Default)]
pub struct LatestFrame {
    pub data: Vec<u8>,
    pub format: Option<PixelFormat>,
    pub captured_at: Option<SystemTime>,
    /// Counts frames kept, so a reader can tell a new one from the last it saw.
    pub number: u64,
}

/// A camera's newest classification.
#[derive(Debug, Default, Clone)]
pub struct LatestResult {
    /// (class id, score), best first.
    pub top: Vec<(usize, f32)>,
    pub at: Option<SystemTime>,
    pub infer: Duration,
}

/// What a region is, for [`Live::pipeline_view`].
#[derive(Debug, Clone)]
pub struct RegionInfo {
    /// `None`: the camera's whole frame (a camera without regions).
    pub name: Option<String>,
    /// The model's name: the config's for a named region, the model's own for the whole frame.
    pub model: String,
    pub labels: Arc<[String]>,
}

/// One region of a camera as readers see it.
#[derive(Debug)]
pub struct RegionLive {
    pub info: RegionInfo,
    /// The region's box in the frame's pixels, once a frame was seen (`None` before, or while the crop
    /// lies outside the frame).
    rect: Mutex<Option<Rect>>,
    result: Mutex<LatestResult>,
}

impl RegionLive {
    fn new(info: RegionInfo) -> RegionLive {
        RegionLive { info, rect: Mutex::default(), result: Mutex::default() }
    }

    /// The region's box in frame pixels (set when the frame size is first seen or changes).
    pub fn set_rect(&self, rect: Option<Rect>) {
        *self.rect.lock().unwrap_or_else(|p| p.into_inner()) = rect;
    }

    pub fn rect(&self) -> Option<Rect> {
        *self.rect.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the top classes of the region's newest classification (its buffer reused).
    pub fn store_result(&self, classification: &Classification, infer: Duration) {
        let mut r = self.result.lock().unwrap_or_else(|p| p.into_inner());
        r.top.clear();
        r.top.extend(classification.top.iter().map(|s| (s.class_id, s.score)));
        r.at = Some(SystemTime::now());
        r.infer = infer;
    }

    pub fn result(&self) -> LatestResult {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn label(&self, class_id: usize) -> String {
        crate::postprocess::label(&self.info.labels, class_id).into_owned()
    }
}

/// One camera as readers see it.
#[derive(Debug)]
pub struct CameraLive {
    pub name: String,
    frame: Mutex<LatestFrame>,
    /// Its regions in config order (one, the whole frame, for a camera without regions).
    pub regions: Vec<RegionLive>,
}

impl CameraLive {
    fn new(name: &str, regions: Vec<RegionInfo>) -> CameraLive {
        CameraLive {
            name: name.to_string(),
            frame: Mutex::default(),
            regions: regions.into_iter().map(RegionLive::new).collect(),
        }
    }

    /// Keeps a copy of `frame` (its buffer reused: no allocation once the largest frame was seen).
    pub fn store_frame(&self, frame: &CapturedFrame) {
        let mut f = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        f.data.clear();
        f.data.extend_from_slice(&frame.data);
        f.format = Some(frame.format);
        f.captured_at = Some(frame.captured_at);
        f.number += 1;
    }

    /// Runs `f` on the newest frame (under its lock: keep it short).
    pub fn with_frame<T>(&self, f: impl FnOnce(&LatestFrame) -> T) -> T {
        f(&self.frame.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The running pipeline as readers see it; replaced whole at a config reload.
#[derive(Debug)]
pub struct LivePipeline {
    pub health: Arc<Health>,
    pub hub: Arc<FrameHub>,
    pub cameras: Vec<CameraLive>,
    /// The model the cameras run (the fallback's name when it replaced the configured one).
    pub model: String,
    pub labels: Arc<[String]>,
    pub model_check: Option<ModelCheck>,
    /// What part of a frame the model sees: `(height, width, resize, centre crop)` of its recipe.
    pub crop: (u32, u32, u32, bool),
    /// Inference time of this pipeline's model.
    pub inference: Histogram,
    /// Whether the workers keep each camera's newest frame (only when someone can look at it).
    pub keep_frames: bool,
}

impl LivePipeline {
    pub fn label(&self, class_id: usize) -> String {
        crate::postprocess::label(&self.labels, class_id).into_owned()
    }

    pub fn camera(&self, name: &str) -> Option<(usize, &CameraLive)> {
        self.cameras.iter().enumerate().find(|(_, c)| c.name == name)
    }
}

/// The whole process as readers see it.
#[derive(Debug)]
pub struct Live {
    pub node: String,
    pub started: Instant,
    pub broker: Arc<BrokerStats>,
    pipeline: RwLock<Option<Arc<LivePipeline>>>,
    /// Inference histograms by model name, kept across reloads so their counts only grow.
    inference: Mutex<Vec<(String, Histogram)>>,
    keep_frames: bool,
}

impl Live {
    /// `keep_frames`: copy each camera's newest frame for the page and the snapshot endpoint.
    pub fn new(node: &str, keep_frames: bool) -> Live {
        Live {
            node: node.to_string(),
            started: Instant::now(),
            broker: Arc::new(BrokerStats::default()),
            pipeline: RwLock::new(None),
            inference: Mutex::new(Vec::new()),
            keep_frames,
        }
    }

    /// A view of a pipeline about to run: its cameras (each with its regions), counters and model.
    pub fn pipeline_view(
        &self,
        cameras: Vec<(String, Vec<RegionInfo>)>,
        health: &Arc<Health>,
        hub: &Arc<FrameHub>,
        spec: &crate::model::ModelSpec,
    ) -> Arc<LivePipeline> {
        let (model, labels) = (spec.name.as_str(), &spec.labels);
        let inference = {
            let mut all = self.inference.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter().find(|(m, _)| m == model) {
                Some((_, h)) => h.clone(),
                None => {
                    let h = Histogram::new(latency_buckets());
                    all.push((model.to_string(), h.clone()));
                    h
                }
            }
        };
        Arc::new(LivePipeline {
            health: Arc::clone(health),
            hub: Arc::clone(hub),
            cameras: cameras.into_iter().map(|(n, r)| CameraLive::new(&n, r)).collect(),
            model: model.to_string(),
            labels: labels.as_slice().into(),
            crop: (spec.input_size.0, spec.input_size.1, spec.resize, spec.crop == crate::model::spec::Crop::Center),
            model_check: health.model_check.clone(),
            inference,
            keep_frames: self.keep_frames,
        })
    }

    /// The pipeline now running.
    pub fn set_pipeline(&self, pipeline: Arc<LivePipeline>) {
        *self.pipeline.write().unwrap_or_else(|p| p.into_inner()) = Some(pipeline);
    }

    pub fn pipeline(&self) -> Option<Arc<LivePipeline>> {
        self.pipeline.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every model's inference histogram so far.
    pub fn inference_histograms(&self) -> Vec<(String, Histogram)> {
        self.inference.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}
