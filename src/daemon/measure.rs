//! The daemon's pipeline under a camera load, without MQTT, for `camclassd bench --cameras`: the models
//! loaded as `camclassd run` loads them, the same frame hub, workers and stage chain, and the publications
//! drained and counted by a sink thread instead of the publisher. One run measures a window after a
//! warm-up: process CPU, frames captured, dropped and classified, and each classified frame's time from
//! capture to its publish decision.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::pipeline::Pipeline;
use super::{DRAIN_LIMIT, DaemonError, Hooks, locate};
use crate::config::Config;
use crate::health::{LatencyCounts, process_cpu_time};
use crate::live::Live;
use crate::load::{self, Purpose};
use crate::model::runtime::Runtime;
use crate::publish::Publication;

/// What the pipeline did in the measured window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    pub(crate) wall: Duration,
    /// User + system CPU time of the whole process (capture, workers, ONNX Runtime's threads, the sink).
    pub(crate) cpu: Duration,
    /// Frames the cameras delivered.
    pub(crate) captured: u64,
    /// Frames replaced in the hub by a newer one before a worker took them.
    pub(crate) dropped: u64,
    /// Frames classified (every due region inferred).
    pub(crate) classified: u64,
    /// Publications the workers handed on.
    pub(crate) published: u64,
    /// Capture → publish decision, per classified frame.
    pub(crate) latency: LatencyCounts,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    cpu: Duration,
    captured: u64,
    dropped: u64,
    classified: u64,
    published: u64,
    latency: LatencyCounts,
}

impl Sample {
    fn take(pipeline: &Pipeline, published: &AtomicU64) -> Sample {
        let (mut captured, mut dropped, mut classified) = (0, 0, 0);
        for camera in 0..pipeline.names.len() {
            let (c, d) = pipeline.hub.counts(camera);
            captured += c;
            dropped += d;
            classified += pipeline.health.camera_totals(camera).map_or(0, |(frames, _, _)| frames);
        }
        Sample {
            at: Instant::now(),
            cpu: process_cpu_time(),
            captured,
            dropped,
            classified,
            published: published.load(Ordering::Relaxed),
            latency: pipeline.health.decision_latencies(),
        }
    }

    fn since(&self, earlier: &Sample) -> Window {
        Window {
            wall: self.at.saturating_duration_since(earlier.at),
            cpu: self.cpu.saturating_sub(earlier.cpu),
            captured: self.captured.saturating_sub(earlier.captured),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            classified: self.classified.saturating_sub(earlier.classified),
            published: self.published.saturating_sub(earlier.published),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

/// Loads `config`'s models, runs its cameras through the daemon's pipeline for `warmup`, measures `window`,
/// then stops it (capture first, the frames already captured classified). Blocking: call it from a plain
/// thread, not from an async task. `config_path` places region errors in the file.
pub(crate) fn measure_load(
    runtime: &'static Runtime,
    config: &Config,
    config_path: Option<&Path>,
    warmup: Duration,
    window: Duration,
) -> Result<Window, DaemonError> {
    let loaded = load::load(runtime, config, Purpose::Cameras).map_err(|e| locate(e.into(), config_path))?;
    // As the daemon: the workers keep each camera's newest frame when `[http]` would show it.
    let live = Live::new(&config.node_id(), config.http.is_some());
    // No samples are kept while measuring.
    let teachers = crate::teach::teacher::Teachers::default();
    let mut pipeline = Pipeline::start(config, loaded, Hooks::default(), &live, &teachers, None)?;
    let published = Arc::new(AtomicU64::new(0));
    // The publisher's place: take every publication at once (the workers never wait for it) and count it.
    let (events, mut rx) = mpsc::channel::<Publication>(256);
    let count = Arc::clone(&published);
    std::thread::Builder::new().name("bench-sink".into()).spawn(move || {
        while rx.blocking_recv().is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    // Pipeline::stop waits with tokio's timers.
    let stopper = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let started = pipeline.run(&events);
    // The workers hold their own senders: the sink ends with them.
    drop(events);
    let measured = started.and_then(|()| {
        std::thread::sleep(warmup);
        let first = Sample::take(&pipeline, &published);
        std::thread::sleep(window);
        let last = Sample::take(&pipeline, &published);
        if pipeline.hub.failed() { Err(DaemonError::Failed) } else { Ok(last.since(&first)) }
    });
    stopper.block_on(pipeline.stop(DRAIN_LIMIT));
    measured
}
