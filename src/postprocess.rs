//! Postprocessing: raw scores → probabilities → the top-k classes above a minimum score, and the classes
//! that are "on" at their thresholds.
//!
//! A single-label model (logits or probabilities) gives one distribution: its answer is the best class,
//! "on" when its probability reaches that class's threshold. A multi-label model (`sigmoid`,
//! `sigmoid_logits`) gives each class an independent probability: top-k lists classes by their own
//! probability, and every class at or over its own threshold is on (several, or none). [`Thresholds`]
//! holds a default and per-class values ([`Thresholds::from_named`] reads `{ open = 0.8, "*" = 0.5 }`).
//!
//! Pure functions over slices; [`Postprocessor`] only keeps the buffers so that a stream of frames
//! allocates nothing after the first.

use crate::config::model::OutputKind;

/// One ranked class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub class_id: usize,
    pub score: f32,
}

/// The result for one image: classes in descending score order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classification {
    /// The `top_k` best classes at or over `min_score`.
    pub top: Vec<Scored>,
    /// The classes at or over their threshold, best first ([`classes_on`]): for a multi-label model every
    /// such class, for a single-label model the best class when it reaches its threshold.
    pub on: Vec<Scored>,
    /// Each class an independent probability (a sigmoid model), not one distribution.
    pub multi_label: bool,
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

/// The threshold a multi-label class needs to be on when nothing else is configured.
pub const DEFAULT_MULTI_LABEL_THRESHOLD: f32 = 0.5;

/// Per-class thresholds with a default for the other classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    default: f32,
    /// Indexed by class id; `None` takes the default.
    per_class: Vec<Option<f32>>,
}

/// Why named thresholds cannot apply to a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("no class named {name:?} in the model's labels{}", hint(.known))]
    UnknownClass { name: String, known: Vec<String> },
    #[error("threshold {value} for {name:?} is not a probability between 0 and 1")]
    OutOfRange { name: String, value: f32 },
}

fn hint(known: &[String]) -> String {
    match known.len() {
        0 => " (the model has no labels: name classes class_0, class_1, …)".into(),
        1..=8 => format!(" (its classes: {})", known.join(", ")),
        n => format!(" ({n} classes, e.g. {}, …)", known[..4].join(", ")),
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::uniform(DEFAULT_MULTI_LABEL_THRESHOLD)
    }
}

impl Thresholds {
    /// The same threshold for every class.
    pub fn uniform(threshold: f32) -> Thresholds {
        Thresholds { default: threshold, per_class: Vec::new() }
    }

    /// `class_id` gets its own threshold.
    pub fn with_class(mut self, class_id: usize, threshold: f32) -> Thresholds {
        if self.per_class.len() <= class_id {
            self.per_class.resize(class_id + 1, None);
        }
        self.per_class[class_id] = Some(threshold);
        self
    }

    /// From class names (as the labels spell them, every class of that name; or `class_<id>`) and values;
    /// `"*"` sets the default, which is `default` otherwise. Unknown names are errors that list the classes.
    pub fn from_named<'a>(
        labels: &[String],
        named: impl IntoIterator<Item = (&'a str, f32)>,
        default: f32,
    ) -> Result<Thresholds, ThresholdError> {
        let mut thresholds = Thresholds::uniform(default);
        for (name, value) in named {
            if !(0.0..=1.0).contains(&value) {
                return Err(ThresholdError::OutOfRange { name: name.to_string(), value });
            }
            if name == "*" {
                thresholds.default = value;
                continue;
            }
            // Every class of that name: labels repeat (ImageNet has two "missile" classes).
            let mut found = false;
            for (id, _) in labels.iter().enumerate().filter(|(_, l)| *l == name) {
                thresholds = thresholds.with_class(id, value);
                found = true;
            }
            if found {
                continue;
            }
            let id = match name.strip_prefix("class_").and_then(|n| n.parse::<usize>().ok()) {
                Some(id) if labels.is_empty() || id < labels.len() => id,
                _ => {
                    return Err(ThresholdError::UnknownClass { name: name.to_string(), known: labels.to_vec() });
                }
            };
            thresholds = thresholds.with_class(id, value);
        }
        Ok(thresholds)
    }

    /// The threshold of `class_id`.
    pub fn get(&self, class_id: usize) -> f32 {
        self.per_class.get(class_id).copied().flatten().unwrap_or(self.default)
    }

    pub fn default_threshold(&self) -> f32 {
        self.default
    }
}

/// Writes into `out` the classes that are on, best first (ties: lower id first). Multi-label: every class
/// whose probability reaches its threshold. Single-label: the best class, if it reaches its threshold.
/// NaN is never on. `out` keeps its capacity: no allocation once it has held every class.
pub fn classes_on(probabilities: &[f32], multi_label: bool, thresholds: &Thresholds, out: &mut Vec<Scored>) {
    out.clear();
    if multi_label {
        for (class_id, &score) in probabilities.iter().enumerate() {
            if score >= thresholds.get(class_id) {
                out.push(Scored { class_id, score });
            }
        }
        // Unstable sort: no buffer (a stable sort allocates); the id breaks ties, so the order is total.
        out.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.class_id.cmp(&b.class_id)));
    } else {
        let mut best: Option<Scored> = None;
        for (class_id, &score) in probabilities.iter().enumerate() {
            if !score.is_nan() && best.is_none_or(|b| score > b.score) {
                best = Some(Scored { class_id, score });
            }
        }
        if let Some(b) = best.filter(|b| b.score >= thresholds.get(b.class_id)) {
            out.push(b);
        }
    }
}

/// The logistic sigmoid, in place: each value on its own.
pub fn sigmoid_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 1.0 / (1.0 + (-*v).exp());
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
    top_k_by(scores, k, out, |_| Some(min_score));
}

/// As [`top_k`] with a threshold per class (`thresholds[class_id]`; a class beyond the slice is never
/// reported, `f32::INFINITY` leaves a class out): a region's allow-list and per-class thresholds.
pub fn top_k_thresholds(scores: &[f32], k: usize, thresholds: &[f32], out: &mut Vec<Scored>) {
    top_k_by(scores, k, out, |class_id| thresholds.get(class_id).copied());
}

/// The `k` best classes whose score reaches `min(class_id)`; `None` ends the scan (no class from there on).
fn top_k_by(scores: &[f32], k: usize, out: &mut Vec<Scored>, min: impl Fn(usize) -> Option<f32>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (class_id, &score) in scores.iter().enumerate() {
        let Some(min) = min(class_id) else { break };
        if score.is_nan() || score < min {
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

/// What is asked of a model's probabilities: the `top_k` classes at or over their floors, and the classes
/// "on" at their thresholds (`None`: none listed). A tool asks with `--top`, `--min-score` and
/// `--threshold`; a region with its own thresholds and allow-list ([`crate::region::Region::ask`]).
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub top_k: usize,
    pub floors: Floors<'a>,
    pub on: Option<&'a Thresholds>,
}

/// The score a class needs to be listed in the top classes.
#[derive(Debug, Clone, Copy)]
pub enum Floors<'a> {
    /// The same for every class (`min_score`).
    Uniform(f32),
    /// Per class (`f32::INFINITY`: never; a class beyond the slice: never), as [`top_k_thresholds`].
    PerClass(&'a [f32]),
}

/// Reusable postprocessing for one model.
#[derive(Debug)]
pub struct Postprocessor {
    output: OutputKind,
    top_k: usize,
    min_score: f32,
    thresholds: Thresholds,
    probabilities: Vec<f32>,
}

impl Postprocessor {
    /// Thresholds start at [`DEFAULT_MULTI_LABEL_THRESHOLD`] for a multi-label model and at `min_score`
    /// for a single-label one (whose best class is then on exactly when it is listed).
    pub fn new(output: OutputKind, top_k: usize, min_score: f32) -> Postprocessor {
        let thresholds =
            Thresholds::uniform(if output.is_multi_label() { DEFAULT_MULTI_LABEL_THRESHOLD } else { min_score });
        Postprocessor { output, top_k, min_score, thresholds, probabilities: Vec::new() }
    }

    /// Per-class thresholds for [`Classification::on`].
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Scores of one image → `result` (its buffers reused), with this postprocessor's own question: its
    /// top-k over `min_score`, its thresholds for the classes on.
    pub fn process(&mut self, scores: &[f32], result: &mut Classification) {
        self.convert(scores);
        let ask = Ask { top_k: self.top_k, floors: Floors::Uniform(self.min_score), on: Some(&self.thresholds) };
        self.answer(ask, result);
    }

    /// Scores of one image → probabilities, as the model's output kind says (softmax, sigmoid, or as
    /// they are), kept for [`Postprocessor::answer`].
    pub fn convert(&mut self, scores: &[f32]) {
        self.probabilities.clear();
        self.probabilities.extend_from_slice(scores);
        match self.output {
            OutputKind::Probabilities | OutputKind::Sigmoid => {}
            OutputKind::SigmoidLogits => sigmoid_in_place(&mut self.probabilities),
            // `Auto` is resolved when the model loads (OutputKind::resolve); unresolved, softmax is the safe
            // side: it keeps the ranking of scores that already were probabilities.
            OutputKind::Logits | OutputKind::Auto => softmax_in_place(&mut self.probabilities),
        }
    }

    /// The last converted image's answer to `ask` → `result` (its buffers reused): a region asks with its
    /// own thresholds and allow-list, once, from the same probabilities a tool's answer comes from.
    pub fn answer(&self, ask: Ask<'_>, result: &mut Classification) {
        match ask.floors {
            Floors::Uniform(min_score) => top_k(&self.probabilities, ask.top_k, min_score, &mut result.top),
            Floors::PerClass(floors) => top_k_thresholds(&self.probabilities, ask.top_k, floors, &mut result.top),
        }
        result.multi_label = self.output.is_multi_label();
        match ask.on {
            Some(thresholds) => {
                // Room for every class once, so that no later frame grows it.
                result.on.reserve(self.probabilities.len());
                classes_on(&self.probabilities, result.multi_label, thresholds, &mut result.on);
            }
            None => result.on.clear(),
        }
    }

    /// The full probability vector of the last image.
    pub fn probabilities(&self) -> &[f32] {
        &self.probabilities
    }
}

impl OutputKind {
    /// `Auto` decided from the model's warm-up output: a vector in [0, 1] summing to 1 is probabilities,
    /// anything else logits. Once per model, so a logits model whose scores for one frame happen to look
    /// like probabilities still gets its softmax on that frame.
    pub fn resolve(self, warm_up: &[f32]) -> OutputKind {
        match self {
            OutputKind::Auto if looks_like_probabilities(warm_up) => OutputKind::Probabilities,
            OutputKind::Auto => OutputKind::Logits,
            decided => decided,
        }
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
    fn sigmoid_outputs_are_independent_and_each_class_has_its_threshold() {
        let mut r = Classification::default();
        // Already sigmoid probabilities: kept as they are, ranked by their own value, not summing to 1.
        let mut post = Postprocessor::new(OutputKind::Sigmoid, 3, 0.0);
        post.process(&[0.9, 0.2, 0.7, 0.55, 0.1], &mut r);
        assert!(r.multi_label);
        assert_eq!(post.probabilities(), &[0.9, 0.2, 0.7, 0.55, 0.1]);
        assert_eq!(r.top.iter().map(|s| s.class_id).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(r.on.iter().map(|s| s.class_id).collect::<Vec<_>>(), vec![0, 2, 3], "default 0.5");
        // Per-class thresholds: class 0 needs 0.95, class 1 only 0.15, the rest 0.6.
        let labels: Vec<String> = ["open", "person", "car", "dog", "cat"].map(String::from).to_vec();
        let t = Thresholds::from_named(&labels, [("open", 0.95), ("person", 0.15), ("*", 0.6)], 0.5).expect("known");
        assert_eq!((t.get(0), t.get(1), t.get(4)), (0.95, 0.15, 0.6));
        post.set_thresholds(t);
        post.process(&[0.9, 0.2, 0.7, 0.55, 0.1], &mut r);
        assert_eq!(r.on, vec![Scored { class_id: 2, score: 0.7 }, Scored { class_id: 1, score: 0.2 }]);
        // Nothing on is a valid multi-label answer; the list still has room for every class, so that a
        // later frame with more classes on does not allocate (tests/alloc.rs).
        let mut fresh = Classification::default();
        post.process(&[0.0, 0.1, 0.2, 0.3, 0.4], &mut fresh);
        assert!(fresh.on.is_empty() && fresh.top.len() == 3);
        assert!(fresh.on.capacity() >= 5, "{}", fresh.on.capacity());
        // Raw logits: camclassd applies the sigmoid to each.
        let mut post = Postprocessor::new(OutputKind::SigmoidLogits, 2, 0.0);
        post.process(&[0.0, 2.0, -3.0], &mut r);
        let p = post.probabilities();
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.8808).abs() < 1e-4 && (p[2] - 0.0474).abs() < 1e-4, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() > 0.3, "independent, not a distribution");
        assert_eq!(r.on.iter().map(|s| s.class_id).collect::<Vec<_>>(), vec![1, 0], "0.5 is on at 0.5");
    }

    #[test]
    fn a_single_label_model_has_its_best_class_on_at_its_threshold() {
        let mut r = Classification::default();
        let mut post = Postprocessor::new(OutputKind::Probabilities, 2, 0.0);
        post.process(&[0.3, 0.6, 0.1], &mut r);
        assert!(!r.multi_label);
        assert_eq!(r.on, vec![Scored { class_id: 1, score: 0.6 }]);
        post.set_thresholds(Thresholds::uniform(0.5).with_class(1, 0.8));
        post.process(&[0.3, 0.6, 0.1], &mut r);
        assert!(r.on.is_empty(), "0.6 is under class 1's 0.8");
        post.process(&[0.7, 0.2, 0.1], &mut r);
        assert_eq!(r.on, vec![Scored { class_id: 0, score: 0.7 }]);
    }

    #[test]
    fn named_thresholds_refuse_unknown_classes_and_bad_values() {
        let labels: Vec<String> = ["closed", "open"].map(String::from).to_vec();
        let e = Thresholds::from_named(&labels, [("ajar", 0.5)], 0.5).expect_err("unknown");
        assert_eq!(e.to_string(), "no class named \"ajar\" in the model's labels (its classes: closed, open)");
        let e = Thresholds::from_named(&labels, [("open", 1.5)], 0.5).expect_err("range");
        assert!(e.to_string().contains("1.5"), "{e}");
        let t = Thresholds::from_named(&[], [("class_3", 0.9)], 0.5).expect("unlabelled model");
        assert_eq!((t.get(3), t.get(2)), (0.9, 0.5));
        let t = Thresholds::from_named(&labels, [("class_1", 0.9)], 0.5).expect("by id");
        assert_eq!((t.get(0), t.get(1)), (0.5, 0.9));
        assert!(Thresholds::from_named(&labels, [("class_2", 0.9)], 0.5).is_err(), "only 2 classes");
        // A name that several classes share applies to each.
        let repeated: Vec<String> = ["missile", "rocket", "missile"].map(String::from).to_vec();
        let t = Thresholds::from_named(&repeated, [("missile", 0.2)], 0.5).expect("known");
        assert_eq!((t.get(0), t.get(1), t.get(2)), (0.2, 0.5, 0.2));
        assert!(Thresholds::from_named(&[], [("open", 0.9)], 0.5).is_err());
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
