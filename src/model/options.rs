//! How to open a model: the execution providers in order, threads, graph optimisation, recipe overrides and the
//! `[model.tensorrt]` / `[model.cuda]` settings. Plain data (serde, no ONNX Runtime), so the config can hold it
//! without depending on the module that talks to ONNX Runtime.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::spec::Overrides;

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
