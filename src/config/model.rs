//! The config file's words for a model: how to open it (the execution providers in order, threads, graph
//! optimisation, the `[model.tensorrt]` / `[model.cuda]` settings), the recipe overrides of
//! `[model.preprocess]` (layout, channel order, crop, interpolation, output kind) and their limits. Plain data
//! (serde, no ONNX Runtime): `model` reads them, the config holds them without depending on it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An execution provider, in the user's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Tensorrt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Provider::Tensorrt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => Err(format!("unknown execution provider {other:?} (expected tensorrt, cuda or cpu)")),
        }
    }
}

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

/// How to open a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Execution providers to try, in order; CPU is always the last resort.
    pub providers: Vec<Provider>,
    /// Intra-op threads; `None` = all cores.
    pub threads: Option<usize>,
    pub optimization: Optimization,
    /// Let ORT's worker threads spin between runs: lower latency, but burns CPU while idle (off for daemons).
    pub allow_spinning: bool,
    pub overrides: Overrides,
    /// A labels file that replaces the model's labels: one per line, or JSON (`{"0": "tench", …}` or a list).
    pub labels: Option<PathBuf>,
    /// Batch size for models with a dynamic batch dimension.
    pub batch: usize,
    /// `[model.tensorrt]` settings, used when the TensorRT provider is tried.
    pub tensorrt: TensorRtOptions,
    /// `[model.cuda]` settings, used for the CUDA provider and for what TensorRT leaves to CUDA.
    pub cuda: CudaOptions,
    /// Profile the warm-up inference to learn which provider ran each node (see [`super::Model::placement`]).
    pub record_placement: bool,
    /// The output holding the class scores, by name; `None`: the first (with a warning when there are more).
    pub output_name: Option<String>,
    /// Keep the CPU session's optimised graph in this folder and load it from there next time
    /// ([`super::optimized`]); `None`: optimise at every load.
    pub optimized_cache: Option<PathBuf>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            providers: vec![Provider::Cpu],
            threads: None,
            optimization: Optimization::All,
            allow_spinning: false,
            overrides: Overrides::default(),
            labels: None,
            batch: 1,
            tensorrt: TensorRtOptions::default(),
            cuda: CudaOptions::default(),
            record_placement: true,
            output_name: None,
            optimized_cache: None,
        }
    }
}

/// `[model.tensorrt]`: TensorRT execution provider settings. Defaults suit a Jetson.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtOptions {
    /// CUDA device ordinal (a Jetson has one GPU, 0).
    pub device_id: u32,
    /// Let TensorRT pick FP16 kernels where they are faster (about twice FP32 on Jetson GPUs).
    pub fp16: bool,
    /// INT8 kernels. `None` = on when the model has QuantizeLinear/DequantizeLinear nodes (explicit
    /// quantization: TensorRT takes the scales from them, no calibration table needed).
    pub int8: Option<bool>,
    /// Keep built engines on disk, so that a restart loads them instead of rebuilding for minutes.
    pub engine_cache: bool,
    /// Where engines (and the timing cache) are kept; `None` = [`super::tensorrt::default_engine_cache_dir`].
    pub engine_cache_dir: Option<PathBuf>,
    /// Keep TensorRT's kernel timing results, which speeds up building engines for other models too.
    pub timing_cache: bool,
    /// Scratch memory TensorRT may use while building and running, in MiB; 0 = TensorRT's choice. On a
    /// Jetson the GPU shares the board's memory with everything else.
    pub max_workspace_mb: u64,
    /// Smallest run of nodes handed to TensorRT; smaller runs stay on CUDA or CPU.
    pub min_subgraph_size: u32,
    /// Run on this DLA core (Jetson AGX Xavier/Orin: 0 or 1) instead of the GPU; layers the DLA cannot run
    /// go to the GPU.
    pub dla_core: Option<u32>,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            device_id: 0,
            fp16: true,
            int8: None,
            engine_cache: true,
            engine_cache_dir: None,
            timing_cache: true,
            max_workspace_mb: 1024,
            min_subgraph_size: 1,
            dla_core: None,
        }
    }
}

/// cuDNN convolution algorithm search (`cudnn_conv_algo_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvAlgoSearch {
    /// Time every algorithm on the first run: fastest kernels, slow first inference, more memory.
    Exhaustive,
    /// cuDNN's heuristics: nearly as fast, and quick to start.
    Heuristic,
    /// One fixed algorithm: least memory.
    Default,
}

/// How the CUDA memory arena grows (`arena_extend_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArenaExtendStrategy {
    NextPowerOfTwo,
    /// Grow by what is asked: less memory held, which matters where the GPU shares the board's RAM.
    SameAsRequested,
}

/// `[model.cuda]`: CUDA execution provider settings (also used for the nodes TensorRT leaves over).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    pub device_id: u32,
    pub conv_algo_search: ConvAlgoSearch,
    pub arena_extend_strategy: ArenaExtendStrategy,
    /// Cap on the CUDA memory arena in MiB; 0 = no cap.
    pub memory_limit_mb: u64,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            device_id: 0,
            conv_algo_search: ConvAlgoSearch::Heuristic,
            arena_extend_strategy: ArenaExtendStrategy::SameAsRequested,
            memory_limit_mb: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            other => Err(format!("unknown layout {other:?} (expected nchw or nhwc)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// Resize the shorter side to `resize`, then cut the input size out of the centre.
    Center,
    /// Stretch the whole picture to the input size.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Raw scores: camclassd applies softmax.
    Logits,
    /// Already probabilities.
    Probabilities,
    /// Multi-label: each class an independent probability in [0, 1], as a model ending in a Sigmoid gives
    /// them (they do not sum to 1; several classes, or none, may be "on").
    Sigmoid,
    /// Multi-label from raw per-class scores: camclassd applies a sigmoid to each.
    SigmoidLogits,
    /// Decided once, when the model is loaded ([`OutputKind::resolve`]): never per frame. Logits or
    /// probabilities; a multi-label model must say so (`sigmoid`, `sigmoid_logits`).
    Auto,
}

impl OutputKind {
    /// The values `output` takes, in config and metadata.
    pub const NAMES: [(&'static str, OutputKind); 5] = [
        ("logits", OutputKind::Logits),
        ("probabilities", OutputKind::Probabilities),
        ("sigmoid", OutputKind::Sigmoid),
        ("sigmoid_logits", OutputKind::SigmoidLogits),
        ("auto", OutputKind::Auto),
    ];

    pub fn name(self) -> &'static str {
        OutputKind::NAMES.iter().find(|(_, k)| *k == self).map_or("auto", |(n, _)| n)
    }

    /// Each class an independent probability (several or none may be on), not one distribution.
    pub fn is_multi_label(self) -> bool {
        matches!(self, OutputKind::Sigmoid | OutputKind::SigmoidLogits)
    }

    /// The model's own output must already lie in [0, 1].
    pub fn is_probability(self) -> bool {
        matches!(self, OutputKind::Probabilities | OutputKind::Sigmoid)
    }

    /// How camclassd reads the scores, in words (`inspect`, the start-up log).
    pub fn describe(self) -> &'static str {
        match self {
            OutputKind::Logits => "logits (softmax, single-label)",
            OutputKind::Probabilities => "probabilities (single-label)",
            OutputKind::Sigmoid => "sigmoid probabilities (multi-label, each class on its own threshold)",
            OutputKind::SigmoidLogits => "sigmoid of logits (multi-label, each class on its own threshold)",
            OutputKind::Auto => "auto (logits or probabilities, decided from the first inference)",
        }
    }
}

impl std::str::FromStr for OutputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        OutputKind::NAMES.iter().find(|(n, _)| *n == lower).map(|(_, k)| *k).ok_or_else(|| {
            let names: Vec<&str> = OutputKind::NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown output kind {lower:?} (expected {})", names.join(", "))
        })
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Config overrides (`[model.preprocess]`); every field wins over the model's metadata. Self-contained
/// (plain serde data), so any config section that names a model can carry one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub layout: Option<Layout>,
    pub channel_order: Option<ChannelOrder>,
    #[serde(default, deserialize_with = "exact_array")]
    pub input_size: Option<[u32; 2]>,
    pub resize: Option<u32>,
    pub crop: Option<Crop>,
    pub interpolation: Option<Interpolation>,
    #[serde(default, deserialize_with = "exact_array")]
    pub mean: Option<[f32; 3]>,
    #[serde(default, deserialize_with = "exact_array")]
    pub std: Option<[f32; 3]>,
    pub output: Option<OutputKind>,
}

/// A fixed-length list from a config file, refusing a longer one as a shorter one is refused: serde's
/// arrays silently ignore extra values (`mean = [1, 2, 3, 4]` would lose the 4).
pub fn exact_array<'de, D, T, const N: usize>(d: D) -> Result<Option<[T; N]>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::Error;
    let Some(values) = Option::<Vec<T>>::deserialize(d)? else { return Ok(None) };
    let n = values.len();
    values.try_into().map(Some).map_err(|_| D::Error::custom(format!("expected {N} values, got {n}")))
}

/// The largest input side, from the model or `[model.preprocess] input_size`: a 4096×4096 float tensor is already 192 MiB, and the
/// image classifiers camclassd runs take 224 to 600 pixels. `[20000, 20000]` took 18 s and 5.9 GB per image.
pub const MAX_INPUT_SIDE: u32 = 4096;
/// The largest `resize` (the shorter side before the crop): twice the largest input.
pub const MAX_RESIZE: u32 = 2 * MAX_INPUT_SIDE;

/// The message for an input size over [`MAX_INPUT_SIDE`] (config and `bench --input-size`).
pub fn input_size_too_large(h: u32, w: u32) -> String {
    format!(
        "{h}x{w} is larger than {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}: each side must be at most {MAX_INPUT_SIDE} pixels \
         (a {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} input is already a 192 MiB tensor; image classifiers take 224 to 600)"
    )
}

/// What to do when a model fails its check at load (`[model] on_check_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCheckFailure {
    /// Refuse the model (exit 2): its answers on this CPU are not the ones it was checked for.
    #[default]
    Fail,
    /// Log a warning and use it anyway.
    Warn,
    /// Use `[model] fallback` (the FP32 model) instead, and log why once.
    Fallback,
}

/// camclassd's cache folder: systemd's `CacheDirectory=`, else the user's cache, else `/var/cache/camclassd`.
pub fn cache_base() -> PathBuf {
    cache_dir_from(&|name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from))
}

fn cache_dir_from(env: &dyn Fn(&str) -> Option<PathBuf>) -> PathBuf {
    // CACHE_DIRECTORY may list several folders separated by ':'; the unit sets one.
    env("CACHE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("camclassd")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/camclassd")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/camclassd"))
}

/// Where optimised CPU graphs are kept when `optimized_cache_dir` is not set: `onnxruntime/` under the cache folder.
pub fn default_optimized_cache_dir() -> PathBuf {
    cache_base().join("onnxruntime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_default_cache_follows_systemd_then_xdg_then_home() {
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, PathBuf)> = vars.iter().map(|(k, v)| (k.to_string(), PathBuf::from(v))).collect();
            cache_dir_from(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        let all = [("CACHE_DIRECTORY", "/var/cache/camclassd"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")];
        assert_eq!(with(&all), Path::new("/var/cache/camclassd"));
        assert_eq!(with(&all[1..]), Path::new("/x/camclassd"));
        assert_eq!(with(&all[2..]), Path::new("/home/u/.cache/camclassd"));
        assert_eq!(with(&[]), Path::new("/var/cache/camclassd"));
    }
}
