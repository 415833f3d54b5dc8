//! Postprocessing: raw scores → probabilities → the top-k classes above a minimum score.
//!
//! Pure functions over slices; [`Postprocessor`] only keeps the buffers so that a stream of frames
//! allocates nothing after the first.

use crate::model::spec::OutputKind;

/// One ranked class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub class_id: usize,
    pub score: f32,
}

/// The result for one image: classes in descending score order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classification {
    pub top: Vec<Scored>,
}

impl Classification {
    pub fn best(&self) -> Option<Scored> {
        self.top.first().copied()
    }
}

/// The label of a class, or `class_<id>` when the model has none for it.
pub fn label(labels: &[String], class_id: usize) -> std::borrow::Cow<'_, str> {
    match labels.get(class_id) {
        Some(l) => std::borrow::Cow::Borrowed(l.as_str()),
        None => std::borrow::Cow::Owned(format!("class_{class_id}")),
    }
}

/// Numerically stable softmax, in place.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        x.iter_mut().for_each(|v| *v /= sum);
    }
}

/// True when the vector is a probability distribution as a quantized softmax computes one: every value in
/// [0, 1] and the sum within 5 % of 1 (a uint8 softmax over 1000 classes on a near-uniform input can miss 1
/// by a few percent; logits almost always hold a negative value). Used once per model, at load.
pub fn looks_like_probabilities(x: &[f32]) -> bool {
    let mut sum = 0.0f64;
    for &v in x {
        if !(0.0..=1.0).contains(&v) {
            return false;
        }
        sum += f64::from(v);
    }
    !x.is_empty() && (sum - 1.0).abs() < 5e-2
}

/// Writes the `k` best entries (score ≥ `min_score`, NaN never) into `out`, best first; ties keep the lower id.
pub fn top_k(scores: &[f32], k: usize, min_score: f32, out: &mut Vec<Scored>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (class_id, &score) in scores.iter().enumerate() {
        if score.is_nan() || score < min_score {
            continue;
        }
        if out.len() == k && out.last().is_some_and(|last| score <= last.score) {
            continue;
        }
        // Insertion into a short sorted list: k is small (1..10), the scores are many.
        let at = out.iter().position(|s| score > s.score).unwrap_or(out.len());
        if out.len() == k {
            out.pop();
        }
        out.insert(at, Scored { class_id, score });
    }
}

/// As [`top_k`] with a threshold per class (`thresholds[class_id]`; a class beyond the slice is never
/// reported, `f32::INFINITY` leaves a class out): a region's allow-list and per-class thresholds.
pub fn top_k_thresholds(scores: &[f32], k: usize, thresholds: &[f32], out: &mut Vec<Scored>) {
    out.clear();
    if k == 0 {
        return;
    }
    for ((class_id, &score), &min) in scores.iter().enumerate().zip(thresholds) {
        if score.is_nan() || score < min {
            continue;
        }
        if out.len() == k && out.last().is_some_and(|last| score <= last.score) {
            continue;
        }
        let at = out.iter().position(|s| score > s.score).unwrap_or(out.len());
        if out.len() == k {
            out.pop();
        }
        out.insert(at, Scored { class_id, score });
    }
}

/// Reusable postprocessing for one model.
#[derive(Debug)]
pub struct Postprocessor {
    output: OutputKind,
    top_k: usize,
    min_score: f32,
    probabilities: Vec<f32>,
}

impl Postprocessor {
    pub fn new(output: OutputKind, top_k: usize, min_score: f32) -> Postprocessor {
        Postprocessor { output, top_k, min_score, probabilities: Vec::new() }
    }

    /// Scores of one image → `result` (its buffer reused).
    pub fn process(&mut self, scores: &[f32], result: &mut Classification) {
        self.probabilities.clear();
        self.probabilities.extend_from_slice(scores);
        let apply_softmax = match self.output {
            OutputKind::Probabilities => false,
            // `Auto` is resolved when the model loads (OutputKind::resolve); unresolved, softmax is the safe
            // side: it keeps the ranking of scores that already were probabilities.
            OutputKind::Logits | OutputKind::Auto => true,
        };
        if apply_softmax {
            softmax_in_place(&mut self.probabilities);
        }
        top_k(&self.probabilities, self.top_k, self.min_score, &mut result.top);
    }

    /// The full probability vector of the last image.
    pub fn probabilities(&self) -> &[f32] {
        &self.probabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_thresholds_and_left_out_classes() {
        let scores = [0.05, 0.6, 0.3, 0.05];
        let mut out = Vec::new();
        // Class 1 needs 0.8: left out; class 2 passes 0.2; class 3 is not allowed.
        top_k_thresholds(&scores, 5, &[0.0, 0.8, 0.2, f32::INFINITY], &mut out);
        assert_eq!(out, vec![Scored { class_id: 2, score: 0.3 }, Scored { class_id: 0, score: 0.05 }]);
        top_k_thresholds(&scores, 1, &[0.0; 4], &mut out);
        assert_eq!(out, vec![Scored { class_id: 1, score: 0.6 }]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = [1.0, 2.0, 3.0, 12.0];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.999 && x[0] < x[1] && x[1] < x[2]);
        // Large logits must not overflow.
        let mut big = [1000.0f32, 999.0];
        softmax_in_place(&mut big);
        assert!((big[0] - 0.7311).abs() < 1e-3, "{big:?}");
        let mut y = [0.0f32, 0.0];
        softmax_in_place(&mut y);
        assert_eq!(y, [0.5, 0.5]);
    }

    #[test]
    fn top_k_orders_filters_and_breaks_ties_by_id() {
        let mut out = Vec::new();
        top_k(&[0.1, 0.5, f32::NAN, 0.3, 0.5, 0.05], 3, 0.0, &mut out);
        let ids: Vec<_> = out.iter().map(|s| s.class_id).collect();
        assert_eq!(ids, vec![1, 4, 3]);
        top_k(&[0.1, 0.5, 0.3], 5, 0.2, &mut out);
        assert_eq!(out, vec![Scored { class_id: 1, score: 0.5 }, Scored { class_id: 2, score: 0.3 }]);
        top_k(&[0.1], 0, 0.0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn output_kind_decides_softmax() {
        let mut r = Classification::default();
        let probs = [0.7, 0.2, 0.1];
        Postprocessor::new(OutputKind::Probabilities, 1, 0.0).process(&probs, &mut r);
        assert_eq!(r.best(), Some(Scored { class_id: 0, score: 0.7 }));
        Postprocessor::new(OutputKind::Logits, 1, 0.0).process(&probs, &mut r);
        assert!(r.best().is_some_and(|b| b.score < 0.5));
        Postprocessor::new(OutputKind::Logits, 2, 0.0).process(&[5.0, -1.0, 2.0], &mut r);
        assert_eq!(r.top.iter().map(|s| s.class_id).collect::<Vec<_>>(), vec![0, 2]);
        assert!((r.top[0].score - 0.9503).abs() < 1e-3);
    }

    #[test]
    fn auto_output_is_decided_once_for_the_model_not_per_frame() {
        // A logits model (its warm-up scores are no distribution) that meets a frame whose logits happen to
        // lie in [0, 1] and sum to 1: before, that frame alone skipped softmax and reported 70 % where the
        // model's softmax says 45 %.
        let kind = OutputKind::Auto.resolve(&[3.2, -1.0, 0.4]);
        assert_eq!(kind, OutputKind::Logits);
        let mut r = Classification::default();
        let mut post = Postprocessor::new(kind, 1, 0.0);
        post.process(&[0.7, 0.2, 0.1], &mut r);
        assert!(r.best().is_some_and(|b| (b.score - 0.4640).abs() < 1e-3), "{r:?}");
        // A model whose warm-up output is a distribution is a probabilities model, for every frame.
        assert_eq!(OutputKind::Auto.resolve(&[0.25, 0.25, 0.5]), OutputKind::Probabilities);
        // A uint8 softmax whose values sum to 0.97 is still a probabilities model.
        assert_eq!(OutputKind::Auto.resolve(&[0.25, 0.25, 0.47]), OutputKind::Probabilities);
        assert_eq!(OutputKind::Logits.resolve(&[0.25, 0.25, 0.5]), OutputKind::Logits);
    }
}
