//! The JSON the page and `/api/v1/status` serve (the health message's data and each camera's current
//! classification), and a camera's newest frame as a JPEG.
//!
//! Rates (fps, mean inference time) come from a [`Reporter`] sampled every [`SAMPLE`] by one task, so every
//! reader sees the same figures however often it asks.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::capture::PixelFormat;
use crate::health::{QueueHealth, Report, Reporter};
use crate::live::{Live, LivePipeline, RegionLive};
use crate::pipeline::report::LabeledScore;

/// How often the rates are sampled.
pub const SAMPLE: Duration = Duration::from_secs(2);

/// `/api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The health message's data (`camclassd.health/1`).
    #[serde(flatten)]
    pub report: Report,
    pub broker: BrokerStatus,
    /// The model the cameras run.
    pub model: String,
    /// The part of each frame the model sees (drawn on the page): its input size and recipe.
    pub model_input: ModelInput,
    /// Each camera's newest classification (of its first region: the whole frame for a camera without
    /// regions).
    pub classifications: BTreeMap<String, CameraClassification>,
    /// Each camera's regions, in config order (one unnamed region, the whole frame, without regions).
    pub regions: BTreeMap<String, Vec<RegionStatus>>,
}

/// A region of a camera: where it lies, what runs on it, and its newest classification.
#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    /// `null`: the camera's whole frame (a camera without regions).
    pub name: Option<String>,
    pub model: String,
    /// The region's box in the frame's pixels (null before the first frame, or while outside the frame).
    pub crop: Option<CropBox>,
    #[serde(flatten)]
    pub classification: CameraClassification,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInput {
    pub height: u32,
    pub width: u32,
    /// The shorter side is scaled to this before the centre crop.
    pub resize: u32,
    /// `"center"`: the input is cut from the middle; `"none"`: the whole frame is stretched.
    pub crop: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    pub connected: bool,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraClassification {
    /// The top class's label (null before the first frame).
    pub label: Option<String>,
    pub score: Option<f32>,
    pub top: Vec<LabeledScore>,
    /// Seconds since this classification (null before the first frame).
    pub age_s: Option<f64>,
    pub infer_ms: Option<f64>,
}

/// The newest report, refreshed by [`sample`].
#[derive(Debug, Default)]
pub struct Latest(Mutex<Option<Report>>);

impl Latest {
    pub fn get(&self) -> Option<Report> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Samples the pipeline's counters every [`SAMPLE`] into `latest` (rebasing when a reload replaced the
/// pipeline), until the task is dropped.
pub async fn sample(live: Arc<Live>, latest: Arc<Latest>) {
    let mut reporter: Option<(Arc<LivePipeline>, Reporter)> = None;
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let p = loop {
            // Until the pipeline starts (after the server), look often: the first report comes with it.
            match live.pipeline() {
                Some(p) => break p,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (current, r) = match reporter.take() {
            Some((old, mut r)) if !Arc::ptr_eq(&old, &p) => {
                r.rebase(&p.health);
                (p, r)
            }
            Some(kept) => kept,
            None => {
                let r = Reporter::new(&p.health);
                (p, r)
            }
        };
        let mut r = r;
        let b = &live.broker;
        let queue = QueueHealth {
            depth: b.queue_depth.load(Ordering::Relaxed),
            bytes: b.queue_bytes.load(Ordering::Relaxed),
            dropped: b.events_dropped.load(Ordering::Relaxed),
        };
        let report = r.report(&current.health, &live.node, queue, b.events_published.load(Ordering::Relaxed));
        *latest.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        reporter = Some((current, r));
    }
}

/// The status now: the newest sampled report with the current classifications.
pub fn status(live: &Live, latest: &Latest) -> Option<Status> {
    let mut report = latest.get()?;
    let pipeline = live.pipeline()?;
    report.uptime_s = live.uptime().as_secs();
    let now = SystemTime::now();
    let view = |r: &RegionLive| {
        let latest = r.result();
        let top: Vec<LabeledScore> = latest
            .top
            .iter()
            .map(|&(class_id, score)| LabeledScore { class_id, label: r.label(class_id), score })
            .collect();
        CameraClassification {
            label: top.first().map(|t| t.label.clone()),
            score: top.first().map(|t| t.score),
            age_s: latest.at.map(|at| round2(now.duration_since(at).unwrap_or_default().as_secs_f64())),
            infer_ms: latest.at.map(|_| round2(latest.infer.as_secs_f64() * 1000.0)),
            top,
        }
    };
    let mut classifications = BTreeMap::new();
    let mut regions = BTreeMap::new();
    for c in &pipeline.cameras {
        let list: Vec<RegionStatus> = c
            .regions
            .iter()
            .map(|r| RegionStatus {
                name: r.info.name.clone(),
                model: r.info.model.clone(),
                crop: r.rect().map(|b| CropBox { x: b.x, y: b.y, width: b.width, height: b.height }),
                classification: view(r),
            })
            .collect();
        if let Some(first) = list.first() {
            classifications.insert(c.name.clone(), first.classification.clone());
        }
        regions.insert(c.name.clone(), list);
    }
    Some(Status {
        report,
        broker: BrokerStatus {
            connected: live.broker.connected.load(Ordering::Relaxed),
            reconnects: live.broker.reconnects.load(Ordering::Relaxed),
        },
        model: pipeline.model.clone(),
        model_input: ModelInput {
            height: pipeline.crop.0,
            width: pipeline.crop.1,
            resize: pipeline.crop.2,
            crop: if pipeline.crop.3 { "center" } else { "none" },
        },
        classifications,
        regions,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Why the daemon is not ready (empty: ready): MQTT connected, a pipeline running, its model usable, every
/// camera delivering frames.
pub fn not_ready(live: &Live) -> Vec<String> {
    let mut why = Vec::new();
    if !live.broker.connected.load(Ordering::Relaxed) {
        why.push("not connected to the MQTT broker".to_string());
    }
    match live.pipeline() {
        None => why.push("the pipeline is not running yet".into()),
        Some(p) => {
            if p.model_check.as_ref().is_some_and(|c| c.status == crate::check::CheckStatus::Failed) {
                why.push(format!("model {} failed its check on this CPU", p.model));
            }
            for (i, c) in p.cameras.iter().enumerate() {
                if p.health.camera_totals(i).is_some_and(|(_, _, connected)| !connected) {
                    if p.health.failing_for(i, std::time::Instant::now()).is_some() {
                        why.push(format!("camera {}'s frames do not decode", c.name));
                    } else {
                        why.push(format!("camera {} is stale", c.name));
                    }
                }
            }
        }
    }
    why
}

/// Quality of JPEGs made from raw or PNG frames.
const JPEG_QUALITY: u8 = 80;

/// A camera's newest frame as JPEG, and which frame it is ([`crate::live::LatestFrame::number`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub number: u64,
    pub jpeg: axum::body::Bytes,
}

/// One slot per camera of the running pipeline: its last [`Snapshot`], locked while one is made.
type Slot = Arc<tokio::sync::Mutex<Option<Snapshot>>>;

/// The snapshot slots of the running pipeline (replaced with it at a reload).
#[derive(Debug, Default)]
pub struct Snapshots(Mutex<Option<(std::sync::Weak<LivePipeline>, Vec<Slot>)>>);

impl Snapshots {
    /// `camera`'s slot in `pipeline` (new slots when the pipeline is not the one they were made for).
    pub fn slot(&self, pipeline: &Arc<LivePipeline>, camera: usize) -> Slot {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = slots.as_ref().is_some_and(|(p, _)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(pipeline)));
        if !current {
            let fresh = pipeline.cameras.iter().map(|_| Slot::default()).collect();
            *slots = Some((Arc::downgrade(pipeline), fresh));
        }
        slots.as_ref().and_then(|(_, s)| s.get(camera).cloned()).unwrap_or_default()
    }
}

/// The number of `camera`'s newest frame (0 before the first).
pub fn frame_number(pipeline: &LivePipeline, camera: usize) -> u64 {
    pipeline.cameras.get(camera).map_or(0, |c| c.with_frame(|f| f.number))
}

/// `camera`'s newest frame as a JPEG: a JPEG frame as captured, anything else decoded and encoded. `None`
/// when no frame was kept yet. Blocking (decoding): call it off the async runtime.
pub fn snapshot_jpeg(pipeline: &LivePipeline, camera: usize) -> Option<Result<Snapshot, String>> {
    let c = pipeline.cameras.get(camera)?;
    let (data, format, number) = c.with_frame(|f| f.format.map(|format| (f.data.clone(), format, f.number)))?;
    if format == PixelFormat::Encoded && data.starts_with(&[0xFF, 0xD8]) {
        return Some(Ok(Snapshot { number, jpeg: data.into() }));
    }
    let encoded = encode(&data, format);
    drop(data);
    // A raw 1080p frame is 6 MiB, and its copy, picture and JPEG as much again: what glibc keeps of them
    // goes back to the system at once.
    crate::model::runtime::give_back_memory();
    Some(encoded.map(|jpeg| Snapshot { number, jpeg: jpeg.into() }))
}

fn encode(data: &[u8], format: PixelFormat) -> Result<Vec<u8>, String> {
    let write = |rgb: &[u8], w: u32, h: u32| {
        let mut out = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
        image::ImageEncoder::write_image(encoder, rgb, w, h, image::ExtendedColorType::Rgb8)
            .map(|()| out)
            .map_err(|e| e.to_string())
    };
    // Raw RGB is encoded as it is (no decoded copy).
    if let PixelFormat::Rgb8 { width, height } = format
        && data.len() == width as usize * height as usize * 3
    {
        return write(data, width, height);
    }
    let mut decoder = crate::preprocess::Decoder::new();
    let frame = match format {
        PixelFormat::Encoded => crate::preprocess::Frame::Encoded(data),
        PixelFormat::Rgb8 { width, height } => crate::preprocess::Frame::Rgb8 { width, height, data },
        PixelFormat::Yuyv { width, height } => crate::preprocess::Frame::Yuyv { width, height, data },
    };
    decoder.decode(frame).map_err(|e| e.to_string())?;
    let (w, h, rgb) = decoder.rgb().ok_or_else(|| "the decoder kept no picture".to_string())?;
    write(rgb, w, h)
}
