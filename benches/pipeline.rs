//! Per-frame cost of each pipeline stage on this machine: `cargo bench --bench pipeline`.
//!
//! Decode and preprocess a 640x480 JPEG (and a raw YUYV frame, the camera case), inference with camclassd's
//! `Model::run` against a bare `ort` session loop with identical settings, and the whole pipeline, for the
//! FP32 and INT8 models. Prints a Markdown table (the one in the README). Timings are medians; the overhead
//! figure is a ratio of interleaved blocks from one run, so machine noise hits both sides alike.

use std::path::Path;
use std::time::{Duration, Instant};

use camclassd::model::{self, Model, ModelOptions, TensorSlot};
use camclassd::pipeline::Classifier;
use camclassd::preprocess::{Frame, Preprocessor};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

const THREADS: usize = 2;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(iterations: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let jpeg = std::fs::read(root.join("tests/data/generated/frame640x480.jpg"))?;
    let runtime = model::runtime::load(None)?;
    let options = ModelOptions { threads: Some(THREADS), ..ModelOptions::default() };
    let iterations = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);

    println!(
        "| model | decode JPEG 640x480 | preprocess (resize+crop+normalise) | YUYV 640x480 → tensor | infer (camclassd) | infer (bare ort) | overhead | full pipeline (JPEG) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for precision in ["fp32", "int8"] {
        let path = root.join(format!("models/efficientnet-lite0-{precision}.onnx"));
        let mut model = Model::load(runtime, &path, &options)?;
        let mut pre = Preprocessor::new(model.spec());

        let mut decode = time(iterations, || {
            pre.decode(Frame::Encoded(&jpeg)).expect("decode");
        });
        let mut tensor = vec![0f32; pre.tensor_len()];
        let mut preprocess = time(iterations, || pre.write_tensor(TensorSlot::F32(&mut tensor)).expect("preprocess"));
        let yuyv: Vec<u8> = (0..640 * 480 * 2).map(|i| (i * 13 % 239) as u8).collect();
        let mut yuyv_time = time(iterations, || {
            pre.decode(Frame::Yuyv { width: 640, height: 480, data: &yuyv }).expect("yuyv");
            pre.write_tensor(TensorSlot::F32(&mut tensor)).expect("preprocess");
        });

        // A bare ORT session with the same settings, fed the same tensor.
        let mut bare = Session::builder(runtime.environment())?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(THREADS)?
            .with_inter_threads(1)?
            .with_config_entry("session.intra_op.allow_spinning", "0")?
            .commit_from_file(&path)?;
        let shape = [1usize, 3, 224, 224];
        let mut bare_scores = vec![0f32; 1000];
        let mut input = model.new_input()?;
        match input.slot_mut(0) {
            TensorSlot::F32(slot) => slot.copy_from_slice(&tensor),
            TensorSlot::U8(_) => unreachable!("the bundled models take float32"),
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            ours.extend(time(iterations / 10, || {
                model.run(&input).expect("infer");
            }));
            theirs.extend(time(iterations / 10, || {
                let input = TensorRef::from_array_view((shape, &tensor[..])).expect("tensor");
                let outputs = bare.run(ort::inputs![input]).expect("run");
                let (_, data) = outputs[0].try_extract_tensor::<f32>().expect("scores");
                bare_scores.copy_from_slice(data);
            }));
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));

        let mut classifier = Classifier::new(model, 5, 0.0).expect("input tensor");
        let mut full = time(iterations, || {
            classifier.classify(Frame::Encoded(&jpeg)).expect("classify");
        });
        println!(
            "| {precision} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:+.1} % | {:.2} ms |",
            ms(median(&mut decode)),
            ms(median(&mut preprocess)),
            ms(median(&mut yuyv_time)),
            ms(ours),
            ms(theirs),
            (ours.as_secs_f64() / theirs.as_secs_f64() - 1.0) * 100.0,
            ms(median(&mut full)),
        );
    }
    println!(
        "\n{THREADS} intra-op threads, {iterations} iterations per figure, medians; ONNX Runtime {}.",
        runtime.version
    );
    Ok(())
}
