//! The one model-loading policy: **load → check on this CPU → fallback → region plan**, used by `camclassd
//! run` (start and reload), `check-config`, `classify` and the HTTP classify pool, so that they cannot
//! disagree about a config: what `check-config` passes, `run` loads.
//!
//! - Every model a camera uses is loaded: `[model]` (named `default`, always: its check describes the node)
//!   and each `[[models]]` entry some region names. A `[[models]]` entry no region names is not loaded (a
//!   warning says so, [`unused_models`]).
//! - `[model]`'s first session runs the model's own check ([`check::at_load`]); on a failure
//!   `on_check_failure` decides: refuse, warn, or serve `[model] fallback` instead. With `fallback`, the
//!   fallback is opened once even when the check passes, so that a broken fallback is found at start and not
//!   on the day it is needed.
//! - The regions are planned against the loaded models' classes ([`region::plan`]).
//!
//! Every problem is collected (not only the first) with the config key it is about, so that both `run` and
//! `check-config` print them all, each at its file:line:col ([`LoadError::located`]).

use std::path::{Path, PathBuf};

use crate::check::{self, CheckStatus, ModelCheck};
use crate::config::{Config, DEFAULT_MODEL};
use crate::model::{Model, ModelError, ModelOptions, Provider, runtime::Runtime};
use crate::pipeline::Classifier;
use crate::region::{self, ModelInfo, Problem, Region};

/// What the models are loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The cameras' sessions (`run`, reload, `bench --cameras`): the configured execution providers,
    /// `[model] workers` sessions of each model, each with its share of the cores.
    Cameras,
    /// Opened to be checked, not run (`check-config`, before every start under systemd): one session per
    /// model on the CPU with one thread and no placement profile. The file, interface, recipe, labels and
    /// regions do not depend on the provider; the check does, so it runs only when `run` would run it on
    /// the CPU too (a TensorRT session here would build or load its engine a second time).
    Preflight,
}

/// What the policy could not load: each problem with the config key it is about.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("\n"))]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

impl LoadError {
    fn one(key: impl Into<String>, message: impl std::fmt::Display) -> LoadError {
        LoadError { problems: vec![(key.into(), message.to_string())] }
    }

    /// Each problem on a line of its own, placed at its key in the config file `path` (`file:line:col: key:
    /// message`); a key the file does not spell (a default, a value from the model's metadata) is placed at
    /// its section's `path`, else at the file.
    pub fn located(&self, path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        self.problems.iter().map(|(key, message)| locate(&text, path, key, message)).collect::<Vec<_>>().join("\n")
    }
}

/// `file:line:col: key: message` for one problem (see [`LoadError::located`]).
pub fn locate(text: &str, path: &Path, key: &str, message: &str) -> String {
    let (place, key) = place(text, path, key);
    format!("{place}: {key}: {message}")
}

/// Where `key` is in the config file `path` (whose text is `text`): `file:line:col` of the key, else of its
/// section's `path` (a value from the model's metadata, a default), else the file alone; and the key placed.
pub fn place(text: &str, path: &Path, key: &str) -> (String, String) {
    let section_path = key.split_once('.').map(|(section, _)| format!("{section}.path"));
    let placed = std::iter::once(key.to_string())
        .chain(section_path)
        .find_map(|k| crate::config::key_position(text, &k).map(|at| (k, at)));
    match placed {
        Some((k, (line, col))) => (format!("{}:{line}:{col}", path.display()), k),
        None => (path.display().to_string(), key.to_string()),
    }
}

/// The models loaded for a config, checked and planned.
#[derive(Debug)]
pub struct Loaded {
    /// Per worker, one session of each model, in the order of `names`.
    pub sessions: Vec<Vec<Model>>,
    /// The models' config names: `default` first, then the `[[models]]` the regions use.
    pub names: Vec<String>,
    /// `[model]`'s check (it describes the node).
    pub check: ModelCheck,
    /// `[model]`'s file in service: its `path`, or its `fallback` when the check chose it.
    pub in_service: PathBuf,
    /// Per camera, its regions.
    pub plan: Vec<Vec<Region>>,
    /// The options `in_service` was opened with.
    options: ModelOptions,
    /// Per model (in the order of `names`), the config's classes of a taught model not trained yet: its
    /// session is its base's, opened but never run.
    untrained: Vec<Option<Vec<String>>>,
    /// Another worker's sessions, for the adaptive parallelism.
    pub reopen: Reopen,
}

impl Loaded {
    /// What the region plan knows of each model, in the order of `names`.
    pub fn infos(&self) -> Vec<ModelInfo> {
        infos(self.sessions.first().map_or(&[][..], |s| s.as_slice()), &self.names, &self.untrained)
    }

    /// The intra-op threads of `[model]`'s camera sessions.
    pub fn threads(&self) -> usize {
        self.options.threads.unwrap_or(1)
    }

    /// `count` more sessions of `[model]` as it is in service (the fallback when it replaced the configured
    /// model), one intra-op thread each: the HTTP classify pool's.
    pub fn more_sessions(&self, runtime: &'static Runtime, count: usize) -> Result<Vec<Model>, ModelError> {
        let options = ModelOptions { threads: Some(1), record_placement: false, ..self.options.clone() };
        (0..count).map(|_| Model::load(runtime, &self.in_service, &options).map(serving)).collect()
    }
}

/// A session going into service: its check has run at the load (or runs on the first session only), so it
/// keeps no copy of the stamped check data.
fn serving(mut model: Model) -> Model {
    model.forget_metadata(check::METADATA_KEY);
    model
}

fn infos(models: &[Model], names: &[String], untrained: &[Option<Vec<String>>]) -> Vec<ModelInfo> {
    models
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (m, name))| match untrained.get(i).and_then(Option::as_ref) {
            Some(classes) => ModelInfo {
                name: name.clone(),
                labels: classes.clone(),
                num_classes: classes.len(),
                threshold: None,
                untrained: true,
            },
            None => ModelInfo {
                name: name.clone(),
                labels: m.spec().labels.clone(),
                num_classes: m.num_classes(),
                threshold: m.spec().threshold,
                untrained: false,
            },
        })
        .collect()
}

/// A taught model's first session, checked: its classes must be the config's, and its own check must pass
/// on this CPU (a model that fails it is refused: Use keeps the running model).
fn check_taught(model: Model, taught: &crate::config::Taught, path: &Path) -> Result<Model, String> {
    let mut labels = model.spec().labels.clone();
    let mut classes = taught.classes.clone();
    labels.sort();
    classes.sort();
    if labels != classes {
        let some = |l: &[String]| match l.len() {
            0..=8 => format!("{l:?}"),
            n => format!("{:?} … ({n} in all)", &l[..8]),
        };
        return Err(format!(
            "{} was taught the classes {}, the config names {}: train it again (the page's Train) or name its \
             classes",
            path.display(),
            some(&model.spec().labels),
            some(&taught.classes)
        ));
    }
    let mut classifier = Classifier::new(model, 1, 0.0).map_err(|e| e.to_string())?;
    check::at_load(&mut classifier, check::OnCheckFailure::Fail).map_err(|e| e.to_string())?;
    Ok(classifier.into_model())
}

/// The `[[models]]` entries no region names (`(key, name)`): the policy does not load them.
pub fn unused_models(config: &Config) -> Vec<(String, String)> {
    let used = config.used_models();
    config.named_models().into_iter().skip(1).filter(|m| !used.contains(&m.name)).map(|m| (m.key, m.name)).collect()
}

/// The intra-op threads of a camera session when the config does not say. With `workers = 0` (automatic)
/// one: the cheapest per frame at a camera's pace, and more load gets more workers of one thread each. With a
/// fixed number of workers, each worker's share of the cores minus one, which the worker's prepare thread
/// uses (on 2 cores, 1 intra-op thread classifies 233 frames/s against 213 with 2: the prepare thread then
/// fights inference for a core).
fn default_threads(workers: usize) -> usize {
    if workers == 0 {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / workers).saturating_sub(1).max(1)
}

/// The options a model is opened with for `purpose`.
fn options_for(purpose: Purpose, options: &ModelOptions, workers: usize) -> ModelOptions {
    match purpose {
        Purpose::Cameras => {
            let mut options = options.clone();
            options.threads = options.threads.or(Some(default_threads(workers)));
            options
        }
        Purpose::Preflight => ModelOptions {
            providers: vec![Provider::Cpu],
            threads: Some(1),
            record_placement: false,
            ..options.clone()
        },
    }
}

/// A model's load error at the config key it is about (`model.labels`, `models[1].preprocess.layout`, …).
fn model_problem(section: &str, e: &ModelError) -> Problem {
    (format!("{section}.{}", e.config_key()), e.to_string())
}

/// The first steps of the policy for one model: load it, run its check (when `check_here`), and open its
/// fallback. The fallback replaces it when the check fails under `on_check_failure = "fallback"`.
#[derive(Debug)]
pub struct Checked {
    /// The first session of the model in service.
    pub model: Model,
    pub check: ModelCheck,
    /// The model's file in service: the configured one or the fallback.
    pub in_service: PathBuf,
    /// The fallback's classes when one was opened (and is not in service): the regions are planned against
    /// it too, so that it can serve them on the day the check fails. Its own check is not run.
    pub fallback_classes: Option<(Vec<String>, usize, Option<f32>)>,
}

/// Loads `path` with `options`, checks it against `policy` and applies `fallback`: the policy's first three
/// steps, for `[model]` (`section` = `model`) and for `classify`. `check_here`: whether the check runs (it
/// depends on the provider; see [`Purpose::Preflight`]).
pub fn load_checked(
    runtime: &'static Runtime,
    path: &Path,
    options: &ModelOptions,
    policy: check::OnCheckFailure,
    fallback: Option<&Path>,
    check_here: bool,
) -> Result<Checked, LoadError> {
    let mut problems = Vec::new();
    let first = Model::load(runtime, path, options).map_err(|e| model_problem("model", &e));
    // With a fallback configured, it is opened now: a broken fallback is a config error found at start.
    let mut spare = None;
    if let (check::OnCheckFailure::Fallback, Some(fallback)) = (policy, fallback) {
        match Model::load(runtime, fallback, options) {
            Ok(model) => spare = Some(model),
            Err(e) => problems.push(("model.fallback".to_string(), e.to_string())),
        }
    }
    let model = match first {
        Ok(model) => model,
        Err(problem) => {
            problems.insert(0, problem);
            return Err(LoadError { problems });
        }
    };
    let (model, check) = if check_here {
        let mut classifier = Classifier::new(model, 1, 0.0).map_err(|e| LoadError::one("model.path", e))?;
        match check::at_load(&mut classifier, policy) {
            Ok(check) => (classifier.into_model(), check),
            Err(e) => {
                problems.insert(0, ("model.on_check_failure".to_string(), e.to_string()));
                return Err(LoadError { problems });
            }
        }
    } else {
        let detail = "not run here: it runs at start on the configured execution provider".to_string();
        (model, ModelCheck { status: CheckStatus::Unchecked, model: path.display().to_string(), detail })
    };
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    match (check.status, spare, fallback) {
        (CheckStatus::Fallback, Some(spare), Some(fallback)) => {
            tracing::warn!(fallback = %fallback.display(), "running the fallback model instead of {}", check.model);
            Ok(Checked { model: spare, check, in_service: fallback.to_path_buf(), fallback_classes: None })
        }
        // `fallback` asked for and none to fall back to (a model named on the command line, or not
        // `[model]`): refused, as `fail` would, rather than served while the log says otherwise.
        (CheckStatus::Fallback, _, _) => Err(LoadError::one(
            "model.on_check_failure",
            format!("{} fails its check on this CPU ({}) and has no fallback model", path.display(), check.detail),
        )),
        (_, spare, _) => {
            let fallback_classes = spare.map(|m| (m.spec().labels.clone(), m.num_classes(), m.spec().threshold));
            Ok(Checked { model, check, in_service: path.to_path_buf(), fallback_classes })
        }
    }
}

/// The whole policy for a config: every model the cameras use, `[model]` checked (with its fallback), the
/// regions planned. See the module's documentation.
pub fn load(runtime: &'static Runtime, config: &Config, purpose: Purpose) -> Result<Loaded, LoadError> {
    load_with(runtime, config, purpose, None)
}

/// [`load`], for a Use or Roll back of the taught model `strict`: if it does not load or pass its check, the
/// whole load is refused (the running model stays); any other taught model failing falls back to keeping
/// samples, as at a start.
pub fn load_with(
    runtime: &'static Runtime,
    config: &Config,
    purpose: Purpose,
    strict: Option<&str>,
) -> Result<Loaded, LoadError> {
    let workers = match purpose {
        Purpose::Cameras => config.model.workers.max(1),
        Purpose::Preflight => 1,
    };
    let mut problems = Vec::new();
    let options = options_for(purpose, &config.model.model_options(), config.model.workers);
    // Each model's file in service and its options: what another worker's sessions are opened from.
    let mut opened = Vec::new();
    let check_here = match purpose {
        Purpose::Cameras => true,
        Purpose::Preflight => config.model.execution_providers.iter().all(|p| *p == Provider::Cpu),
    };
    let default = load_checked(
        runtime,
        &config.model.path,
        &options,
        config.model.on_check_failure,
        config.model.fallback.as_deref(),
        check_here,
    );
    let mut sessions: Vec<Vec<Model>> = (0..workers).map(|_| Vec::new()).collect();
    let mut names = vec![DEFAULT_MODEL.to_string()];
    let mut fallback_classes = None;
    let (check, in_service) = match default {
        Ok(Checked { model, check, in_service, fallback_classes: spare }) => {
            fallback_classes = spare;
            let mut first = Some(model);
            for worker in &mut sessions {
                match first.take().map_or_else(|| Model::load(runtime, &in_service, &options), Ok) {
                    Ok(model) => worker.push(model),
                    Err(e) => {
                        problems.push(model_problem("model", &e));
                        break;
                    }
                }
            }
            opened.push((in_service.clone(), options.clone()));
            (Some(check), in_service)
        }
        Err(e) => {
            problems.extend(e.problems);
            (None, config.model.path.clone())
        }
    };
    let used = config.used_models();
    let mut untrained = vec![None];
    for named in config.named_models().into_iter().skip(1).filter(|m| used.contains(&m.name)) {
        let options = options_for(purpose, &named.options, config.model.workers);
        // A taught model before its first training: its base stands in (never run; its regions only keep
        // samples).
        let mut waiting = named.taught.as_ref().filter(|_| !named.path.is_file());
        // A trained one must have the config's classes and pass its check. Put in service by Use or Roll back
        // (`strict`), one that does not is refused; at a start or a reload, its regions go back to keeping
        // samples (a model that stopped passing after an update must not take every camera down).
        let mut first = None;
        if let (Some(taught), None) = (&named.taught, waiting) {
            let checked = Model::load(runtime, &named.path, &options)
                .map_err(|e| e.to_string())
                .and_then(|m| if check_here { check_taught(m, taught, &named.path) } else { Ok(m) });
            match checked {
                Ok(model) => first = Some(model),
                Err(message) if strict == Some(named.name.as_str()) => {
                    problems.push((format!("{}.teach", named.key), message));
                    names.push(named.name);
                    untrained.push(None);
                    continue;
                }
                Err(message) => {
                    tracing::error!(
                        model = %named.name,
                        "{message}; its regions keep samples and publish nothing until a model passes (train and \
                         Use, or Roll back, in the page)"
                    );
                    waiting = Some(taught);
                }
            }
        }
        let path = waiting.map_or(&named.path, |t| &t.base);
        opened.push((path.clone(), options.clone()));
        untrained.push(waiting.map(|t| t.classes.clone()));
        let mut loaded = 0;
        for worker in &mut sessions {
            let model = match first.take() {
                Some(model) => Ok(model),
                None => Model::load(runtime, path, &options),
            };
            match model {
                Ok(model) => {
                    worker.push(model);
                    loaded += 1;
                }
                Err(e) => {
                    problems.push(model_problem(&named.key, &e));
                    break;
                }
            }
        }
        if loaded == workers && purpose == Purpose::Cameras {
            match waiting {
                Some(_) => tracing::info!(
                    model = %named.name,
                    "taught model not trained yet: its regions keep samples for the page's Teach view and publish nothing"
                ),
                None => tracing::info!(model = %named.name, path = %named.path.display(), "model loaded"),
            }
        }
        names.push(named.name);
    }
    let (Some(check), true) = (check, problems.is_empty()) else { return Err(LoadError { problems }) };
    let infos = infos(&sessions[0], &names, &untrained);
    let plan = region::plan(config, &infos).map_err(|problems| LoadError { problems })?;
    // The fallback must serve the same regions on the day it replaces `[model]`.
    if let Some((labels, num_classes, threshold)) = fallback_classes {
        let mut with_fallback = infos;
        with_fallback[0] =
            ModelInfo { name: DEFAULT_MODEL.to_string(), labels, num_classes, threshold, untrained: false };
        if let Err(found) = region::plan(config, &with_fallback) {
            let problems = found
                .into_iter()
                .map(|(key, message)| {
                    ("model.fallback".to_string(), format!("{key}: {message} (with the fallback model)"))
                })
                .collect();
            return Err(LoadError { problems });
        }
    }
    let reopen = Reopen { runtime, models: opened };
    let sessions = sessions.into_iter().map(|worker| worker.into_iter().map(serving).collect()).collect();
    Ok(Loaded { sessions, names, check, in_service, plan, options, untrained, reopen })
}

/// What opens one more worker's sessions as the policy opened the first's: each model's file in service (a
/// fallback, a taught model's base) with its options, the check already passed on this CPU at the load.
#[derive(Debug, Clone)]
pub struct Reopen {
    runtime: &'static Runtime,
    models: Vec<(PathBuf, ModelOptions)>,
}

impl Reopen {
    /// One session of each model, in the order of [`Loaded::names`].
    pub fn open(&self) -> Result<Vec<Model>, ModelError> {
        self.models.iter().map(|(path, options)| Model::load(self.runtime, path, options).map(serving)).collect()
    }
}
