//! An inference worker: a prepare thread ([`Prepare`]: decode → input tensor) and an inference thread
//! ([`Infer`]: model + postprocess), joined by a one-slot hand-off. Two input tensors circulate between them,
//! so the next frame is prepared into one while the other is inferred, and nothing is copied. The inference
//! thread then asks [`events::decide`] whether the camera speaks, and hands the publication on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::DaemonError;
use crate::capture::FrameHub;
use crate::events::{self, Decision, ModelRef, Observed, Speaker, Tracker};
use crate::health::Health;
use crate::live::LivePipeline;
use crate::model::{Input, Model, ModelSpec};
use crate::pipeline::{Infer, Prepare};
use crate::publish::Publication;

/// A camera as the workers see it: its name and its publish memory.
#[derive(Debug)]
pub(super) struct Camera {
    pub(super) name: String,
    pub(super) tracker: Tracker,
}

pub(super) struct Worker {
    pub(super) hub: Arc<FrameHub>,
    pub(super) cameras: Arc<Mutex<Vec<Camera>>>,
    pub(super) health: Arc<Health>,
    pub(super) events: mpsc::Sender<Publication>,
    pub(super) node: Arc<str>,
    pub(super) top_k: usize,
    pub(super) min_score: f32,
    /// Publications the publisher had no room for (decided again on a later frame).
    pub(super) dropped: Arc<AtomicU64>,
    /// Test hook ([`super::Hooks`]): hang after this many frames.
    pub(super) stall_after: Option<u64>,
    /// The newest frame and classification per camera, for the HTTP page.
    pub(super) live: Arc<LivePipeline>,
}

/// A frame prepared for inference.
struct Prepared {
    camera: usize,
    number: u64,
    input: Input,
    captured_at: SystemTime,
    captured: Instant,
    preprocess: Duration,
}

impl Worker {
    pub(super) fn spawn(self, index: usize, model: Model, done: mpsc::Sender<u64>) -> Result<(), DaemonError> {
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Prepared>(1);
        let (free_tx, free_rx) = std_mpsc::channel::<Input>();
        for _ in 0..2 {
            let _ = free_tx.send(model.new_input()?);
        }
        let spec = model.spec().clone();
        let names: Vec<String> =
            self.cameras.lock().map(|c| c.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
        let hub = Arc::clone(&self.hub);
        let live = Arc::clone(&self.live);
        std::thread::Builder::new().name(format!("prepare-{index}")).spawn(move || {
            let prepare = AssertUnwindSafe(|| prepare_loop(&hub, &spec, &names, &free_rx, &ready_tx, &live));
            if catch_unwind(prepare).is_err() {
                tracing::error!("prepare thread panicked; stopping the daemon");
                hub.fail();
            }
        })?;
        std::thread::Builder::new().name(format!("infer-{index}")).spawn(move || {
            let hub = Arc::clone(&self.hub);
            let mut infer = Infer::new(model, self.top_k, self.min_score);
            let run = AssertUnwindSafe(|| self.infer_loop(&mut infer, &ready_rx, &free_tx));
            let frames = catch_unwind(run).unwrap_or_else(|_| {
                tracing::error!("inference thread panicked; stopping the daemon");
                hub.fail();
                0
            });
            let _ = done.blocking_send(frames);
        })?;
        Ok(())
    }

    fn camera_name(&self, camera: usize) -> String {
        self.cameras.lock().map(|c| c[camera].name.clone()).unwrap_or_default()
    }

    /// Infers prepared frames, decides what each camera publishes, hands it to the publisher. Returns the
    /// number of frames classified.
    fn infer_loop(
        &self,
        infer: &mut Infer,
        ready_rx: &std_mpsc::Receiver<Prepared>,
        free_tx: &std_mpsc::Sender<Input>,
    ) -> u64 {
        let mut frames = 0u64;
        let model = infer.model();
        let model_ref = ModelRef { name: model.spec().name.clone(), sha256: model.sha256().to_string() };
        let labels = model.spec().labels.clone();
        // Inference failures in a row: logged at the first and at powers of two, and at recovery.
        let mut failures = 0u64;
        while let Ok(p) = ready_rx.recv() {
            self.health.begin();
            if self.stall_after.is_some_and(|n| frames >= n) {
                tracing::warn!("inference stalls here (test hook)");
                loop {
                    std::thread::park();
                }
            }
            let run = infer.run(&p.input);
            // The tensor goes back to the prepare thread, which fills it with the frame after next.
            let Prepared { camera, number, input, captured_at, captured, preprocess } = p;
            let _ = free_tx.send(input);
            let infer_time = run.as_ref().map_or(Duration::ZERO, |d| *d);
            self.health.end(camera, infer_time, run.is_ok());
            if let Err(e) = run {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::error!(camera = %self.camera_name(camera), failures, "inference failed: {e}");
                }
                continue;
            }
            if failures > 0 {
                tracing::info!("inference works again after {failures} failures");
                failures = 0;
            }
            frames += 1;
            self.health.frame_seen(camera, captured);
            let (_, frames_dropped) = self.hub.counts(camera);
            self.health.set_dropped(camera, frames_dropped);
            let classification = infer.classification(0);
            if let Some(c) = self.live.cameras.get(camera) {
                c.store_result(classification, infer_time);
            }
            self.live.inference.observe(infer_time.as_secs_f64());
            let observed = Observed {
                frame: number,
                captured,
                captured_at,
                classification,
                preprocess,
                infer: infer_time,
                frames_dropped,
            };
            if !self.publish(camera, &observed, &model_ref, &labels) {
                break;
            }
        }
        frames
    }

    /// Decides for one classified frame and hands the publication on; the camera's tracker advances only
    /// when the publisher took it. False when the publisher is gone.
    fn publish(&self, camera: usize, observed: &Observed<'_>, model: &ModelRef, labels: &[String]) -> bool {
        let mut cameras = self.cameras.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cam = &mut cameras[camera];
        let who = Speaker { node: &self.node, camera: &cam.name, model, labels };
        let (next, decision) = events::decide(cam.tracker, observed, &who);
        match decision {
            Decision::Stale => {
                // Another worker finished a newer frame of this camera first: this one is late.
                self.health.add_late(camera);
                true
            }
            Decision::Quiet => {
                cam.tracker = next;
                true
            }
            Decision::Publish { event, state } => {
                match self.events.try_send(Publication { event, state }) {
                    Ok(()) => {
                        cam.tracker = next;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // The tracker stays where it was: the next frame decides the same change again.
                        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(camera = %cam.name, times = n, "publisher is behind: the event waits for a later frame");
                        }
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
        }
    }
}

/// Takes frames from the hub, prepares them into free input tensors, hands them to inference.
fn prepare_loop(
    hub: &FrameHub,
    spec: &ModelSpec,
    names: &[String],
    free_rx: &std_mpsc::Receiver<Input>,
    ready_tx: &std_mpsc::SyncSender<Prepared>,
    live: &LivePipeline,
) {
    let mut prepare = Prepare::new(spec);
    let mut next = 0;
    // Per camera, frames skipped in a row: logged at the first and at powers of two, and at recovery.
    let mut skipped = vec![0u64; names.len()];
    // A tensor whose frame failed to prepare: used for the next frame.
    let mut spare = None;
    while let Some((camera, number, frame)) = hub.take(&mut next) {
        let mut input = match spare.take() {
            Some(input) => input,
            None => match free_rx.recv() {
                Ok(input) => input,
                Err(_) => break,
            },
        };
        let result = prepare.frame(frame.as_frame(), &mut input, 0);
        if live.keep_frames
            && result.is_ok()
            && let Some(c) = live.cameras.get(camera)
        {
            c.store_frame(&frame);
        }
        let (captured_at, captured) = (frame.captured_at, frame.captured);
        hub.recycle(camera, frame.data);
        let name = || names.get(camera).map_or("?", String::as_str);
        let streak = skipped.get_mut(camera);
        let timings = match result {
            Ok(t) => t,
            Err(e) => {
                if let Some(n) = streak {
                    *n += 1;
                    if n.is_power_of_two() {
                        tracing::warn!(camera = name(), skipped = *n, "frame skipped: {e}");
                    }
                }
                spare = Some(input);
                continue;
            }
        };
        if let Some(n) = streak.filter(|n| **n > 0) {
            tracing::info!(camera = name(), "frames decode again after {n} skipped");
            *n = 0;
        }
        let preprocess = timings.decode + timings.preprocess;
        if ready_tx.send(Prepared { camera, number, input, captured_at, captured, preprocess }).is_err() {
            break;
        }
    }
}
