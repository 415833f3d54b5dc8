//! Teaching camclassd a question from labelled pictures: embed each picture with a base model's frozen
//! trunk ([`embed`]), fit a class-balanced L2 logistic regression whose strength stratified
//! cross-validation chooses ([`logistic`]), and write one plain ONNX file — the base graph up to its
//! features, then (Sub, LpNormalization,) Gemm and Softmax — with the classes and recipe in its metadata and the model check
//! stamped from the training pictures, so that `classify`, `verify`, `inspect`, the daemon and any ONNX
//! Runtime use it unchanged.
//!
//! The report says what a user needs to trust the number: pictures per class, the cross-validated accuracy
//! and its spread over the folds, the confusion matrix of the held-out predictions, the suspects (pictures
//! whose held-out prediction disagrees with their label, the most confident first: likely mislabelled),
//! and hints (too few pictures in a class, a class far smaller than another, duplicates).

pub mod dataset;
pub mod embed;
pub mod logistic;
pub mod samples;
pub mod teacher;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::model::onnx_edit::{self, Head};
use crate::model::runtime::Runtime;
use dataset::Dataset;
use embed::Trunk;
use logistic::Samples;

/// Why a training could not be done. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TeachError {
    #[error("{0}")]
    Dataset(String),
    #[error("base model {0}")]
    Base(String),
    #[error("embedding cache {0}")]
    Cache(String),
    #[error("writing the model: {0}")]
    Write(String),
    #[error("{0}")]
    TooFew(String),
    #[error("stopped: camclassd is shutting down")]
    Cancelled,
}

/// Fewer pictures than this in a class gets a hint (VisionState's rule of thumb, and ours: the
/// cross-validated accuracy of 5 pictures a class moves by 10 points from one picture).
pub const FEW_IMAGES: usize = 20;

/// The golden inputs stamped into a taught model (its check), chosen from twice as many training pictures.
const GOLDEN_INPUTS: usize = 8;

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub base: PathBuf,
    pub out: PathBuf,
    /// Where the trunk and the embeddings are cached.
    pub cache_dir: PathBuf,
    /// Intra-op threads of the trunk.
    pub threads: usize,
    /// Learn only these classes' folders (a taught model's config classes); `None`: every folder.
    pub classes: Option<Vec<String>>,
    /// Set: the training stops at its next picture (the daemon's shutdown).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A picture left out: its path and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// A picture whose held-out prediction disagrees with its label.
#[derive(Debug, Clone, Serialize)]
pub struct Suspect {
    pub path: String,
    pub label: String,
    pub predicted: String,
    /// The held-out probability of `predicted`.
    pub confidence: f64,
}

/// What a training did and how good the model is: `camclassd train --json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub base: String,
    pub classes: Vec<String>,
    /// Pictures used per class, in `classes` order.
    pub images: Vec<usize>,
    /// Mean accuracy over the cross-validation folds, 0–1.
    pub cv_accuracy: f64,
    /// Standard deviation of the folds' accuracies.
    pub cv_spread: f64,
    /// The 95 % interval of the accuracy on new pictures that the held-out predictions support (Wilson's
    /// score interval over every picture): with 10 pictures all right it is 0.72–1.00, not "100 %".
    pub cv_interval: [f64; 2],
    /// The score an answer needs, proposed from the held-out answers ([`propose_threshold`]): under it a
    /// region's state is unknown. In the model's metadata (`camclassd.threshold`); a region's `thresholds`
    /// overrides it.
    pub threshold: f64,
    /// The share of the held-out answers at or over `threshold`, and how many of those were right.
    pub threshold_coverage: f64,
    pub threshold_accuracy: f64,
    pub folds: usize,
    /// The inverse regularisation cross-validation chose (scikit-learn's `C`), and the features' scaling.
    pub c: f64,
    pub scaling: logistic::Scaling,
    /// Held-out predictions: rows = true class, columns = predicted, in `classes` order.
    pub confusion: Vec<Vec<usize>>,
    /// The pictures whose held-out prediction disagrees with their label, most confident first.
    pub suspects: Vec<String>,
    pub suspect_details: Vec<Suspect>,
    pub hints: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Pictures embedded now / taken from the cache.
    pub embedded: usize,
    pub cached: usize,
    pub seconds: f64,
}

/// Where the shipped base model is looked for, in order: the Debian package's, then a source tree's.
pub const BASE_LOCATIONS: [&str; 2] =
    ["/usr/share/camclassd/models/efficientnet-lite0-int8.onnx", "models/efficientnet-lite0-int8.onnx"];

/// The shipped base model (the INT8 EfficientNet-Lite0), where it is installed.
pub fn default_base() -> Result<PathBuf, TeachError> {
    BASE_LOCATIONS.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        TeachError::Base(format!(
            "not found at {}: install the camclassd package, or name one with --base MODEL.onnx",
            BASE_LOCATIONS.join(" or ")
        ))
    })
}

/// Where the trunks and embeddings are cached: `teach/` under camclassd's cache folder.
pub fn default_cache_dir() -> PathBuf {
    crate::config::model::cache_base().join("teach")
}

/// The report for people: the numbers first, then what to do about them.
pub fn render(report: &TrainReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "trained {} on {} ({} s)", report.model, report.base, round(report.seconds, 2));
    let _ = writeln!(out, "  pictures: {} embedded, {} from the cache", report.embedded, report.cached);
    for (class, n) in report.classes.iter().zip(&report.images) {
        let _ = writeln!(out, "  {class:<24} {n:>5} pictures");
    }
    let _ = writeln!(
        out,
        "cross-validated accuracy: {:.1} % ± {:.1} over {} folds; on new pictures likely {:.1}–{:.1} % (95 %)",
        100.0 * report.cv_accuracy,
        100.0 * report.cv_spread,
        report.folds,
        100.0 * report.cv_interval[0],
        100.0 * report.cv_interval[1]
    );
    let scaling = match report.scaling {
        logistic::Scaling::Standardised => "standardised features",
        logistic::Scaling::CentredL2 => "centred, length-1 features",
    };
    let _ = writeln!(out, "  chosen by cross-validation: {scaling}, C = {}", report.c);
    let _ = writeln!(
        out,
        "answers under {:.2} are \"unknown\": at or over it, {:.0} % of the held-out answers were right ({:.0} % of the \
         pictures reach it)",
        report.threshold,
        100.0 * report.threshold_accuracy,
        100.0 * report.threshold_coverage
    );
    let _ = writeln!(out, "confusion (rows: the label, columns: the prediction on held-out pictures):");
    let width = report.classes.iter().map(|c| c.len()).max().unwrap_or(4).max(6);
    let _ = write!(out, "  {:<width$}", "");
    for class in &report.classes {
        let _ = write!(out, " {class:>width$}");
    }
    out.push('\n');
    for (class, row) in report.classes.iter().zip(&report.confusion) {
        let _ = write!(out, "  {class:<width$}");
        for n in row {
            let _ = write!(out, " {n:>width$}");
        }
        out.push('\n');
    }
    if !report.suspect_details.is_empty() {
        let _ = writeln!(out, "suspects (labelled one way, predicted another; check their labels):");
        for s in report.suspect_details.iter().take(20) {
            let _ = writeln!(
                out,
                "  {}  labelled {}, looks {} ({:.0} %)",
                s.path,
                s.label,
                s.predicted,
                100.0 * s.confidence
            );
        }
    }
    for hint in &report.hints {
        let _ = writeln!(out, "hint: {hint}");
    }
    for s in &report.skipped {
        let _ = writeln!(out, "skipped: {}: {}", s.path, s.reason);
    }
    out
}

/// The answers held-out pictures got at or over a top score are trusted when this many of them were right.
pub const TRUSTED: f64 = 0.98;

/// The threshold proposed for a taught model's answers: the lowest top score of 0.50, 0.55 … 0.95 at or over
/// which at least [`TRUSTED`] of the held-out answers were right (else the most accurate of them); under it
/// a region's state is unknown rather than wrong. Returns it, the share of answers at or over it, and their
/// accuracy.
pub fn propose_threshold(held_out: &[Vec<f64>], y: &[usize]) -> (f64, f64, f64) {
    let answers: Vec<(f64, bool)> = held_out
        .iter()
        .zip(y)
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, &label)| {
            let best = logistic::argmax(p);
            (p[best], best == label)
        })
        .collect();
    let at = |t: f64| {
        let over: Vec<bool> = answers.iter().filter(|(score, _)| *score >= t).map(|&(_, right)| right).collect();
        let coverage = over.len() as f64 / answers.len().max(1) as f64;
        let accuracy =
            if over.is_empty() { 0.0 } else { over.iter().filter(|&&r| r).count() as f64 / over.len() as f64 };
        (t, coverage, accuracy)
    };
    let grid: Vec<(f64, f64, f64)> = (0..10).map(|i| at(0.5 + 0.05 * f64::from(i))).collect();
    grid.iter()
        .copied()
        .find(|&(_, _, accuracy)| accuracy >= TRUSTED)
        .unwrap_or_else(|| grid.iter().copied().fold(grid[0], |best, g| if g.2 > best.2 { g } else { best }))
}

/// Wilson's score interval (95 %) for `right` successes out of `n`.
pub fn wilson(right: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (z, n, p) = (1.96f64, n as f64, right as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// Trains a model on the ImageFolder tree `dir` (see the module's documentation) and writes it to
/// `options.out`.
pub fn train(runtime: &'static Runtime, dir: &Path, options: &TrainOptions) -> Result<TrainReport, TeachError> {
    train_with(runtime, dir, options, &|_| {})
}

/// Where a training is: its stage, and in `Embedding` the pictures done out of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Embedding { done: usize, total: usize },
    Fitting,
    Writing,
}

/// [`train`], telling `progress` where it is.
pub fn train_with(
    runtime: &'static Runtime,
    dir: &Path,
    options: &TrainOptions,
    progress: &dyn Fn(Stage),
) -> Result<TrainReport, TeachError> {
    let started = Instant::now();
    let dataset = Dataset::read_classes(dir, options.classes.as_deref())?;
    let total = dataset.images.len();
    let cancelled = || options.cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire));
    progress(Stage::Embedding { done: 0, total });
    let mut trunk = Trunk::open(runtime, &options.base, &options.cache_dir, options.threads)?;
    let width = trunk.width();
    let (mut x, mut y, mut paths, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut embedded, mut cached) = (0, 0);
    let mut digests: Vec<[u8; 32]> = Vec::new();
    for (done, (path, class)) in dataset.images.iter().enumerate() {
        if done % 8 == 0 {
            progress(Stage::Embedding { done, total });
        }
        if cancelled() {
            return Err(TeachError::Cancelled);
        }
        let result = std::fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| {
            use sha2::Digest;
            digests.push(sha2::Sha256::digest(&bytes).into());
            trunk.embed(&bytes).inspect_err(|_| {
                digests.pop();
            })
        });
        match result {
            Ok((features, hit)) => {
                x.extend_from_slice(&features);
                y.push(*class);
                paths.push(path.clone());
                if hit { cached += 1 } else { embedded += 1 }
            }
            Err(reason) => {
                tracing::warn!(image = %path.display(), "left out: {reason}");
                skipped.push(Skipped { path: path.display().to_string(), reason });
            }
        }
    }
    trunk.flush()?;
    // The trunk's session is done with: the taught model's check loads two sessions of its own.
    trunk.close();
    let embedding = started.elapsed();
    let classes = dataset.classes.len();
    let mut counts = vec![0usize; classes];
    for &c in &y {
        counts[c] += 1;
    }
    if let Some(empty) = counts.iter().position(|&n| n < 2) {
        return Err(TeachError::TooFew(format!(
            "class {:?} has {} usable picture{}: each class needs at least 2 (5 or more to be useful)",
            dataset.classes[empty],
            counts[empty],
            if counts[empty] == 1 { "" } else { "s" }
        )));
    }
    progress(Stage::Fitting);
    let samples = Samples { x: &x, width };
    let folds = counts.iter().copied().min().unwrap_or(2).clamp(2, 5);
    let fold = logistic::stratified_folds(&y, classes, folds, 0x5eed);
    let results = logistic::cross_validate(samples, &y, classes, &fold);
    let best = &results[0];
    let model = logistic::fit(samples, &y, classes, best.scaling, best.c);
    let fitting = started.elapsed() - embedding;

    // The held-out predictions: confusion and suspects.
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut suspects = Vec::new();
    for (i, p) in best.held_out.iter().enumerate() {
        let predicted = logistic::argmax(p);
        confusion[y[i]][predicted] += 1;
        if predicted != y[i] {
            suspects.push(Suspect {
                path: paths[i].display().to_string(),
                label: dataset.classes[y[i]].clone(),
                predicted: dataset.classes[predicted].clone(),
                confidence: p[predicted],
            });
        }
    }
    suspects.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let hints = hints(&dataset.classes, &counts, &digests, &paths, samples);
    let proposed = propose_threshold(&best.held_out, &y);

    progress(Stage::Writing);
    let written = Instant::now();
    let mut hints = hints;
    let scores = (best.accuracy(), proposed.0);
    if let Some(unstamped) = write_model(runtime, &trunk, &model, &dataset.classes, &paths, scores, &options.out)? {
        hints.push(unstamped);
    }
    tracing::info!(
        embedded,
        cached,
        "trained in {:.2} s: embedding {:.2} s, cross-validation and fit {:.2} s, writing and checking {:.2} s",
        started.elapsed().as_secs_f64(),
        embedding.as_secs_f64(),
        fitting.as_secs_f64(),
        written.elapsed().as_secs_f64()
    );
    Ok(TrainReport {
        model: options.out.display().to_string(),
        base: options.base.display().to_string(),
        classes: dataset.classes,
        images: counts,
        cv_accuracy: best.accuracy(),
        cv_spread: best.spread(),
        threshold: proposed.0,
        threshold_coverage: proposed.1,
        threshold_accuracy: proposed.2,
        cv_interval: wilson(confusion.iter().enumerate().map(|(i, row)| row[i]).sum(), y.len()),
        folds,
        c: best.c,
        scaling: best.scaling,
        confusion,
        suspects: suspects.iter().map(|s| s.path.clone()).collect(),
        suspect_details: suspects,
        hints,
        skipped,
        embedded,
        cached,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The hints of a training set: small classes, imbalance, duplicates.
fn hints(
    classes: &[String],
    counts: &[usize],
    digests: &[[u8; 32]],
    paths: &[PathBuf],
    samples: Samples<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, &n) in classes.iter().zip(counts) {
        if n < FEW_IMAGES {
            out.push(format!(
                "class {name:?} has {n} pictures: {FEW_IMAGES} or more, across the day and the night, make the \
                 accuracy trustworthy"
            ));
        }
    }
    let largest = counts.iter().copied().max().unwrap_or(0);
    for (name, &n) in classes.iter().zip(counts) {
        if 2 * n < largest {
            out.push(format!(
                "class {name:?} has {n} pictures, under half of the largest class ({largest}): label more of it"
            ));
        }
    }
    // The same file twice, and pictures the base cannot tell apart (cosine of their features over 0.999).
    let mut seen: std::collections::HashMap<[u8; 32], usize> = std::collections::HashMap::new();
    let mut duplicates = Vec::new();
    for (i, d) in digests.iter().enumerate() {
        if let Some(&j) = seen.get(d) {
            duplicates.push((j, i));
        } else {
            seen.insert(*d, i);
        }
    }
    let n = samples.len();
    if n <= 2000 {
        let norms: Vec<f64> =
            (0..n).map(|i| samples.row(i).iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()).collect();
        for i in 0..n {
            for j in i + 1..n {
                if digests.get(i) == digests.get(j) {
                    continue;
                }
                let dot: f64 =
                    samples.row(i).iter().zip(samples.row(j)).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                if dot > 0.999 * norms[i] * norms[j] {
                    duplicates.push((i, j));
                }
            }
        }
    }
    if !duplicates.is_empty() {
        let named: Vec<String> = duplicates
            .iter()
            .take(5)
            .map(|&(a, b)| format!("{} = {}", paths[a].display(), paths[b].display()))
            .collect();
        out.push(format!(
            "{} pair{} of near-identical pictures (they count twice and flatter the accuracy): {}{}",
            duplicates.len(),
            if duplicates.len() == 1 { "" } else { "s" },
            named.join(", "),
            if duplicates.len() > 5 { ", …" } else { "" }
        ));
    }
    out
}

/// Writes the taught model: the base up to its features, the head, the classes and recipe in its metadata,
/// stamped with its check (golden inputs drawn from the training pictures).
fn write_model(
    runtime: &'static Runtime,
    trunk: &Trunk,
    model: &logistic::Linear,
    classes: &[String],
    images: &[PathBuf],
    (cv_accuracy, threshold): (f64, f64),
    out: &Path,
) -> Result<Option<String>, TeachError> {
    let centre = (model.scaling == logistic::Scaling::CentredL2).then_some(model.centre.as_slice());
    let head = Head { features: &trunk.features, centre, weights: &model.weights, bias: &model.bias };
    let name = out.file_stem().and_then(|s| s.to_str()).unwrap_or("taught").to_string();
    let labels = classes.join("\n");
    let taught = serde_json::json!({
        "base_sha256": trunk.base_sha256,
        "classes": classes,
        "images": images.len(),
        "cv_accuracy": cv_accuracy,
    })
    .to_string();
    let replaced = |k: &str| {
        matches!(
            k,
            "camclassd.labels"
                | "camclassd.check"
                | "camclassd.output"
                | "camclassd.crop"
                | "camclassd.model_name"
                | "camclassd.taught"
                | "camclassd.threshold"
        )
    };
    let threshold = format!("{threshold:.2}");
    let bytes = onnx_edit::with_head(&trunk.base_bytes, &head)
        .and_then(|m| {
            onnx_edit::set_metadata(
                &m,
                replaced,
                &[
                    ("camclassd.model_name", &name),
                    ("camclassd.labels", &labels),
                    ("camclassd.output", "probabilities"),
                    ("camclassd.crop", "none"),
                    ("camclassd.taught", &taught),
                    ("camclassd.threshold", &threshold),
                ],
            )
        })
        .and_then(|m| {
            let doc = format!(
                "Taught by camclassd train from {} pictures ({}), cross-validated accuracy {:.1} %, on the frozen \
                 features ({}) of the base model sha256 {}. Input: the base's; output: probabilities, softmax \
                 of a linear head.",
                images.len(),
                classes.join(", "),
                100.0 * cv_accuracy,
                trunk.features,
                &trunk.base_sha256[..16]
            );
            onnx_edit::set_description(&m, "camclassd train", &doc)
        })
        .map_err(|e| TeachError::Write(e.to_string()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| TeachError::Write(format!("{}: {e}", parent.display())))?;
    }
    // Unstamped, under the model's own name (the check records the name it was made with) in a folder of its
    // own, removed with it.
    let scratch = tempfile::tempdir().map_err(|e| TeachError::Write(format!("a temporary folder: {e}")))?;
    let unstamped = scratch.path().join(out.file_name().unwrap_or(std::ffi::OsStr::new("taught.onnx")));
    embed::write_atomically(&unstamped, &bytes)?;
    // The check: the taught model's own answers on this CPU for pictures of every class, recorded now and
    // verified wherever it is loaded.
    let stamped = (|| {
        let mut reference = Trunk::classifier(runtime, &unstamped)?;
        let mut candidate = Trunk::classifier(runtime, &unstamped)?;
        // As many golden inputs as `camclassd stamp` keeps by default (each costs an inference at every
        // load), the surest of up to 6 times as many candidates.
        let picks = spread(images, 6 * GOLDEN_INPUTS);
        let request = crate::check::StampRequest {
            images: &picks,
            count: GOLDEN_INPUTS.min(picks.len()).max(crate::check::MIN_INPUTS),
            min_cosine: crate::check::DEFAULT_MIN_COSINE,
        };
        let (set, _) = crate::check::build(&mut reference, &mut candidate, &request)
            .map_err(|e| TeachError::Write(format!("its check: {e}")))?;
        crate::check::stamp(&bytes, &set.to_metadata()).map_err(|e| TeachError::Write(e.to_string()))
    })();
    drop(scratch);
    match stamped {
        Ok(stamped) => embed::write_atomically(out, &stamped).map(|()| None),
        // Too few pictures the model is sure of (a few per class, a strong regularisation): the model is
        // written all the same, and the report says what it lacks.
        Err(e) => {
            embed::write_atomically(out, &bytes)?;
            Ok(Some(format!(
                "no check stamped into the model ({e}): it works, but `camclassd verify` cannot vouch for its \
                 answers on another board; more pictures of each class give it one"
            )))
        }
    }
}

/// Up to `count` of `items`, spread evenly over them (the training pictures are by class: every class gets
/// its share).
fn spread(items: &[PathBuf], count: usize) -> Vec<PathBuf> {
    if items.len() <= count {
        return items.to_vec();
    }
    (0..count).map(|i| items[i * items.len() / count].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proposed_threshold_is_the_lowest_whose_answers_are_trusted() {
        // Right when sure, wrong at 0.6: the answers from 0.65 on are all right.
        let held_out = vec![vec![0.9, 0.1], vec![0.2, 0.8], vec![0.6, 0.4], vec![0.7, 0.3], vec![0.55, 0.45]];
        let y = [0, 1, 1, 0, 0];
        let (t, coverage, accuracy) = propose_threshold(&held_out, &y);
        assert!((t - 0.65).abs() < 1e-9 && accuracy == 1.0, "{t} {accuracy}");
        assert!((coverage - 0.6).abs() < 1e-9, "{coverage}");
        // Every answer right: the lowest, 0.5.
        assert_eq!(propose_threshold(&held_out[..2], &y[..2]).0, 0.5);
    }

    #[test]
    fn the_interval_says_how_little_a_few_pictures_prove() {
        let [lo, hi] = wilson(10, 10);
        assert!((lo - 0.722).abs() < 0.001 && hi == 1.0, "{lo} {hi}");
        let [lo, hi] = wilson(190, 200);
        assert!(lo > 0.90 && hi < 0.98, "{lo} {hi}");
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
    }
}
