//! `camclassd bench`: model size, load time, latency distribution and throughput, per model, execution
//! provider and batch size — for inference alone and for the whole pipeline (decode + preprocess + infer +
//! postprocess) on real images — side by side with ratios against the first model.
//!
//! [`cameras`]: `bench --cameras N --fps F`, the daemon's own pipeline under N cameras' load: how many this
//! board takes under 80 % CPU, and the latency there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::{CudaOptions, Model, ModelOptions, Provider, ProviderNodes, Runtime, TensorRtOptions};
use crate::pipeline::{Infer, Prepare};
use crate::preprocess::Frame;

pub mod cameras;

/// When a measurement stops.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Duration(Duration),
    Runs(usize),
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub providers: Vec<Provider>,
    pub batches: Vec<usize>,
    pub threads: Option<usize>,
    /// Height and width for models with symbolic spatial dimensions.
    pub input_size: Option<[u32; 2]>,
    pub budget: Budget,
    pub tensorrt: TensorRtOptions,
    pub cuda: CudaOptions,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Latency {
    pub runs: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Images per second (runs × batch / time).
    pub throughput: f64,
    /// Process CPU time over wall time, in % of one core.
    pub cpu_pct: f64,
    #[serde(skip)]
    pub samples: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub model: String,
    /// The provider asked for; the row is timed only when the session opened with it.
    pub provider: String,
    /// The provider the session opened with (differs from `provider` when it fell back: then `unavailable`).
    pub ran_on: String,
    /// Nodes per provider in the first inference: where ONNX Runtime put what `provider` does not support.
    pub placement: Option<Vec<ProviderNodes>>,
    pub batch: usize,
    /// The input tensor's height and width.
    pub input_size: [u32; 2],
    /// Set when the model carries no normalisation and bench used mean 0 / std 1 (timing is unaffected).
    pub note: Option<String>,
    /// `None` when it ran; otherwise why it did not.
    pub unavailable: Option<String>,
    /// The model's own check on this CPU (passed / failed / unchecked): a fast model that fails it is
    /// not a candidate. Run once per model and provider, before the timing.
    pub model_check: Option<crate::check::CheckStatus>,
    pub size_bytes: u64,
    pub session_ms: f64,
    /// Session creation from the optimised-model cache (`[model] optimized_cache`), which a restarted daemon
    /// sees; CPU rows only.
    pub cached_session_ms: Option<f64>,
    pub first_inference_ms: f64,
    pub inference: Latency,
    pub pipeline: Option<Latency>,
    pub peak_rss_mib: f64,
    /// Against the first row that ran: inference throughput ratio (>1 is faster) and size ratio.
    pub speedup_vs_first: Option<f64>,
    pub size_vs_first: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("{0}")]
    Images(String),
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::preprocess::PreprocessError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

/// The largest image file bench reads (as `classify`): a device node or a huge file must not fill memory.
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Reads and decodes each image once: those that cannot be read or decoded are left out of the pipeline
/// measurement and returned as `file: reason` lines, so that one bad file neither aborts the run nor goes
/// unnamed.
pub fn usable_images(paths: &[PathBuf]) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut pre = crate::preprocess::Decoder::new();
    let (mut usable, mut failed) = (Vec::new(), Vec::new());
    for path in paths {
        let bytes = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() || m.len() > MAX_IMAGE_BYTES => {
                Err(format!("{}: not a regular file of at most 256 MiB", path.display()))
            }
            _ => std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display())),
        };
        match bytes
            .and_then(|b| pre.decode(Frame::Encoded(&b)).map(|_| b).map_err(|e| format!("{}: {e}", path.display())))
        {
            Ok(b) => usable.push(b),
            Err(e) => failed.push(e),
        }
    }
    (usable, failed)
}

/// Percentiles, mean, throughput from per-run latencies in milliseconds (pure).
pub fn summarize(mut samples: Vec<f64>, batch: usize, wall: Duration, cpu: Duration) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let wall_s = wall.as_secs_f64().max(f64::EPSILON);
    Latency {
        runs: samples.len(),
        mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        throughput: (samples.len() * batch) as f64 / wall_s,
        cpu_pct: 100.0 * cpu.as_secs_f64() / wall_s,
        samples,
    }
}

/// Peak resident memory (VmHWM) in MiB; resets the mark first when `reset` (Linux ≥ 4.0).
fn peak_rss_mib(reset: bool) -> f64 {
    if reset {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn measure(
    budget: Budget,
    batch: usize,
    progress: &dyn Fn(f64),
    mut step: impl FnMut() -> Result<(), BenchError>,
) -> Result<Latency, BenchError> {
    let (wall0, cpu0) = (Instant::now(), crate::health::process_cpu_time());
    let mut samples = Vec::new();
    loop {
        let done = match budget {
            Budget::Duration(d) => wall0.elapsed() >= d,
            Budget::Runs(n) => samples.len() >= n,
        };
        if done {
            break;
        }
        let t = Instant::now();
        step()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        if samples.len() % 16 == 0 {
            progress(match budget {
                Budget::Duration(d) => wall0.elapsed().as_secs_f64() / d.as_secs_f64(),
                Budget::Runs(n) => samples.len() as f64 / n as f64,
            });
        }
    }
    Ok(summarize(samples, batch, wall0.elapsed(), crate::health::process_cpu_time() - cpu0))
}

/// The session load time from a fresh optimised-model cache: a first load fills it, a second reads it. `None`
/// when no temporary folder could be made.
fn cached_load_ms(runtime: &Runtime, path: &Path, options: &ModelOptions) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let options =
        ModelOptions { optimized_cache: Some(dir.path().to_path_buf()), record_placement: false, ..options.clone() };
    drop(Model::load(runtime, path, &options).ok()?);
    let model = Model::load(runtime, path, &options).ok()?;
    Some(model.load_times().0.as_secs_f64() * 1e3)
}

/// Benchmarks each model × provider × batch. `images` feed the pipeline measurement (empty: inference only).
pub fn run(
    runtime: &Runtime,
    models: &[PathBuf],
    images: &[Vec<u8>],
    options: &BenchOptions,
    progress: &dyn Fn(&str, f64),
) -> Result<Vec<Row>, BenchError> {
    let mut rows: Vec<Row> = Vec::new();
    for path in models {
        let name = path.display().to_string();
        for &provider in &options.providers {
            for &batch in &options.batches {
                let label = format!("{} {provider} batch {batch}", short(path));
                let mut model_options = ModelOptions {
                    // TensorRT is measured as the daemon runs it: CUDA takes the nodes TensorRT does not.
                    providers: if provider == Provider::Tensorrt {
                        vec![provider, Provider::Cuda]
                    } else {
                        vec![provider]
                    },
                    threads: options.threads,
                    batch,
                    tensorrt: options.tensorrt.clone(),
                    cuda: options.cuda.clone(),
                    ..ModelOptions::default()
                };
                if let Some([h, w]) = options.input_size {
                    model_options.overrides.input_size = Some([h, w]);
                    // Another input size needs a shorter side to crop from: the usual 256/224 ratio.
                    model_options.overrides.resize = Some((h.max(w) as f32 / 0.875).round() as u32);
                }
                peak_rss_mib(true);
                let mut note = None;
                let mut model = match Model::load(runtime, path, &model_options) {
                    // Speed does not depend on the normalisation: time a model without a recipe anyway.
                    Err(crate::model::ModelError::Spec {
                        source: crate::model::SpecError::Missing { missing },
                        ..
                    }) if !missing.0.contains(&"input_size") => {
                        note = Some(format!("no {missing} in the model: timed with mean 0, std 1"));
                        model_options.overrides.mean = Some([0.0; 3]);
                        model_options.overrides.std = Some([1.0; 3]);
                        Model::load(runtime, path, &model_options)?
                    }
                    other => other?,
                };
                // The check, before the timing (it runs a few inferences, like the warm-up does).
                let mut model_check = None;
                if batch == 1 {
                    let mut classifier = crate::pipeline::Classifier::new(model, 1, 0.0)?;
                    match crate::check::at_load(&mut classifier, crate::check::OnCheckFailure::Warn) {
                        Ok(check) => {
                            if check.status == crate::check::CheckStatus::Failed {
                                let failed = format!("fails its model check on this CPU: {}", check.detail);
                                note = Some(note.map_or(failed.clone(), |n| format!("{n}; {failed}")));
                            }
                            model_check = Some(check.status);
                        }
                        Err(e) => note = Some(format!("model check not run: {e}")),
                    }
                    model = classifier.into_model();
                }
                let size = model.size_bytes();
                let mut row = Row {
                    model: name.clone(),
                    provider: provider.to_string(),
                    ran_on: model.provider().to_string(),
                    placement: model.placement().map(<[ProviderNodes]>::to_vec),
                    batch,
                    input_size: [model.spec().input_size.0, model.spec().input_size.1],
                    note,
                    unavailable: None,
                    model_check,
                    size_bytes: size,
                    session_ms: 0.0,
                    cached_session_ms: None,
                    first_inference_ms: 0.0,
                    inference: Latency::default(),
                    pipeline: None,
                    peak_rss_mib: 0.0,
                    speedup_vs_first: None,
                    size_vs_first: None,
                };
                if model.provider() != provider {
                    // Asked for a GPU provider the library or machine lacks: say so, don't time the CPU under its name.
                    let why =
                        model.skipped_providers().iter().find(|s| s.provider == provider).map(|s| s.reason.clone());
                    row.unavailable = Some(format!(
                        "{} (the session fell back to {}: not timed)",
                        why.as_deref().unwrap_or("not used"),
                        model.provider()
                    ));
                    rows.push(row);
                    continue;
                }
                if model.batch() != batch {
                    row.unavailable = Some(format!("the model's batch dimension is fixed at {}", model.batch()));
                    rows.push(row);
                    continue;
                }
                let (session, first) = model.load_times();
                row.session_ms = session.as_secs_f64() * 1e3;
                if provider == Provider::Cpu {
                    row.cached_session_ms = cached_load_ms(runtime, path, &model_options);
                }
                row.first_inference_ms = first.as_secs_f64() * 1e3;
                // Inference alone, on a zero tensor (its own: the pipeline row below fills another).
                let zeros = model.new_input()?;
                row.inference =
                    measure(options.budget, batch, &|f| progress(&format!("{label}: inference"), f), || {
                        model.run(&zeros).map(|_| ()).map_err(BenchError::from)
                    })?;
                if !images.is_empty() {
                    // The daemon's stage chain, batch slot by batch slot.
                    let mut prepare = Prepare::new(model.spec());
                    let mut infer = Infer::new(model, 5, 0.0);
                    let mut input = infer.new_input()?;
                    let mut next = 0;
                    row.pipeline =
                        Some(measure(options.budget, batch, &|f| progress(&format!("{label}: pipeline"), f), || {
                            for slot in 0..batch {
                                prepare.frame(Frame::Encoded(&images[next % images.len()]), &mut input, slot)?;
                                next += 1;
                            }
                            infer.run(&input)?;
                            for slot in 0..batch {
                                infer.classification(slot);
                            }
                            Ok(())
                        })?);
                }
                row.peak_rss_mib = peak_rss_mib(false);
                progress(&format!("{label}: done"), 1.0);
                rows.push(row);
            }
        }
    }
    if let Some(first) = rows.iter().find(|r| r.unavailable.is_none()).cloned() {
        for r in rows.iter_mut().filter(|r| r.unavailable.is_none()) {
            r.speedup_vs_first = Some(r.inference.throughput / first.inference.throughput);
            r.size_vs_first = Some(r.size_bytes as f64 / first.size_bytes as f64);
        }
    }
    Ok(rows)
}

fn short(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The side-by-side table.
pub fn render_table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<32} {:<8} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6}",
        "model",
        "ep",
        "batch",
        "input",
        "size MB",
        "load ms",
        "cached",
        "first ms",
        "mean",
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "img/s",
        "cpu %",
        "pipe p50",
        "pipe i/s",
        "x img/s"
    );
    for r in rows {
        let name = short(Path::new(&r.model));
        if let Some(why) = &r.unavailable {
            let _ = writeln!(o, "{name:<32} {:<8} {:>5} unavailable: {why}", r.provider, r.batch);
            continue;
        }
        let i = &r.inference;
        // No images, no pipeline figures: a dash, not NaN.
        let (pp50, pthr) = r.pipeline.as_ref().map_or(("-".to_string(), "-".to_string()), |p| {
            (format!("{:.2}", p.p50_ms), format!("{:.1}", p.throughput))
        });
        let _ = writeln!(
            o,
            "{name:<32} {:<8} {:>5} {:>9} {:>8.2} {:>8.1} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.1} {:>6.0} {:>8} {:>8} {:>6}",
            r.provider,
            r.batch,
            format!("{}x{}", r.input_size[0], r.input_size[1]),
            r.size_bytes as f64 / 1e6,
            r.session_ms,
            r.cached_session_ms.map_or_else(|| "-".to_string(), |x| format!("{x:.1}")),
            r.first_inference_ms,
            i.mean_ms,
            i.p50_ms,
            i.p90_ms,
            i.p95_ms,
            i.p99_ms,
            i.p999_ms,
            i.throughput,
            i.cpu_pct,
            pp50,
            pthr,
            r.speedup_vs_first.map_or_else(|| "-".to_string(), |x| format!("{x:.2}")),
        );
    }
    for r in rows.iter().filter(|r| r.unavailable.is_none()) {
        // Nodes the requested provider did not take ran elsewhere (ONNX Runtime does not fail over them).
        if let Some(p) = r.placement.as_ref().filter(|p| p.iter().any(|n| n.provider != r.provider)) {
            let _ = writeln!(
                o,
                "note: {} {} batch {}: nodes ran on {}",
                short(Path::new(&r.model)),
                r.provider,
                r.batch,
                crate::model::placement::placement_text(p)
            );
        }
    }
    for r in rows.iter().filter(|r| r.note.is_some()) {
        let _ = writeln!(
            o,
            "note: {} batch {}: {}",
            short(Path::new(&r.model)),
            r.batch,
            r.note.as_deref().unwrap_or_default()
        );
    }
    let _ = writeln!(
        o,
        "latencies in ms; img/s = inference throughput; pipe = decode + preprocess + infer + postprocess; x img/s = throughput against the first row"
    );
    o
}

/// Draws each measured row's inference latency distribution (latency against percentile) as SVG.
pub fn plot(rows: &[Row], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let ran: Vec<&Row> = rows.iter().filter(|r| r.unavailable.is_none() && !r.inference.samples.is_empty()).collect();
    if ran.is_empty() {
        return Err("nothing was measured".into());
    }
    let max_ms = ran.iter().flat_map(|r| r.inference.samples.last().copied()).fold(0.0f64, f64::max) * 1.05;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("inference latency distribution", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..100f64, 0f64..max_ms.max(1.0))
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("percentile").y_desc("latency (ms)").draw().map_err(|e| err(&e))?;
    for (i, r) in ran.iter().enumerate() {
        let n = r.inference.samples.len();
        let color = Palette99::pick(i).to_rgba();
        let points = r.inference.samples.iter().enumerate().map(|(k, &ms)| (100.0 * (k + 1) as f64 / n as f64, ms));
        let label = format!("{} {} batch {}", short(Path::new(&r.model)), r.provider, r.batch);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_exact_on_a_known_set() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let l = summarize(samples, 2, Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!((l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms), (500.0, 900.0, 990.0, 999.0));
        assert!((l.mean_ms - 500.5).abs() < 1e-9);
        assert_eq!(l.throughput, 1000.0);
        assert_eq!(l.cpu_pct, 50.0);
        assert_eq!(summarize(vec![], 1, Duration::ZERO, Duration::ZERO), Latency::default());
    }
}
