//! The model check: a quantized model carries a few inputs and its reference model's answers for them,
//! and proves at load, on this CPU, that it still gives those answers.
//!
//! INT8 kernels differ by CPU (x86-64 AVX2 saturates where AVX-512 VNNI does not; ARM with or without the
//! dot-product instructions), so a model that is right on the machine that built it can be wrong on the
//! board. [`stamp`] writes a [`GoldenSet`] into the model's ONNX metadata (`camclassd.check`): 4–16 inputs
//! as lossless PNGs at the model's input size, with the reference model's full probability vectors. At
//! load, [`verify`] runs them through the same [`Classifier`] frames take and compares top-1 and cosine.
//!
//! Any model can be stamped (`camclassd stamp`), so a user's own INT8 model gets the same protection.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

pub use crate::config::model::OnCheckFailure;

use crate::pipeline::{Classifier, PipelineError};
use crate::preprocess::Frame;

/// The ONNX metadata key that holds the golden set.
pub const METADATA_KEY: &str = "camclassd.check";
/// Format version of the golden set.
const VERSION: u32 = 1;
/// Fewest and most inputs a golden set may hold.
pub const MIN_INPUTS: usize = 4;
pub const MAX_INPUTS: usize = 16;
/// Default pass mark: the mean cosine between the model's and the reference's probability vectors.
pub const DEFAULT_MIN_COSINE: f32 = 0.97;
/// Reference margin (p1 - p2) an input needs to be chosen: its top-1 must not be a coin toss.
const MIN_MARGIN: f32 = 0.4;

/// The stamped check: where the answers came from, the pass mark, and the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenSet {
    pub version: u32,
    /// The reference model's file name and sha256.
    pub reference: Reference,
    /// Pass when every top-1 matches and the mean cosine is at least this.
    pub min_cosine: f32,
    pub inputs: Vec<GoldenInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenInput {
    pub name: String,
    /// The input picture, a PNG at the model's input size (base64 in the metadata).
    #[serde(with = "b64")]
    pub png: Vec<u8>,
    /// The reference model's top-1 class.
    pub top1: usize,
    /// The reference model's probabilities (little-endian f32, base64 in the metadata).
    #[serde(with = "b64_f32")]
    pub probabilities: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("model {}: its check ({METADATA_KEY}) is unreadable: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("check input {name}: {source}")]
    Pipeline { name: String, source: PipelineError },
    #[error("check input {name}: the model gives {got} classes, the check has {expected}")]
    Classes { name: String, got: usize, expected: usize },
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{0}")]
    Stamp(String),
}

impl GoldenSet {
    /// The golden set stamped into a loaded model, if any.
    pub fn of(classifier: &Classifier) -> Result<Option<GoldenSet>, CheckError> {
        let model = classifier.model();
        let Some(text) = model.metadata().get(METADATA_KEY) else { return Ok(None) };
        let malformed = |message: String| CheckError::Malformed { path: model.path().to_path_buf(), message };
        let set: GoldenSet = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if set.version != VERSION {
            return Err(malformed(format!("version {} (this camclassd reads {VERSION})", set.version)));
        }
        if !(MIN_INPUTS..=MAX_INPUTS).contains(&set.inputs.len()) {
            return Err(malformed(format!("{} inputs, expected {MIN_INPUTS} to {MAX_INPUTS}", set.inputs.len())));
        }
        if !(0.0..=1.0).contains(&set.min_cosine) {
            return Err(malformed(format!("min_cosine {} is not within 0..1", set.min_cosine)));
        }
        Ok(Some(set))
    }

    /// The metadata value (JSON).
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).expect("a golden set always serialises")
    }
}

/// One input's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputOutcome {
    pub name: String,
    pub expected_top1: usize,
    pub top1: usize,
    pub cosine: f32,
    pub ms: f64,
}

/// The outcome of a check on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub passed: bool,
    pub inputs: Vec<InputOutcome>,
    pub top1_agree: usize,
    pub mean_cosine: f32,
    pub min_cosine: f32,
    /// The pass mark stamped in the model.
    pub required_cosine: f32,
    pub reference: Reference,
    /// This CPU's features that decide which INT8 kernels run.
    pub cpu: String,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl CheckReport {
    /// One line for logs and errors.
    pub fn summary(&self) -> String {
        format!(
            "{}/{} top-1 as {}, mean cosine {:.4} (needs {:.2}), min {:.4}, on {}",
            self.top1_agree,
            self.inputs.len(),
            self.reference.file,
            self.mean_cosine,
            self.required_cosine,
            self.min_cosine,
            self.cpu
        )
    }
}

/// Runs the golden set through the classifier and compares with the stamped answers.
pub fn verify(classifier: &mut Classifier, set: &GoldenSet) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let mut inputs = Vec::with_capacity(set.inputs.len());
    let mut best = Vec::with_capacity(1);
    for input in &set.inputs {
        let t = Instant::now();
        classifier
            .classify(Frame::Encoded(&input.png))
            .map_err(|source| CheckError::Pipeline { name: input.name.clone(), source })?;
        let probabilities = classifier.probabilities();
        // From the probabilities, not the classification: the caller's top_k and min_score do not apply.
        crate::postprocess::top_k(probabilities, 1, f32::NEG_INFINITY, &mut best);
        let top1 = best.first().map_or(usize::MAX, |s| s.class_id);
        if probabilities.len() != input.probabilities.len() {
            return Err(CheckError::Classes {
                name: input.name.clone(),
                got: probabilities.len(),
                expected: input.probabilities.len(),
            });
        }
        inputs.push(InputOutcome {
            name: input.name.clone(),
            expected_top1: input.top1,
            top1,
            cosine: cosine(probabilities, &input.probabilities) as f32,
            ms: t.elapsed().as_secs_f64() * 1e3,
        });
    }
    let n = inputs.len().max(1) as f32;
    let top1_agree = inputs.iter().filter(|i| i.top1 == i.expected_top1).count();
    let mean_cosine = inputs.iter().map(|i| i.cosine).sum::<f32>() / n;
    let min_cosine = inputs.iter().map(|i| i.cosine).fold(f32::INFINITY, f32::min);
    Ok(CheckReport {
        passed: top1_agree == inputs.len() && mean_cosine >= set.min_cosine,
        top1_agree,
        mean_cosine,
        min_cosine,
        required_cosine: set.min_cosine,
        reference: set.reference.clone(),
        cpu: cpu_features(),
        elapsed: started.elapsed(),
        inputs,
    })
}

/// The check's outcome at load, for the start-up log, the health message and Home Assistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passed,
    /// Failed, and used anyway (`on_check_failure = "warn"`).
    Failed,
    /// Failed; the fallback model runs instead.
    Fallback,
    /// The model carries no check.
    Unchecked,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::Fallback => "fallback",
            CheckStatus::Unchecked => "unchecked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCheck {
    pub status: CheckStatus,
    /// The model the check ran on (not the fallback).
    pub model: String,
    /// One line: the figures, or why there are none.
    pub detail: String,
}

/// A model that failed its check, as the error `on_check_failure = "fail"` gives.
#[derive(Debug, thiserror::Error)]
#[error(
    "model {} fails its check on this CPU: {summary}. Its INT8 kernels here give other answers than the \
     reference; use the FP32 model ([model] path, or on_check_failure = \"fallback\" with fallback = the \
     FP32 model), or quantize it for this CPU (models/README.md); `camclassd verify` shows each input",
    path.display()
)]
pub struct CheckFailed {
    pub path: PathBuf,
    pub summary: String,
}

/// Runs a freshly loaded model's own check (if it has one) and applies `policy`. Returns the check's
/// outcome; `CheckStatus::Fallback` tells the caller to load its fallback model instead. Logs once.
pub fn at_load(classifier: &mut Classifier, policy: OnCheckFailure) -> Result<ModelCheck, CheckLoadError> {
    let path = classifier.model().path().to_path_buf();
    let model = path.display().to_string();
    let Some(set) = GoldenSet::of(classifier)? else {
        tracing::info!(model = %model, "model check: none stamped (camclassd stamp adds one)");
        return Ok(ModelCheck {
            status: CheckStatus::Unchecked,
            model,
            detail: "no check stamped in the model".into(),
        });
    };
    if classifier.model().recipe_overridden() {
        let detail = "not run: [model.preprocess] changes the recipe its answers were recorded with".to_string();
        tracing::info!(model = %model, "model check {detail}");
        return Ok(ModelCheck { status: CheckStatus::Unchecked, model, detail });
    }
    let report = verify(classifier, &set)?;
    let detail = report.summary();
    let ms = report.elapsed.as_secs_f64() * 1e3;
    if report.passed {
        tracing::info!(model = %model, "model check passed in {ms:.0} ms: {detail}");
        return Ok(ModelCheck { status: CheckStatus::Passed, model, detail });
    }
    match policy {
        OnCheckFailure::Fail => Err(CheckLoadError::Failed(CheckFailed { path, summary: detail })),
        OnCheckFailure::Warn => {
            tracing::warn!(model = %model, "model check FAILED on this CPU, used anyway (on_check_failure = \"warn\"): {detail}");
            Ok(ModelCheck { status: CheckStatus::Failed, model, detail })
        }
        OnCheckFailure::Fallback => {
            tracing::warn!(model = %model, "model check FAILED on this CPU: {detail}; using the fallback model");
            Ok(ModelCheck { status: CheckStatus::Fallback, model, detail })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckLoadError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Failed(#[from] CheckFailed),
}

/// The `camclassd verify` table.
pub fn render_report(model: &Path, report: &CheckReport) -> String {
    let mut out = format!("model check of {} against {}\n", model.display(), report.reference.file);
    out.push_str(&format!("  cpu  {}\n", report.cpu));
    out.push_str(&format!("  {:<28} {:>9} {:>9} {:>8} {:>7}\n", "input", "expected", "top-1", "cosine", "ms"));
    for i in &report.inputs {
        let mark = if i.top1 == i.expected_top1 { "" } else { "  MISMATCH" };
        let top1 = if i.top1 == usize::MAX { "none".to_string() } else { i.top1.to_string() };
        out.push_str(&format!(
            "  {:<28} {:>9} {:>9} {:>8.4} {:>7.1}{mark}\n",
            i.name, i.expected_top1, top1, i.cosine, i.ms
        ));
    }
    out.push_str(&format!("  {}: {}\n", if report.passed { "passed" } else { "FAILED" }, report.summary()));
    out
}

/// Cosine similarity, in f64; 0 for a zero or NaN vector. `compare` and the model check share it.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    let c = dot / (na.sqrt() * nb.sqrt());
    if c.is_finite() { c } else { 0.0 }
}

/// The CPU features that pick ONNX Runtime's INT8 kernels, e.g. `x86-64 (avx2, no avx512-vnni)`.
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |yes: bool, name: &str| if yes { name.to_string() } else { format!("no {name}") };
        let features = [
            has(std::arch::is_x86_feature_detected!("avx2"), "avx2"),
            has(std::arch::is_x86_feature_detected!("avx512f"), "avx512f"),
            has(std::arch::is_x86_feature_detected!("avx512vnni"), "avx512-vnni"),
            has(std::arch::is_x86_feature_detected!("avxvnni"), "avx-vnni"),
        ];
        format!("x86-64 ({})", features.join(", "))
    }
    #[cfg(target_arch = "aarch64")]
    {
        let has = |yes: bool, name: &str| if yes { name.to_string() } else { format!("no {name}") };
        let features = [
            has(std::arch::is_aarch64_feature_detected!("dotprod"), "dotprod"),
            has(std::arch::is_aarch64_feature_detected!("i8mm"), "i8mm"),
        ];
        format!("aarch64 ({})", features.join(", "))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// What `stamp` is given: candidate pictures and the reference model's classifier.
#[derive(Debug)]
pub struct StampRequest<'a> {
    pub images: &'a [PathBuf],
    /// How many inputs to keep (4–16).
    pub count: usize,
    pub min_cosine: f32,
}

/// Builds a golden set: each picture resized and centre-cropped to the model's input size as a PNG, the
/// reference's answers for it; keeps the `count` inputs on which the reference is surest, one class at a
/// time so that the set covers as many classes as it can. Then checks `candidate` against it here.
pub fn build(
    reference: &mut Classifier,
    candidate: &mut Classifier,
    request: &StampRequest<'_>,
) -> Result<(GoldenSet, CheckReport), CheckError> {
    if !(MIN_INPUTS..=MAX_INPUTS).contains(&request.count) {
        return Err(CheckError::Stamp(format!("--count {} is not within {MIN_INPUTS}..{MAX_INPUTS}", request.count)));
    }
    let kind = |c: &Classifier| {
        let output = c.model().spec().output;
        (output.is_multi_label(), if output.is_multi_label() { "multi-label (sigmoid)" } else { "single-label" })
    };
    let ((reference_multi, reference_kind), (candidate_multi, candidate_kind)) = (kind(reference), kind(candidate));
    if reference_multi != candidate_multi {
        return Err(CheckError::Stamp(format!(
            "the reference is {reference_kind} and the model {candidate_kind}: their probabilities do not compare; \
             stamp with a reference whose output is read the same way"
        )));
    }
    let (h, w) = candidate.model().spec().input_size;
    if reference.model().spec().input_size != (h, w) {
        return Err(CheckError::Stamp(format!(
            "the reference takes {:?} inputs and the model {:?}: they must match",
            reference.model().spec().input_size,
            (h, w)
        )));
    }
    let mut candidates = Vec::new();
    for path in request.images {
        let png = input_png(path, w, h)?;
        let (result, _) = reference
            .classify(Frame::Encoded(&png))
            .map_err(|source| CheckError::Pipeline { name: path.display().to_string(), source })?;
        let Some(best) = result.best() else { continue };
        let probabilities = reference.probabilities().to_vec();
        let second =
            probabilities.iter().enumerate().filter(|&(i, _)| i != best.class_id).map(|(_, &p)| p).fold(0.0, f32::max);
        let margin = probabilities[best.class_id] - second;
        if margin >= MIN_MARGIN && probabilities.iter().all(|p| p.is_finite()) {
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
            candidates.push((margin, GoldenInput { name, png, top1: best.class_id, probabilities }));
        }
    }
    // Surest first; then round-robin over classes so that one class does not fill the set.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let mut chosen: Vec<GoldenInput> = Vec::new();
    while chosen.len() < request.count && !candidates.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let mut rest = Vec::new();
        for (margin, input) in candidates.drain(..) {
            if chosen.len() < request.count && seen.insert(input.top1) {
                chosen.push(input);
            } else {
                rest.push((margin, input));
            }
        }
        candidates = rest;
    }
    if chosen.len() < MIN_INPUTS {
        return Err(CheckError::Stamp(format!(
            "only {} of the {} pictures are ones the reference model is sure of (top-1 ahead by {MIN_MARGIN} \
             or more); give at least {MIN_INPUTS} clear pictures of things the model knows",
            chosen.len(),
            request.images.len()
        )));
    }
    let reference_model = reference.model();
    let set = GoldenSet {
        version: VERSION,
        reference: Reference {
            file: reference_model
                .path()
                .file_name()
                .map_or_else(|| reference_model.path().display().to_string(), |n| n.to_string_lossy().into()),
            sha256: reference_model.sha256().to_string(),
        },
        min_cosine: request.min_cosine,
        inputs: chosen,
    };
    let report = verify(candidate, &set)?;
    Ok((set, report))
}

/// A picture as a PNG at `width`×`height`: shorter side scaled to fit, then centre-cropped.
fn input_png(path: &Path, width: u32, height: u32) -> Result<Vec<u8>, CheckError> {
    let error = |message: String| CheckError::Image { path: path.to_path_buf(), message };
    let img = image::ImageReader::open(path)
        .map_err(|e| error(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| error(e.to_string()))?
        .decode()
        .map_err(|e| error(e.to_string()))?
        .to_rgb8();
    let scale = f64::max(f64::from(width) / f64::from(img.width()), f64::from(height) / f64::from(img.height()));
    let (sw, sh) = (
        ((f64::from(img.width()) * scale).round() as u32).max(width),
        ((f64::from(img.height()) * scale).round() as u32).max(height),
    );
    let scaled = image::imageops::resize(&img, sw, sh, image::imageops::FilterType::Triangle);
    let cropped = image::imageops::crop_imm(&scaled, (sw - width) / 2, (sh - height) / 2, width, height).to_image();
    let mut png = Vec::new();
    cropped.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| error(e.to_string()))?;
    Ok(png)
}

/// The model file's bytes with `value` as its `camclassd.check` metadata, replacing any earlier one
/// ([`crate::model::onnx_edit::set_metadata`]: the other fields are copied as the bytes they are, so the graph
/// is never re-encoded).
pub fn stamp(model: &[u8], value: &str) -> Result<Vec<u8>, CheckError> {
    crate::model::onnx_edit::set_metadata(model, |key| key == METADATA_KEY, &[(METADATA_KEY, value)])
        .map_err(|e| CheckError::Stamp(e.to_string()))
}

mod b64 {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

mod b64_f32 {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        s.serialize_str(&BASE64.encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let bytes = BASE64.decode(String::deserialize(d)?.as_bytes()).map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom("probabilities are not a whole number of f32s"));
        }
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_edit::put_bytes;

    #[test]
    fn stamping_replaces_an_earlier_check_and_keeps_every_other_field() {
        // A tiny "model": ir_version = 7 (field 1 varint), producer_name (field 2), one other metadata entry.
        let mut model = vec![0x08, 7];
        put_bytes(&mut model, 2, b"test");
        let mut other = Vec::new();
        put_bytes(&mut other, 1, b"camclassd.labels");
        put_bytes(&mut other, 2, b"a\nb");
        put_bytes(&mut model, 14, &other);
        let once = stamp(&model, "first").expect("stamps");
        let twice = stamp(&once, "second").expect("stamps again");
        assert!(twice.starts_with(&model), "the original fields are kept, in order");
        let text = String::from_utf8_lossy(&twice);
        assert!(text.contains("second") && !text.contains("first"), "one check, the newest");
        assert_eq!(twice.len() - model.len(), once.len() - model.len() + 1);
    }

    #[test]
    fn stamping_refuses_what_is_not_protobuf() {
        assert!(stamp(&[0x0a, 0xff, 0xff, 0xff, 0x0f], "x").is_err(), "a length past the end");
        assert!(stamp(&[0x0f], "x").is_err(), "wire type 7");
    }

    #[test]
    fn golden_set_round_trips_through_its_metadata_text() {
        let set = GoldenSet {
            version: VERSION,
            reference: Reference { file: "fp32.onnx".into(), sha256: "ab".into() },
            min_cosine: 0.97,
            inputs: vec![GoldenInput {
                name: "a.png".into(),
                png: vec![1, 2, 3],
                top1: 1,
                probabilities: vec![0.25, 0.75],
            }],
        };
        let back: GoldenSet = serde_json::from_str(&set.to_metadata()).expect("parses");
        assert_eq!(back, set);
    }

    #[test]
    fn cosine_is_one_for_equal_vectors_and_zero_for_nan() {
        assert!((cosine(&[0.2, 0.8], &[0.2, 0.8]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[f32::NAN, 1.0], &[0.5, 0.5]), 0.0);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
    }
}
