//! `camclassd compare A B`: do two models give the same answers on the same pictures?
//!
//! Both models run through the same pipeline code as the daemon (each with its own recipe from its
//! metadata); the report gives top-1 agreement, top-k containment, the probability error statistics, the
//! images where the top-1s differ and which classes disagree most. `--fail-below` turns it into a CI gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pipeline::Classifier;
use crate::preprocess::Frame;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("the models are not comparable: {0}")]
    Incompatible(String),
    #[error("no images to compare: {0}")]
    NoImages(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Top1 {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub image: String,
    pub a: Top1,
    pub b: Top1,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDisagreement {
    /// Model A's top-1 class.
    pub class_id: usize,
    pub label: String,
    /// Images where A said this class and B said something else.
    pub disagreements: usize,
    pub of: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ErrorStats {
    pub max_abs: f64,
    pub mean_abs: f64,
    pub p99_abs: f64,
    pub cosine_mean: f64,
    pub cosine_min: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub model_a: String,
    pub model_b: String,
    pub images: usize,
    pub failed: Vec<String>,
    pub top1_agreement_pct: f64,
    pub top1_agree: usize,
    pub top_k: usize,
    /// A's top-1 among B's top-k.
    pub topk_containment_pct: f64,
    pub probability_error: ErrorStats,
    pub differences: Vec<Difference>,
    pub classes: Vec<ClassDisagreement>,
    /// Set when the two models preprocess differently (then each gets its own recipe).
    pub preprocessing_note: Option<String>,
}

/// Absolute-difference and cosine statistics over pairs of probability vectors (pure).
pub fn error_stats(pairs: &[(Vec<f32>, Vec<f32>)]) -> ErrorStats {
    let mut diffs: Vec<f64> = Vec::new();
    let mut cosines = Vec::new();
    for (a, b) in pairs {
        diffs.extend(a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs()));
        cosines.push(crate::check::cosine(a, b));
    }
    if diffs.is_empty() {
        return ErrorStats::default();
    }
    diffs.sort_by(f64::total_cmp);
    let p99 = diffs[((diffs.len() as f64 * 0.99) as usize).min(diffs.len() - 1)];
    ErrorStats {
        max_abs: diffs[diffs.len() - 1],
        mean_abs: diffs.iter().sum::<f64>() / diffs.len() as f64,
        p99_abs: p99,
        cosine_mean: cosines.iter().sum::<f64>() / cosines.len() as f64,
        cosine_min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
    }
}

fn rank(probabilities: &[f32], k: usize) -> Vec<usize> {
    let mut top = Vec::new();
    crate::postprocess::top_k(probabilities, k, f32::NEG_INFINITY, &mut top);
    top.into_iter().map(|s| s.class_id).collect()
}

/// Runs both classifiers over the images and builds the report.
pub fn compare(
    a: &mut Classifier,
    b: &mut Classifier,
    images: &[PathBuf],
    top_k: usize,
) -> Result<Report, CompareError> {
    let (na, nb) = (a.model().num_classes(), b.model().num_classes());
    if na != nb {
        return Err(CompareError::Incompatible(format!(
            "{} has {na} output classes, {} has {nb}",
            a.model().path().display(),
            b.model().path().display()
        )));
    }
    if images.is_empty() {
        return Err(CompareError::NoImages("the list is empty".into()));
    }
    let preprocessing_note = {
        let (sa, sb) = (a.model().spec(), b.model().spec());
        let recipe = |s: &crate::model::ModelSpec| {
            (s.layout, s.channel_order, s.input_size, s.resize, s.crop, s.interpolation, s.mean, s.std)
        };
        (recipe(sa) != recipe(sb)).then(|| format!("preprocessing differs: A {:?}, B {:?}", recipe(sa), recipe(sb)))
    };

    let mut pairs = Vec::new();
    let mut failed = Vec::new();
    let mut differences = Vec::new();
    let (mut agree, mut contained) = (0, 0);
    let mut per_class: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for image in images {
        let bytes = match std::fs::read(image) {
            Ok(b) => b,
            Err(e) => {
                failed.push(format!("{}: {e}", image.display()));
                continue;
            }
        };
        let pa = match a.classify(Frame::Encoded(&bytes)) {
            Ok(_) => a.probabilities().to_vec(),
            Err(e) => {
                failed.push(format!("{}: {e}", image.display()));
                continue;
            }
        };
        let pb = match b.classify(Frame::Encoded(&bytes)) {
            Ok(_) => b.probabilities().to_vec(),
            Err(e) => {
                failed.push(format!("{}: {e}", image.display()));
                continue;
            }
        };
        let (ta, tb) = (rank(&pa, 1)[0], rank(&pb, top_k.max(1)));
        let entry = per_class.entry(ta).or_default();
        entry.1 += 1;
        if ta == tb[0] {
            agree += 1;
        } else {
            entry.0 += 1;
            let top1 = |c: &Classifier, p: &[f32], id: usize| Top1 {
                class_id: id,
                label: c.model().label(id).into_owned(),
                score: p[id],
            };
            differences.push(Difference {
                image: image.display().to_string(),
                a: top1(a, &pa, ta),
                b: top1(b, &pb, tb[0]),
            });
        }
        if tb.contains(&ta) {
            contained += 1;
        }
        pairs.push((pa, pb));
    }
    if pairs.is_empty() {
        return Err(CompareError::NoImages(format!(
            "none of the {} images could be classified:\n  {}",
            images.len(),
            failed.join("\n  ")
        )));
    }
    let n = pairs.len();
    let mut classes: Vec<ClassDisagreement> = per_class
        .into_iter()
        .filter(|(_, (d, _))| *d > 0)
        .map(|(id, (d, of))| ClassDisagreement {
            class_id: id,
            label: a.model().label(id).into_owned(),
            disagreements: d,
            of,
        })
        .collect();
    classes.sort_by(|x, y| y.disagreements.cmp(&x.disagreements).then(x.class_id.cmp(&y.class_id)));
    Ok(Report {
        model_a: a.model().path().display().to_string(),
        model_b: b.model().path().display().to_string(),
        images: n,
        failed,
        top1_agreement_pct: 100.0 * agree as f64 / n as f64,
        top1_agree: agree,
        top_k,
        topk_containment_pct: 100.0 * contained as f64 / n as f64,
        probability_error: error_stats(&pairs),
        differences,
        classes,
        preprocessing_note,
    })
}

/// The image files in a folder (JPEG/PNG, name order), or the files given.
pub fn image_list(folder: Option<&Path>, files: &[PathBuf]) -> Result<Vec<PathBuf>, CompareError> {
    let mut list = files.to_vec();
    if let Some(dir) = folder {
        let found = crate::capture::replay::list(&dir.display().to_string()).map_err(CompareError::NoImages)?;
        list.extend(found.into_iter().filter(|p| {
            !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("mjpeg") || e.eq_ignore_ascii_case("mjpg"))
        }));
    }
    Ok(list)
}

pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "A: {}\nB: {}", r.model_a, r.model_b);
    if let Some(note) = &r.preprocessing_note {
        let _ = writeln!(o, "note: {note}");
    }
    let _ = writeln!(o, "images            {} ({} failed)", r.images, r.failed.len());
    let _ = writeln!(o, "top-1 agreement   {:.1} % ({}/{})", r.top1_agreement_pct, r.top1_agree, r.images);
    let _ = writeln!(o, "A top-1 in B top-{} {:.1} %", r.top_k, r.topk_containment_pct);
    let e = &r.probability_error;
    let _ = writeln!(o, "|pA - pB|         max {:.5}, mean {:.6}, P99 {:.5}", e.max_abs, e.mean_abs, e.p99_abs);
    let _ = writeln!(o, "cosine            mean {:.6}, min {:.6}", e.cosine_mean, e.cosine_min);
    if !r.differences.is_empty() {
        let _ = writeln!(o, "top-1 differs on:");
        for d in &r.differences {
            let _ = writeln!(
                o,
                "  {}  A {} {} ({:.3})  B {} {} ({:.3})",
                d.image, d.a.class_id, d.a.label, d.a.score, d.b.class_id, d.b.label, d.b.score
            );
        }
        let _ = writeln!(o, "disagreements by A's class:");
        for c in &r.classes {
            let _ = writeln!(o, "  {:>4} {:<30} {}/{}", c.class_id, c.label, c.disagreements, c.of);
        }
    }
    for f in &r.failed {
        let _ = writeln!(o, "failed: {f}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_vectors_have_no_error_and_cosine_one() {
        let v = vec![0.7f32, 0.2, 0.1];
        let s = error_stats(&[(v.clone(), v)]);
        assert_eq!((s.max_abs, s.mean_abs, s.p99_abs), (0.0, 0.0, 0.0));
        assert!((s.cosine_mean - 1.0).abs() < 1e-12 && (s.cosine_min - 1.0).abs() < 1e-12);
    }

    #[test]
    fn error_statistics_are_computed_over_all_values() {
        let s = error_stats(&[(vec![1.0, 0.0], vec![0.0, 1.0]), (vec![0.5, 0.5], vec![0.5, 0.5])]);
        assert_eq!(s.max_abs, 1.0);
        assert!((s.mean_abs - 0.5).abs() < 1e-12);
        assert!((s.cosine_min - 0.0).abs() < 1e-12 && (s.cosine_mean - 0.5).abs() < 1e-12);
    }
}
