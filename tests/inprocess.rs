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
