//! Inference: one ONNX Runtime session per model, its execution providers, its recipe, and the run.
//!
//! [`Model::load`] reads the file once (for the sha256 and the session), opens a session with the first
//! execution provider that works, checks that the model takes one image tensor and gives one score vector,
//! resolves the [`ModelSpec`], and runs a warm-up. After that, [`Model::run`] runs an input tensor made by
//! [`Model::new_input`] (the preprocessor writes straight into it) and reuses the score buffer: no per-frame
//! allocation on our side.

pub mod ep;
pub mod onnx_edit;
pub mod onnx_proto;
pub mod optimized;
pub mod placement;
pub mod runtime;
pub mod spec;
pub mod tensorrt;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};
use sha2::{Digest, Sha256};

pub use crate::config::model as options;
pub use ep::{SkipKind, SkippedProvider};
pub use options::{
    ArenaExtendStrategy, ConvAlgoSearch, CudaOptions, ModelOptions, Optimization, Provider, TensorRtOptions,
};
pub use placement::ProviderNodes;
pub use runtime::Runtime;
pub use spec::{InputShape, InputType, ModelSpec, OutputKind, Overrides, SpecError, TensorSlot};

/// Errors of the inference layer. Each names the model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model {}: not a valid ONNX model ({message})", path.display())]
    NotOnnx { path: PathBuf, message: String },
    #[error("model {}: ONNX Runtime could not open it: {source}", path.display())]
    Session { path: PathBuf, source: ort::Error },
    #[error("model {}: not an image classifier: {message}", path.display())]
    Interface { path: PathBuf, message: String },
    #[error("model {}: {source}", path.display())]
    Spec { path: PathBuf, source: SpecError },
    #[error("labels file {}: {source}", path.display())]
    Labels { path: PathBuf, source: std::io::Error },
    #[error("labels file {}: {message}", path.display())]
    LabelsFormat { path: PathBuf, message: String },
    #[error("model {}: {labels} labels ({origin}) for {classes} output classes", path.display())]
    LabelCount { path: PathBuf, origin: String, labels: usize, classes: usize },
    #[error("{0}")]
    Batch(String),
    #[error("model {}: returned scores of shape {shape}, expected [{batch}, {classes}]", path.display())]
    Output { path: PathBuf, shape: String, batch: usize, classes: usize },
    #[error(
        "model {}: its scores for this input are not numbers ({count} of them NaN or infinite): the model \
         or its quantization is broken",
        path.display()
    )]
    NonFinite { path: PathBuf, count: usize },
    #[error(
        "model {}: its output is declared as {declared} (output = \"{declared}\"), but it returned scores \
         from {min} to {max}, outside [0, 1]: these are logits; set [model.preprocess] output = \"{fix}",
        path.display(),
        fix = if declared.is_multi_label() { "sigmoid_logits\" (camclassd applies the sigmoid)" } else { "logits\" (or \"auto\")" }
    )]
    NotProbabilities { path: PathBuf, declared: OutputKind, min: f32, max: f32 },
    #[error("model {}: external data {location:?}: {message}", path.display())]
    ExternalData { path: PathBuf, location: String, message: String },
    #[error("inference failed: {0}")]
    Run(#[from] ort::Error),
}

impl ModelError {
    /// The key, under the model's config section, that the error is about (`path`, `labels`,
    /// `preprocess.output`, …), for check-config to point at the line.
    pub fn config_key(&self) -> &'static str {
        match self {
            ModelError::Labels { .. } | ModelError::LabelsFormat { .. } => "labels",
            ModelError::LabelCount { origin, .. } if origin.starts_with("from ") && !origin.contains("metadata") => {
                "labels"
            }
            ModelError::NotProbabilities { .. } => "preprocess.output",
            ModelError::Spec { source: SpecError::Invalid(m), .. } if m.contains("layout") => "preprocess.layout",
            ModelError::Spec { source: SpecError::Invalid(m), .. } if m.contains("mean/std") => "preprocess.mean",
            ModelError::Spec { .. } => "preprocess",
            _ => "path",
        }
    }
}

/// How far outside [0, 1] a declared probability may stray (rounding in a quantized softmax).
const PROBABILITY_SLACK: f32 = 0.01;

/// An input tensor of a model (`batch` images in the model's layout and element type), made by
/// [`Model::new_input`]. The daemon circulates two between its decode and inference threads, so a frame is
/// prepared straight into the tensor that will be inferred: no copy.
#[derive(Debug)]
pub struct Input {
    tensor: InputTensor,
    per_image: usize,
    /// Images (batch slots) the tensor holds.
    batch: usize,
}

/// Floats for a normalised-input model, bytes for a raw-pixel (uint8) one.
#[derive(Debug)]
enum InputTensor {
    F32(Tensor<f32>),
    U8(Tensor<u8>),
}

impl Input {
    /// The values of one batch slot, for the preprocessor to fill.
    pub fn slot_mut(&mut self, slot: usize) -> TensorSlot<'_> {
        let range = slot * self.per_image..(slot + 1) * self.per_image;
        match &mut self.tensor {
            InputTensor::F32(t) => TensorSlot::F32(&mut t.extract_tensor_mut().1[range]),
            InputTensor::U8(t) => TensorSlot::U8(&mut t.extract_tensor_mut().1[range]),
        }
    }

    /// Images (batch slots) the tensor holds.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Copies slot `from_slot` of `from` into slot `slot` (a batch gathered from images prepared apart).
    /// Both tensors must be of the same model; panics on a slot out of range, as slicing does.
    pub fn copy_slot(&mut self, slot: usize, from: &Input, from_slot: usize) -> Result<(), ModelError> {
        let (n, at, from_at) = (self.per_image, slot * self.per_image, from_slot * from.per_image);
        match (&mut self.tensor, &from.tensor) {
            (InputTensor::F32(to), InputTensor::F32(src)) if from.per_image == n => {
                to.extract_tensor_mut().1[at..at + n].copy_from_slice(&src.extract_tensor().1[from_at..from_at + n]);
            }
            (InputTensor::U8(to), InputTensor::U8(src)) if from.per_image == n => {
                to.extract_tensor_mut().1[at..at + n].copy_from_slice(&src.extract_tensor().1[from_at..from_at + n]);
            }
            _ => {
                return Err(ModelError::Batch(format!(
                    "an image of {} {:?} values cannot go into a slot of {n} {:?} values",
                    from.per_image,
                    from.input_type(),
                    self.input_type()
                )));
            }
        }
        Ok(())
    }

    /// The element type the tensor holds.
    pub fn input_type(&self) -> InputType {
        match self.tensor {
            InputTensor::F32(_) => InputType::Float32,
            InputTensor::U8(_) => InputType::Uint8,
        }
    }
}

/// A loaded model, ready to run.
#[derive(Debug)]
pub struct Model {
    session: Session,
    path: PathBuf,
    sha256: String,
    size_bytes: u64,
    spec: ModelSpec,
    provider: Provider,
    skipped: Vec<SkippedProvider>,
    /// Which provider ran how many nodes in the warm-up; `None` unless recorded.
    placement: Option<Vec<ProviderNodes>>,
    batch: usize,
    /// The model's batch dimension is symbolic: any batch size runs ([`Model::new_batch_input`]).
    dynamic_batch: bool,
    num_classes: usize,
    /// The session output that holds the scores.
    output_index: usize,
    /// The input tensor's shape ([`Model::new_input`]).
    input_dims: Vec<i64>,
    scores: Vec<f32>,
    metadata: HashMap<String, String>,
    /// `[model.preprocess]` changed the model's own recipe (so its stamped check does not apply).
    recipe_overridden: bool,
    /// Session creation, and the first (warm-up) inference.
    load_times: (std::time::Duration, std::time::Duration),
    /// Last, so that it is removed after the session is dropped (see [`ep::Opened`]).
    profile: placement::ProfileDir,
}

impl Model {
    pub fn load(runtime: &Runtime, path: &Path, options: &ModelOptions) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
        if bytes.is_empty() {
            return Err(ModelError::NotOnnx { path: path.to_path_buf(), message: "the file is empty".into() });
        }
        let sha256 = hex(&Sha256::digest(&bytes));
        let load_started = std::time::Instant::now();
        // Kept whole until the model owns it: dropping `opened` drops the session before its profile folder.
        let opened = ep::open_session(runtime, path, &bytes, &sha256, options)?;
        // ONNX Runtime has its own copy now: the file's bytes (5.8 MB for the INT8 model) go before the warm-up
        // run grows its arena, or both count in the daemon's peak memory.
        let size_bytes = bytes.len() as u64;
        drop(bytes);
        let session = &opened.session;
        let session_time = load_started.elapsed();

        let interface = |message: String| ModelError::Interface { path: path.to_path_buf(), message };
        let [input] = session.inputs() else {
            return Err(interface(format!(
                "it has {} inputs ({}); camclassd feeds exactly one image tensor",
                session.inputs().len(),
                session.inputs().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
            )));
        };
        let (input_shape, input_type) = image_input_shape(input.name(), input.dtype()).map_err(interface)?;
        let outputs = session.outputs();
        let names = || outputs.iter().map(|o| format!("{:?}", o.name())).collect::<Vec<_>>().join(", ");
        let output_index = match &options.output_name {
            Some(name) => outputs
                .iter()
                .position(|o| o.name() == name)
                .ok_or_else(|| interface(format!("it has no output named {name:?}; its outputs are {}", names())))?,
            None if outputs.is_empty() => return Err(interface("it has no outputs".into())),
            None => {
                if outputs.len() > 1 {
                    tracing::warn!(
                        model = %path.display(),
                        "the model has {} outputs ({}); reading the scores from the first, {:?}: if that is not the \
                         class scores, name the right one with [model] output_name (classify: --output-name)",
                        outputs.len(),
                        names(),
                        outputs[0].name()
                    );
                }
                0
            }
        };
        let output = &outputs[output_index];
        let output_dims = score_output_dims(output.name(), output.dtype()).map_err(interface)?;

        let metadata =
            read_metadata(session).map_err(|source| ModelError::Session { path: path.to_path_buf(), source })?;
        let file_stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut spec = ModelSpec::resolve(&file_stem, &metadata, &options.overrides, input_shape, input_type)
            .map_err(|source| ModelError::Spec { path: path.to_path_buf(), source })?;
        if let Some(labels_path) = &options.labels {
            spec.labels = read_labels(labels_path)?;
        }

        let batch = match input_shape.0[0] {
            Some(fixed) => fixed as usize,
            None => options.batch.max(1),
        };
        let (h, w) = spec.input_size;
        let dims = match spec.layout {
            spec::Layout::Nchw => [batch, 3, h as usize, w as usize],
            spec::Layout::Nhwc => [batch, h as usize, w as usize, 3],
        };
        let warm_up = new_input(session, dims.iter().map(|&d| d as i64).collect(), input_type)
            .map_err(|source| ModelError::Session { path: path.to_path_buf(), source })?;

        let mut model = Model {
            session: opened.session,
            path: path.to_path_buf(),
            sha256,
            size_bytes,
            spec,
            provider: opened.provider,
            skipped: opened.skipped,
            placement: None,
            batch,
            dynamic_batch: input_shape.0[0].is_none(),
            num_classes: output_dims.unwrap_or(0),
            output_index,
            input_dims: dims.iter().map(|&d| d as i64).collect(),
            scores: Vec::new(),
            metadata,
            recipe_overridden: options.overrides != Overrides::default(),
            load_times: (session_time, std::time::Duration::ZERO),
            profile: opened.profile,
        };
        let warm_up_started = std::time::Instant::now();
        // Warm-up: the first run allocates ORT's arenas and, for GPU providers, builds kernels or engines.
        match model.run(&warm_up) {
            // An all-zero input may give NaN (a model that normalises by the input's variance): only real
            // pictures count, and each is checked as it is classified.
            Ok(_) | Err(ModelError::NonFinite { .. }) => {}
            Err(ModelError::Run(source)) => return Err(ModelError::Session { path: path.to_path_buf(), source }),
            Err(other) => return Err(other),
        }
        model.load_times.1 = warm_up_started.elapsed();
        if options.record_placement {
            match placement::finish_placement(&mut model.session, &mut model.profile) {
                Ok(placement) => model.placement = Some(placement),
                // Only a report is lost: the session itself is fine.
                Err(e) => tracing::debug!(model = %path.display(), "node placement unknown: {e}"),
            }
        }
        if model.scores.is_empty() || model.scores.len() % model.batch != 0 {
            return Err(ModelError::Interface {
                path: path.to_path_buf(),
                message: format!("its output holds {} values for a batch of {}", model.scores.len(), model.batch),
            });
        }
        model.num_classes = model.scores.len() / model.batch;
        // `output = "auto"` is decided here, once, from the warm-up's scores: never frame by frame.
        let resolved = model.spec.output.resolve(model.scores(0));
        if resolved != model.spec.output {
            tracing::info!(model = %path.display(), output = ?resolved, "output kind decided from the warm-up");
            model.spec.output = resolved;
        }
        // A labels file given is checked even when empty: an empty file is a mistake, not "no labels".
        let labels_given = options.labels.is_some() || !model.spec.labels.is_empty();
        if labels_given && model.spec.labels.len() != model.num_classes {
            return Err(ModelError::LabelCount {
                path: path.to_path_buf(),
                origin: match &options.labels {
                    Some(file) => format!("from {}", file.display()),
                    None => "from the model's metadata".into(),
                },
                labels: model.spec.labels.len(),
                classes: model.num_classes,
            });
        }
        session_summary(&model);
        Ok(model)
    }

    /// A new input tensor for this model (zeros), for callers that prepare frames apart from inference.
    pub fn new_input(&self) -> Result<Input, ModelError> {
        new_input(&self.session, self.input_dims.clone(), self.spec.input_type)
            .map_err(|source| ModelError::Session { path: self.path.clone(), source })
    }

    /// A new input tensor of `batch` images, for a model with a dynamic batch dimension (or its fixed one).
    pub fn new_batch_input(&self, batch: usize) -> Result<Input, ModelError> {
        if batch == 0 || (!self.dynamic_batch && batch != self.batch) {
            return Err(ModelError::Batch(format!(
                "model {} takes batches of {} only, not {batch}",
                self.path.display(),
                self.batch
            )));
        }
        let mut dims = self.input_dims.clone();
        dims[0] = batch as i64;
        new_input(&self.session, dims, self.spec.input_type)
            .map_err(|source| ModelError::Session { path: self.path.clone(), source })
    }

    /// Whether the model's batch dimension is dynamic (any [`Model::new_batch_input`] size runs).
    pub fn dynamic_batch(&self) -> bool {
        self.dynamic_batch
    }

    /// Runs the model on `input` (made by [`Model::new_input`] or [`Model::new_batch_input`]); returns
    /// `input.batch() × num_classes` raw scores.
    pub fn run(&mut self, input: &Input) -> Result<&[f32], ModelError> {
        let batch = &input.batch;
        let Model { session, scores, path, num_classes, output_index, spec, .. } = self;
        let outputs = match &input.tensor {
            InputTensor::F32(t) => session.run(ort::inputs![t])?,
            InputTensor::U8(t) => session.run(ort::inputs![t])?,
        };
        let (shape, data) = outputs[*output_index].try_extract_tensor::<f32>()?;
        keep_scores(scores, path, *batch, *num_classes, spec.output, shape, data)?;
        Ok(scores)
    }

    /// Runs the model on the first `images` slots of `input` (a batch gathered from images prepared apart,
    /// fewer than the tensor holds): the slots are passed where they lie, no copy. Needs a dynamic batch
    /// dimension unless `images` is the whole tensor.
    pub fn run_first(&mut self, input: &Input, images: usize) -> Result<&[f32], ModelError> {
        if images == input.batch {
            return self.run(input);
        }
        if images == 0 || images > input.batch || !self.dynamic_batch {
            return Err(ModelError::Batch(format!(
                "model {}: cannot run {images} of a tensor's {} images{}",
                self.path.display(),
                input.batch,
                if self.dynamic_batch { "" } else { " (its batch dimension is fixed)" }
            )));
        }
        let mut shape = [0i64; 4];
        if self.input_dims.len() != shape.len() {
            return Err(ModelError::Batch(format!(
                "model {}: a 4-dimensional image input was expected",
                self.path.display()
            )));
        }
        shape.copy_from_slice(&self.input_dims);
        shape[0] = images as i64;
        let len = images * input.per_image;
        let Model { session, scores, path, num_classes, output_index, spec, .. } = self;
        let outputs = match &input.tensor {
            InputTensor::F32(t) => {
                session.run(ort::inputs![TensorRef::from_array_view((shape, &t.extract_tensor().1[..len]))?])?
            }
            InputTensor::U8(t) => {
                session.run(ort::inputs![TensorRef::from_array_view((shape, &t.extract_tensor().1[..len]))?])?
            }
        };
        let (out_shape, data) = outputs[*output_index].try_extract_tensor::<f32>()?;
        keep_scores(scores, path, images, *num_classes, spec.output, out_shape, data)?;
        Ok(scores)
    }

    /// The raw scores of one batch slot from the last run.
    pub fn scores(&self, slot: usize) -> &[f32] {
        &self.scores[slot * self.num_classes..(slot + 1) * self.num_classes]
    }

    /// (session creation incl. graph optimisation, first inference) at load.
    pub fn load_times(&self) -> (std::time::Duration, std::time::Duration) {
        self.load_times
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn provider(&self) -> Provider {
        self.provider
    }
    pub fn skipped_providers(&self) -> &[SkippedProvider] {
        &self.skipped
    }
    /// Per provider, the nodes it ran in the warm-up inference, most first (`None` when not recorded). ONNX
    /// Runtime runs what a GPU provider cannot on the CPU without failing; this is where that shows.
    pub fn placement(&self) -> Option<&[ProviderNodes]> {
        self.placement.as_deref()
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    /// Whether `[model.preprocess]` overrides replaced part of the model's own recipe.
    pub fn recipe_overridden(&self) -> bool {
        self.recipe_overridden
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Lets go of one metadata entry that is no longer needed (a session in service keeps no copy of the
    /// model's stamped check: 0.7 MB for the shipped model, read once at load).
    pub fn forget_metadata(&mut self, key: &str) {
        self.metadata.remove(key);
        self.metadata.shrink_to_fit();
    }
    /// The label of a class, or `class_<id>` when the model has none.
    pub fn label(&self, class_id: usize) -> std::borrow::Cow<'_, str> {
        crate::postprocess::label(&self.spec.labels, class_id)
    }
}

fn session_summary(model: &Model) {
    let s = &model.spec;
    tracing::info!(
        model = %model.path.display(),
        provider = %model.provider,
        nodes = %model.placement.as_deref().map_or_else(|| "not recorded".into(), placement::placement_text),
        classes = model.num_classes,
        input = %format!("{} {} {}x{}", s.input_type.name(), s.layout, s.input_size.0, s.input_size.1),
        output = %s.output.describe(),
        "model ready"
    );
}

/// Checks a run's output against the model's batch and class count and keeps it in `scores` (reused).
fn keep_scores(
    scores: &mut Vec<f32>,
    path: &Path,
    batch: usize,
    num_classes: usize,
    output: spec::OutputKind,
    shape: &[i64],
    data: &[f32],
) -> Result<(), ModelError> {
    // Checked on every run: a model whose output size depends on its input must not be sliced blind.
    let expected = batch * num_classes;
    if shape.first().is_some_and(|&n| n != batch as i64) || (num_classes > 0 && data.len() != expected) {
        return Err(ModelError::Output {
            path: path.to_path_buf(),
            shape: format!("{shape:?}"),
            batch,
            classes: num_classes,
        });
    }
    scores.clear();
    scores.extend_from_slice(data);
    // A NaN would sort anywhere and softmax into NaN everywhere: never a classification.
    let count = scores.iter().filter(|s| !s.is_finite()).count();
    if count > 0 {
        return Err(ModelError::NonFinite { path: path.to_path_buf(), count });
    }
    // Declared probabilities that are not (a logits model): softmax or the sigmoid would be skipped and
    // "1139.84 %" printed. The slack allows for a softmax computed in 8 bits.
    if output.is_probability() {
        let (min, max) = scores.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if min < -PROBABILITY_SLACK || max > 1.0 + PROBABILITY_SLACK {
            return Err(ModelError::NotProbabilities { path: path.to_path_buf(), declared: output, min, max });
        }
    }
    Ok(())
}

/// An input tensor of `dims`, zero-filled: unused batch slots (a model with a fixed batch > 1) are fed zeros,
/// not stale memory.
///
/// The memory is the process's own, not the session's arena: the daemon holds two tensors per region, and
/// each one taken from ONNX Runtime's arena could grow it by a doubling chunk (three regions on one model
/// took 10 MiB more than one region; now the tensors alone, 0.6 MiB each as float32).
fn new_input(_session: &Session, dims: Vec<i64>, ty: InputType) -> Result<Input, ort::Error> {
    let len = dims.iter().product::<i64>().max(0) as usize;
    let (tensor, shape) = match ty {
        InputType::Float32 => {
            let t = Tensor::<f32>::from_array((dims, vec![0f32; len]))?;
            let shape = t.shape().to_vec();
            (InputTensor::F32(t), shape)
        }
        InputType::Uint8 => {
            let t = Tensor::<u8>::from_array((dims, vec![0u8; len]))?;
            let shape = t.shape().to_vec();
            (InputTensor::U8(t), shape)
        }
    };
    let per_image = shape.iter().skip(1).product::<i64>().max(0) as usize;
    let batch = shape.first().copied().unwrap_or(1).max(0) as usize;
    Ok(Input { tensor, per_image, batch })
}

/// A labels file: text (one per line) or JSON (a map of class ids to names, or a list), by content.
pub fn read_labels(path: &Path) -> Result<Vec<String>, ModelError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ModelError::Labels { path: path.to_path_buf(), source })?;
    spec::parse_labels(&text).map_err(|message| ModelError::LabelsFormat { path: path.to_path_buf(), message })
}

fn read_metadata(session: &Session) -> Result<HashMap<String, String>, ort::Error> {
    let meta = session.metadata()?;
    let mut out = HashMap::new();
    for key in meta.custom_keys()? {
        if let Some(v) = meta.custom(&key) {
            out.insert(key, v);
        }
    }
    Ok(out)
}

fn image_input_shape(name: &str, ty: &ValueType) -> Result<(InputShape, InputType), String> {
    let ValueType::Tensor { ty, shape, .. } = ty else {
        return Err(format!("input {name:?} is not a tensor"));
    };
    let input_type = match ty {
        TensorElementType::Float32 => InputType::Float32,
        TensorElementType::Uint8 => InputType::Uint8,
        other => {
            return Err(format!(
                "input {name:?} has element type {}; camclassd feeds {}: export the model with one of those inputs",
                element_name(*other),
                spec::SUPPORTED_INPUT_TYPES
            ));
        }
    };
    if shape.len() != 4 {
        return Err(format!("input {name:?} has shape {shape:?}; an image tensor has 4 dimensions (NCHW or NHWC)"));
    }
    let dim = |d: i64| u32::try_from(d).ok().filter(|&d| d > 0);
    Ok((InputShape([dim(shape[0]), dim(shape[1]), dim(shape[2]), dim(shape[3])]), input_type))
}

/// An element type by its ONNX (numpy) name, as `inspect` prints it: `int8`, `float16`, not ORT's `i8`, `f16`.
fn element_name(ty: TensorElementType) -> String {
    let name = match ty {
        TensorElementType::Float16 => "float16",
        TensorElementType::Bfloat16 => "bfloat16",
        TensorElementType::Float32 => "float32",
        TensorElementType::Float64 => "float64",
        TensorElementType::Int8 => "int8",
        TensorElementType::Int16 => "int16",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int64 => "int64",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Uint16 => "uint16",
        TensorElementType::Uint32 => "uint32",
        TensorElementType::Uint64 => "uint64",
        TensorElementType::Bool => "bool",
        TensorElementType::String => "string",
        other => return other.to_string(),
    };
    name.to_string()
}

/// Checks that the output is a float score vector per image; returns the class count when it is static.
fn score_output_dims(name: &str, ty: &ValueType) -> Result<Option<usize>, String> {
    let ValueType::Tensor { ty, shape, .. } = ty else {
        return Err(format!("output {name:?} is not a tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!("output {name:?} has element type {}; camclassd reads float32 scores", element_name(*ty)));
    }
    // [N, C] or [N, C, 1, 1]: everything after the batch dimension is one score vector.
    if shape.len() < 2 || shape.len() > 4 || shape.iter().skip(2).any(|&d| d != 1) {
        return Err(format!("output {name:?} has shape {shape:?}; expected [batch, classes]"));
    }
    Ok(shape.get(1).and_then(|&c| usize::try_from(c).ok()).filter(|&c| c > 0))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_probabilities_outside_0_1_are_refused_with_the_kind_to_set() {
        let mut scores = Vec::new();
        let path = Path::new("m.onnx");
        for (declared, fix) in [
            (OutputKind::Probabilities, "output = \"logits\" (or \"auto\")"),
            (OutputKind::Sigmoid, "output = \"sigmoid_logits\" (camclassd applies the sigmoid)"),
        ] {
            let e = keep_scores(&mut scores, path, 1, 3, declared, &[1, 3], &[-2.0, 0.5, 3.0]).expect_err("logits");
            let text = e.to_string();
            assert!(text.contains(&format!("declared as {declared}")) && text.ends_with(fix), "{text}");
            keep_scores(&mut scores, path, 1, 3, declared, &[1, 3], &[0.2, 0.9, 0.7]).expect("in [0, 1]");
            assert_eq!(scores, [0.2, 0.9, 0.7]);
        }
        // Raw scores are whatever they are.
        for kind in [OutputKind::Logits, OutputKind::SigmoidLogits] {
            keep_scores(&mut scores, path, 1, 3, kind, &[1, 3], &[-2.0, 0.5, 3.0]).expect("logits");
        }
    }

    #[test]
    fn errors_name_the_config_key_they_are_about() {
        let path = PathBuf::from("m.onnx");
        let format = ModelError::LabelsFormat { path: path.clone(), message: "x".into() };
        assert_eq!(format.config_key(), "labels");
        let count =
            |origin: &str| ModelError::LabelCount { path: path.clone(), origin: origin.into(), labels: 1, classes: 2 };
        assert_eq!(count("from labels.txt").config_key(), "labels");
        assert_eq!(count("from the model's metadata").config_key(), "path");
        let layout = SpecError::Invalid("set [model.preprocess] layout = \"nhwc\"".into());
        assert_eq!(ModelError::Spec { path: path.clone(), source: layout }.config_key(), "preprocess.layout");
        let e = ModelError::NotProbabilities { path, declared: OutputKind::Sigmoid, min: -1.0, max: 2.0 };
        assert_eq!(e.config_key(), "preprocess.output");
    }

    #[test]
    fn element_types_are_named_as_onnx_names_them() {
        assert_eq!(element_name(TensorElementType::Int8), "int8");
        assert_eq!(element_name(TensorElementType::Float16), "float16");
        assert!(spec::SUPPORTED_INPUT_TYPES.contains("uint8"));
    }
}
