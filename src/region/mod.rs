//! Regions: the questions asked of a camera's frames. A region is (camera, crop, model, publish policy,
//! per-class thresholds); a camera without `[[cameras.regions]]` has one, the whole frame with the default
//! model, published on the camera's own topics.
//!
//! Pure: [`plan`] turns the config and the loaded models' classes into each camera's regions, or every
//! problem found (a threshold or allow-listed class the model does not have, an `on_class` of a model
//! without two classes), each with its config key; a [`Gate`] decides, frame by frame, whether a region is
//! classified (placement, `classify_every`, the motion gate).

mod gate;

use std::time::Duration;

pub use gate::{Gate, Placement, REPORTED_SIZES, Verdict};

use crate::config::{CameraConfig, Config, PublishMode, RegionConfig};
use crate::events::Policy;
use crate::postprocess::{Ask, DEFAULT_MULTI_LABEL_THRESHOLD, Floors, Thresholds, label};
use crate::preprocess::CropSpec;

/// What a region needs to know of a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The config's name for it (`default`, or a `[[models]]` name).
    pub name: String,
    pub labels: Vec<String>,
    pub num_classes: usize,
    /// The score its answers need, proposed by its training ([`crate::model::ModelSpec::threshold`]): the
    /// default threshold of its classes in the regions that ask it, over `[model] min_score`.
    pub threshold: Option<f32>,
    /// A model taught on the board that has not been trained yet: its regions keep samples and publish
    /// nothing (`labels` are the config's classes).
    pub untrained: bool,
}

/// A two-class region as a Home Assistant `binary_sensor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// The label that means ON; the other class means OFF.
    pub on: String,
    pub off: String,
    pub device_class: Option<String>,
}

/// One region, ready to run.
#[derive(Debug, Clone)]
pub struct Region {
    /// `None`: the camera's whole-frame region (v1 topics and events).
    pub name: Option<String>,
    /// Index into the models given to [`plan`].
    pub model: usize,
    pub crop: Option<CropSpec>,
    pub policy: Policy,
    /// Per class, the score it needs to be reported; `f32::INFINITY` for a class outside the allow-list.
    pub thresholds: Vec<f32>,
    /// Per class, the probability it needs to be "on" in a multi-label model's answer: the region's
    /// `thresholds`, with [`DEFAULT_MULTI_LABEL_THRESHOLD`] for classes they leave to the default; never for
    /// a class outside the allow-list.
    pub on: Thresholds,
    /// Classify at most this often (zero: every frame).
    pub classify_every: Duration,
    pub binary: Option<Binary>,
    pub snapshot: Option<Snapshot>,
    pub motion: Option<Motion>,
    /// Its model is a taught one not trained yet: never classified, only sampled.
    pub untrained: bool,
}

impl Region {
    /// What this region asks of its model's probabilities: the `top_k` classes over its per-class
    /// thresholds (its allow-list), and for a multi-label model the classes on at its thresholds.
    pub fn ask(&self, top_k: usize, multi_label: bool) -> Ask<'_> {
        Ask { top_k, floors: Floors::PerClass(&self.thresholds), on: multi_label.then_some(&self.on) }
    }
}

/// A region's motion gate: inference is skipped while the picture stands still.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// Mean absolute difference of the grey thumbnails, a fraction of full scale, below which the region
    /// is not classified again.
    pub threshold: f32,
    /// Classified anyway after this long.
    pub max_skip: Duration,
}

/// A region's snapshots: a JPEG with each change event and `snapshot` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The longest side at most (never enlarged).
    pub size: u32,
    /// The whole frame with the region's box drawn, instead of the region alone.
    pub frame: bool,
}

/// A config problem found once the models are loaded: its key and what is wrong.
pub type Problem = (String, String);

/// Every camera's regions, in config order, with `models` loaded in the order the indices refer to;
/// `min_score` is `[model] min_score`, the classes' default threshold.
pub fn plan(config: &Config, models: &[ModelInfo]) -> Result<Vec<Vec<Region>>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut cameras = Vec::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        let mut regions = Vec::new();
        if cam.regions.is_empty() {
            let model = models.iter().position(|m| m.name == crate::config::DEFAULT_MODEL).unwrap_or(0);
            let min_score = models.get(model).and_then(|m| m.threshold).unwrap_or(config.model.min_score);
            regions.push(Region {
                name: None,
                model,
                crop: None,
                policy: policy(cam, None, min_score),
                thresholds: vec![min_score; models.get(model).map_or(0, |m| m.num_classes)],
                on: Thresholds::uniform(DEFAULT_MULTI_LABEL_THRESHOLD),
                classify_every: Duration::ZERO,
                binary: None,
                snapshot: cam.snapshot.then_some(Snapshot { size: cam.snapshot_size, frame: false }),
                motion: None,
                untrained: false,
            });
        }
        for (j, r) in cam.regions.iter().enumerate() {
            let key = format!("cameras[{i}].regions[{j}]");
            let Some(model) = models.iter().position(|m| m.name == r.model) else {
                problems.push((format!("{key}.model"), format!("unknown model {:?}", r.model)));
                continue;
            };
            let info = &models[model];
            // A taught model's proposed threshold, else `[model] min_score`; the region's keys win over both.
            let min_score = info.threshold.unwrap_or(config.model.min_score);
            let thresholds = match thresholds(info, r, min_score) {
                Ok(t) => t,
                Err(found) => {
                    problems.extend(found.into_iter().map(|(k, m)| (format!("{key}.{k}"), m)));
                    continue;
                }
            };
            // The same keys, so the same problems (none): only the default differs.
            let on =
                self::thresholds(info, r, DEFAULT_MULTI_LABEL_THRESHOLD).map(|t| on_thresholds(&t)).unwrap_or_default();
            let binary = match binary(info, r) {
                Ok(b) => b,
                Err((k, m)) => {
                    problems.push((format!("{key}.{k}"), m));
                    continue;
                }
            };
            regions.push(Region {
                name: Some(r.name.clone()),
                model,
                crop: r.crop.map(CropSpec),
                policy: policy(cam, Some(r), min_score),
                thresholds,
                on,
                classify_every: Duration::from_secs_f64(r.classify_every.max(0.0)),
                binary,
                snapshot: r.snapshot.then_some(Snapshot { size: r.snapshot_size, frame: r.snapshot_frame }),
                motion: r
                    .motion_threshold
                    .map(|t| Motion { threshold: t as f32, max_skip: Duration::from_secs_f64(r.max_skip.max(0.0)) }),
                untrained: info.untrained,
            });
        }
        cameras.push(regions);
    }
    if problems.is_empty() { Ok(cameras) } else { Err(problems) }
}

/// A region's publish policy: its own keys, else its camera's.
fn policy(camera: &CameraConfig, region: Option<&RegionConfig>, default_min_score: f32) -> Policy {
    let publish = region.and_then(|r| r.publish).unwrap_or(camera.publish);
    let debounce = region.and_then(|r| r.debounce).unwrap_or(camera.debounce);
    let interval = region.and_then(|r| r.interval).unwrap_or(camera.interval);
    let min_score = region.and_then(|r| r.min_score).or(camera.min_score).unwrap_or(default_min_score);
    match publish {
        PublishMode::EveryFrame => Policy::EveryFrame,
        PublishMode::OnChange => Policy::OnChange {
            debounce,
            heartbeat: (interval > 0.0).then(|| Duration::from_secs_f64(interval)),
            min_score,
        },
    }
}

/// The model's class names, as thresholds and allow-lists name them.
fn class_names(model: &ModelInfo) -> Vec<String> {
    (0..model.num_classes).map(|c| label(&model.labels, c).into_owned()).collect()
}

fn no_such_class(model: &ModelInfo, names: &[String], class: &str) -> String {
    let mut list: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    if names.len() > 10 {
        list.push(format!("… ({} in all; camclassd inspect lists them)", names.len()));
    }
    format!("model {:?} has no class {class:?}; its classes: {}", model.name, list.join(", "))
}

/// Per class, the score it needs: `thresholds[label]`, else `thresholds["*"]`, else `default`; a class left
/// out of `classes` is never reported.
pub fn thresholds(model: &ModelInfo, region: &RegionConfig, default: f32) -> Result<Vec<f32>, Vec<Problem>> {
    let names = class_names(model);
    let mut problems = Vec::new();
    for class in region.thresholds.keys().filter(|k| *k != "*") {
        if !names.contains(class) {
            problems.push((format!("thresholds.{class}"), no_such_class(model, &names, class)));
        }
    }
    for (n, class) in region.classes.iter().flatten().enumerate() {
        if !names.contains(class) {
            problems.push((format!("classes[{n}]"), no_such_class(model, &names, class)));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let fallback = region.thresholds.get("*").copied().unwrap_or(default);
    Ok(names
        .iter()
        .map(|name| {
            let allowed = region.classes.as_ref().is_none_or(|c| c.contains(name));
            if allowed { region.thresholds.get(name).copied().unwrap_or(fallback) } else { f32::INFINITY }
        })
        .collect())
}

/// Per-class thresholds as [`crate::postprocess::classes_on`] reads them.
fn on_thresholds(per_class: &[f32]) -> Thresholds {
    per_class
        .iter()
        .enumerate()
        .fold(Thresholds::uniform(DEFAULT_MULTI_LABEL_THRESHOLD), |t, (class, &p)| t.with_class(class, p))
}

/// The `binary_sensor` of a region with `on_class`: the model must have exactly two classes.
fn binary(model: &ModelInfo, region: &RegionConfig) -> Result<Option<Binary>, Problem> {
    let Some(on) = &region.on_class else { return Ok(None) };
    let names = class_names(model);
    if names.len() != 2 {
        return Err((
            "on_class".into(),
            format!("a binary_sensor needs a model with two classes; model {:?} has {}", model.name, names.len()),
        ));
    }
    let Some(at) = names.iter().position(|n| n == on) else {
        return Err(("on_class".into(), no_such_class(model, &names, on)));
    };
    Ok(Some(Binary { on: on.clone(), off: names[1 - at].clone(), device_class: region.device_class.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(regions: &str) -> Config {
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\nmin_score = 0.1\n[[cameras]]\nname = \"garage\"\nsource = \"0\"\n{regions}"
        );
        Config::parse(&text).expect("valid")
    }

    fn doors() -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: "default".into(),
            labels: vec!["closed".into(), "open".into()],
            num_classes: 2,
            threshold: None,
            untrained: false,
        }]
    }

    #[test]
    fn a_camera_without_regions_has_the_whole_frame() {
        let plan = plan(&config(""), &doors()).expect("plans");
        assert_eq!(plan[0].len(), 1);
        let r = &plan[0][0];
        assert_eq!((r.name.as_deref(), r.crop, r.model), (None, None, 0));
        assert_eq!(r.thresholds, vec![0.1, 0.1]);
        assert_eq!(r.snapshot, None);
        let plan = super::plan(&config("snapshot = true\nsnapshot_size = 320\n"), &doors()).expect("plans");
        assert_eq!(plan[0][0].snapshot, Some(Snapshot { size: 320, frame: false }));
    }

    #[test]
    fn thresholds_and_the_allow_list_become_one_threshold_per_class() {
        let c = config(
            "[[cameras.regions]]\nname = \"door\"\ncrop = [0.5, 0, 0.5, 1]\nthresholds = { open = 0.8, \"*\" = 0.5 }\n\
             on_class = \"open\"\ndevice_class = \"garage_door\"\n\
             [[cameras.regions]]\nname = \"only_open\"\nclasses = [\"open\"]\n",
        );
        let plan = plan(&c, &doors()).expect("plans");
        assert_eq!(plan[0][0].thresholds, vec![0.5, 0.8]);
        assert_eq!(plan[0][0].crop, Some(CropSpec([0.5, 0.0, 0.5, 1.0])));
        assert_eq!(
            plan[0][0].binary,
            Some(Binary { on: "open".into(), off: "closed".into(), device_class: Some("garage_door".into()) })
        );
        assert_eq!(plan[0][1].thresholds, vec![f32::INFINITY, 0.1]);
        // "On" (multi-label): the same thresholds, but 0.5 where they leave a class to the default.
        assert_eq!((plan[0][0].on.get(0), plan[0][0].on.get(1)), (0.5, 0.8));
        assert_eq!((plan[0][1].on.get(0), plan[0][1].on.get(1)), (f32::INFINITY, 0.5));
    }

    #[test]
    fn a_taught_models_proposed_threshold_is_its_regions_default() {
        let mut taught = doors();
        taught[0].threshold = Some(0.8);
        let c = config(
            "publish = \"on_change\"\n[[cameras.regions]]\nname = \"door\"\n\
             [[cameras.regions]]\nname = \"mine\"\nthresholds = { \"*\" = 0.6 }\nmin_score = 0.6\n",
        );
        let plan = plan(&c, &taught).expect("plans");
        assert_eq!(plan[0][0].thresholds, vec![0.8, 0.8], "the model's, over [model] min_score (0.1)");
        assert!(matches!(plan[0][0].policy, Policy::OnChange { min_score, .. } if min_score == 0.8));
        assert_eq!(plan[0][1].thresholds, vec![0.6, 0.6], "the region's own keys win");
        assert!(matches!(plan[0][1].policy, Policy::OnChange { min_score, .. } if min_score == 0.6));
        let whole = super::plan(&config(""), &taught).expect("plans");
        assert_eq!(whole[0][0].thresholds, vec![0.8, 0.8]);
    }

    #[test]
    fn classes_the_model_does_not_have_are_named_with_their_keys() {
        let c = config(
            "[[cameras.regions]]\nname = \"door\"\nthresholds = { ajar = 0.8 }\nclasses = [\"open\", \"shut\"]\n",
        );
        let problems = plan(&c, &doors()).expect_err("refused");
        assert_eq!(
            problems,
            vec![
                (
                    "cameras[0].regions[0].thresholds.ajar".to_string(),
                    "model \"default\" has no class \"ajar\"; its classes: \"closed\", \"open\"".to_string()
                ),
                (
                    "cameras[0].regions[0].classes[1]".to_string(),
                    "model \"default\" has no class \"shut\"; its classes: \"closed\", \"open\"".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_region_inherits_the_camera_policy_and_overrides_it() {
        let c = config(
            "debounce = 5\n[[cameras.regions]]\nname = \"a\"\n[[cameras.regions]]\nname = \"b\"\npublish = \"every_frame\"\n",
        );
        let plan = plan(&c, &doors()).expect("plans");
        assert!(matches!(plan[0][0].policy, Policy::OnChange { debounce: 5, .. }));
        assert_eq!(plan[0][1].policy, Policy::EveryFrame);
    }
}
