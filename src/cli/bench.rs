//! `camclassd bench`: one model (FP32 against INT8, per execution provider) or the daemon under a camera load.

use std::path::Path;

use anyhow::Context;

use camclassd::config::Config;
use camclassd::model;

use super::args::*;
use super::{Failure, usage, write_stdout};

pub fn bench(args: BenchArgs, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    use camclassd::tools::bench;
    if let Some(cameras) = args.cameras {
        return run_camera_bench(cameras, args, ort_lib);
    }
    let duration = args.duration.unwrap_or(60.0);
    if !(duration.is_finite() && duration > 0.0) || args.runs == Some(0) {
        return Err(usage(anyhow::anyhow!("--duration and --runs must be positive")));
    }
    if args.models.is_empty() {
        return Err(usage(anyhow::anyhow!("bench needs a model (or --cameras with --config)")));
    }
    // As classify and compare do, a file that cannot be decoded is named and left out; the others are timed.
    let (images, failed_images) = match &args.images {
        Some(dir) => {
            let paths = camclassd::tools::compare::image_list(Some(dir), &[]).map_err(|e| {
                let why = match e {
                    camclassd::tools::compare::CompareError::NoImages(why) => why,
                    other => other.to_string(),
                };
                usage(anyhow::anyhow!("--images: {why}"))
            })?;
            if paths.is_empty() {
                return Err(usage(anyhow::anyhow!("--images: no JPEG or PNG images in {}", dir.display())));
            }
            let (images, failed) = bench::usable_images(&paths);
            for f in &failed {
                eprintln!("camclassd: error: {f}");
            }
            if images.is_empty() {
                return Err(usage(anyhow::anyhow!(
                    "--images {}: none of its {} images could be decoded",
                    dir.display(),
                    paths.len()
                )));
            }
            (images, failed)
        }
        None => (Vec::new(), Vec::new()),
    };
    let config = match &args.config {
        Some(path) => Some(Config::load(path).map_err(|e| usage(e.into()))?),
        None => None,
    };
    let (mut tensorrt, cuda) =
        config.as_ref().map(|c| (c.model.tensorrt.clone(), c.model.cuda.clone())).unwrap_or_default();
    if let Some(fp16) = args.trt_fp16 {
        tensorrt.fp16 = fp16;
    }
    if args.trt_int8.is_some() {
        tensorrt.int8 = args.trt_int8;
    }
    if let Some(dir) = &args.trt_cache_dir {
        tensorrt.engine_cache_dir = Some(dir.clone());
    }
    let ort_lib = ort_lib.or(config.as_ref().and_then(|c| c.onnxruntime.library.as_deref()));
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let options = bench::BenchOptions {
        tensorrt,
        cuda,
        providers: args.ep.clone(),
        batches: args.batch.iter().map(|&b| usize::from(b)).collect(),
        threads: args.threads,
        input_size: args.input_size,
        budget: match args.runs {
            Some(n) => bench::Budget::Runs(n),
            None => bench::Budget::Duration(std::time::Duration::from_secs_f64(duration)),
        },
    };
    let bar = progress_bar();
    let progress = |what: &str, fraction: f64| show_progress(bar.as_ref(), what, fraction);
    let rows = bench::run(runtime, &args.models, &images, &options, &progress).map_err(|e| usage(e.into()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print!("{}", bench::render_table(&rows));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&rows).context("encoding JSON").map_err(usage)?;
        std::fs::write(path, json).map_err(|e| usage(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.plot {
        bench::plot(&rows, path).map_err(|e| Failure { code: 1, error: anyhow::anyhow!("plot: {e}") })?;
    }
    if !failed_images.is_empty() {
        eprintln!("camclassd: {} image(s) left out of the pipeline figures (named above)", failed_images.len());
        return Ok(1);
    }
    Ok(0)
}

/// A progress bar on a terminal; plain lines (one per finished measurement) otherwise.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {percent:>3}%") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    })
}

fn show_progress(bar: Option<&indicatif::ProgressBar>, what: &str, fraction: f64) {
    match bar {
        Some(bar) => {
            bar.set_message(what.to_string());
            bar.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        }
        None if fraction >= 1.0 => eprintln!("bench: {what}"),
        None => {}
    }
}

/// `bench --cameras`: the daemon's pipeline with replay cameras, one camera count or the most that fit.
fn run_camera_bench(
    cameras: camclassd::tools::bench::cameras::Cameras,
    args: BenchArgs,
    ort_lib: Option<&Path>,
) -> Result<u8, Failure> {
    use camclassd::tools::bench::{self, cameras as load};
    let Some(fps) = args.fps else {
        return Err(usage(anyhow::anyhow!("--cameras needs --fps: each camera's frames per second")));
    };
    if !(fps.is_finite() && (0.01..=120.0).contains(&fps)) {
        return Err(usage(anyhow::anyhow!("--fps: expected a number from 0.01 to 120, got {fps}")));
    }
    let seconds = args.duration.unwrap_or(5.0);
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(usage(anyhow::anyhow!("--seconds must be positive")));
    }
    let mut config = match (&args.config, args.models.as_slice()) {
        (Some(path), []) => Config::load(path).map_err(|e| usage(e.into()))?,
        (None, [model]) => load::model_config(model).map_err(|e| usage(e.into()))?,
        (None, []) => return Err(usage(anyhow::anyhow!("--cameras needs a model, or --config"))),
        (None, models) => {
            return Err(usage(anyhow::anyhow!(
                "--cameras runs one model (or --config's models), not {}",
                models.len()
            )));
        }
        (Some(_), _) => {
            return Err(usage(anyhow::anyhow!("--cameras runs either a model or --config's models, not both")));
        }
    };
    if let Some(threads) = args.threads {
        config.model.threads = threads;
    }
    // What the cameras replay must decode, or every frame would be skipped and nothing measured.
    let Some(images) = &args.images else {
        return Err(usage(anyhow::anyhow!("--cameras needs --image: the image, folder or glob each camera replays")));
    };
    let source =
        images.to_str().ok_or_else(|| usage(anyhow::anyhow!("--image {}: not a UTF-8 path", images.display())))?;
    let files = camclassd::capture::replay::list(source).map_err(|e| usage(anyhow::anyhow!("--image: {e}")))?;
    let (_, failed) = bench::usable_images(&files);
    if !failed.is_empty() {
        return Err(usage(anyhow::anyhow!("--image: {}", failed.join("; "))));
    }
    let ort_lib = ort_lib.or(config.onnxruntime.library.as_deref());
    let runtime = model::runtime::load(ort_lib).map_err(|e| usage(e.into()))?;
    let window = std::time::Duration::from_secs_f64(seconds);
    let options = load::CameraOptions {
        cameras,
        fps,
        source: source.to_string(),
        warmup: (window / 2).min(std::time::Duration::from_secs(2)),
        window,
    };
    let bar = progress_bar();
    let progress = |what: &str, fraction: f64| show_progress(bar.as_ref(), what, fraction);
    let found = load::run(runtime, &config, args.config.as_deref(), &options, &progress).map_err(|e| match e {
        // A pipeline thread that failed is a run-time failure (1), as in the daemon; the rest are the user's (2).
        bench::BenchError::Daemon(e) => Failure { code: e.exit_code(), error: e.into() },
        e => usage(e.into()),
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    write_stdout(&load::render(&found))?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&found).context("encoding JSON").map_err(usage)?;
        std::fs::write(path, json).map_err(|e| usage(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    Ok(0)
}
