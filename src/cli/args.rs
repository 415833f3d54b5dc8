//! The command line (clap): every command, its arguments and their parsers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use camclassd::model::{self, Provider};

#[derive(Debug, Parser)]
#[command(name = "camclassd", version, about = "Edge camera classification daemon and model tools")]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or tracing directives); RUST_LOG also works.
    #[arg(long, global = true, value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// Path of the ONNX Runtime library (libonnxruntime.so); overrides the config and the search.
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Teach a model your question from labelled pictures (DIR/<class>/*.jpg): prints how good it is.
    Train(TrainArgs),
    /// Validate a daemon config file without running anything.
    CheckConfig {
        /// The config file.
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ONNX models, compared against the first (with --cameras: the one model the cameras run, unless
    /// --config gives them).
    #[arg(required_unless_present_any = ["cameras", "config"])]
    pub models: Vec<PathBuf>,
    /// A folder of JPEG/PNG images for the full-pipeline figures (default: inference only); with --cameras,
    /// the image, folder or glob every camera replays.
    #[arg(long, visible_alias = "image", value_name = "FILE|DIR")]
    pub images: Option<PathBuf>,
    /// Run the daemon's pipeline with this many replay cameras (no MQTT broker) and report CPU, frames and
    /// capture-to-decision latency; `max`: search the most cameras this board takes under 80 % CPU.
    #[arg(long, value_name = "N|max", conflicts_with_all = ["runs", "batch", "ep", "input_size", "plot", "trt_fp16", "trt_int8", "trt_cache_dir"])]
    pub cameras: Option<camclassd::tools::bench::cameras::Cameras>,
    /// With --cameras: each camera's frames per second.
    #[arg(long, requires = "cameras")]
    pub fps: Option<f64>,
    /// Intra-op threads (default: all cores; with --cameras, the daemon's default or the config's).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Execution providers to measure, each on its own (tensorrt, cuda, cpu); tensorrt leaves to CUDA the nodes
    /// it cannot run, as the daemon does with execution_providers = ["tensorrt", "cuda", "cpu"].
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub ep: Vec<Provider>,
    /// A config file whose [model.tensorrt] and [model.cuda] sections (and [onnxruntime] library) apply; with
    /// --cameras, its models, regions and workers run, its cameras replaced by the replay cameras.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TensorRT FP16 kernels, on or off (default: on, or the config's).
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub trt_fp16: Option<bool>,
    /// TensorRT INT8 kernels, on or off (default: on for QDQ-quantized models, or the config's).
    #[arg(long, value_name = "on|off", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub trt_int8: Option<bool>,
    /// TensorRT engine cache folder (default: the config's, else ~/.cache/camclassd/tensorrt). A second run
    /// loads the engines built by the first, so its load time is the one a restarted daemon sees.
    #[arg(long, value_name = "DIR")]
    pub trt_cache_dir: Option<PathBuf>,
    /// Batch sizes, for models with a dynamic batch dimension.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: Vec<u16>,
    /// Input height x width, for models with symbolic spatial dimensions (e.g. 160x160).
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    pub input_size: Option<[u32; 2]>,
    /// Seconds of steady state per measurement (default 60; with --cameras, 5 per camera count, after a
    /// warm-up of half that, at most 2 s).
    #[arg(long, visible_alias = "seconds", conflicts_with = "runs")]
    pub duration: Option<f64>,
    /// A fixed number of runs per measurement instead of --duration.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the inference latency distributions to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The labelled pictures: one folder per class (DIR/open/*.jpg, DIR/closed/*.jpg, …).
    pub dir: PathBuf,
    /// Where to write the taught model.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The base model whose frozen features are learnt from (default: the shipped INT8 EfficientNet-Lite0).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Intra-op threads for embedding (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    /// The model to protect (e.g. your INT8 model).
    pub model: PathBuf,
    /// The model whose answers count (e.g. the FP32 model it was quantized from).
    #[arg(long, short)]
    pub reference: PathBuf,
    /// A folder of JPEG/PNG pictures, typical of what the model will see; the clearest are kept.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Where to write the stamped model (default: replace MODEL).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// How many golden inputs to keep (4 to 16; each adds ~100 kB and a few ms at load).
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Pass mark: the mean cosine of the probability vectors (every top-1 must match too).
    #[arg(long, default_value_t = camclassd::check::DEFAULT_MIN_COSINE, value_parser = parse_probability)]
    pub min_cosine: f32,
    /// Intra-op threads (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// More pictures.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The reference model (e.g. FP32).
    pub a: PathBuf,
    /// The candidate model (e.g. INT8).
    pub b: PathBuf,
    /// A folder of JPEG/PNG images.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// A's top-1 must be in B's top-K for "containment".
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub top: u16,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when top-1 agreement is below this percentage (0 to 100).
    #[arg(long, value_name = "PCT", value_parser = parse_percentage)]
    pub fail_below: Option<f64>,
    /// Intra-op threads per model (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// More image files.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The ONNX model (required unless --config names one).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// A config file whose [model] section supplies the model and its settings.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    pub top: Option<u16>,
    /// Hide classes below this probability (0 to 1).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub min_score: Option<f32>,
    /// One JSON object per image on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With --json: also every class's probability, in class order ("scores").
    #[arg(long, requires = "json")]
    pub scores: bool,
    /// Intra-op threads (default: all cores).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Execution providers to try, in order (tensorrt, cuda, cpu).
    #[arg(long, value_delimiter = ',', value_name = "EP,...")]
    pub ep: Option<Vec<Provider>>,
    /// The model output holding the class scores, for a model with several (default: the config's, else the first).
    #[arg(long, value_name = "NAME")]
    pub output_name: Option<String>,
    /// A labels file replacing the model's: one per line, or JSON ({"0": "tench", …} or ["tench", …]).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// The input layout, for a model whose input shape does not tell (as [model.preprocess] layout).
    #[arg(long, value_name = "nchw|nhwc")]
    pub layout: Option<model::spec::Layout>,
    /// How to read the scores: logits, probabilities, sigmoid, sigmoid_logits or auto (as [model.preprocess] output).
    #[arg(long, value_name = "KIND")]
    pub output: Option<model::OutputKind>,
    /// A class's threshold for being "on", as CLASS=P (repeatable; "*=P" for every other class). Multi-label
    /// models always list the classes on (default 0.5 each); with this, a single-label model says whether its
    /// best class is on.
    #[arg(long, value_name = "CLASS=P", value_parser = parse_threshold)]
    pub threshold: Vec<(String, f32)>,
    /// Classify this part of each picture, as a region's `crop` does: pixels, or fractions of the picture
    /// when all four are at most 1.
    #[arg(long, value_name = "X,Y,W,H")]
    pub crop: Option<camclassd::preprocess::CropSpec>,
    /// With --config: the `[[models]]` entry to classify with (default: `[model]`).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub model_name: Option<String>,
    /// Image files (JPEG, PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn parse_percentage(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

pub fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

pub fn parse_threshold(s: &str) -> Result<(String, f32), String> {
    let (name, p) = s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not CLASS=P, e.g. open=0.8 or \"*=0.5\""))?;
    Ok((name.trim().to_string(), parse_probability(p.trim())?))
}

pub fn parse_size(s: &str) -> Result<[u32; 2], String> {
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
pub fn parse_log_level(s: &str) -> Result<String, String> {
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

pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a thread count"))?;
    let max = camclassd::config::max_threads();
    if n > max {
        return Err(format!("{n} threads is more than {max} (4 per core); 0 means all cores"));
    }
    Ok(n)
}
