//! `camclassd bench --cameras N --fps F`: how many cameras at F fps this board takes under 80 % CPU, with
//! the latency at that load. Each measurement runs the daemon's own pipeline ([`crate::daemon`]: the frame
//! hub, the workers, one stage chain) with N replay cameras playing the given images at F fps, without an
//! MQTT broker, and reads after a warm-up: the process's CPU as a share of every core, the frames offered,
//! taken, classified and dropped, and each frame's time from capture to its publish decision.
//!
//! `--cameras max` searches the largest N that fits ([`find`], a pure function over the measurement, so
//! that its tests drive it with a fake board): 1, 2, 4, … until one does not, then bisects in between.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::BenchError;
use crate::config::{CameraConfig, Config};
use crate::model::Runtime;

/// A load fits below this share of the board's CPU (all cores), in %.
pub const MAX_CPU_PCT: f64 = 80.0;
/// … and when the pipeline takes at least this share of the frames offered (the rest are dropped).
pub const MIN_TAKEN: f64 = 0.95;
/// The most cameras `--cameras max` tries (and the most `--cameras N` accepts).
pub const MAX_CAMERAS: usize = 256;

/// How many cameras to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cameras {
    Fixed(usize),
    /// The most that fit, searched.
    Max,
}

impl std::str::FromStr for Cameras {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Cameras::Max);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_CAMERAS).contains(&n) => Ok(Cameras::Fixed(n)),
            _ => Err(format!("expected max or a number of cameras from 1 to {MAX_CAMERAS}, got {s:?}")),
        }
    }
}

/// Whether a load fits the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Fits,
    /// At or over [`MAX_CPU_PCT`].
    OverCpu,
    /// Under [`MIN_TAKEN`] of the frames offered taken: the cameras' frames wait and are replaced.
    FallsBehind,
}

impl Verdict {
    pub fn of(cpu_pct: f64, taken_fps: f64, offered_fps: f64) -> Verdict {
        if cpu_pct >= MAX_CPU_PCT {
            Verdict::OverCpu
        } else if taken_fps < MIN_TAKEN * offered_fps {
            Verdict::FallsBehind
        } else {
            Verdict::Fits
        }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Fits => "fits",
            Verdict::OverCpu => "over cpu",
            Verdict::FallsBehind => "behind",
        }
    }
}

/// One measured load: N cameras at F fps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    pub cameras: usize,
    /// N × F.
    pub offered_fps: f64,
    /// Frames per second the pipeline took from the cameras (delivered and not replaced by a newer one).
    pub taken_fps: f64,
    /// Frames per second classified (below `taken_fps` when the config's classify_every or motion gate
    /// skips frames on purpose).
    pub classified_fps: f64,
    /// Frames replaced in the hub before a worker took them, in the measured window.
    pub dropped: u64,
    /// Process CPU (user + system, every thread) over wall time, in % of all cores.
    pub cpu_pct: f64,
    /// Publications per second the workers handed on (events and states, by the cameras' publish policy).
    pub publications_fps: f64,
    /// From a frame's capture to its publish decision, milliseconds (`None`: no frame classified).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub verdict: Verdict,
}

impl Load {
    fn measured(cameras: usize, fps: f64, w: &crate::daemon::Window, cores: usize) -> Load {
        let wall = w.wall.as_secs_f64().max(f64::EPSILON);
        let offered_fps = cameras as f64 * fps;
        let taken_fps = w.captured.saturating_sub(w.dropped) as f64 / wall;
        let cpu_pct = 100.0 * w.cpu.as_secs_f64() / wall / cores.max(1) as f64;
        Load {
            cameras,
            offered_fps,
            taken_fps,
            classified_fps: w.classified as f64 / wall,
            dropped: w.dropped,
            cpu_pct,
            publications_fps: w.published as f64 / wall,
            p50_ms: w.latency.quantile_ms(0.50),
            p99_ms: w.latency.quantile_ms(0.99),
            // A camera delivers one frame more or less within the window, by where its edges fall.
            verdict: Verdict::of(cpu_pct, taken_fps + cameras as f64 / wall, offered_fps),
        }
    }
}

/// The loads measured, in the order tried, and which fits with the most cameras.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub steps: Vec<Load>,
    /// Index in `steps` of the largest load that fits; `None`: not even the first.
    pub best: Option<usize>,
    /// The search reached `limit` cameras and they still fit: the board takes at least that many.
    pub at_limit: bool,
}

/// `Fixed(n)`: measures n cameras. `Max`: grows 1, 2, 4, … (up to `limit`) until a load does not fit, then
/// bisects between the last that did and the first that did not, each step one `measure`.
pub fn find<E>(cameras: Cameras, limit: usize, mut measure: impl FnMut(usize) -> Result<Load, E>) -> Result<Found, E> {
    let limit = limit.max(1);
    let mut steps = Vec::new();
    let mut step = |n: usize, steps: &mut Vec<Load>| -> Result<bool, E> {
        let load = measure(n)?;
        let fits = load.verdict == Verdict::Fits;
        steps.push(load);
        Ok(fits)
    };
    if let Cameras::Fixed(n) = cameras {
        let fits = step(n, &mut steps)?;
        return Ok(Found { best: fits.then_some(0), steps, at_limit: false });
    }
    // The largest n known to fit, and the smallest known not to.
    let (mut fit, mut unfit) = (None, None);
    let mut n = 1;
    loop {
        if step(n, &mut steps)? {
            fit = Some(n);
            if n == limit {
                break;
            }
            n = (2 * n).min(limit);
        } else {
            unfit = Some(n);
            break;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (fit, unfit) {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if step(mid, &mut steps)? { lo = mid } else { hi = mid }
        }
        fit = Some(lo);
    }
    // The newest measurement of the answer (bisection may not have measured it last).
    let best = fit.and_then(|n| steps.iter().rposition(|l| l.cameras == n && l.verdict == Verdict::Fits));
    Ok(Found { at_limit: unfit.is_none() && best.is_some(), steps, best })
}

fn cameras_text(n: usize) -> String {
    if n == 1 { "1 camera".into() } else { format!("{n} cameras") }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The one line that answers: how many cameras at `fps` this board takes under 80 % CPU, and the latency
/// there; or why not even the first load fits.
pub fn answer(found: &Found, fps: f64) -> String {
    if let Some(load) = found.best.and_then(|i| found.steps.get(i)) {
        let at_least = if found.at_limit { "at least " } else { "" };
        let mut line = format!(
            "this board takes {at_least}{} at {fps} fps under {MAX_CPU_PCT:.0} % CPU (P50 {} ms, P99 {} ms)",
            cameras_text(load.cameras),
            ms(load.p50_ms),
            ms(load.p99_ms)
        );
        if found.at_limit {
            line.push_str(&format!(": {} is the most bench tries", cameras_text(load.cameras)));
        }
        return line;
    }
    let Some(first) = found.steps.first() else { return "nothing was measured".into() };
    let even = if first.cameras == 1 { "even " } else { "" };
    let why = match first.verdict {
        Verdict::OverCpu => format!(
            "{} {} {:.0} % of its CPU",
            cameras_text(first.cameras),
            if first.cameras == 1 { "needs" } else { "need" },
            first.cpu_pct
        ),
        _ => format!(
            "it keeps up with only {:.1} of the {:.1} frames/s offered ({} dropped)",
            first.taken_fps, first.offered_fps, first.dropped
        ),
    };
    format!(
        "this board does not take {even}{} at {fps} fps under {MAX_CPU_PCT:.0} % CPU: {why}",
        cameras_text(first.cameras)
    )
}

/// What `camclassd bench --cameras` found, as printed and as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct CameraBench {
    pub fps: f64,
    /// The cores CPU % is a share of.
    pub cores: usize,
    pub warmup_s: f64,
    pub measured_s: f64,
    /// In the order tried.
    pub steps: Vec<Load>,
    /// The most cameras that fit (`None`: not even the first load measured).
    pub cameras: Option<usize>,
    pub at_limit: bool,
    pub answer: String,
}

/// The table of every load tried, a legend, and the answer line.
pub fn render(bench: &CameraBench) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>7} {:>10} {:>8} {:>12} {:>8} {:>6} {:>8} {:>8}  verdict",
        "cameras", "offered/s", "taken/s", "classified/s", "dropped", "cpu %", "p50 ms", "p99 ms"
    );
    for l in &bench.steps {
        let _ = writeln!(
            o,
            "{:>7} {:>10.1} {:>8.1} {:>12.1} {:>8} {:>6.1} {:>8} {:>8}  {}",
            l.cameras,
            l.offered_fps,
            l.taken_fps,
            l.classified_fps,
            l.dropped,
            l.cpu_pct,
            ms(l.p50_ms),
            ms(l.p99_ms),
            l.verdict.text()
        );
    }
    let _ = writeln!(
        o,
        "cpu % of all {} cores; p50/p99 from capture to publish decision; {:.1} s measured after {:.1} s warm-up per row; fits = under {MAX_CPU_PCT:.0} % CPU and at least {:.0} % of the offered frames taken (give or take a frame per camera)",
        bench.cores,
        bench.measured_s,
        bench.warmup_s,
        MIN_TAKEN * 100.0
    );
    let _ = writeln!(o, "{}", bench.answer);
    o
}

/// The default config of `model` (`[model] path` alone), as `camclassd bench --cameras` runs it without
/// `--config`.
pub fn model_config(model: &Path) -> Result<Config, BenchError> {
    let text = format!("version = 1\n[model]\npath = {}\n", toml_string(model)?);
    Config::parse(&text).map_err(|problems| problems_error(&problems))
}

fn toml_string(path: &Path) -> Result<String, BenchError> {
    let s = path.to_str().ok_or_else(|| BenchError::Config(format!("{}: not a UTF-8 path", path.display())))?;
    Ok(toml::Value::String(s.to_string()).to_string())
}

/// The problems of a config bench wrote itself (a model file not found, …), without its lines.
fn problems_error(problems: &[crate::config::Problem]) -> BenchError {
    BenchError::Config(problems.iter().map(|p| p.message.clone()).collect::<Vec<_>>().join("\n"))
}

/// `base` with its cameras replaced by `n` replay cameras playing `source` at `fps`, in a loop: each a copy
/// of one of `base`'s cameras in turn (so that their regions, policies and snapshots count), or of a plain
/// camera (the whole frame, the default model) when it has none.
pub fn replay_cameras(base: &Config, n: usize, source: &str, fps: f64) -> Result<Config, BenchError> {
    let templates: Vec<CameraConfig> = if base.cameras.is_empty() {
        let text = format!(
            "version = 1\n[model]\npath = {}\n[[cameras]]\nname = \"bench\"\nsource = {}\n",
            toml_string(&base.model.path)?,
            toml::Value::String(source.to_string())
        );
        Config::parse(&text).map_err(|problems| problems_error(&problems))?.cameras
    } else {
        base.cameras.clone()
    };
    let mut config = base.clone();
    config.cameras = (0..n)
        .map(|i| {
            let mut cam = templates[i % templates.len()].clone();
            cam.name = format!("bench-{}", i + 1);
            cam.source = source.to_string();
            cam.pipeline = None;
            cam.password_file = None;
            cam.fps = fps;
            cam.looping = true;
            cam
        })
        .collect();
    Ok(config)
}

/// What one `camclassd bench --cameras` run measures.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub cameras: Cameras,
    pub fps: f64,
    /// The image, folder or glob each camera replays.
    pub source: String,
    pub warmup: Duration,
    /// The measured window of each load.
    pub window: Duration,
}

/// Measures `options.cameras` replay cameras (or searches the most that fit) through the daemon's pipeline
/// with `base`'s models, regions and workers. `config_path` places region errors in the file; `progress`
/// hears of each load measured.
pub fn run(
    runtime: &'static Runtime,
    base: &Config,
    config_path: Option<&Path>,
    options: &CameraOptions,
    progress: &dyn Fn(&str, f64),
) -> Result<CameraBench, BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fps = options.fps;
    let found = find(options.cameras, MAX_CAMERAS, |n| {
        progress(&format!("{} at {fps} fps", cameras_text(n)), 0.0);
        let config = replay_cameras(base, n, &options.source, fps)?;
        let window = crate::daemon::measure_load(runtime, &config, config_path, options.warmup, options.window)?;
        let load = Load::measured(n, fps, &window, cores);
        progress(&format!("{} at {fps} fps: done", cameras_text(n)), 1.0);
        Ok::<_, BenchError>(load)
    })?;
    let answer = answer(&found, fps);
    Ok(CameraBench {
        fps,
        cores,
        warmup_s: options.warmup.as_secs_f64(),
        measured_s: options.window.as_secs_f64(),
        cameras: found.best.and_then(|i| found.steps.get(i)).map(|l| l.cameras),
        at_limit: found.at_limit,
        steps: found.steps,
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake board: `cpu(n)` % of the CPU and `taken(n)` frames/s for n cameras at 5 fps.
    fn board(cpu: impl Fn(usize) -> f64, taken: impl Fn(usize) -> f64) -> impl FnMut(usize) -> Result<Load, ()> {
        move |n| {
            let (cpu_pct, taken_fps, offered_fps) = (cpu(n), taken(n), 5.0 * n as f64);
            Ok(Load {
                cameras: n,
                offered_fps,
                taken_fps,
                classified_fps: taken_fps,
                dropped: ((offered_fps - taken_fps).max(0.0) * 10.0) as u64,
                cpu_pct,
                publications_fps: 0.0,
                p50_ms: Some(10.0 + n as f64),
                p99_ms: Some(20.0 + 2.0 * n as f64),
                verdict: Verdict::of(cpu_pct, taken_fps, offered_fps),
            })
        }
    }

    fn tried(found: &Found) -> Vec<usize> {
        found.steps.iter().map(|l| l.cameras).collect()
    }

    #[test]
    fn cpu_growing_with_the_cameras_grows_then_bisects_to_the_last_that_fits() {
        // 15 % per camera: 5 cameras use 75 %, 6 use 90 %.
        let found = find(Cameras::Max, MAX_CAMERAS, board(|n| 15.0 * n as f64, |n| 5.0 * n as f64)).expect("fake");
        assert_eq!(tried(&found), [1, 2, 4, 8, 6, 5]);
        assert_eq!(found.best.map(|i| found.steps[i].cameras), Some(5));
        assert!(!found.at_limit);
        assert_eq!(
            answer(&found, 5.0),
            "this board takes 5 cameras at 5 fps under 80 % CPU (P50 15.0 ms, P99 30.0 ms)"
        );
    }

    #[test]
    fn a_throughput_cliff_under_the_cpu_limit_is_found() {
        // CPU stays low, but past 11 cameras the pipeline falls behind.
        let found =
            find(Cameras::Max, MAX_CAMERAS, board(|n| 2.0 * n as f64, |n| 5.0 * n.min(11) as f64)).expect("fake");
        assert_eq!(tried(&found), [1, 2, 4, 8, 16, 12, 10, 11]);
        assert_eq!(found.best.map(|i| found.steps[i].cameras), Some(11));
        assert_eq!(found.steps[4].verdict, Verdict::FallsBehind);
        assert!(answer(&found, 2.5).starts_with("this board takes 11 cameras at 2.5 fps under 80 % CPU (P50 21.0 ms"));
    }

    #[test]
    fn a_board_that_never_keeps_up_says_so() {
        let found = find(Cameras::Max, MAX_CAMERAS, board(|_| 30.0, |_| 2.0)).expect("fake");
        assert_eq!(tried(&found), [1]);
        assert_eq!(found.best, None);
        assert_eq!(
            answer(&found, 5.0),
            "this board does not take even 1 camera at 5 fps under 80 % CPU: it keeps up with only 2.0 of the 5.0 frames/s offered (30 dropped)"
        );
    }

    #[test]
    fn one_camera_already_over_the_cpu_limit_says_so() {
        let found = find(Cameras::Max, MAX_CAMERAS, board(|_| 85.0, |n| 5.0 * n as f64)).expect("fake");
        assert_eq!((tried(&found), found.best), (vec![1], None));
        assert_eq!(
            answer(&found, 5.0),
            "this board does not take even 1 camera at 5 fps under 80 % CPU: 1 camera needs 85 % of its CPU"
        );
    }

    #[test]
    fn a_board_that_takes_every_camera_tried_is_a_lower_bound() {
        let found = find(Cameras::Max, 6, board(|_| 1.0, |n| 5.0 * n as f64)).expect("fake");
        assert_eq!(tried(&found), [1, 2, 4, 6]);
        assert!(found.at_limit);
        assert!(answer(&found, 5.0).starts_with("this board takes at least 6 cameras at 5 fps under 80 % CPU (P50"));
    }

    #[test]
    fn a_fixed_count_is_measured_once_and_answered() {
        let found = find(Cameras::Fixed(3), MAX_CAMERAS, board(|n| 30.0 * n as f64, |n| 5.0 * n as f64)).expect("fake");
        assert_eq!((tried(&found), found.best), (vec![3], None));
        assert_eq!(
            answer(&found, 5.0),
            "this board does not take 3 cameras at 5 fps under 80 % CPU: 3 cameras need 90 % of its CPU"
        );
        let found = find(Cameras::Fixed(2), MAX_CAMERAS, board(|_| 10.0, |n| 5.0 * n as f64)).expect("fake");
        assert_eq!(found.best, Some(0));
        // A measurement that fails ends the search with its error.
        let failing =
            find(Cameras::Max, MAX_CAMERAS, |n| if n < 4 { board(|_| 1.0, |n| 5.0 * n as f64)(n) } else { Err(()) });
        assert_eq!(failing, Err(()));
    }

    #[test]
    fn camera_counts_parse() {
        assert_eq!("max".parse::<Cameras>(), Ok(Cameras::Max));
        assert_eq!("12".parse::<Cameras>(), Ok(Cameras::Fixed(12)));
        for bad in ["0", "-1", "257", "many"] {
            assert!(bad.parse::<Cameras>().is_err(), "{bad}");
        }
    }

    #[test]
    fn replay_cameras_copy_the_configs_cameras_in_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"x").expect("write");
        let text = format!(
            "version = 1\n[model]\npath = {}\n[[cameras]]\nname = \"door\"\nsource = \"0\"\nfps = 1\n[[cameras.regions]]\nname = \"step\"\ncrop = [0.0, 0.0, 0.5, 0.5]\n[[cameras]]\nname = \"yard\"\nsource = \"1\"\n",
            toml_string(&model).expect("utf-8")
        );
        let base = Config::parse(&text).expect("valid");
        let config = replay_cameras(&base, 3, "/srv/img.jpg", 7.5).expect("cameras");
        let names: Vec<&str> = config.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bench-1", "bench-2", "bench-3"]);
        assert!(config.cameras.iter().all(|c| c.source == "/srv/img.jpg" && c.fps == 7.5 && c.looping));
        let regions: Vec<usize> = config.cameras.iter().map(|c| c.regions.len()).collect();
        assert_eq!(regions, [1, 0, 1]);
        // No cameras in the config (or no config): plain whole-frame cameras.
        let plain = replay_cameras(&model_config(&model).expect("config"), 2, "/srv/img.jpg", 2.0).expect("cameras");
        assert_eq!(plain.cameras.len(), 2);
        assert!(plain.cameras.iter().all(|c| c.regions.is_empty() && c.fps == 2.0));
    }
}
