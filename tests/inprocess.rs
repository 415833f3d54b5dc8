//! The daemon driven in-process through its `Signals` seam and its injected `Hooks`: no binary, no real
//! signals, no broker (the events wait in the queue). Its own test binary, so that the daemon's threads do not
//! share a process with other tests.

use std::path::Path;
use std::time::{Duration, Instant};

use camclassd::config::Config;
use camclassd::daemon::{self, Hooks, Signals};

fn config(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/efficientnet-lite0-int8.onnx");
    let image = root.join("tests/data/generated/coffee.jpg");
    assert!(model.exists() && image.exists(), "run scripts/setup first");
    // Port 1 on loopback: nothing listens, so every event stays queued.
    let text = format!(
        "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1\nnode_id = \"inproc\"\n[queue]\npath = {:?}\n\
         [model]\npath = {:?}\nthreads = 1\n[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 20\n\
         publish = \"every_frame\"\n",
        dir.join("queue.redb").display().to_string(),
        model.display().to_string(),
        image.display().to_string()
    );
    let path = dir.join("camclassd.toml");
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn a_reload_then_shutdown_through_the_signals_seam_keeps_every_event_and_a_slow_reload_never_holds_the_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<()>(1);
    let started = Instant::now();
    let summary = runtime.block_on(async {
        let signals = Signals {
            shutdown: async move {
                let _ = stop_rx.await;
            },
            reload: reload_rx,
        };
        // Every reload's model loading takes 60 s (a TensorRT build).
        let hooks = Hooks { slow_reload: Some(Duration::from_secs(60)), ..Hooks::default() };
        let config = Config::load_for_daemon(&path).expect("valid config");
        let daemon = tokio::spawn(async move { daemon::run_with(config, Some(path), None, signals, hooks).await });
        // Frames flow, then a reload starts and the shutdown comes while it is being prepared.
        tokio::time::sleep(Duration::from_secs(3)).await;
        reload_tx.send(()).await.expect("reload");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(());
        daemon.await.expect("the daemon task")
    });
    // The abandoned reload sleeps on a blocking thread: it must not hold the exit either.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let summary = summary.expect("a clean stop");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(summary.frames >= 20, "{summary:?}");
    // No broker: every event waits in the queue for the next start, none lost or dropped.
    assert_eq!(summary.events_queued, summary.frames, "{summary:?}");
    assert_eq!((summary.events, summary.events_dropped), (0, 0), "{summary:?}");
}

/// The scores of `model_path` on a real photo, with the optimised-model cache in `cache` (or none), and the
/// session's load time.
fn scores_with_cache(model_path: &Path, cache: Option<&Path>) -> (Vec<f32>, Duration) {
    use camclassd::model::{Model, ModelOptions};
    use camclassd::pipeline::Prepare;
    use camclassd::preprocess::Frame;
    let runtime = camclassd::model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions {
        threads: Some(1),
        record_placement: false,
        optimized_cache: cache.map(Path::to_path_buf),
        ..ModelOptions::default()
    };
    let mut model = Model::load(runtime, model_path, &options).expect("model loads");
    let photo = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated/chelsea.jpg"))
        .expect("run scripts/setup first");
    let mut input = model.new_input().expect("input");
    Prepare::new(model.spec()).frame(Frame::Encoded(&photo), &mut input, 0).expect("prepare");
    model.run(&input).expect("inference");
    (model.scores(0).to_vec(), model.load_times().0)
}

#[test]
fn the_optimised_model_cache_gives_the_same_scores_and_survives_a_corrupt_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["efficientnet-lite0-int8.onnx", "efficientnet-lite0-fp32.onnx"] {
        let model = root.join("models").join(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("onnxruntime");
        let cached_files = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(&cache).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        };
        let (plain, _) = scores_with_cache(&model, None);
        assert!(cached_files().is_empty(), "no cache asked for, none written");

        // First load: optimises and writes the file (and nothing half-written beside it).
        let (first, _) = scores_with_cache(&model, Some(&cache));
        let files = cached_files();
        assert_eq!(files.len(), 1, "{files:?}");
        let file = &files[0];
        assert!(file.extension().is_some_and(|e| e == "ort"), "{}", file.display());
        let written = std::fs::metadata(file).expect("cache file").modified().expect("mtime");

        // Second load: from the file, which stays as it was.
        let (second, _) = scores_with_cache(&model, Some(&cache));
        assert_eq!(std::fs::metadata(file).expect("cache file").modified().expect("mtime"), written);
        for (what, got) in [("optimised and saved", &first), ("loaded from the cache", &second)] {
            let worst = plain.iter().zip(got.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{name} {what}: scores differ from an uncached session by up to {worst}");
        }

        // A damaged file is replaced, not trusted and not fatal.
        std::fs::write(file, b"not an ORT model").expect("corrupt");
        let (third, _) = scores_with_cache(&model, Some(&cache));
        assert_eq!(third.len(), plain.len());
        let worst = plain.iter().zip(third.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name} after a corrupt cache file: scores differ by up to {worst}");
        assert!(std::fs::metadata(file).expect("rewritten").len() > 1000, "the corrupt file was replaced");
        assert_eq!(cached_files().len(), 1);
    }
}

#[test]
fn a_gathered_batch_gives_each_image_the_scores_it_gets_alone() {
    use camclassd::model::{Model, ModelOptions};
    use camclassd::pipeline::Prepare;
    use camclassd::preprocess::Frame;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = camclassd::model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions { threads: Some(1), record_placement: false, ..ModelOptions::default() };
    for name in ["efficientnet-lite0-int8.onnx", "efficientnet-lite0-fp32.onnx"] {
        let mut model = Model::load(runtime, &root.join("models").join(name), &options).expect("model loads");
        assert!(model.dynamic_batch(), "{name}: the models are built with a dynamic batch dimension");
        // Three photos prepared apart, each scored alone.
        let mut alone = Vec::new();
        let mut inputs = Vec::new();
        for photo in ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"] {
            let bytes = std::fs::read(root.join("tests/data/generated").join(photo)).expect("run scripts/setup first");
            let mut input = model.new_input().expect("input");
            Prepare::new(model.spec()).frame(Frame::Encoded(&bytes), &mut input, 0).expect("prepare");
            model.run(&input).expect("inference");
            alone.push(model.scores(0).to_vec());
            inputs.push(input);
        }
        // Gathered into a tensor of four, in another order, and run on the first three slots only.
        let mut batch = model.new_batch_input(4).expect("batch input");
        assert_eq!(batch.batch(), 4);
        for (slot, i) in [2usize, 0, 1].into_iter().enumerate() {
            batch.copy_slot(slot, &inputs[i], 0).expect("same model");
        }
        let scores = model.run_first(&batch, 3).expect("batched inference");
        assert_eq!(scores.len(), 3 * model.num_classes(), "{name}: three images' scores, not four");
        for (slot, i) in [2usize, 0, 1].into_iter().enumerate() {
            let got = model.scores(slot);
            let worst = alone[i].iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4, "{name}: image {i} in slot {slot} differs from its lone run by {worst}");
            let top = |s: &[f32]| s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, _)| k);
            assert_eq!(top(got), top(&alone[i]), "{name}: image {i}");
        }
        assert!(model.run_first(&batch, 0).is_err(), "an empty batch is refused");
        assert!(model.run_first(&batch, 5).is_err(), "more images than the tensor holds are refused");
    }
}
