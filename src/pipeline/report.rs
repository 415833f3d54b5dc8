//! What classifying one picture answers, as `camclassd classify --json` prints it and `POST
//! /api/v1/classify` returns it: the best classes named, the classes on, the time each stage took.

use serde::Serialize;

use super::Timings;

/// One class in a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabeledScore {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingMs {
    pub decode: f64,
    pub preprocess: f64,
    pub infer: f64,
}

impl From<Timings> for TimingMs {
    fn from(t: Timings) -> Self {
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        TimingMs { decode: ms(t.decode), preprocess: ms(t.preprocess), infer: ms(t.infer + t.postprocess) }
    }
}

/// The result for one image (the `--json` line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageReport {
    pub image: String,
    /// The execution provider the session runs on (`cpu` after a fallback from a GPU provider).
    pub provider: String,
    pub top: Vec<LabeledScore>,
    /// Multi-label models (or thresholds given): every class at or over its threshold (0.5 unless
    /// `--threshold` says otherwise), best first, possibly none; for a single-label model, its best class
    /// when that reaches its threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<LabeledScore>>,
    pub timing_ms: TimingMs,
    /// Every class's probability, in class order (`--scores`): for evaluating a model outside camclassd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f32>>,
}

impl ImageReport {
    /// The report of one picture: `top` (and `on` when given) named with `model`'s labels.
    pub fn new(
        image: String,
        model: &crate::model::Model,
        top: Vec<crate::postprocess::Scored>,
        on: Option<Vec<crate::postprocess::Scored>>,
        timings: Timings,
        scores: Option<Vec<f32>>,
    ) -> ImageReport {
        let labeled = |scored: Vec<crate::postprocess::Scored>| -> Vec<LabeledScore> {
            scored
                .into_iter()
                .map(|s| LabeledScore {
                    class_id: s.class_id,
                    label: model.label(s.class_id).into_owned(),
                    score: s.score,
                })
                .collect()
        };
        ImageReport {
            image,
            provider: model.provider().to_string(),
            top: labeled(top),
            on: on.map(labeled),
            timing_ms: timings.into(),
            scores,
        }
    }
}
