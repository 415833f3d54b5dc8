//! Health: counters the pipeline updates per frame (atomics, no locks, no allocation) and the periodic
//! report built from them — the retained `<prefix>/<node>/health` message, systemd's `STATUS=` line and
//! the watchdog's "is inference moving" test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The health message's schema identifier.
pub const SCHEMA: &str = "camclassd.health/1";

/// One camera's counters.
#[derive(Debug)]
pub struct CameraCounters {
    pub name: String,
    /// Frames classified.
    frames: AtomicU64,
    /// Sum of inference times, microseconds.
    infer_us: AtomicU64,
    /// Frames the camera delivered that were skipped because inference was busy (newest frame wins).
    dropped: AtomicU64,
    /// Frames classified after a newer frame of the same camera (several workers): not published.
    late: AtomicU64,
    /// Region classifications the motion gate skipped (the picture stood still).
    motion_skipped: AtomicU64,
    /// Frames the source delivered that could not be decoded (a corrupt JPEG, an oversized picture).
    undecodable: AtomicU64,
    /// Since when every frame failed to decode, milliseconds after [`Health`] started (`u64::MAX`: the
    /// last frame decoded). The staleness check turns a camera whose frames all fail into a disconnected one.
    failing_since_ms: AtomicU64,
    /// When the source last delivered a frame, milliseconds after [`Health`] started (`u64::MAX`: never).
    last_frame_at_ms: AtomicU64,
    /// False while the source is stale (no frame for longer than its limit).
    connected: AtomicBool,
}

/// The pipeline's counters, shared by the workers (writers) and the publisher (reader).
#[derive(Debug)]
pub struct Health {
    pub cameras: Vec<CameraCounters>,
    /// Monotonic count of inference runs, all cameras: the watchdog pings only while it moves (or nothing
    /// is waiting for inference).
    inferences: AtomicU64,
    /// Frames handed to inference but not finished (up to a batch per worker).
    busy: AtomicU64,
    /// Model runs, and the images they took (several per run when frames are batched).
    runs: AtomicU64,
    run_images: AtomicU64,
    /// The inference workers running, and each one's intra-op threads.
    workers: AtomicU64,
    threads: AtomicU64,
    /// The model's own check at load (camclassd verify), reported with every health message.
    pub model_check: Option<crate::check::ModelCheck>,
    /// From each classified frame's capture to its publish decision (`camclassd bench --cameras` reads it).
    decisions: Latencies,
    started: Instant,
}

impl Health {
    pub fn new(names: &[String]) -> Health {
        Health {
            cameras: names
                .iter()
                .map(|n| CameraCounters {
                    name: n.clone(),
                    frames: AtomicU64::new(0),
                    infer_us: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    late: AtomicU64::new(0),
                    motion_skipped: AtomicU64::new(0),
                    undecodable: AtomicU64::new(0),
                    failing_since_ms: AtomicU64::new(u64::MAX),
                    last_frame_at_ms: AtomicU64::new(u64::MAX),
                    connected: AtomicBool::new(true),
                })
                .collect(),
            inferences: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            run_images: AtomicU64::new(0),
            workers: AtomicU64::new(1),
            threads: AtomicU64::new(1),
            model_check: None,
            decisions: Latencies::default(),
            started: Instant::now(),
        }
    }

    /// The same counters, reporting `check` as the model's check.
    pub fn with_model_check(mut self, check: crate::check::ModelCheck) -> Health {
        self.model_check = Some(check);
        self
    }

    /// An inference is starting.
    pub fn begin(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// An inference of `camera` finished (successfully or not) after `infer`.
    pub fn end(&self, camera: usize, infer: Duration, ok: bool) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.inferences.fetch_add(1, Ordering::Relaxed);
        if ok && let Some(c) = self.cameras.get(camera) {
            c.frames.fetch_add(1, Ordering::Relaxed);
            c.infer_us.fetch_add(infer.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// The capture side's drop count for `camera` (absolute, from the frame hub).
    pub fn set_dropped(&self, camera: usize, dropped: u64) {
        if let Some(c) = self.cameras.get(camera) {
            c.dropped.store(dropped, Ordering::Relaxed);
        }
    }

    /// Time since these counters started (the pipeline's start).
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// `camera`'s source delivered a frame captured at `at` (the newest one seen wins).
    pub fn frame_seen(&self, camera: usize, at: Instant) {
        if let Some(c) = self.cameras.get(camera) {
            let ms = self.millis(at);
            let _ = c
                .last_frame_at_ms
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| (old == u64::MAX || ms > old).then_some(ms));
        }
    }

    /// A frame captured at `captured` was classified and its publication decided, now.
    pub fn decided(&self, captured: Instant) {
        self.decisions.record(captured.elapsed());
    }

    /// Capture → decision times so far, every camera.
    pub fn decision_latencies(&self) -> LatencyCounts {
        self.decisions.counts()
    }

    /// The staleness check's verdict on `camera`; returns the previous one.
    pub fn set_connected(&self, camera: usize, connected: bool) -> bool {
        self.cameras.get(camera).is_none_or(|c| c.connected.swap(connected, Ordering::Relaxed))
    }

    /// A frame of `camera` captured at `captured` could not be decoded: counted (and in `frames_dropped`),
    /// and the start of a failing run remembered.
    pub fn add_undecodable(&self, camera: usize, captured: Instant) {
        if let Some(c) = self.cameras.get(camera) {
            c.undecodable.fetch_add(1, Ordering::Relaxed);
            let ms = self.millis(captured);
            let _ = c
                .failing_since_ms
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| (old == u64::MAX).then_some(ms));
        }
    }

    /// A frame of `camera` decoded: a failing run, if any, is over.
    pub fn decoded(&self, camera: usize) {
        if let Some(c) = self.cameras.get(camera) {
            // A load first: the common case (nothing failing) writes nothing shared.
            if c.failing_since_ms.load(Ordering::Relaxed) != u64::MAX {
                c.failing_since_ms.store(u64::MAX, Ordering::Relaxed);
            }
        }
    }

    /// How long every frame of `camera` has failed to decode, at `now` (`None`: the last one decoded).
    pub fn failing_for(&self, camera: usize, now: Instant) -> Option<Duration> {
        let ms = self.cameras.get(camera)?.failing_since_ms.load(Ordering::Relaxed);
        (ms != u64::MAX).then(|| now.saturating_duration_since(self.started + Duration::from_millis(ms)))
    }

    /// Frames of `camera` that could not be decoded, since start.
    pub fn undecodable(&self, camera: usize) -> u64 {
        self.cameras.get(camera).map_or(0, |c| c.undecodable.load(Ordering::Relaxed))
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis().min(u128::from(u64::MAX - 1)) as u64
    }

    /// A frame of `camera` was classified after a newer one and not published.
    pub fn add_late(&self, camera: usize) {
        if let Some(c) = self.cameras.get(camera) {
            c.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `camera`'s totals: frames classified, frames dropped (skipped or late), and whether it is connected
    /// (not stale).
    pub fn camera_totals(&self, camera: usize) -> Option<(u64, u64, bool)> {
        self.cameras.get(camera).map(|c| {
            (
                c.frames.load(Ordering::Relaxed),
                c.dropped.load(Ordering::Relaxed)
                    + c.late.load(Ordering::Relaxed)
                    + c.undecodable.load(Ordering::Relaxed),
                c.connected.load(Ordering::Relaxed),
            )
        })
    }

    /// The motion gate skipped a region of `camera`.
    pub fn add_motion_skipped(&self, camera: usize) {
        if let Some(c) = self.cameras.get(camera) {
            c.motion_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One model run took `images` images (a batch of region images from one or several frames).
    pub fn ran(&self, images: usize) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.run_images.fetch_add(images as u64, Ordering::Relaxed);
    }

    /// The parallelism in use: inference workers, and intra-op threads per worker.
    pub fn set_parallelism(&self, workers: usize, threads: usize) {
        self.workers.store(workers as u64, Ordering::Relaxed);
        self.threads.store(threads as u64, Ordering::Relaxed);
    }

    /// (workers, intra-op threads per worker).
    pub fn parallelism(&self) -> (u64, u64) {
        (self.workers.load(Ordering::Relaxed), self.threads.load(Ordering::Relaxed))
    }

    /// (model runs, images they took) since start.
    pub fn runs(&self) -> (u64, u64) {
        (self.runs.load(Ordering::Relaxed), self.run_images.load(Ordering::Relaxed))
    }

    pub fn inferences(&self) -> u64 {
        self.inferences.load(Ordering::Relaxed)
    }

    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    fn totals(&self) -> Vec<(u64, u64, u64)> {
        self.cameras
            .iter()
            .map(|c| {
                (
                    c.frames.load(Ordering::Relaxed),
                    c.infer_us.load(Ordering::Relaxed),
                    c.dropped.load(Ordering::Relaxed)
                        + c.late.load(Ordering::Relaxed)
                        + c.undecodable.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Turns counters into rates between two reports.
#[derive(Debug)]
pub struct Reporter {
    started: Instant,
    last: Instant,
    last_totals: Vec<(u64, u64, u64)>,
}

/// One camera in a health report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CameraHealth {
    /// Frames classified per second since the last report.
    pub fps: f64,
    pub frames: u64,
    /// Frames not classified: skipped while inference was busy, late, or undecodable.
    pub frames_dropped: u64,
    /// Of those, frames that could not be decoded (corrupt or oversized pictures) since start.
    pub frames_undecodable: u64,
    /// Region classifications the motion gate skipped since start.
    pub motion_skipped: u64,
    /// Mean inference time since the last report, milliseconds (null when no frame was classified).
    pub infer_ms: Option<f64>,
    /// False while the camera is stale: no frame for ten frame periods (at least 10 s).
    pub connected: bool,
    /// Seconds since the source last delivered a frame (null: none yet).
    pub last_frame_age_s: Option<f64>,
}

/// The retained health message.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub node: String,
    pub version: &'static str,
    pub uptime_s: u64,
    pub rss_bytes: Option<u64>,
    pub cameras: std::collections::BTreeMap<String, CameraHealth>,
    pub queue: QueueHealth,
    pub events_published: u64,
    /// Model runs since start, and the images they took: `images / runs` is the mean batch.
    pub inference: InferenceHealth,
    /// The model's check at load: passed / failed / fallback / unchecked, with its figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_check: Option<crate::check::ModelCheck>,
}

#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct InferenceHealth {
    pub runs: u64,
    pub images: u64,
    /// Inference workers running now (`[model] workers`, or chosen from the load when 0), and each one's
    /// intra-op threads.
    pub workers: u64,
    pub threads: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct QueueHealth {
    /// Events waiting for the broker's acknowledgement (on disk).
    pub depth: u64,
    pub bytes: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

impl Reporter {
    pub fn new(health: &Health) -> Reporter {
        let now = Instant::now();
        Reporter { started: now, last: now, last_totals: health.totals() }
    }

    /// A new counter set (after a config reload): rates restart from it, uptime does not.
    pub fn rebase(&mut self, health: &Health) {
        self.last = Instant::now();
        self.last_totals = health.totals();
    }

    pub fn report(&mut self, health: &Health, node: &str, queue: QueueHealth, events_published: u64) -> Report {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let totals = health.totals();
        let cameras = health
            .cameras
            .iter()
            .zip(&totals)
            .enumerate()
            .map(|(i, (c, &(frames, infer_us, dropped)))| {
                let (f0, us0, _) = self.last_totals.get(i).copied().unwrap_or_default();
                let df = frames.saturating_sub(f0);
                let dus = infer_us.saturating_sub(us0);
                let h = CameraHealth {
                    fps: round2(df as f64 / secs),
                    frames,
                    frames_dropped: dropped,
                    frames_undecodable: c.undecodable.load(Ordering::Relaxed),
                    motion_skipped: c.motion_skipped.load(Ordering::Relaxed),
                    infer_ms: (df > 0).then(|| round2(dus as f64 / df as f64 / 1000.0)),
                    connected: c.connected.load(Ordering::Relaxed),
                    last_frame_age_s: match c.last_frame_at_ms.load(Ordering::Relaxed) {
                        u64::MAX => None,
                        ms => Some(round2(
                            now.saturating_duration_since(health.started + Duration::from_millis(ms)).as_secs_f64(),
                        )),
                    },
                };
                (c.name.clone(), h)
            })
            .collect();
        self.last = now;
        self.last_totals = totals;
        Report {
            schema: SCHEMA,
            node: node.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: now.duration_since(self.started).as_secs(),
            rss_bytes: rss_bytes(),
            cameras,
            queue,
            events_published,
            inference: {
                let (runs, images) = health.runs();
                let (workers, threads) = health.parallelism();
                InferenceHealth { runs, images, workers, threads }
            },
            model_check: health.model_check.clone(),
        }
    }
}

impl Report {
    /// systemd's one-line `STATUS=`: fps per camera and the queue.
    pub fn status_line(&self) -> String {
        let cams: Vec<String> = self.cameras.iter().map(|(n, c)| format!("{n} {:.1} fps", c.fps)).collect();
        format!("{}; queue {}", cams.join(", "), self.queue.depth)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sub-buckets per power of two in [`Latencies`]: a bucket is at most 1/32 of its lower bound wide.
const SUB_BUCKETS: u64 = 32;
/// Buckets of [`Latencies`]: exact microseconds below 64, then 32 per power of two up to 2^36 µs (19 h).
const LATENCY_BUCKETS: usize = 1024;

/// The bucket of a time in microseconds (log-linear; the last one takes everything longer).
fn latency_bucket(us: u64) -> usize {
    if us < 2 * SUB_BUCKETS {
        return us as usize;
    }
    let e = u64::from(63 - us.leading_zeros());
    let sub = (us >> (e - 5)) - SUB_BUCKETS;
    ((2 * SUB_BUCKETS + (e - 6) * SUB_BUCKETS + sub) as usize).min(LATENCY_BUCKETS - 1)
}

/// The middle of a bucket, microseconds (its value when it holds one microsecond).
fn latency_bucket_mid(bucket: usize) -> f64 {
    let b = bucket as u64;
    if b < 2 * SUB_BUCKETS {
        return b as f64;
    }
    let (e, sub) = (6 + (b - 2 * SUB_BUCKETS) / SUB_BUCKETS, (b - 2 * SUB_BUCKETS) % SUB_BUCKETS);
    let width = 1u64 << (e - 5);
    ((SUB_BUCKETS + sub) * width) as f64 + (width - 1) as f64 / 2.0
}

/// A histogram of times, fixed at construction: recording one is an atomic add (no lock, no allocation),
/// at ±1.6 % resolution from 1 µs to 19 hours.
#[derive(Debug)]
pub struct Latencies {
    buckets: Box<[AtomicU64]>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Latencies {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[latency_bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far (a copy: take one before and one after, and [`LatencyCounts::since`]).
    pub fn counts(&self) -> LatencyCounts {
        LatencyCounts { counts: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect() }
    }
}

/// A copy of a [`Latencies`]' counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyCounts {
    counts: Vec<u64>,
}

impl LatencyCounts {
    /// What was recorded after `earlier` (taken from the same histogram).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        let before = |i: usize| earlier.counts.get(i).copied().unwrap_or(0);
        LatencyCounts { counts: self.counts.iter().enumerate().map(|(i, &n)| n.saturating_sub(before(i))).collect() }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds, as `camclassd bench` ranks them: the
    /// sample at rank ⌈n·q⌉; `None` when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let bucket = self.counts.iter().position(|&n| {
            seen += n;
            seen >= rank
        })?;
        Some(latency_bucket_mid(bucket) / 1000.0)
    }
}

/// User + system CPU time of this whole process (every thread).
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident set size from /proc (Linux); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_rates_between_reports() {
        let h = Health::new(&["a".into(), "b".into()]);
        let mut r = Reporter::new(&h);
        for _ in 0..10 {
            h.begin();
            h.end(0, Duration::from_millis(4), true);
        }
        h.set_dropped(1, 7);
        let rep = r.report(&h, "n", QueueHealth::default(), 3);
        assert_eq!(rep.cameras["a"].frames, 10);
        assert_eq!(rep.cameras["a"].infer_ms, Some(4.0));
        assert!(rep.cameras["a"].fps > 0.0);
        assert_eq!(rep.cameras["b"].frames_dropped, 7);
        assert_eq!(rep.cameras["b"].infer_ms, None);
        assert!(!h.busy());
        assert_eq!(h.inferences(), 10);
        assert!(rep.status_line().starts_with("a "));
        // The next report counts only what happened since.
        let rep = r.report(&h, "n", QueueHealth::default(), 3);
        assert_eq!(rep.cameras["a"].fps, 0.0);
        assert_eq!(rep.cameras["a"].infer_ms, None);
    }

    #[test]
    fn latency_buckets_are_contiguous_and_within_their_resolution() {
        let mut last = 0;
        for us in (0..200_000u64).chain([(1 << 30) + 12_345, (1 << 36) - 1]) {
            let b = latency_bucket(us);
            assert!(us > 200_000 || b == last || b == last + 1, "{us} µs: bucket {b} after {last}");
            last = b;
            let mid = latency_bucket_mid(b);
            assert!((mid - us as f64).abs() <= us as f64 / 64.0 + 0.5, "{us} µs in a bucket of middle {mid}");
        }
        assert_eq!(latency_bucket((1 << 36) - 1), LATENCY_BUCKETS - 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn latency_quantiles_rank_as_the_bench_does_and_count_only_the_window() {
        let l = Latencies::default();
        assert_eq!(l.counts().quantile_ms(0.5), None);
        l.record(Duration::from_secs(5));
        let before = l.counts();
        // 1 … 100 ms: P50 is the 50th, P99 the 99th (within the buckets' 1.6 %).
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let window = l.counts().since(&before);
        assert_eq!(window.total(), 100);
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= want / 60.0);
        assert!(near(window.quantile_ms(0.5), 50.0), "{:?}", window.quantile_ms(0.5));
        assert!(near(window.quantile_ms(0.99), 99.0), "{:?}", window.quantile_ms(0.99));
        assert!(near(window.quantile_ms(1.0), 100.0), "the 5 s before the window is not in it");
        assert!(near(l.counts().quantile_ms(1.0), 5000.0));
    }
}
