//! Execution providers: which ones this build and the loaded ONNX Runtime offer, how their options
//! ([`super::options`]: `[model.tensorrt]`, `[model.cuda]`) become ONNX Runtime's, opening a session with the
//! first one that works, and the inspect probe. Where the nodes ran is [`super::placement`]'s job, TensorRT's
//! engine cache [`super::tensorrt`]'s.
//!
//! A provider is skipped for one of three reasons, each reported on its own log line: camclassd was built
//! without its cargo feature, the loaded ONNX Runtime library has no such provider (the CPU-only wheel), or
//! ONNX Runtime has it but could not start it (CUDA, cuDNN or TensorRT libraries missing, no GPU).
//!
//! Even when a GPU provider starts, ONNX Runtime gives it only the nodes it supports and runs the rest on the
//! CPU without saying so: [`ModelOptions::record_placement`] profiles the first inference to find out.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::SessionBuilder;
use ort::value::{DynTensor, ValueType};
use serde::Serialize;

use ort::session::builder::GraphOptimizationLevel;

#[cfg(feature = "tensorrt")]
use super::TensorRtOptions;
use super::placement::{ProfileDir, ProviderNodes, finish_placement};
#[cfg(feature = "tensorrt")]
use super::tensorrt::{default_engine_cache_dir, engine_cache_folder, has_qdq_nodes};
#[cfg(feature = "cuda")]
use super::{ArenaExtendStrategy, ConvAlgoSearch, CudaOptions};
use super::{ModelError, ModelOptions, Optimization, Provider, Runtime, optimized};

/// ONNX Runtime's graph optimisation level for an [`Optimization`].
fn optimization_level(o: Optimization) -> GraphOptimizationLevel {
    match o {
        Optimization::Disable => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        // `All` rather than `Level3`: Level3 is layout optimisation, which older runtimes reject.
        Optimization::All => GraphOptimizationLevel::All,
    }
}

/// Why a provider was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// camclassd was built without the provider's cargo feature.
    NotBuilt,
    /// The loaded ONNX Runtime library does not include the provider.
    NotInRuntime,
    /// ONNX Runtime has the provider but could not start it (libraries, driver, device), or the session failed.
    FailedToStart,
}

/// A provider that was tried and not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedProvider {
    pub provider: Provider,
    pub kind: SkipKind,
    pub reason: String,
}

/// What [`probe`] found: the provider a session opened with, those skipped, and the node placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionProbe {
    pub requested: Vec<Provider>,
    pub provider: Provider,
    pub skipped: Vec<SkippedProvider>,
    /// `None` when the placement could not be read (see `placement_error`).
    pub placement: Option<Vec<ProviderNodes>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_error: Option<String>,
    pub session_ms: f64,
}

/// A session and what it took to open it. Field order matters: the session is dropped before its profile
/// folder is removed (ONNX Runtime writes an unfinished profile when the session is dropped).
pub(crate) struct Opened {
    pub session: Session,
    pub provider: Provider,
    pub skipped: Vec<SkippedProvider>,
    pub profile: ProfileDir,
}

/// The providers to try: the configured order up to and including `cpu`, which is always last.
pub(crate) fn try_order(requested: &[Provider]) -> Vec<Provider> {
    let mut order: Vec<Provider> = Vec::new();
    for p in requested.iter().copied().chain([Provider::Cpu]) {
        if !order.contains(&p) {
            order.push(p);
        }
        if p == Provider::Cpu {
            break;
        }
    }
    order
}

/// Tries each provider in order; the first session that opens wins. `sha256` names the engine cache folder.
pub(crate) fn open_session(
    runtime: &Runtime,
    path: &Path,
    bytes: &[u8],
    sha256: &str,
    options: &ModelOptions,
) -> Result<Opened, ModelError> {
    // Read before ONNX Runtime sees the file: what is not an ONNX protobuf at all is refused here, with no
    // session (ORT would also log a stray "Could not write a profile" for a session that never loaded).
    let header = ExternalOnlyModel::decode_header(bytes)
        .map_err(|message| ModelError::NotOnnx { path: path.to_path_buf(), message })?;
    let external = header.external_data_locations();
    if let Some(dir) = path.parent() {
        for location in &external {
            check_external_location(dir, location).map_err(|message| ModelError::ExternalData {
                path: path.to_path_buf(),
                location: location.clone(),
                message,
            })?;
        }
    }
    let from_file = !external.is_empty();
    let order = try_order(&options.providers);
    let mut skipped: Vec<SkippedProvider> = Vec::new();
    for (i, &provider) in order.iter().enumerate() {
        let next = order.get(i + 1).copied().unwrap_or(Provider::Cpu);
        let (kind, reason) = match availability(provider) {
            Err(skip) => skip,
            Ok(()) => {
                // TensorRT takes the nodes it supports; when CUDA comes later in the list and is there, it gets
                // the rest rather than the CPU (ONNX Runtime's recommended pairing).
                let partner = provider == Provider::Tensorrt
                    && order[i + 1..].contains(&Provider::Cuda)
                    && availability(Provider::Cuda).is_ok();
                let ctx = SessionContext { path, bytes, sha256, runtime, cuda_partner: partner, from_file };
                // A failed attempt drops its folder here, after ORT has dropped the half-made session.
                let mut profile = ProfileDir::default();
                match build_session(&ctx, provider, options, &mut profile) {
                    Ok(session) => {
                        let rest = if partner { " (CUDA runs the nodes TensorRT does not take)" } else { "" };
                        tracing::info!(provider = %provider, model = %path.display(), "execution provider active{rest}");
                        return Ok(Opened { session, provider, skipped, profile });
                    }
                    Err(e) if provider == Provider::Cpu => {
                        return Err(
                            if e.code() == ort::ErrorCode::InvalidProtobuf || e.code() == ort::ErrorCode::InvalidGraph {
                                ModelError::NotOnnx { path: path.to_path_buf(), message: e.message().to_string() }
                            } else {
                                ModelError::Session { path: path.to_path_buf(), source: e }
                            },
                        );
                    }
                    Err(e) => (SkipKind::FailedToStart, failed_to_start(provider, &e)),
                }
            }
        };
        // One line per skipped provider, at warning level: the user asked for it and is not getting it.
        tracing::warn!(provider = %provider, "execution provider {provider} unavailable, falling back to {next}: {reason}");
        skipped.push(SkippedProvider { provider, kind, reason });
    }
    unreachable!("the CPU provider ends the list and returns either way")
}

/// Whether `provider` can be asked for at all: compiled into camclassd and present in the loaded library.
fn availability(provider: Provider) -> Result<(), (SkipKind, String)> {
    if provider == Provider::Cpu {
        return Ok(());
    }
    let package = "onnxruntime-gpu on x86-64, a Jetson build on a Jetson";
    match runtime_has(provider) {
        None => Err((
            SkipKind::NotBuilt,
            format!(
                "this camclassd was built without the `{provider}` cargo feature (rebuild with `--features {provider}`)"
            ),
        )),
        Some((Ok(true), _)) => Ok(()),
        Some((Ok(false), name)) => Err((
            SkipKind::NotInRuntime,
            format!(
                "this ONNX Runtime build has no {name} execution provider (the library was built without it, like \
                 the CPU-only `onnxruntime` wheel; a GPU build is needed: {package}; see docs/gpu.md)"
            ),
        )),
        Some((Err(e), _)) => {
            Err((SkipKind::NotInRuntime, format!("could not ask ONNX Runtime for its providers: {e}")))
        }
    }
}

/// Whether the loaded library has a GPU provider, and its display name; `None` when the provider's cargo
/// feature is off (then `ort` has no code for it).
fn runtime_has(provider: Provider) -> Option<(ort::Result<bool>, &'static str)> {
    #[cfg(any(feature = "cuda", feature = "tensorrt"))]
    use ort::ep::ExecutionProvider;
    match provider {
        #[cfg(feature = "cuda")]
        Provider::Cuda => Some((ort::ep::CUDA::is_available(), "CUDA")),
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => Some((ort::ep::TensorRT::is_available(), "TensorRT")),
        _ => None,
    }
}

/// The reason text for a provider that ONNX Runtime has but could not start: its own error, and what
/// usually causes it.
fn failed_to_start(provider: Provider, error: &ort::Error) -> String {
    let (name, hint) = match provider {
        Provider::Tensorrt => (
            "TensorRT",
            "the TensorRT, CUDA and cuDNN libraries this ONNX Runtime was built against must be on the library \
             path (JetPack provides them on a Jetson), and a GPU present",
        ),
        Provider::Cuda => (
            "CUDA",
            "the CUDA and cuDNN libraries this ONNX Runtime was built against must be on the library path, and a GPU \
             present",
        ),
        Provider::Cpu => ("CPU", "the model may not be valid"),
    };
    // ORT's messages end with a newline; a log line must stay one line.
    let error = error.to_string();
    let error = error.trim();
    format!("ONNX Runtime has the {name} execution provider but could not start it: {error} ({hint}; see docs/gpu.md)")
}

/// What a provider's settings need to know about the model.
// Which fields are read depends on the GPU features compiled in.
#[cfg_attr(not(all(feature = "tensorrt", feature = "cuda")), allow(dead_code))]
struct SessionContext<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    sha256: &'a str,
    runtime: &'a Runtime,
    /// Register CUDA after TensorRT for the nodes TensorRT does not take.
    cuda_partner: bool,
    /// Open the session from the file, not from `bytes`: ONNX Runtime then reads external data next to the
    /// model rather than from the working directory (`/` under systemd).
    from_file: bool,
}

fn build_session(
    ctx: &SessionContext<'_>,
    provider: Provider,
    options: &ModelOptions,
    profile: &mut ProfileDir,
) -> Result<Session, ort::Error> {
    if options.record_placement {
        match ProfileDir::create() {
            Ok(dir) => *profile = dir,
            // The placement is a report: without a folder for the profile, the session opens without it.
            Err(e) => tracing::debug!("node placement not recorded: {e}"),
        }
    }
    let builder = |level: Optimization| -> Result<SessionBuilder, ort::Error> {
        let threads = options
            .threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut builder: SessionBuilder = Session::builder(&ctx.runtime.environment)?
            .with_optimization_level(optimization_level(level))?
            .with_intra_threads(threads)?
            .with_inter_threads(1)?
            .with_config_entry("session.intra_op.allow_spinning", if options.allow_spinning { "1" } else { "0" })?;
        if provider == Provider::Cpu {
            // No memory pattern: without it the CPU arena reuses each tensor's chunk as the run frees it,
            // and the arena's region stays 2 MiB less touched for the INT8 EfficientNet (one camera's peak
            // RSS 63.7 against 65.9 MiB), at no cost measured: `camclassd bench` at 1 thread 115.9 against
            // 112.0 inferences/s (three runs each, alternated; README, "Daemon throughput").
            builder = builder.with_memory_pattern(false)?;
        }
        if let Some(prefix) = profile.prefix() {
            builder = builder.with_profiling(prefix)?;
        }
        let eps = dispatch(ctx, provider, options);
        if !eps.is_empty() {
            builder = builder.with_execution_providers(eps)?;
        }
        Ok(builder)
    };
    let cache = match &options.optimized_cache {
        Some(dir) if provider == Provider::Cpu && !ctx.from_file && options.optimization != Optimization::Disable => {
            Some(dir)
        }
        _ => None,
    };
    let Some(dir) = cache else {
        let mut b = builder(options.optimization)?;
        return if ctx.from_file { b.commit_from_file(ctx.path) } else { b.commit_from_memory(ctx.bytes) };
    };
    let file = optimized::cache_file(dir, ctx.path, ctx.sha256, &ctx.runtime.version, options.optimization);
    if file.is_file() {
        // Already optimised for this model, runtime and CPU: nothing left for ORT to do at load.
        match builder(Optimization::Disable)?.commit_from_file(&file) {
            Ok(session) => {
                tracing::debug!(file = %file.display(), model = %ctx.path.display(), "optimised model loaded from the cache");
                return Ok(session);
            }
            Err(e) => {
                tracing::warn!(
                    file = %file.display(),
                    "the cached optimised model could not be opened ({}); optimising {} again and replacing it",
                    e.message().trim(),
                    ctx.path.display()
                );
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    if let Err(reason) = optimized::writable_folder(dir) {
        // Once per process: a command that opens several sessions (a model, its fallback, the classify pool)
        // says it once.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("optimised model not cached ({reason}): every start optimises the model again");
        } else {
            tracing::debug!("optimised model not cached ({reason})");
        }
        return builder(options.optimization)?.commit_from_memory(ctx.bytes);
    }
    let temporary = optimized::temporary_name(&file);
    let session = builder(options.optimization)?
        .with_optimized_model_path(&temporary)?
        .with_config_entry("session.save_model_format", "ORT")?
        // ORT warns that a graph optimised with the NCHWc layout is for this CPU only: the file's name says so.
        .with_log_level(ort::logging::LogLevel::Error)?
        .commit_from_memory(ctx.bytes)?;
    match std::fs::rename(&temporary, &file) {
        Ok(()) => {
            tracing::info!(file = %file.display(), model = %ctx.path.display(), "optimised model cached for the next start")
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!("optimised model not cached: cannot rename {} into place: {e}", temporary.display());
        }
    }
    Ok(session)
}

/// The initializers of the main graph, only as far as external data goes (the weights are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct ExternalOnlyModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<ExternalOnlyGraph>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExternalOnlyGraph {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<ExternalOnlyTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExternalOnlyTensor {
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<super::onnx_proto::StringStringEntryProto>,
    /// 1 = EXTERNAL.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

impl ExternalOnlyModel {
    /// Decodes the model's protobuf structure (the weights are skipped, not copied); an error says why the
    /// bytes are not an ONNX model.
    fn decode_header(bytes: &[u8]) -> Result<ExternalOnlyModel, String> {
        use prost::Message;
        let model = ExternalOnlyModel::decode(bytes).map_err(|e| {
            format!(
                "protobuf parsing failed: {}",
                e.to_string().trim_start_matches("failed to decode Protobuf message: ").replace("ExternalOnly", "")
            )
        })?;
        if model.graph.is_none() {
            return Err("it holds no graph".into());
        }
        Ok(model)
    }

    /// The files the model's weights are stored in (ONNX external data), each named once, in order.
    fn external_data_locations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let Some(graph) = &self.graph else { return out };
        for t in graph.initializer.iter().filter(|t| t.data_location == 1) {
            if let Some(e) = t.external_data.iter().find(|e| e.key == "location") {
                if !out.contains(&e.value) {
                    out.push(e.value.clone());
                }
            }
        }
        out
    }
}

/// External data must be a file in the model's own folder or below it: an absolute path or `..` would let a
/// model read any file the daemon can.
fn check_external_location(model_dir: &Path, location: &str) -> Result<(), String> {
    use std::path::Component;
    let rel = Path::new(location);
    if location.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err("must be a file name relative to the model's folder, without \"..\"; keep the data file \
                    beside the model and save it with a relative location"
            .into());
    }
    let dir = if model_dir.as_os_str().is_empty() { Path::new(".") } else { model_dir };
    let file = dir.join(rel);
    // A symbolic link inside the folder may still point out of it.
    match (std::fs::canonicalize(dir), std::fs::canonicalize(&file)) {
        (Ok(d), Ok(f)) if !f.starts_with(&d) => {
            Err(format!("{} leads out of the model's folder (to {})", file.display(), f.display()))
        }
        (_, Err(e)) => Err(format!("{}: {e} (the data file must be beside the model)", file.display())),
        _ => Ok(()),
    }
}

/// The ORT provider registrations for `provider` (none for the CPU, which is always there).
#[cfg_attr(not(feature = "tensorrt"), allow(unused_variables))]
#[cfg_attr(not(any(feature = "cuda", feature = "tensorrt")), allow(unused_mut))]
fn dispatch(
    ctx: &SessionContext<'_>,
    provider: Provider,
    options: &ModelOptions,
) -> Vec<ort::ep::ExecutionProviderDispatch> {
    let mut eps = Vec::new();
    match provider {
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => {
            eps.push(tensorrt(ctx, &options.tensorrt).build().error_on_failure());
            #[cfg(feature = "cuda")]
            if ctx.cuda_partner {
                eps.push(cuda(&options.cuda).build().error_on_failure());
            }
        }
        #[cfg(feature = "cuda")]
        Provider::Cuda => eps.push(cuda(&options.cuda).build().error_on_failure()),
        // CPU, and providers compiled out (already refused by `availability`).
        _ => {}
    }
    eps
}

#[cfg(feature = "cuda")]
fn cuda(o: &CudaOptions) -> ort::ep::CUDA {
    use ort::ep::cuda::ConvAlgorithmSearch;
    let mut ep = ort::ep::CUDA::default()
        .with_device_id(o.device_id as i32)
        .with_conv_algorithm_search(match o.conv_algo_search {
            ConvAlgoSearch::Exhaustive => ConvAlgorithmSearch::Exhaustive,
            ConvAlgoSearch::Heuristic => ConvAlgorithmSearch::Heuristic,
            ConvAlgoSearch::Default => ConvAlgorithmSearch::Default,
        })
        .with_arena_extend_strategy(match o.arena_extend_strategy {
            ArenaExtendStrategy::NextPowerOfTwo => ort::ep::ArenaExtendStrategy::NextPowerOfTwo,
            ArenaExtendStrategy::SameAsRequested => ort::ep::ArenaExtendStrategy::SameAsRequested,
        });
    if o.memory_limit_mb > 0 {
        ep = ep.with_memory_limit(mib(o.memory_limit_mb));
    }
    ep
}

#[cfg(feature = "tensorrt")]
fn tensorrt(ctx: &SessionContext<'_>, o: &TensorRtOptions) -> ort::ep::TensorRT {
    let int8 = o.int8.unwrap_or_else(|| has_qdq_nodes(ctx.bytes));
    let mut ep = ort::ep::TensorRT::default()
        .with_device_id(o.device_id as i32)
        .with_fp16(o.fp16)
        .with_int8(int8)
        .with_min_subgraph_size(o.min_subgraph_size as usize);
    if o.max_workspace_mb > 0 {
        ep = ep.with_max_workspace_size(mib(o.max_workspace_mb));
    }
    if let Some(core) = o.dla_core {
        ep = ep.with_dla(true).with_dla_core(core);
    }
    if o.engine_cache || o.timing_cache {
        let base = o.engine_cache_dir.clone().unwrap_or_else(default_engine_cache_dir);
        let trt = super::tensorrt::tensorrt_version();
        match engine_cache_folder(&base, ctx.path, ctx.sha256, &ctx.runtime.version, trt.as_deref()) {
            Ok(dir) => {
                let dir = dir.display().to_string();
                tracing::info!(folder = %dir, tensorrt = trt.as_deref().unwrap_or("unknown"), "TensorRT engine cache");
                if o.engine_cache {
                    ep = ep.with_engine_cache(true).with_engine_cache_path(&dir);
                }
                if o.timing_cache {
                    ep = ep.with_timing_cache(true).with_timing_cache_path(&dir);
                }
            }
            Err(e) => tracing::warn!(
                "TensorRT engine cache disabled: {e}; every start will build the engine again (minutes on a Jetson)"
            ),
        }
    }
    tracing::info!(fp16 = o.fp16, int8, workspace_mb = o.max_workspace_mb, dla_core = ?o.dla_core, "TensorRT options");
    ep
}

#[cfg(any(feature = "cuda", feature = "tensorrt"))]
fn mib(n: u64) -> usize {
    usize::try_from(n.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

/// Opens a session for any ONNX model (not only classifiers) the way the daemon would, runs it once on zeros
/// (symbolic dimensions as 1) and reports the provider and node placement.
pub fn probe(runtime: &Runtime, path: &Path, options: &ModelOptions) -> Result<SessionProbe, ModelError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    if bytes.is_empty() {
        return Err(ModelError::NotOnnx { path: path.to_path_buf(), message: "the file is empty".into() });
    }
    let sha256 = super::hex(&sha2::Sha256::digest(&bytes));
    let options = ModelOptions { record_placement: true, ..options.clone() };
    let started = std::time::Instant::now();
    let mut opened = open_session(runtime, path, &bytes, &sha256, &options)?;
    let session_ms = started.elapsed().as_secs_f64() * 1e3;
    let run = run_on_zeros(&mut opened.session);
    let (placement, placement_error) =
        match run.and_then(|()| finish_placement(&mut opened.session, &mut opened.profile)) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };
    Ok(SessionProbe {
        requested: options.providers.clone(),
        provider: opened.provider,
        skipped: std::mem::take(&mut opened.skipped),
        placement,
        placement_error,
        session_ms,
    })
}

fn run_on_zeros(session: &mut Session) -> Result<(), String> {
    let mut inputs: Vec<(String, DynTensor)> = Vec::new();
    for input in session.inputs() {
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(format!("input {:?} is not a tensor; the placement needs a run", input.name()));
        };
        if *ty == ort::value::TensorElementType::String {
            return Err(format!("input {:?} is a string tensor; the placement needs a run", input.name()));
        }
        let dims: Vec<i64> = shape.iter().map(|&d| if d > 0 { d } else { 1 }).collect();
        let tensor = DynTensor::new(session.allocator(), *ty, dims)
            .map_err(|e| format!("input {:?}: cannot make a zero tensor: {e}", input.name()))?;
        inputs.push((input.name().to_string(), tensor));
    }
    session.run(inputs).map(|_| ()).map_err(|e| format!("running on zeros failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_runtime_from_1_17_on_is_accepted() {
        // docs/gpu.md tells Jetson users that any ONNX Runtime >= 1.17 loads (GPU builds lag the pin); enabling
        // an `ort` `api-*` feature raises that floor and must update the docs.
        assert_eq!(ort::MINOR_VERSION, 17);
    }

    #[test]
    fn the_order_stops_at_cpu_and_drops_repeats() {
        use Provider::*;
        assert_eq!(try_order(&[Tensorrt, Cuda, Cpu]), vec![Tensorrt, Cuda, Cpu]);
        assert_eq!(try_order(&[Cuda]), vec![Cuda, Cpu]);
        assert_eq!(try_order(&[Cuda, Cuda, Cpu, Tensorrt]), vec![Cuda, Cpu]);
    }

    /// Runs in builds without the feature (`cargo test --no-default-features`): no ONNX Runtime needed.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_provider_compiled_out_names_its_cargo_feature() {
        let Err((kind, reason)) = availability(Provider::Cuda) else { panic!("cuda is compiled out") };
        assert_eq!(kind, SkipKind::NotBuilt);
        assert!(reason.contains("built without the `cuda` cargo feature"), "{reason}");
    }

    #[test]
    fn external_data_stays_in_the_models_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("w.data"), b"").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/w.data"), b"").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("out.data")).expect("symlink");
        assert_eq!(check_external_location(dir.path(), "w.data"), Ok(()));
        assert_eq!(check_external_location(dir.path(), "./sub/w.data"), Ok(()));
        for bad in ["../w.data", "/etc/passwd", "sub/../../x", ""] {
            let e = check_external_location(dir.path(), bad).expect_err(bad);
            assert!(e.contains("relative to the model's folder"), "{bad}: {e}");
        }
        let e = check_external_location(dir.path(), "out.data").expect_err("symlink out");
        assert!(e.contains("leads out of the model's folder"), "{e}");
        let e = check_external_location(dir.path(), "missing.data").expect_err("missing");
        assert!(e.contains("No such file"), "{e}");
    }
}
