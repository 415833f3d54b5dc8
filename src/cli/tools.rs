//! The model tools' glue: inspect, compare, verify, stamp, classify, check-config.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use camclassd::config::Config;
use camclassd::model::{self, Model, ModelOptions, Provider};
use camclassd::pipeline::Classifier;
use camclassd::tools::classify;

use super::args::*;
use super::{Failure, usage, write_stdout};

pub fn inspect(path: &Path, json: bool, ep: Option<Vec<Provider>>, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    let mut report = camclassd::tools::inspect::inspect(path).map_err(|e| usage(e.into()))?;
    if let Some(providers) = ep {
        let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
        let options = ModelOptions { providers, ..ModelOptions::default() };
        report.session = Some(model::ep::probe(runtime, path, &options).map_err(|e| usage(e.into()))?);
    }
    let text = if json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        camclassd::tools::inspect::render_text(&report)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") })
        }
        _ => Ok(0),
    }
}

pub fn compare(args: CompareArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::tools::compare;
    let images = compare::image_list(args.images.as_deref(), &args.files).map_err(|e| usage(e.into()))?;
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads: args.threads, ..ModelOptions::default() };
    // A comparison is how one studies a model that fails its check: a failure is reported, not refused.
    let load = |path: &Path| {
        let mut c = Model::load(runtime, path, &options)
            .and_then(|m| Classifier::new(m, 1, 0.0))
            .map_err(|e| usage(e.into()))?;
        let check =
            camclassd::check::at_load(&mut c, camclassd::check::OnCheckFailure::Warn).map_err(|e| usage(e.into()))?;
        if check.status == camclassd::check::CheckStatus::Failed {
            eprintln!("camclassd: warning: {} fails its check on this CPU: {}", path.display(), check.detail);
        }
        Ok::<_, Failure>(c)
    };
    let (mut a, mut b) = (load(&args.a)?, load(&args.b)?);
    let report = compare::compare(&mut a, &mut b, &images, usize::from(args.top)).map_err(|e| usage(e.into()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        compare::render_text(&report)
    };
    write_stdout(&text)?;
    for f in &report.failed {
        eprintln!("camclassd: error: {f}");
    }
    let below = args.fail_below.is_some_and(|pct| report.top1_agreement_pct < pct);
    if below {
        eprintln!(
            "camclassd: top-1 agreement {:.1} % is below --fail-below {:.1} %",
            report.top1_agreement_pct,
            args.fail_below.unwrap_or_default()
        );
    }
    Ok(if below || !report.failed.is_empty() { 1 } else { 0 })
}

pub fn verify(path: &Path, json: bool, threads: Option<usize>, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::check::{self, GoldenSet};
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads, ..ModelOptions::default() };
    let model = Model::load(runtime, path, &options).map_err(|e| usage(e.into()))?;
    let mut classifier = Classifier::new(model, 1, 0.0).map_err(|e| usage(e.into()))?;
    let Some(set) = GoldenSet::of(&classifier).map_err(|e| usage(e.into()))? else {
        return Err(usage(anyhow::anyhow!(
            "model {} carries no check; stamp one with: camclassd stamp {} --reference FP32_MODEL --images DIR",
            path.display(),
            path.display()
        )));
    };
    let report = check::verify(&mut classifier, &set).map_err(|e| Failure { code: 1, error: e.into() })?;
    let text = if json {
        serde_json::to_string_pretty(&report).context("encoding JSON").map_err(usage)? + "\n"
    } else {
        check::render_report(path, &report)
    };
    write_stdout(&text)?;
    Ok(if report.passed { 0 } else { 1 })
}

pub fn stamp(args: StampArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::check;
    let images =
        camclassd::tools::compare::image_list(args.images.as_deref(), &args.files).map_err(|e| usage(e.into()))?;
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = ModelOptions { threads: args.threads, ..ModelOptions::default() };
    let load = |path: &Path| {
        Model::load(runtime, path, &options).and_then(|m| Classifier::new(m, 1, 0.0)).map_err(|e| usage(e.into()))
    };
    let (mut reference, mut candidate) = (load(&args.reference)?, load(&args.model)?);
    let request = check::StampRequest { images: &images, count: args.count, min_cosine: args.min_cosine };
    let (set, report) = check::build(&mut reference, &mut candidate, &request).map_err(|e| usage(e.into()))?;
    write_stdout(&check::render_report(&args.model, &report))?;
    if !report.passed {
        return Err(Failure {
            code: 1,
            error: anyhow::anyhow!(
                "{} fails this check already on this machine; nothing written (a lower --min-cosine, or a better model)",
                args.model.display()
            ),
        });
    }
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display())).map_err(usage)?;
    let stamped = check::stamp(&bytes, &set.to_metadata()).map_err(|e| usage(e.into()))?;
    let output = args.output.clone().unwrap_or_else(|| args.model.clone());
    let tmp = output.with_extension("onnx.stamping");
    std::fs::write(&tmp, &stamped).and_then(|()| std::fs::rename(&tmp, &output)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Failure { code: 1, error: anyhow::Error::new(e).context(format!("writing {}", output.display())) }
    })?;
    eprintln!(
        "camclassd: stamped {} inputs into {} ({} bytes more)",
        set.inputs.len(),
        output.display(),
        stamped.len().saturating_sub(bytes.len())
    );
    Ok(0)
}

pub fn classify(args: ClassifyArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    let config = match &args.config {
        Some(path) => Some(Config::load(path).map_err(|e| usage(e.into()))?),
        None => None,
    };
    let named = match (&config, &args.model_name) {
        (Some(c), Some(name)) => match c.named_models().into_iter().find(|m| &m.name == name) {
            Some(m) => Some(m),
            None => {
                let names: Vec<String> = c.named_models().into_iter().map(|m| m.name).collect();
                return Err(usage(anyhow::anyhow!(
                    "--model-name {name:?}: no such model; the config has {}",
                    names.join(", ")
                )));
            }
        },
        (Some(c), None) => c.named_models().into_iter().next(),
        _ => None,
    };
    let model_path = match (&args.model, &named) {
        (Some(m), _) => m.clone(),
        (None, Some(c)) => c.path.clone(),
        (None, None) => return Err(usage(anyhow::anyhow!("classify needs --model MODEL or --config FILE"))),
    };
    let mut options = named.as_ref().map(|c| c.options.clone()).unwrap_or_else(ModelOptions::default);
    if let Some(t) = args.threads {
        options.threads = Some(t);
    }
    if let Some(ep) = args.ep.clone() {
        options.providers = ep;
    }
    if let Some(name) = &args.output_name {
        options.output_name = Some(name.clone());
    }
    if let Some(labels) = &args.labels {
        options.labels = Some(labels.clone());
    }
    if let Some(layout) = args.layout {
        options.overrides.layout = Some(layout);
    }
    if let Some(output) = args.output {
        options.overrides.output = Some(output);
    }
    let top_k = args.top.map(usize::from).or(config.as_ref().map(|c| c.model.top_k)).unwrap_or(5);
    let min_score = args.min_score.or(config.as_ref().map(|c| c.model.min_score)).unwrap_or(0.0);
    let ort_lib = ort_lib.or(config.as_ref().and_then(|c| c.onnxruntime.library.as_deref()));

    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    // The loading policy's first steps, as `run` takes them: load, check, and for `[model]` its fallback.
    let (policy, fallback) = match (&config, &named) {
        (Some(c), Some(n)) if n.key == "model" && args.model.is_none() => {
            (c.model.on_check_failure, c.model.fallback.as_deref())
        }
        (Some(c), _) => (c.model.on_check_failure, None),
        (None, _) => (Default::default(), None),
    };
    // Its problems without their config keys: the model may come from --model.
    let checked =
        camclassd::load::load_checked(runtime, &model_path, &options, policy, fallback, true).map_err(|e| {
            usage(anyhow::anyhow!("{}", e.problems.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("\n")))
        })?;
    if checked.in_service != model_path {
        eprintln!(
            "camclassd: {} fails its check here; classifying with {}",
            model_path.display(),
            checked.in_service.display()
        );
    }
    let mut classifier = Classifier::new(checked.model, top_k, min_score).map_err(|e| usage(e.into()))?;
    if !args.threshold.is_empty() {
        let spec = classifier.model().spec();
        let default = if spec.output.is_multi_label() {
            camclassd::postprocess::DEFAULT_MULTI_LABEL_THRESHOLD
        } else {
            min_score
        };
        let named = args.threshold.iter().map(|(name, p)| (name.as_str(), *p));
        let thresholds = camclassd::postprocess::Thresholds::from_named(&spec.labels, named, default)
            .map_err(|e| usage(anyhow::anyhow!("--threshold: {e}")))?;
        classifier.set_thresholds(thresholds);
    }

    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    for image in &args.images {
        let text = match classify::classify_file_crop(&mut classifier, image, args.crop, args.scores) {
            Ok(report) if args.json => {
                serde_json::to_string(&report).context("encoding the JSON report").map_err(usage)? + "\n"
            }
            Ok(report) => classify::render_table(&report),
            Err(e) => {
                failed += 1;
                eprintln!("camclassd: error: {e}");
                continue;
            }
        };
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): stop quietly, as other Unix tools do.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") }),
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `camclassd check-config`: the library's preflight, printed.
pub fn check_config(path: &Path, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    let checked = camclassd::tools::check_config::check_config(path, ort_lib).map_err(|e| usage(e.into()))?;
    for warning in &checked.warnings {
        eprintln!("warning: {warning}");
    }
    if !checked.problems.is_empty() {
        return Err(usage(anyhow::anyhow!("{}", checked.problems.join("\n"))));
    }
    println!("{}", checked.summary);
    Ok(0)
}

/// `camclassd train`: the library's training, its report printed (a table, or one JSON object).
pub fn train(args: TrainArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::teach;
    let base = match args.base {
        Some(base) => base,
        None => teach::default_base().map_err(|e| usage(e.into()))?,
    };
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = teach::TrainOptions {
        base,
        out: args.out,
        cache_dir: teach::default_cache_dir(),
        threads: args.threads.unwrap_or(cores),
        classes: None,
        cancel: None,
    };
    let report = teach::train(runtime, &args.dir, &options).map_err(|e| usage(e.into()))?;
    let text = if args.json {
        serde_json::to_string(&report).context("encoding the JSON report").map_err(usage)? + "\n"
    } else {
        teach::render(&report)
    };
    write_stdout(&text)?;
    Ok(0)
}
