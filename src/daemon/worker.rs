//! An inference worker: a prepare thread (decode a frame once, then each of its camera's regions → that
//! region's input tensor, with its model's recipe) and an inference thread (each region's model +
//! postprocess). Two sets of input tensors per camera (one tensor per region) circulate between them, so
//! the next frame is prepared into one while the other is inferred: a region is resampled where it lies in
//! the decoded frame and written straight into the tensor.
//!
//! The inference thread takes the prepared frames that are ready together (up to `[model] max_batch`,
//! waiting at most `max_batch_delay_ms` for more) and runs each model once over all their regions' images
//! (gathered into one batch tensor), as DeepStream's stream muxer batches cameras. It then asks
//! [`events::decide`] whether each region of each frame speaks, frame by frame in the order they were
//! prepared, and hands the publication on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::DaemonError;
use super::report::{Decoded, Inferred, Report};
use crate::capture::{Consumer, FrameHub};
use crate::events::{self, Decision, ModelRef, Observed, Reason, Speaker, Tracker};
use crate::health::Health;
use crate::live::LivePipeline;
use crate::model::{Input, Model, ModelError, ModelSpec};
use crate::pipeline::Infer;
use crate::postprocess::Classification;
use crate::preprocess::motion::Thumbnails;
use crate::preprocess::snapshot::Snap;
use crate::preprocess::{Decoder, Need, Rect, TensorWriter};
use crate::publish::Publication;
use crate::region::{Gate, Placement, Region, Verdict};
use crate::teach::samples::{SAMPLE_SIZE, Samples};

/// A camera as the workers see it: its name and its regions' publish memory.
#[derive(Debug)]
pub(super) struct Camera {
    pub(super) name: String,
    /// One per region of [`Layout::regions`] of this camera, in the same order.
    pub(super) trackers: Vec<Tracker>,
}

/// Every camera's regions, fixed for a pipeline; a region's index in [`Layout::regions`] is its input
/// tensor's in a [`Tensors`] set.
#[derive(Debug)]
pub(super) struct Layout {
    pub(super) regions: Vec<Region>,
    /// Per camera, the range of its regions in `regions`.
    pub(super) cameras: Vec<std::ops::Range<usize>>,
    /// The models' config names, by [`Region::model`].
    pub(super) model_names: Vec<String>,
    pub(super) batching: Batching,
    /// When each region was last classified, shared by every worker's prepare thread, so that
    /// `classify_every` and the motion gate's `max_skip` hold for the camera, not per worker.
    pub(super) classified: LastClassified,
    /// Per region of a taught model: its model's sample store and the region's slot there.
    pub(super) samples: Vec<Option<(Arc<Samples>, usize)>>,
}

/// Per region, the capture time of the frame it was last classified on (microseconds after `epoch`).
#[derive(Debug)]
pub(super) struct LastClassified {
    epoch: Instant,
    at_us: Vec<AtomicU64>,
}

impl LastClassified {
    pub(super) fn new(regions: usize) -> LastClassified {
        LastClassified { epoch: Instant::now(), at_us: (0..regions).map(|_| AtomicU64::new(u64::MAX)).collect() }
    }

    fn get(&self, region: usize) -> Option<Instant> {
        match self.at_us.get(region)?.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }

    /// Keeps the newer of the stored time and `at` (another worker may have classified a later frame).
    fn set(&self, region: usize, at: Instant) {
        let us = at.saturating_duration_since(self.epoch).as_micros().min(u128::from(u64::MAX - 1)) as u64;
        if let Some(slot) = self.at_us.get(region) {
            let _ = slot
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| (old == u64::MAX || old < us).then_some(us));
        }
    }
}

/// How frames that are ready together share one inference run: the images of every region on one model,
/// of every frame taken together, go through that model at once (its batch dimension must be dynamic).
#[derive(Debug, Clone, Copy)]
pub(super) struct Batching {
    /// The most images one run takes (1: each region's image runs alone).
    pub(super) max: usize,
    /// How long the first frame waits for more frames to join its batch (zero: only those ready now).
    pub(super) delay: Duration,
}

#[derive(Clone)]
pub(super) struct Worker {
    pub(super) hub: Arc<FrameHub>,
    pub(super) cameras: Arc<Mutex<Vec<Camera>>>,
    pub(super) layout: Arc<Layout>,
    pub(super) health: Arc<Health>,
    pub(super) events: mpsc::Sender<Publication>,
    pub(super) node: Arc<str>,
    pub(super) top_k: usize,
    pub(super) min_score: f32,
    /// Publications the publisher had no room for (decided again on a later frame).
    pub(super) dropped: Arc<AtomicU64>,
    /// Test hook ([`super::Hooks`]): hang after this many frames.
    pub(super) stall_after: Option<u64>,
    /// The newest frame per camera and classification per region, for the HTTP page.
    pub(super) live: Arc<LivePipeline>,
    /// Nanoseconds the workers' inference threads spent on batches (the adaptive parallelism reads it).
    pub(super) busy_ns: Arc<AtomicU64>,
    /// Frames classified by workers the adaptive parallelism retired (they do not report on `done`).
    pub(super) retired_frames: Arc<AtomicU64>,
}

/// What a frame of one camera is prepared into: one input tensor per region of that camera, and the snapshot
/// of each region that takes snapshots (empty otherwise). Two sets circulate per camera, so memory does not
/// grow with the batch size.
struct Tensors {
    camera: usize,
    inputs: Vec<Input>,
    snaps: Vec<Snap>,
}

/// A camera's regions as bits of a `u64` (bit `i`: its region `i`): the config refuses more regions per
/// camera than it holds, checked here when the crate builds.
type RegionMask = u64;
const _: () = assert!(crate::config::MAX_REGIONS <= RegionMask::BITS as usize);

/// A frame prepared for inference.
struct Prepared {
    camera: usize,
    number: u64,
    inputs: Tensors,
    /// Bit `i`: the camera's region `i` was prepared (it is due, and its crop lies inside the frame).
    regions: RegionMask,
    captured_at: SystemTime,
    captured: Instant,
    preprocess: Duration,
}

impl Worker {
    /// Starts the two threads with this worker's sessions, one per model (by [`Region::model`]).
    /// Returns its hub consumer's id ([`FrameHub::retire_consumer`] ends the worker).
    pub(super) fn spawn(self, index: usize, models: Vec<Model>, done: mpsc::Sender<u64>) -> Result<u64, DaemonError> {
        // Up to a batch of prepared frames wait while the batch before them runs.
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Prepared>(self.layout.batching.max.max(1));
        let (free_tx, free_rx) = std_mpsc::channel::<Tensors>();
        for (camera, range) in self.layout.cameras.iter().enumerate() {
            for _ in 0..2 {
                let regions = &self.layout.regions[range.clone()];
                let inputs = regions.iter().map(|r| models[r.model].new_input()).collect::<Result<Vec<_>, _>>()?;
                let snaps = regions.iter().map(|_| Snap::default()).collect();
                let _ = free_tx.send(Tensors { camera, inputs, snaps });
            }
        }
        let specs: Vec<ModelSpec> = models.iter().map(|m| m.spec().clone()).collect();
        let names: Vec<String> =
            self.cameras.lock().map(|c| c.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
        let hub = Arc::clone(&self.hub);
        // Made now: a reload that handed the cameras over retired the consumers made before.
        let consumer = hub.consumer();
        let id = consumer.id();
        let layout = Arc::clone(&self.layout);
        let health = Arc::clone(&self.health);
        let live = Arc::clone(&self.live);
        std::thread::Builder::new().name(format!("prepare-{index}")).spawn(move || {
            let prepare = AssertUnwindSafe(|| {
                let shared = PrepareShared { hub: &hub, layout: &layout, health: &health, live: &live };
                prepare_loop(shared, consumer, &specs, &names, &free_rx, &ready_tx)
            });
            if catch_unwind(prepare).is_err() {
                tracing::error!("prepare thread panicked; stopping the daemon");
                hub.fail();
            }
        })?;
        std::thread::Builder::new().name(format!("infer-{index}")).spawn(move || {
            let hub = Arc::clone(&self.hub);
            let mut infers: Vec<Infer> =
                models.into_iter().map(|m| Infer::new(m, self.top_k, self.min_score)).collect();
            let run = AssertUnwindSafe(|| self.infer_loop(&mut infers, &ready_rx, &free_tx));
            let frames = catch_unwind(run).unwrap_or_else(|_| {
                tracing::error!("inference thread panicked; stopping the daemon");
                hub.fail();
                0
            });
            // A retired worker is not the end of the pipeline (the daemon stops when one reports on `done`).
            if hub.was_retired(id) {
                self.retired_frames.fetch_add(frames, Ordering::Relaxed);
            } else {
                let _ = done.blocking_send(frames);
            }
        })?;
        Ok(id)
    }

    fn report(&self) -> Report<'_> {
        Report { health: &self.health, live: &self.live }
    }

    fn camera_name(&self, camera: usize) -> String {
        self.cameras.lock().map(|c| c[camera].name.clone()).unwrap_or_default()
    }

    /// Infers prepared frames in batches (the frames ready together, [`Batching`]), decides what each region
    /// of each frame publishes, in the order the frames were prepared, and hands it to the publisher. Returns
    /// the number of frames classified.
    fn infer_loop(
        &self,
        infers: &mut [Infer],
        ready_rx: &std_mpsc::Receiver<Prepared>,
        free_tx: &std_mpsc::Sender<Tensors>,
    ) -> u64 {
        let mut frames = 0u64;
        let layout = &*self.layout;
        let Batching { max, delay } = layout.batching;
        let max = max.max(1);
        // A named region's events name the model as the config does; the whole frame's as version 1 did.
        let model_refs: Vec<(ModelRef, ModelRef)> = infers
            .iter()
            .zip(&layout.model_names)
            .map(|(i, name)| {
                let sha256 = i.model().sha256().to_string();
                let v1 = ModelRef { name: i.model().spec().name.clone(), sha256: sha256.clone() };
                (v1, ModelRef { name: name.clone(), sha256 })
            })
            .collect();
        let labels: Vec<Vec<String>> = infers.iter().map(|i| i.model().spec().labels.clone()).collect();
        // Everything below is reused batch after batch: nothing is allocated after the first full batch.
        let most_regions = layout.cameras.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut batch: Vec<Prepared> = Vec::with_capacity(max);
        // Per frame of the batch: each of its camera's regions' classification (thresholds and allow-list
        // applied) and share of inference time; the frame's inference time; whether its inference failed.
        let mut results: Vec<Vec<Classification>> = vec![vec![Classification::default(); most_regions]; max];
        let mut times: Vec<Vec<Duration>> = vec![vec![Duration::ZERO; most_regions]; max];
        let mut frame_time: Vec<Duration> = vec![Duration::ZERO; max];
        let mut frame_failed: Vec<bool> = vec![false; max];
        // One model's images in this batch: (frame in the batch, region bit of its camera, region index).
        let mut items: Vec<(usize, usize, usize)> = Vec::with_capacity(max * most_regions);
        // Per model, the tensor a batch of several images is gathered into (made at the first such batch).
        let mut gathered: Vec<Option<Input>> = infers.iter().map(|_| None).collect();
        let mut error = None;
        // Inference failures in a row: logged at the first and at powers of two, and at recovery.
        let mut failures = 0u64;
        while gather(ready_rx, &mut batch, max, delay) {
            let busy_since = Instant::now();
            let report = self.report();
            report.batch_started(batch.len());
            if self.stall_after.is_some_and(|n| frames >= n) {
                tracing::warn!("inference stalls here (test hook)");
                loop {
                    std::thread::park();
                }
            }
            frame_time.fill(Duration::ZERO);
            frame_failed.fill(false);
            for (m, infer) in infers.iter_mut().enumerate() {
                items.clear();
                for (pos, p) in batch.iter().enumerate() {
                    let range = layout.cameras[p.camera].clone();
                    for (bit, g) in range.enumerate() {
                        if p.regions & (1 << bit) != 0 && layout.regions[g].model == m {
                            items.push((pos, bit, g));
                        }
                    }
                }
                let per_run = if infer.model().dynamic_batch() { max } else { 1 };
                for chunk in items.chunks(per_run) {
                    let run = match chunk {
                        [(pos, bit, _)] => infer.run(&batch[*pos].inputs.inputs[*bit]),
                        _ => gather_input(infer, &mut gathered[m], max, &batch, chunk)
                            .and_then(|input| infer.run_first(input, chunk.len())),
                    };
                    let t = match run {
                        Ok(t) => t,
                        Err(e) => {
                            for (pos, _, _) in chunk {
                                frame_failed[*pos] = true;
                            }
                            error = Some(e);
                            continue;
                        }
                    };
                    report.ran(chunk.len());
                    // Each image's share of the run: what the page and the metrics show per region.
                    let share = t / chunk.len() as u32;
                    for (slot, &(pos, bit, g)) in chunk.iter().enumerate() {
                        frame_time[pos] += share;
                        times[pos][bit] = share;
                        // Postprocessed once, with the region's own question (its thresholds, its allow-list).
                        let ask = layout.regions[g].ask(self.top_k, infer.multi_label());
                        infer.answer(slot, ask, &mut results[pos][bit]);
                        // A taught model's doubts make review samples.
                        if let Some((store, at)) = &layout.samples[g] {
                            store.observe(*at, &results[pos][bit], &labels[m]);
                        }
                    }
                }
            }
            for (pos, p) in batch.drain(..).enumerate() {
                let Prepared { camera, number, inputs, regions, captured_at, captured, preprocess } = p;
                let infer_time = frame_time[pos];
                let (_, frames_dropped) = self.hub.counts(camera);
                let ok = !frame_failed[pos];
                report.inferred(Inferred { camera, captured, infer: infer_time, ok, dropped: frames_dropped });
                if !ok {
                    // The tensors go back to the prepare thread, which fills them with a later frame.
                    let _ = free_tx.send(inputs);
                    failures += 1;
                    if failures.is_power_of_two()
                        && let Some(e) = &error
                    {
                        tracing::error!(camera = %self.camera_name(camera), failures, "inference failed: {e}");
                    }
                    continue;
                }
                if failures > 0 {
                    tracing::info!("inference works again after {failures} failures");
                    failures = 0;
                }
                frames += 1;
                // Whether another worker finished a newer frame of this camera first (counted once a frame).
                let mut late = false;
                for (bit, g) in layout.cameras[camera].clone().enumerate() {
                    if regions & (1 << bit) == 0 {
                        continue;
                    }
                    let region = &layout.regions[g];
                    report.classified(camera, bit, &results[pos][bit], times[pos][bit]);
                    let observed = Observed {
                        frame: number,
                        captured,
                        captured_at,
                        classification: &results[pos][bit],
                        preprocess,
                        infer: infer_time,
                        frames_dropped,
                    };
                    let (v1, v2) = &model_refs[region.model];
                    let model = if region.name.is_some() { v2 } else { v1 };
                    let snap = region.snapshot.map(|_| &inputs.snaps[bit]);
                    if !self.publish(camera, bit, &observed, (model, &labels[region.model]), snap, &mut late) {
                        return frames;
                    }
                }
                if late {
                    report.late(camera);
                }
                report.decided(captured);
                // Only now: a snapshot published above was read from this frame's set.
                let _ = free_tx.send(inputs);
            }
            self.busy_ns.fetch_add(busy_since.elapsed().as_nanos() as u64, Ordering::Relaxed);
            error = None;
        }
        frames
    }

    /// Decides for one classified region of a frame and hands the publication on; the region's tracker
    /// advances only when the publisher took it. `late` is set when the frame came after a newer one of
    /// its camera. False when the publisher is gone.
    fn publish(
        &self,
        camera: usize,
        region: usize,
        observed: &Observed<'_>,
        (model, labels): (&ModelRef, &[String]),
        snap: Option<&Snap>,
        late: &mut bool,
    ) -> bool {
        let mut cameras = self.cameras.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cam = &mut cameras[camera];
        let name = self.layout.regions[self.layout.cameras[camera].start + region].name.as_deref();
        let who = Speaker { node: &self.node, camera: &cam.name, region: name, model, labels };
        let (next, decision) = events::decide(cam.trackers[region], observed, &who);
        match decision {
            Decision::Stale => {
                // Another worker finished a newer frame of this camera first: this one is late.
                *late = true;
                true
            }
            Decision::Quiet => {
                cam.trackers[region] = next;
                true
            }
            Decision::Publish { event, state } => {
                // A snapshot goes with a change and with the `snapshot` command (JPEG encoded only then).
                let snapshot =
                    snap.filter(|_| matches!(event.reason, Reason::Change | Reason::Snapshot)).and_then(|s| {
                        match s.jpeg() {
                            Ok(jpeg) => Some(jpeg),
                            Err(e) => {
                                tracing::warn!(camera = %cam.name, "cannot encode the snapshot: {e}");
                                None
                            }
                        }
                    });
                self.send(cam, region, next, Publication { event, state, snapshot })
            }
        }
    }

    /// Hands a publication to the publisher; the region's tracker becomes `next` once it was taken.
    fn send(&self, cam: &mut Camera, region: usize, next: Tracker, publication: Publication) -> bool {
        match self.events.try_send(publication) {
            Ok(()) => {
                cam.trackers[region] = next;
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

/// Waits for a prepared frame, then takes into `batch` those that follow it within `delay` (none waited for
/// when zero), up to `max`. False when the prepare thread is gone.
fn gather<T>(ready_rx: &std_mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize, delay: Duration) -> bool {
    match ready_rx.recv() {
        Ok(p) => batch.push(p),
        Err(_) => return false,
    }
    let deadline = Instant::now() + delay;
    while batch.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = if left.is_zero() { ready_rx.try_recv().ok() } else { ready_rx.recv_timeout(left).ok() };
        match next {
            Some(p) => batch.push(p),
            None => break,
        }
    }
    true
}

/// Copies the images of `chunk` (frame in the batch, region bit, region) into the model's batch tensor, made
/// (for `max` images) at its first use.
fn gather_input<'a>(
    infer: &Infer,
    tensor: &'a mut Option<Input>,
    max: usize,
    batch: &[Prepared],
    chunk: &[(usize, usize, usize)],
) -> Result<&'a Input, ModelError> {
    let input = match tensor {
        Some(input) => input,
        None => tensor.insert(infer.model().new_batch_input(max)?),
    };
    for (slot, (pos, bit, _)) in chunk.iter().enumerate() {
        input.copy_slot(slot, &batch[*pos].inputs.inputs[*bit], 0)?;
    }
    Ok(input)
}

/// What the prepare thread shares with the rest of the pipeline.
struct PrepareShared<'a> {
    hub: &'a FrameHub,
    layout: &'a Layout,
    health: &'a Health,
    /// The newest frame per camera, for the HTTP page.
    live: &'a LivePipeline,
}

/// Takes frames from the hub, decodes each once and prepares each due region of its camera into that
/// region's free input tensor, hands them to inference.
fn prepare_loop(
    shared: PrepareShared<'_>,
    mut consumer: Consumer,
    specs: &[ModelSpec],
    names: &[String],
    free_rx: &std_mpsc::Receiver<Tensors>,
    ready_tx: &std_mpsc::SyncSender<Prepared>,
) {
    let PrepareShared { hub, layout, health, live } = shared;
    let report = Report { health, live };
    let mut decoder = Decoder::new();
    // One per region: its model's recipe, with its own coefficients and buffers (a region's geometry is
    // fixed, so each allocates nothing after its first frame), and its gate.
    let mut regions: Vec<TensorWriter> = layout.regions.iter().map(|r| TensorWriter::new(&specs[r.model])).collect();
    let mut gates: Vec<Gate> = layout.regions.iter().map(|_| Gate::new()).collect();
    // Per camera, what its regions need of a frame (their models' inputs, and their snapshots at their size):
    // a JPEG is decoded as reduced as they all allow.
    let needs: Vec<Vec<Need>> = layout
        .cameras
        .iter()
        .map(|c| {
            let mut needs = Vec::new();
            for g in c.clone() {
                let region = &layout.regions[g];
                needs.push(regions[g].need(region.crop));
                if let Some(s) = region.snapshot {
                    needs.push(Need::snapshot(if s.frame { None } else { region.crop }, s.size));
                }
            }
            needs
        })
        .collect();
    let mut thumbnails: Vec<Thumbnails> = layout.regions.iter().map(|_| Thumbnails::default()).collect();
    // Per region of a taught model, the crop it offers its samples (reused).
    let mut crops: Vec<Snap> = layout.regions.iter().map(|_| Snap::default()).collect();
    // Per camera, skipped frames: (in all, in a row, whether this run was logged). Logged when the total
    // reaches 1, 2, 4 … (a stream with one bad frame in two is not logged at every frame), and at the
    // recovery after a logged run.
    let mut skipped = vec![(0u64, 0u64, false); names.len()];
    // Per camera, its free tensor sets (two in all; the others are being inferred or wait for it).
    let mut pools: Vec<Vec<Tensors>> = layout.cameras.iter().map(|_| Vec::with_capacity(2)).collect();
    while let Some((camera, number, frame)) = hub.take(&mut consumer) {
        while let Ok(t) = free_rx.try_recv() {
            pools[t.camera].push(t);
        }
        let mut inputs = loop {
            if let Some(t) = pools[camera].pop() {
                break t;
            }
            match free_rx.recv() {
                Ok(t) => pools[t.camera].push(t),
                Err(_) => return,
            }
        };
        let name = || names.get(camera).map_or("?", String::as_str);
        let (captured_at, captured) = (frame.captured_at, frame.captured);
        let t0 = Instant::now();
        let mut result = decoder.decode_for(frame.as_frame(), &needs[camera]).map(|_| RegionMask::default());
        // Only a failed decode counts as an undecodable frame (a region's preparation may fail too, below).
        let decoded = result.is_ok();
        let mut motion_skipped = 0;
        if let (Ok(mask), Some(picture)) = (result.as_mut(), decoder.picture()) {
            let size = (picture.width, picture.height);
            for (bit, g) in layout.cameras[camera].clone().enumerate() {
                let region = &layout.regions[g];
                let last = layout.classified.get(g);
                let moved = |rect| thumbnails[g].measure(picture, rect);
                let (verdict, placement) = gates[g].decide(region, size, captured, last, moved);
                if let Some(placement) = placement {
                    report.placed(camera, bit, placed(placement, name(), region, size));
                }
                // A taught model's region offers its crop to the samples (at most once per `sample_every`).
                if let (Some((store, at)), Some(rect)) = (&layout.samples[g], gates[g].inside())
                    && store.claim(*at, captured)
                {
                    let rect = rect.unwrap_or(Rect { x: 0, y: 0, width: size.0, height: size.1 });
                    crops[g].take(picture, rect, SAMPLE_SIZE, false);
                    store.offer(*at, &crops[g]);
                }
                if region.untrained {
                    // Nothing to classify with before the first training.
                    continue;
                }
                let rect = match verdict {
                    Verdict::Classify(rect) => rect,
                    Verdict::Still => {
                        motion_skipped += 1;
                        continue;
                    }
                    Verdict::Outside | Verdict::NotDue => continue,
                };
                if let Err(e) = regions[g].write_region(picture, rect, inputs.inputs[bit].slot_mut(0)) {
                    result = Err(e);
                    break;
                }
                if let Some(s) = region.snapshot {
                    inputs.snaps[bit].take(
                        picture,
                        rect.unwrap_or(Rect { x: 0, y: 0, width: size.0, height: size.1 }),
                        s.size,
                        s.frame,
                    );
                }
                *mask |= 1 << bit;
            }
        }
        // Only a frame whose due regions were all prepared counts as their classification: a region whose
        // frame failed stays due, and its motion reference stays the picture it was last classified on (the
        // change that made it due is measured again on the next frame).
        if let Ok(&mut mask) = result.as_mut() {
            for (_, g) in layout.cameras[camera].clone().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0) {
                if layout.regions[g].motion.is_some() {
                    thumbnails[g].keep();
                }
                layout.classified.set(g, captured);
            }
        }
        // A frame whose regions were all prepared is kept for the page (when it shows frames).
        let account = Decoded { camera, captured, decoded, motion_skipped };
        report.decoded(account, result.is_ok().then_some(&frame));
        hub.recycle(camera, frame.data);
        let streak = skipped.get_mut(camera);
        let mask = match result {
            Ok(mask) => mask,
            Err(e) => {
                if let Some((total, run, logged)) = streak {
                    *total += 1;
                    *run += 1;
                    if total.is_power_of_two() {
                        tracing::warn!(camera = name(), skipped = *total, "frame skipped: {e}");
                        *logged = true;
                    }
                }
                pools[camera].push(inputs);
                continue;
            }
        };
        if let Some((_, run, logged)) = streak.filter(|(_, run, _)| *run > 0) {
            if *logged {
                tracing::info!(camera = name(), "frames decode again after {run} skipped");
            }
            (*run, *logged) = (0, false);
        }
        if mask == 0 {
            // No region of this camera is due (classify_every) or inside the frame.
            pools[camera].push(inputs);
            continue;
        }
        let preprocess = t0.elapsed();
        if ready_tx.send(Prepared { camera, number, inputs, regions: mask, captured_at, captured, preprocess }).is_err()
        {
            break;
        }
    }
}

/// A region's new placement (the frame size changed): the log line when its crop fell outside the frame,
/// and its box on the page (`None`: outside).
fn placed(placement: Placement, camera: &str, region: &Region, size: (u32, u32)) -> Option<Rect> {
    match placement {
        Placement::Inside(rect) => Some(rect),
        Placement::Outside { crop, log } => {
            if log {
                tracing::error!(
                    camera,
                    region = region.name.as_deref().unwrap_or_default(),
                    "the crop {} is outside the {}x{} frame: this region is disabled until the frame size changes",
                    crop.map(|r| r.to_string()).unwrap_or_default(),
                    size.0,
                    size.1
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_what_is_ready_and_no_more_than_max() {
        let (tx, rx) = std_mpsc::sync_channel(8);
        for i in 0..5 {
            tx.send(i).expect("send");
        }
        let mut batch = Vec::new();
        assert!(gather(&rx, &mut batch, 3, Duration::ZERO));
        assert_eq!(batch, [0, 1, 2]);
        batch.clear();
        assert!(gather(&rx, &mut batch, 3, Duration::ZERO));
        assert_eq!(batch, [3, 4], "no delay: what is ready now, without waiting");
        drop(tx);
        batch.clear();
        assert!(!gather(&rx, &mut batch, 3, Duration::ZERO), "the prepare thread is gone");
    }

    #[test]
    fn a_batch_waits_up_to_its_delay_for_late_frames() {
        let (tx, rx) = std_mpsc::sync_channel(8);
        tx.send(0).expect("send");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let _ = tx.send(1);
            std::thread::sleep(Duration::from_secs(3));
            let _ = tx.send(2);
        });
        let mut batch = Vec::new();
        assert!(gather(&rx, &mut batch, 3, Duration::from_millis(500)));
        // Frame 1 came within the delay; frame 2 comes long after it: the batch did not wait for it.
        assert_eq!(batch, [0, 1]);
    }
}
