//! `camclassd classify`: classify image files, as a table for people or JSON lines for programs.

use std::path::{Path, PathBuf};

use crate::pipeline::{Classifier, PipelineError};
use crate::preprocess::{CropSpec, Frame};

pub use crate::pipeline::report::{ImageReport, LabeledScore, TimingMs};

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("{}: is a directory, not an image", path.display())]
    Directory { path: PathBuf },
    #[error("{}: not a regular file of at most 256 MiB", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Pipeline { path: PathBuf, source: PipelineError },
}

const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads and classifies one image file; `all_scores` also keeps the whole probability vector.
pub fn classify_file(classifier: &mut Classifier, path: &Path, all_scores: bool) -> Result<ImageReport, ClassifyError> {
    classify_file_crop(classifier, path, None, all_scores)
}

/// As [`classify_file`], for `crop` of the picture (a region's answer, as the daemon gives it).
pub fn classify_file_crop(
    classifier: &mut Classifier,
    path: &Path,
    crop: Option<CropSpec>,
    all_scores: bool,
) -> Result<ImageReport, ClassifyError> {
    if path.is_dir() {
        return Err(ClassifyError::Directory { path: path.to_path_buf() });
    }
    // Bounded read: a device node or a huge file must not exhaust memory before the decoder can say no.
    let too_big = |len: u64| len > MAX_FILE_BYTES;
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() || too_big(m.len())) {
        return Err(ClassifyError::NotAFile { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|source| ClassifyError::Read { path: path.to_path_buf(), source })?;
    let (result, timings) = classifier
        .classify_crop(Frame::Encoded(&bytes), crop)
        .map_err(|source| ClassifyError::Pipeline { path: path.to_path_buf(), source })?;
    let (top, on, multi_label) = (result.top.clone(), result.on.clone(), result.multi_label);
    let on = (multi_label || classifier.thresholds_set()).then_some(on);
    let scores = all_scores.then(|| classifier.probabilities().to_vec());
    Ok(ImageReport::new(path.display().to_string(), classifier.model(), top, on, timings, scores))
}

/// The human table: one block per image.
pub fn render_table(report: &ImageReport) -> String {
    let mut out = format!(
        "{}  (decode {:.1} ms, preprocess {:.1} ms, infer {:.1} ms on {})\n",
        report.image, report.timing_ms.decode, report.timing_ms.preprocess, report.timing_ms.infer, report.provider
    );
    for (rank, s) in report.top.iter().enumerate() {
        out.push_str(&format!("  {:>2}. {:>6.2}%  {:>4}  {}\n", rank + 1, s.score * 100.0, s.class_id, s.label));
    }
    if report.top.is_empty() {
        out.push_str("  (no class above the minimum score)\n");
    }
    if let Some(on) = &report.on {
        let names: Vec<String> = on.iter().map(|s| format!("{} ({:.1}%)", s.label, s.score * 100.0)).collect();
        let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        out.push_str(&format!("  on (each class at its threshold): {names}\n"));
    }
    out
}
