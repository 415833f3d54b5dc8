//! The `camclassd` binary: parse arguments, call the library, map the outcome to an exit code.
//!
//! Exit codes: 0 success, 1 partial failure (some images failed, others were classified),
//! 2 usage or configuration error (bad arguments or config, missing model or ONNX Runtime library).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use camclassd::config::Config;
use camclassd::model::{self, Model, ModelOptions, Provider};
use camclassd::pipeline::Classifier;
use camclassd::tools::classify;

#[derive(Debug, Parser)]
#[command(name = "camclassd", version, about = "Edge camera classification daemon and model tools")]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or tracing directives); RUST_LOG also works.
    #[arg(long, global = true, value_parser = parse_log_level)]
    log_level: Option<String>,
    /// Path of the ONNX Runtime library (libonnxruntime.so); overrides the config and the search.
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: cameras → classifier → MQTT events, until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(long, short, default_value = camclassd::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Classify image files with a model and print the top classes.
    Classify(ClassifyArgs),
    /// Describe an ONNX model: inputs, outputs, opsets, metadata, operators, parameters, quantization.
    Inspect {
        /// The ONNX file.
        model: PathBuf,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Also open an ONNX Runtime session with these providers, in order (tensorrt, cuda, cpu), run it once
        /// on zeros and report the provider that opened, those skipped and why, and which provider ran each node.
        #[arg(long, value_delimiter = ',', value_name = "EP,...")]
        ep: Option<Vec<Provider>>,
    },
    /// Benchmark models: load time, latency percentiles, throughput, CPU and memory, per provider and batch.
    Bench(BenchArgs),
    /// Compare two models' predictions on the same images (agreement, probability error, differences).
    Compare(CompareArgs),
    /// Run a model's own check (the golden inputs stamped in it) on this CPU: exit 0 passed, 1 failed.
    Verify {
        /// The ONNX model.
        model: PathBuf,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Intra-op threads (default: all cores).
        #[arg(long, value_parser = parse_threads)]
        threads: Option<usize>,
    },
    /// Stamp a check into a model: golden inputs from your pictures and a reference model's answers.
    Stamp(StampArgs),
    /// Validate a daemon config file without running anything.
    CheckConfig {
        /// The config file.
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// ONNX models, compared against the first (with --cameras: the one model the cameras run, unless
    /// --config gives them).
    #[arg(required_unless_present_any = ["cameras", "config"])]
    models: Vec<PathBuf>,
    /// A folder of JPEG/PNG images for the full-pipeline figures (default: inference only); with --cameras,
    /// the image, folder or glob every camera replays.
    #[arg(long, visible_alias = "image", value_name = "FILE|DIR")]
    images: Option<PathBuf>,
    /// Run the daemon's pipeline with this many replay cameras (no MQTT broker) and report CPU, frames and
    /// capture-to-decision latency; `max`: search the most cameras this board takes under 80 % CPU.
    #[arg(long, value_name = "N|max", conflicts_with_all = ["runs", "batch", "ep", "input_size", "plot", "trt_fp16", "trt_int8", "trt_cache_dir"])]
    cameras: Option<camclassd::tools::bench::cameras::Cameras>,
    /// With --cameras: each camera's frames per second.
    #[arg(long, requires = "cameras")]
    fps: Option<f64>,
    /// Intra-op threads (default: all cores; with --cameras, the daemon's default or the config's).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Execution providers to measure, each on its own (tensorrt, cuda, cpu); tensorrt leaves to CUDA the nodes
    /// it cannot run, as the daemon does with execution_providers = ["tensorrt", "cuda", "cpu"].
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    ep: Vec<Provider>,
    /// A config file whose [model.tensorrt] and [model.cuda] sections (and [onnxruntime] library) apply; with
    /// --cameras, its models, regions and workers run, its cameras replaced by the replay cameras.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// TensorRT FP16 kernels, on or off (default: on, or the config's).
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    trt_fp16: Option<bool>,
    /// TensorRT INT8 kernels, on or off (default: on for QDQ-quantized models, or the config's).
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    trt_int8: Option<bool>,
    /// TensorRT engine cache folder (default: the config's, else ~/.cache/camclassd/tensorrt). A second run
    /// loads the engines built by the first, so its load time is the one a restarted daemon sees.
    #[arg(long, value_name = "DIR")]
    trt_cache_dir: Option<PathBuf>,
    /// Batch sizes, for models with a dynamic batch dimension.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: Vec<u16>,
    /// Input height x width, for models with symbolic spatial dimensions (e.g. 160x160).
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input_size: Option<[u32; 2]>,
    /// Seconds of steady state per measurement (default 60; with --cameras, 5 per camera count, after a
    /// warm-up of half that, at most 2 s).
    #[arg(long, visible_alias = "seconds", conflicts_with = "runs")]
    duration: Option<f64>,
    /// A fixed number of runs per measurement instead of --duration.
    #[arg(long)]
    runs: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the inference latency distributions to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct StampArgs {
    /// The model to protect (e.g. your INT8 model).
    model: PathBuf,
    /// The model whose answers count (e.g. the FP32 model it was quantized from).
    #[arg(long, short)]
    reference: PathBuf,
    /// A folder of JPEG/PNG pictures, typical of what the model will see; the clearest are kept.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Where to write the stamped model (default: replace MODEL).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// How many golden inputs to keep (4 to 16; each adds ~100 kB and a few ms at load).
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Pass mark: the mean cosine of the probability vectors (every top-1 must match too).
    #[arg(long, default_value_t = camclassd::check::DEFAULT_MIN_COSINE, value_parser = parse_probability)]
    min_cosine: f32,
    /// Intra-op threads (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// More pictures.
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The reference model (e.g. FP32).
    a: PathBuf,
    /// The candidate model (e.g. INT8).
    b: PathBuf,
    /// A folder of JPEG/PNG images.
    #[arg(long)]
    images: Option<PathBuf>,
    /// A's top-1 must be in B's top-K for "containment".
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    top: u16,
    /// The report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Exit 1 when top-1 agreement is below this percentage (0 to 100).
    #[arg(long, value_name = "PCT", value_parser = parse_percentage)]
    fail_below: Option<f64>,
    /// Intra-op threads per model (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// More image files.
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ClassifyArgs {
    /// The ONNX model (required unless --config names one).
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// A config file whose [model] section supplies the model and its settings.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    top: Option<u16>,
    /// Hide classes below this probability (0 to 1).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    min_score: Option<f32>,
    /// One JSON object per image on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// With --json: also every class's probability, in class order ("scores").
    #[arg(long, requires = "json")]
    scores: bool,
    /// Intra-op threads (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Execution providers to try, in order (tensorrt, cuda, cpu).
    #[arg(long, value_delimiter = ',', value_name = "EP,...")]
    ep: Option<Vec<Provider>>,
    /// The model output holding the class scores, for a model with several (default: the config's, else the first).
    #[arg(long, value_name = "NAME")]
    output_name: Option<String>,
    /// A labels file replacing the model's: one per line, or JSON ({"0": "tench", …} or ["tench", …]).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// The input layout, for a model whose input shape does not tell (as [model.preprocess] layout).
    #[arg(long, value_name = "nchw|nhwc")]
    layout: Option<model::spec::Layout>,
    /// How to read the scores: logits, probabilities, sigmoid, sigmoid_logits or auto (as [model.preprocess] output).
    #[arg(long, value_name = "KIND")]
    output: Option<model::OutputKind>,
    /// A class's threshold for being "on", as CLASS=P (repeatable; "*=P" for every other class). Multi-label
    /// models always list the classes on (default 0.5 each); with this, a single-label model says whether its
    /// best class is on.
    #[arg(long, value_name = "CLASS=P", value_parser = parse_threshold)]
    threshold: Vec<(String, f32)>,
    /// Classify this part of each picture, as a region's `crop` does: pixels, or fractions of the picture
    /// when all four are at most 1.
    #[arg(long, value_name = "X,Y,W,H")]
    crop: Option<camclassd::preprocess::CropSpec>,
    /// With --config: the `[[models]]` entry to classify with (default: `[model]`).
    #[arg(long, value_name = "NAME", requires = "config")]
    model_name: Option<String>,
    /// Image files (JPEG, PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let outcome = match cli.command {
        Command::Run { config } => run_daemon(&config, cli.ort_lib.as_deref()),
        Command::Classify(args) => run_classify(args, cli.ort_lib.as_deref()),
        Command::CheckConfig { config } => check_config(&config, cli.ort_lib.as_deref()),
        Command::Verify { model, json, threads } => run_verify(&model, json, threads, cli.ort_lib.as_deref()),
        Command::Stamp(args) => run_stamp(args, cli.ort_lib.as_deref()),
        Command::Inspect { model, json, ep } => inspect(&model, json, ep, cli.ort_lib.as_deref()),
        Command::Compare(args) => run_compare(args, cli.ort_lib.as_deref()),
        Command::Bench(args) => run_bench(args, cli.ort_lib.as_deref()),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("camclassd: error: {}", render_error(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line. The library's messages often carry their cause already (and
/// `{:#}` would print it twice): a cause is added only when its text is not there yet.
fn render_error(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // Tools print results on stdout; logs go to stderr, warnings only unless asked. ORT's own log lines
    // are routed through tracing under the `ort` target.
    let filter = match level {
        // A bare level applies to camclassd; ORT's own log stays at warnings unless asked for by target.
        Some(l) if !l.contains('=') && !l.contains(',') => EnvFilter::new(format!("{l},ort=warn")),
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,ort=error")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Under systemd the journal stamps each line itself (JOURNAL_STREAM is set there): plain lines only.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn inspect(path: &Path, json: bool, ep: Option<Vec<Provider>>, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    let mut report = camclassd::tools::inspect::inspect(path).map_err(|e| usage(e.into()))?;
    if let Some(providers) = ep {
        let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
        let options = ModelOptions { providers, ..ModelOptions::default() };
        report.session = Some(model::ep::probe(runtime, path, &options).map_err(|e| usage(e.into()))?);
    }
    let text = if json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        camclassd::tools::inspect::render_text(&report)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") })
        }
        _ => Ok(0),
    }
}

fn run_bench(args: BenchArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::tools::bench;
    if let Some(cameras) = args.cameras {
        return run_camera_bench(cameras, args, ort_lib);
    }
    let duration = args.duration.unwrap_or(60.0);
    if !(duration.is_finite() && duration > 0.0) || args.runs == Some(0) {
        return Err(usage(anyhow::anyhow!("--duration and --runs must be positive")));
    }
    if args.models.is_empty() {
        return Err(usage(anyhow::anyhow!("bench needs a model (or --cameras with --config)")));
    }
    // As classify and compare do, a file that cannot be decoded is named and left out; the others are timed.
    let (images, failed_images) = match &args.images {
        Some(dir) => {
            let paths = camclassd::tools::compare::image_list(Some(dir), &[]).map_err(|e| {
                let why = match e {
                    camclassd::tools::compare::CompareError::NoImages(why) => why,
                    other => other.to_string(),
                };
                usage(anyhow::anyhow!("--images: {why}"))
            })?;
            if paths.is_empty() {
                return Err(usage(anyhow::anyhow!("--images: no JPEG or PNG images in {}", dir.display())));
            }
            let (images, failed) = bench::usable_images(&paths);
            for f in &failed {
                eprintln!("camclassd: error: {f}");
            }
            if images.is_empty() {
                return Err(usage(anyhow::anyhow!(
                    "--images {}: none of its {} images could be decoded",
                    dir.display(),
                    paths.len()
                )));
            }
            (images, failed)
        }
        None => (Vec::new(), Vec::new()),
    };
    let config = match &args.config {
        Some(path) => Some(Config::load(path).map_err(|e| usage(e.into()))?),
        None => None,
    };
    let (mut tensorrt, cuda) =
        config.as_ref().map(|c| (c.model.tensorrt.clone(), c.model.cuda.clone())).unwrap_or_default();
    if let Some(fp16) = args.trt_fp16 {
        tensorrt.fp16 = fp16;
    }
    if args.trt_int8.is_some() {
        tensorrt.int8 = args.trt_int8;
    }
    if let Some(dir) = &args.trt_cache_dir {
        tensorrt.engine_cache_dir = Some(dir.clone());
    }
    let ort_lib = ort_lib.or(config.as_ref().and_then(|c| c.onnxruntime.library.as_deref()));
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = bench::BenchOptions {
        tensorrt,
        cuda,
        providers: args.ep.clone(),
        batches: args.batch.iter().map(|&b| usize::from(b)).collect(),
        threads: args.threads,
        input_size: args.input_size,
        budget: match args.runs {
            Some(n) => bench::Budget::Runs(n),
            None => bench::Budget::Duration(std::time::Duration::from_secs_f64(duration)),
        },
    };
    let bar = progress_bar();
    let progress = |what: &str, fraction: f64| show_progress(bar.as_ref(), what, fraction);
    let rows = bench::run(runtime, &args.models, &images, &options, &progress).map_err(|e| usage(e.into()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print!("{}", bench::render_table(&rows));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&rows).context("encoding JSON").map_err(usage)?;
        std::fs::write(path, json).map_err(|e| usage(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.plot {
        bench::plot(&rows, path).map_err(|e| Failure { code: 1, error: anyhow::anyhow!("plot: {e}") })?;
    }
    if !failed_images.is_empty() {
        eprintln!("camclassd: {} image(s) left out of the pipeline figures (named above)", failed_images.len());
        return Ok(1);
    }
    Ok(0)
}

/// A progress bar on a terminal; plain lines (one per finished measurement) otherwise.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {percent:>3}%") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    })
}

fn show_progress(bar: Option<&indicatif::ProgressBar>, what: &str, fraction: f64) {
    match bar {
        Some(bar) => {
            bar.set_message(what.to_string());
            bar.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        }
        None if fraction >= 1.0 => eprintln!("bench: {what}"),
        None => {}
    }
}

/// `bench --cameras`: the daemon's pipeline with replay cameras, one camera count or the most that fit.
fn run_camera_bench(
    cameras: camclassd::tools::bench::cameras::Cameras,
    args: BenchArgs,
    ort_lib: Option<&Path>,
) -> Result<u8, Failure> {
    use camclassd::tools::bench::{self, cameras as load};
    let Some(fps) = args.fps else {
        return Err(usage(anyhow::anyhow!("--cameras needs --fps: each camera's frames per second")));
    };
    if !(fps.is_finite() && (0.01..=120.0).contains(&fps)) {
        return Err(usage(anyhow::anyhow!("--fps: expected a number from 0.01 to 120, got {fps}")));
    }
    let seconds = args.duration.unwrap_or(5.0);
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(usage(anyhow::anyhow!("--seconds must be positive")));
    }
    let mut config = match (&args.config, args.models.as_slice()) {
        (Some(path), []) => Config::load(path).map_err(|e| usage(e.into()))?,
        (None, [model]) => load::model_config(model).map_err(|e| usage(e.into()))?,
        (None, []) => return Err(usage(anyhow::anyhow!("--cameras needs a model, or --config"))),
        (None, models) => {
            return Err(usage(anyhow::anyhow!(
                "--cameras runs one model (or --config's models), not {}",
                models.len()
            )));
        }
        (Some(_), _) => {
            return Err(usage(anyhow::anyhow!("--cameras runs either a model or --config's models, not both")));
        }
    };
    if let Some(threads) = args.threads {
        config.model.threads = threads;
    }
    // What the cameras replay must decode, or every frame would be skipped and nothing measured.
    let Some(images) = &args.images else {
        return Err(usage(anyhow::anyhow!("--cameras needs --image: the image, folder or glob each camera replays")));
    };
    let source =
        images.to_str().ok_or_else(|| usage(anyhow::anyhow!("--image {}: not a UTF-8 path", images.display())))?;
    let files = camclassd::capture::replay::list(source).map_err(|e| usage(anyhow::anyhow!("--image: {e}")))?;
    let (_, failed) = bench::usable_images(&files);
    if !failed.is_empty() {
        return Err(usage(anyhow::anyhow!("--image: {}", failed.join("; "))));
    }
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let window = std::time::Duration::from_secs_f64(seconds);
    let options = load::CameraOptions {
        cameras,
        fps,
        source: source.to_string(),
        warmup: (window / 2).min(std::time::Duration::from_secs(2)),
        window,
    };
    let bar = progress_bar();
    let progress = |what: &str, fraction: f64| show_progress(bar.as_ref(), what, fraction);
    let found = load::run(runtime, &config, args.config.as_deref(), &options, &progress).map_err(|e| match e {
        // A pipeline thread that failed is a run-time failure (1), as in the daemon; the rest are the user's (2).
        bench::BenchError::Daemon(e) => Failure { code: e.exit_code(), error: e.into() },
        e => usage(e.into()),
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    write_stdout(&load::render(&found))?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&found).context("encoding JSON").map_err(usage)?;
        std::fs::write(path, json).map_err(|e| usage(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    Ok(0)
}

fn run_compare(args: CompareArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::tools::compare;
    let images = compare::image_list(args.images.as_deref(), &args.files).map_err(|e| usage(e.into()))?;
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads: args.threads, ..ModelOptions::default() };
    // A comparison is how one studies a model that fails its check: a failure is reported, not refused.
    let load = |path: &Path| {
        let mut c = Model::load(runtime, path, &options)
            .and_then(|m| Classifier::new(m, 1, 0.0))
            .map_err(|e| usage(e.into()))?;
        let check =
            camclassd::check::at_load(&mut c, camclassd::check::OnCheckFailure::Warn).map_err(|e| usage(e.into()))?;
        if check.status == camclassd::check::CheckStatus::Failed {
            eprintln!("camclassd: warning: {} fails its check on this CPU: {}", path.display(), check.detail);
        }
        Ok::<_, Failure>(c)
    };
    let (mut a, mut b) = (load(&args.a)?, load(&args.b)?);
    let report = compare::compare(&mut a, &mut b, &images, usize::from(args.top)).map_err(|e| usage(e.into()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        compare::render_text(&report)
    };
    write_stdout(&text)?;
    for f in &report.failed {
        eprintln!("camclassd: error: {f}");
    }
    let below = args.fail_below.is_some_and(|pct| report.top1_agreement_pct < pct);
    if below {
        eprintln!(
            "camclassd: top-1 agreement {:.1} % is below --fail-below {:.1} %",
            report.top1_agreement_pct,
            args.fail_below.unwrap_or_default()
        );
    }
    Ok(if below || !report.failed.is_empty() { 1 } else { 0 })
}

fn run_verify(path: &Path, json: bool, threads: Option<usize>, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::check::{self, GoldenSet};
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads, ..ModelOptions::default() };
    let model = Model::load(runtime, path, &options).map_err(|e| usage(e.into()))?;
    let mut classifier = Classifier::new(model, 1, 0.0).map_err(|e| usage(e.into()))?;
    let Some(set) = GoldenSet::of(&classifier).map_err(|e| usage(e.into()))? else {
        return Err(usage(anyhow::anyhow!(
            "model {} carries no check; stamp one with: camclassd stamp {} --reference FP32_MODEL --images DIR",
            path.display(),
            path.display()
        )));
    };
    let report = check::verify(&mut classifier, &set).map_err(|e| Failure { code: 1, error: e.into() })?;
    let text = if json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        check::render_report(path, &report)
    };
    write_stdout(&text)?;
    Ok(if report.passed { 0 } else { 1 })
}

fn run_stamp(args: StampArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::check;
    let images =
        camclassd::tools::compare::image_list(args.images.as_deref(), &args.files).map_err(|e| usage(e.into()))?;
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads: args.threads, ..ModelOptions::default() };
    let load = |path: &Path| {
        Model::load(runtime, path, &options).and_then(|m| Classifier::new(m, 1, 0.0)).map_err(|e| usage(e.into()))
    };
    let (mut reference, mut candidate) = (load(&args.reference)?, load(&args.model)?);
    let request = check::StampRequest { images: &images, count: args.count, min_cosine: args.min_cosine };
    let (set, report) = check::build(&mut reference, &mut candidate, &request).map_err(|e| usage(e.into()))?;
    write_stdout(&check::render_report(&args.model, &report))?;
    if !report.passed {
        return Err(Failure {
            code: 1,
            error: anyhow::anyhow!(
                "{} fails this check already on this machine; nothing written (a lower --min-cosine, or a better model)",
                args.model.display()
            ),
        });
    }
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display())).map_err(usage)?;
    let stamped = check::stamp(&bytes, &set.to_metadata()).map_err(|e| usage(e.into()))?;
    let output = args.output.clone().unwrap_or_else(|| args.model.clone());
    let tmp = output.with_extension("onnx.stamping");
    std::fs::write(&tmp, &stamped).and_then(|()| std::fs::rename(&tmp, &output)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Failure { code: 1, error: anyhow::Error::new(e).context(format!("writing {}", output.display())) }
    })?;
    eprintln!(
        "camclassd: stamped {} inputs into {} ({} bytes more)",
        set.inputs.len(),
        output.display(),
        stamped.len().saturating_sub(bytes.len())
    );
    Ok(0)
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") })
        }
        _ => Ok(()),
    }
}

/// Validates a config as `run` would start with it: the file, then what `run` reads before it starts (the
/// MQTT password and TLS files, the model and its recipe, the fallback model), so that a config `run` would
/// refuse (exit 2, which systemd does not restart) is refused here first, naming the key.
fn check_config(path: &Path, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::check::OnCheckFailure;
    let config = Config::load_for_daemon(path).map_err(|e| usage(e.into()))?;
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    // Problems found from here on are located in the file by their key, as the config's own are.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let at = |key: &str| match camclassd::config::key_position(&text, key) {
        Some((line, col)) => format!("{}:{line}:{col}", path.display()),
        None => path.display().to_string(),
    };
    let mut problems = Vec::new();
    // A secret the service user may read and this user may not (a 0600 password file, checked without sudo)
    // is not a problem of the config: say how to check it instead.
    let unreadable = |e: &camclassd::publish::PublishError| match e {
        camclassd::publish::PublishError::PasswordFile { source, .. } => {
            source.kind() == std::io::ErrorKind::PermissionDenied
        }
        camclassd::publish::PublishError::Tls(why) => why.contains("(os error 13)"),
        _ => false,
    };
    match camclassd::publish::Settings::from_config(&config) {
        Err(e) if unreadable(&e) => eprintln!(
            "warning: {e}: not readable by this user; run `sudo -u camclassd camclassd check-config {}` to check \
             it as the service reads it",
            path.display()
        ),
        Err(e) => {
            let key = match &e {
                camclassd::publish::PublishError::PasswordFile { .. } => "mqtt.password_file",
                camclassd::publish::PublishError::Tls(why) if why.contains(&*tls_file(&config, "cert")) => {
                    "mqtt.tls.cert_file"
                }
                camclassd::publish::PublishError::Tls(why) if why.contains(&*tls_file(&config, "key")) => {
                    "mqtt.tls.key_file"
                }
                camclassd::publish::PublishError::Tls(_) => "mqtt.tls.ca_file",
                _ => "mqtt",
            };
            let key = if camclassd::config::key_position(&text, key).is_some() { key } else { "mqtt.tls" };
            problems.push(format!("{}: {e}", at(key)));
        }
        Ok(_) => {}
    }
    // [http]: the token and TLS files, read as `run` reads them.
    if let Some(http) = &config.http {
        use camclassd::http::HttpError;
        match camclassd::http::Settings::from_config(http) {
            Err(
                e @ (HttpError::TokenFile { .. }
                | HttpError::EmptyToken { .. }
                | HttpError::ShortToken { .. }
                | HttpError::TokenCharacters { .. }),
            ) => {
                problems.push(format!("{}: {e}", at("http.token_file")));
            }
            Err(e) => {
                problems.push(format!("{}: {e}", at(if http.cert_file.is_some() { "http.cert_file" } else { "http" })))
            }
            Ok(_) => {}
        }
    }
    // Each camera's pipeline parsed as `run` builds it, without starting it: a syntax error, an element not
    // installed, no appsink named camclassd.
    #[cfg(feature = "gstreamer")]
    for (i, cam) in config.cameras.iter().enumerate() {
        if let Some(pipeline) = &cam.pipeline
            && let Err(why) = camclassd::capture::gstreamer::check_pipeline(pipeline)
        {
            let key = format!("cameras[{i}].pipeline");
            problems.push(format!("{}: {key}: {why}", at(&key)));
        }
    }
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = match model::runtime::load(ort_lib) {
        Ok(runtime) => runtime,
        Err(e) => {
            // The model cannot be opened without it; what was found so far is reported with it.
            problems.push(format!("{}: onnxruntime.library: {e}", path.display()));
            return Err(usage(anyhow::anyhow!("{}", problems.join("\n"))));
        }
    };
    // On the CPU, one thread, no placement profile: the model is opened to be checked, not to be timed, and
    // its file, interface and recipe do not depend on the provider (this runs before every start under
    // systemd: a TensorRT session here would build or load the engine a second time).
    let cpu_only = config.model.execution_providers.iter().all(|p| *p == Provider::Cpu);
    let options = ModelOptions {
        providers: vec![Provider::Cpu],
        threads: Some(1),
        record_placement: false,
        ..config.model.model_options()
    };
    // A model error is located at the key it is about (labels, preprocess.layout, …) when the file has it.
    let model_key = |e: &model::ModelError| {
        let key = format!("model.{}", e.config_key());
        let key = if camclassd::config::key_position(&text, &key).is_some() { key } else { "model.path".to_string() };
        format!("{}: {key}: {e}", at(&key))
    };
    match Model::load(runtime, &config.model.path, &options) {
        Err(e) => problems.push(model_key(&e)),
        // The model's own check, as `run` does it at start (it refuses a failure unless told otherwise); its
        // answer depends on the provider, so only where run's provider is the CPU too.
        Ok(model) if cpu_only => match Classifier::new(model, 1, 0.0) {
            Ok(mut classifier) => {
                if let Err(e) = camclassd::check::at_load(&mut classifier, config.model.on_check_failure) {
                    problems.push(format!("{}: model.on_check_failure: {e}", at("model.on_check_failure")));
                }
            }
            Err(e) => problems.push(format!("{}: model.path: {e}", at("model.path"))),
        },
        Ok(_) => {}
    }
    if let (OnCheckFailure::Fallback, Some(fallback)) = (config.model.on_check_failure, &config.model.fallback) {
        if let Err(e) = Model::load(runtime, fallback, &options) {
            problems.push(format!("{}: model.fallback: {e}", at("model.fallback")));
        }
    }
    // Every model by name, and the regions against their models' classes, as `run` plans them.
    let mut infos = Vec::new();
    for named in config.named_models() {
        let options =
            ModelOptions { providers: vec![Provider::Cpu], threads: Some(1), record_placement: false, ..named.options };
        match Model::load(runtime, &named.path, &options) {
            Ok(m) => infos.push(camclassd::region::ModelInfo {
                name: named.name,
                labels: m.spec().labels.clone(),
                num_classes: m.num_classes(),
            }),
            Err(e) if named.key == "model" => drop(e), // reported above
            Err(e) => problems.push(format!("{}: {}.path: {e}", at(&format!("{}.path", named.key)), named.key)),
        }
    }
    let mut regions = 0;
    if infos.len() == config.models.len() + 1 {
        match camclassd::region::plan(&config, &infos) {
            Ok(plan) => regions = plan.iter().flatten().filter(|r| r.name.is_some()).count(),
            Err(found) => problems.extend(found.into_iter().map(|(key, m)| format!("{}: {key}: {m}", at(&key)))),
        }
    }
    if !problems.is_empty() {
        return Err(usage(anyhow::anyhow!("{}", problems.join("\n"))));
    }
    let names: Vec<String> = config.named_models().into_iter().map(|m| m.name).collect();
    println!(
        "{}: ok ({} model{}: {}, [model] being \"default\"; {} camera{}, {regions} named region{})",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        config.cameras.len(),
        if config.cameras.len() == 1 { "" } else { "s" },
        if regions == 1 { "" } else { "s" }
    );
    Ok(0)
}

/// The `cert` or `key` file of `[mqtt.tls]` as the TLS errors print it; a name no error contains when unset.
fn tls_file(config: &Config, which: &str) -> String {
    let tls = config.mqtt.as_ref().and_then(|m| m.tls.as_ref());
    let file = tls.and_then(|t| if which == "cert" { t.cert_file.as_ref() } else { t.key_file.as_ref() });
    file.map_or_else(|| "\0".into(), |f| format!("{}:", f.display()))
}

fn run_daemon(path: &Path, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    limit_malloc_arenas();
    let config = Config::load_for_daemon(path).map_err(|e| usage(e.into()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("camclassd-io")
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { code: 1, error })?;
    let outcome = runtime.block_on(async {
        let signals = camclassd::daemon::Signals { shutdown: stop_signal(), reload: reload_signal() };
        camclassd::daemon::run_with(config, Some(path.to_path_buf()), ort_lib, signals, test_hooks()).await
    });
    // Pending blocking work (a capture thread inside a device read, a reload abandoned at shutdown) must not
    // hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let summary = outcome.map_err(|e| Failure { code: e.exit_code(), error: e.into() })?;
    tracing::debug!(?summary, "exit");
    Ok(0)
}

/// Faults the integration tests inject into the debug binary they run (`CAMCLASSD_TEST_HOOKS`, e.g.
/// `stall-inference-after=10,slow-reload-ms=30000`). Release builds have none: nothing in the environment
/// can make the shipped daemon misbehave.
#[cfg(debug_assertions)]
fn test_hooks() -> camclassd::daemon::Hooks {
    let mut hooks = camclassd::daemon::Hooks::default();
    for item in std::env::var("CAMCLASSD_TEST_HOOKS").unwrap_or_default().split(',') {
        match item.split_once('=') {
            Some(("stall-inference-after", n)) => hooks.stall_inference_after = n.parse().ok(),
            Some(("slow-reload-ms", ms)) => hooks.slow_reload = ms.parse().ok().map(std::time::Duration::from_millis),
            _ => {}
        }
    }
    hooks
}

#[cfg(not(debug_assertions))]
fn test_hooks() -> camclassd::daemon::Hooks {
    camclassd::daemon::Hooks::default()
}

/// glibc gives each new thread its own malloc arena (up to 8 per core), and threads come and go in the
/// daemon (tokio's blocking pool: name lookups at every reconnection, queue fsyncs). Memory freed into a
/// dozen arenas is not reused across them: with the broker flapping every 30 s, RSS crept from 59 to 78 MiB
/// in 10 minutes. Two arenas keep it flat (scripts/soak-mqtt). `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread of ours starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// One message per SIGHUP (`systemctl reload camclassd`).
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}); config reload is off"),
    }
    rx
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

fn run_classify(args: ClassifyArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    let config = match &args.config {
        Some(path) => Some(Config::load(path).map_err(|e| usage(e.into()))?),
        None => None,
    };
    let named = match (&config, &args.model_name) {
        (Some(c), Some(name)) => match c.named_models().into_iter().find(|m| &m.name == name) {
            Some(m) => Some(m),
            None => {
                let names: Vec<String> = c.named_models().into_iter().map(|m| m.name).collect();
                return Err(usage(anyhow::anyhow!(
                    "--model-name {name:?}: no such model; the config has {}",
                    names.join(", ")
                )));
            }
        },
        (Some(c), None) => c.named_models().into_iter().next(),
        _ => None,
    };
    let model_path = match (&args.model, &named) {
        (Some(m), _) => m.clone(),
        (None, Some(c)) => c.path.clone(),
        (None, None) => return Err(usage(anyhow::anyhow!("classify needs --model MODEL or --config FILE"))),
    };
    let mut options = named.as_ref().map(|c| c.options.clone()).unwrap_or_else(ModelOptions::default);
    if let Some(t) = args.threads {
        options.threads = Some(t);
    }
    if let Some(ep) = args.ep.clone() {
        options.providers = ep;
    }
    if let Some(name) = &args.output_name {
        options.output_name = Some(name.clone());
    }
    if let Some(labels) = &args.labels {
        options.labels = Some(labels.clone());
    }
    if let Some(layout) = args.layout {
        options.overrides.layout = Some(layout);
    }
    if let Some(output) = args.output {
        options.overrides.output = Some(output);
    }
    let top_k = args.top.map(usize::from).or(config.as_ref().map(|c| c.model.top_k)).unwrap_or(5);
    let min_score = args.min_score.or(config.as_ref().map(|c| c.model.min_score)).unwrap_or(0.0);
    let ort_lib = ort_lib.or(config.as_ref().and_then(|c| c.onnxruntime.library.as_deref()));

    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let model = Model::load(runtime, &model_path, &options).map_err(|e| usage(e.into()))?;
    let mut classifier = Classifier::new(model, top_k, min_score).map_err(|e| usage(e.into()))?;
    let thresholds = |c: &Classifier| {
        let spec = c.model().spec();
        let default = if spec.output.is_multi_label() {
            camclassd::postprocess::DEFAULT_MULTI_LABEL_THRESHOLD
        } else {
            min_score
        };
        let named = args.threshold.iter().map(|(name, p)| (name.as_str(), *p));
        camclassd::postprocess::Thresholds::from_named(&spec.labels, named, default)
            .map_err(|e| usage(anyhow::anyhow!("--threshold: {e}")))
    };
    if !args.threshold.is_empty() {
        classifier.set_thresholds(thresholds(&classifier)?);
    }
    let policy = config.as_ref().map(|c| c.model.on_check_failure).unwrap_or_default();
    let check = camclassd::check::at_load(&mut classifier, policy).map_err(|e| usage(e.into()))?;
    if check.status == camclassd::check::CheckStatus::Fallback {
        if let Some(fallback) = config.as_ref().and_then(|c| c.model.fallback.as_ref()) {
            eprintln!(
                "camclassd: {} fails its check here; classifying with {}",
                model_path.display(),
                fallback.display()
            );
            let model = Model::load(runtime, fallback, &options).map_err(|e| usage(e.into()))?;
            classifier = Classifier::new(model, top_k, min_score).map_err(|e| usage(e.into()))?;
            if !args.threshold.is_empty() {
                classifier.set_thresholds(thresholds(&classifier)?);
            }
        }
    }

    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    for image in &args.images {
        let text = match classify::classify_file_crop(&mut classifier, image, args.crop, args.scores) {
            Ok(report) if args.json => {
                serde_json::to_string(&report).context("encoding the JSON report").map_err(usage)? + "\n"
            }
            Ok(report) => classify::render_table(&report),
            Err(e) => {
                failed += 1;
                eprintln!("camclassd: error: {e}");
                continue;
            }
        };
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): stop quietly, as other Unix tools do.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") }),
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn parse_percentage(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn parse_threshold(s: &str) -> Result<(String, f32), String> {
    let (name, p) = s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not CLASS=P, e.g. open=0.8 or \"*=0.5\""))?;
    Ok((name.trim().to_string(), parse_probability(p.trim())?))
}

fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let bad = || format!("{s:?} is not HEIGHTxWIDTH, e.g. 224x224");
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let max = camclassd::config::MAX_INPUT_SIDE;
    match (h.trim().parse::<u64>(), w.trim().parse::<u64>()) {
        (Ok(0), Ok(_)) | (Ok(_), Ok(0)) => Err(format!("{s:?}: both sides must be positive")),
        (Ok(h), Ok(w)) if h.max(w) > u64::from(max) => Err(camclassd::config::input_size_too_large(
            u32::try_from(h).unwrap_or(u32::MAX),
            u32::try_from(w).unwrap_or(u32::MAX),
        )),
        (Ok(h), Ok(w)) => Ok([h as u32, w as u32]),
        _ => Err(bad()),
    }
}

/// A bare level, or `tracing` directives (`camclassd=debug,ort=info`); anything else is refused rather than
/// read as a target name (`verbose` would silently mean "everything from a target called verbose").
fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = || {
        format!(
            "{s:?} is not a log level: use error, warn, info, debug, trace or off (or directives like camclassd=debug)"
        )
    };
    if !s.contains(['=', ',']) {
        return if LEVELS.contains(&s.trim().to_ascii_lowercase().as_str()) { Ok(s.to_string()) } else { Err(bad()) };
    }
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} in {s:?}: {} is not a log level (error, warn, info, debug, trace, off)",
                level.trim()
            ));
        }
    }
    Ok(s.to_string())
}

fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a thread count"))?;
    let max = camclassd::config::max_threads();
    if n > max {
        return Err(format!("{n} threads is more than {max} (4 per core); 0 means all cores"));
    }
    Ok(n)
}
