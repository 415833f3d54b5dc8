//! The daemon's pipeline under stress: several workers, a reload that takes long, a camera that goes silent,
//! restart-only settings. Each test was written against a defect of issue 16 and failed before its fix.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::broker::{Broker, Witness, daemon_config};
use super::daemon::Daemon;
use super::*;

/// One camera "porch" replaying coffee.jpg at `fps`.
fn coffee_camera(fps: f64) -> String {
    format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = {fps}\n",
        generated("coffee.jpg").display().to_string()
    )
}

fn events(witness: &Witness, camera: &str) -> Vec<serde_json::Value> {
    let topic = format!("camclassd/testnode/{camera}/event");
    witness
        .messages()
        .iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| serde_json::from_str(&m.payload).ok())
        .collect()
}

#[test]
fn with_two_workers_a_cameras_events_follow_capture_order() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("frames");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for (i, name) in PHOTOS.iter().enumerate() {
        let ext = name.rsplit('.').next().unwrap_or("jpg");
        std::fs::copy(generated(name), folder.join(format!("{i:03}.{ext}"))).expect("copy");
    }
    // `workers = 2` lands in [model] (the keys before the first [[cameras]]).
    let cameras = format!(
        "workers = 2\n[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 60\npublish = \"every_frame\"\n",
        folder.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let daemon = Daemon::start(&config);
    witness.wait_for("events", Duration::from_secs(30), |m| m.len() >= 60);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut events = events(&witness, "porch");
    events.sort_by_key(|e| e["seq"].as_u64());
    // Two workers finish frames of one camera in either order; the later one of a pair that finished out of
    // order is dropped as late, never published after its successor (time would run backwards).
    let times: Vec<std::time::SystemTime> = events
        .iter()
        .map(|e| humantime::parse_rfc3339(e["captured_at"].as_str().unwrap_or_default()).expect("captured_at"))
        .collect();
    for (i, pair) in times.windows(2).enumerate() {
        assert!(pair[0] <= pair[1], "seq {} captured after seq {}: {:?}", i + 1, i + 2, &events[i..i + 2]);
    }
}

#[test]
fn sigterm_during_a_slow_reload_stops_the_daemon_at_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = coffee_camera(5.0);
    let config = daemon_config(dir.path(), &broker, &cameras);
    // Every reload's model loading takes 60 s (a TensorRT engine build).
    let mut daemon = Daemon::start_env(&config, &[("CAMCLASSD_TEST_HOOKS", "slow-reload-ms=60000")]);
    daemon.wait_log("camclassd running", Duration::from_secs(30));
    daemon.signal("-HUP");
    daemon.wait_log("reloading the config", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    daemon.signal("-TERM");
    // Before, the reload ran inside the control loop: SIGTERM waited for it (systemd: SIGKILL at 90 s).
    let code = daemon.wait_exit(Duration::from_secs(20));
    let log = daemon.log();
    assert_eq!(code, Some(0), "after {:?}:\n{log}", t.elapsed());
    assert!(log.contains("the reload being prepared is abandoned"), "{log}");
}

#[test]
fn a_reload_that_changes_the_onnxruntime_library_says_it_needs_a_restart() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = coffee_camera(5.0);
    let config = daemon_config(dir.path(), &broker, &cameras);
    let daemon = Daemon::start(&config);
    daemon.wait_log("camclassd running", Duration::from_secs(30));
    let lib = std::fs::read_dir(root().join(".cache/onnxruntime/x86_64"))
        .or_else(|_| std::fs::read_dir(root().join(".cache/onnxruntime/aarch64")))
        .expect("scripts/setup installed ONNX Runtime")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.1")))
        .expect("libonnxruntime.so.1.*");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("[onnxruntime]\nlibrary = {:?}\n", lib.display().to_string()));
    std::fs::write(&config, text).expect("write");
    daemon.signal("-HUP");
    // Before, the new library was silently ignored.
    daemon.wait_log("[onnxruntime] library changes take effect at the next restart", Duration::from_secs(30));
    daemon.wait_log("config reloaded", Duration::from_secs(30));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Writes `frames` JPEG frames into a named pipe, then keeps it open, writing nothing, until told.
fn feed_pipe(pipe: &Path, frames: usize) -> std::sync::mpsc::Sender<usize> {
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let pipe = pipe.to_path_buf();
    let jpeg = std::fs::read(generated("coffee.jpg")).expect("jpeg");
    std::thread::spawn(move || {
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&pipe) else { return };
        let mut send = |n: usize| {
            for _ in 0..n {
                if w.write_all(&jpeg).and_then(|()| w.flush()).is_err() {
                    return;
                }
            }
        };
        send(frames);
        // Silent, pipe held open: the camera's read blocks without an error.
        while let Ok(n) = rx.recv() {
            send(n);
        }
    });
    tx
}

#[test]
fn a_camera_whose_read_blocks_is_reported_stale_and_recovers() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = dir.path().join("cam.mjpeg");
    let made = std::process::Command::new("mkfifo").arg(&pipe).status().expect("mkfifo");
    assert!(made.success());
    let cameras = format!(
        "[[cameras]]\nname = \"pipe\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\n[health]\ninterval = 1\n",
        pipe.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let daemon = Daemon::start(&config);
    let more = feed_pipe(&pipe, 3);
    witness.wait_for("an event from the pipe", Duration::from_secs(30), |m| {
        m.iter().any(|m| m.topic == "camclassd/testnode/pipe/event")
    });
    // Ten frame periods at 5 fps is 2 s; the floor is 10 s.
    let health = |m: &[super::broker::Message]| -> Option<serde_json::Value> {
        m.iter()
            .rev()
            .find(|m| m.topic == "camclassd/testnode/health")
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m.payload).ok())
    };
    let stale = witness.wait_for("the camera reported stale", Duration::from_secs(30), |m| {
        health(m).is_some_and(|h| h["cameras"]["pipe"]["connected"] == false)
    });
    let h = health(&stale).expect("health");
    assert!(h["cameras"]["pipe"]["last_frame_age_s"].as_f64().is_some_and(|a| a >= 10.0), "{h}");
    let log = daemon.wait_log("the camera is stale", Duration::from_secs(5));
    // It names where the capture thread is: blocked reading the pipe, since its last frame.
    assert!(log.contains("its capture thread has been reading frames for"), "{log}");
    // The writer speaks again: connected, logged once.
    let _ = more.send(3);
    witness.wait_for("connected again", Duration::from_secs(30), |m| {
        health(m).is_some_and(|h| h["cameras"]["pipe"]["connected"] == true)
    });
    daemon.wait_log("frames arrive again", Duration::from_secs(5));
    drop(more);
    let (_, log) = daemon.stop();
    assert_eq!(log.matches("the camera is stale").count(), 1, "{log}");
}

#[test]
fn two_daemons_with_one_client_id_back_off_and_name_the_cause() {
    // Cloned SD cards: same hostname, so the same default node id and client id. The broker drops the older
    // connection each time the other connects.
    let broker = Broker::start();
    let cameras = coffee_camera(2.0);
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = Daemon::start(&daemon_config(dir_a.path(), &broker, &cameras));
    let b = Daemon::start(&daemon_config(dir_b.path(), &broker, &cameras));
    std::thread::sleep(Duration::from_secs(16));
    let (_, log_a) = a.stop();
    let (_, log_b) = b.stop();
    let connections = |log: &str| log.matches("MQTT connected").count();
    // Before, each reconnected 0.5-1 s after being dropped, for ever (about 10 connections each in 16 s);
    // the waits now grow (1, 2, 4, 8 s …, jittered).
    let total = connections(&log_a) + connections(&log_b);
    assert!(total <= 12, "{total} connections in 16 s:\n{log_a}\n---\n{log_b}");
    assert!(
        log_a.contains("another client with the same client id (camclassd-testnode)")
            || log_b.contains("another client with the same client id (camclassd-testnode)"),
        "{log_a}\n---\n{log_b}"
    );
}

#[test]
fn sigterm_right_after_an_early_reload_does_not_wait_out_the_drain() {
    // Issue 18 #17: SIGHUP 0.1 s after start, then SIGTERM: the queue is empty, so shutdown must not wait the
    // publisher's 3 s drain.
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(&daemon_config(dir.path(), &broker, &coffee_camera(5.0)));
    std::thread::sleep(Duration::from_millis(100));
    daemon.signal("-HUP");
    daemon.wait_log("config reloaded", Duration::from_secs(30));
    daemon.wait_log("MQTT connected", Duration::from_secs(10));
    let t = Instant::now();
    daemon.signal("-TERM");
    let code = daemon.wait_exit(Duration::from_secs(10));
    let (took, log) = (t.elapsed(), daemon.log());
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_millis(2500), "stopped in {took:?}:\n{log}");
    assert!(log.contains("queued=0"), "{log}");
}

#[test]
fn frames_of_three_cameras_batched_together_each_get_their_own_answer() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"];
    // Every camera offers more frames than one inference thread takes, and a batch waits up to 200 ms to
    // fill: runs take the three cameras' frames together (and the model's batch dimension is dynamic).
    let mut cameras = "max_batch = 4\nmax_batch_delay_ms = 200\n".to_string();
    for (i, photo) in photos.iter().enumerate() {
        cameras += &format!(
            "[[cameras]]\nname = \"cam{i}\"\nsource = {:?}\nfps = 30\npublish = \"every_frame\"\n",
            generated(photo).display().to_string()
        );
    }
    let config = daemon_config(dir.path(), &broker, &(cameras + "[health]\ninterval = 1\n"));
    let daemon = Daemon::start(&config);
    let health = witness.wait_for("batched runs in the health report", Duration::from_secs(40), |m| {
        let events =
            (0..3).all(|i| m.iter().filter(|m| m.topic == format!("camclassd/testnode/cam{i}/event")).count() >= 10);
        events
            && m.iter().rev().find(|m| m.topic == "camclassd/testnode/health").is_some_and(|h| {
                let h: serde_json::Value = serde_json::from_str(&h.payload).unwrap_or_default();
                h["inference"]["runs"].as_u64().is_some_and(|r| r >= 5)
            })
    });
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let report = health.iter().rev().find(|m| m.topic == "camclassd/testnode/health").expect("a health report");
    let h: serde_json::Value = serde_json::from_str(&report.payload).expect("health JSON");
    let (runs, images) = (h["inference"]["runs"].as_u64().unwrap_or(0), h["inference"]["images"].as_u64().unwrap_or(0));
    assert!(images as f64 >= 1.5 * runs as f64, "frames were not batched: {runs} runs took {images} images ({h})");
    let model = model("int8");
    for (i, photo) in photos.iter().enumerate() {
        let want = &classify_json(&model, &[generated(photo)], &["--threads", "1"], 0)[0].top[0];
        let events = events(&witness, &format!("cam{i}"));
        assert!(events.len() >= 10, "cam{i}: {} events", events.len());
        for e in &events {
            let top = &e["top"][0];
            assert_eq!(top["label"], want.label.as_str(), "cam{i} ({photo}) got another camera's answer: {e}");
            let score = top["score"].as_f64().unwrap_or(-1.0);
            assert!((score - want.score).abs() < 1e-3, "cam{i}: score {score} against classify's {}: {e}", want.score);
        }
        // Each camera's events stay in capture order.
        let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "cam{i}: {seqs:?}");
    }
}

/// Three fifo cameras at 120 fps, written as fast as they are read until `stop` (the pipes stay open).
fn flood(dir: &Path, n: usize) -> (String, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let jpeg = std::fs::read(generated("coffee.jpg")).expect("jpeg");
    let mut cameras = String::new();
    for i in 0..n {
        let pipe = dir.join(format!("cam{i}.mjpeg"));
        let made = std::process::Command::new("mkfifo").arg(&pipe).status().expect("mkfifo");
        assert!(made.success());
        cameras += &format!("[[cameras]]\nname = \"cam{i}\"\nsource = {:?}\nfps = 120\n", pipe.display().to_string());
        let (stop, jpeg) = (Arc::clone(&stop), jpeg.clone());
        std::thread::spawn(move || {
            let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&pipe) else { return };
            while !stop.load(Ordering::Relaxed) {
                if w.write_all(&jpeg).is_err() {
                    return;
                }
            }
            // Held open, silent: the camera waits without an error.
            std::thread::sleep(Duration::from_secs(120));
        });
    }
    (cameras, stop)
}

fn inference_health(m: &[super::broker::Message]) -> Option<serde_json::Value> {
    m.iter()
        .rev()
        .find(|m| m.topic == "camclassd/testnode/health")
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m.payload).ok())
        .map(|h| h["inference"].clone())
}

#[test]
fn by_default_the_workers_follow_the_load_up_to_the_cores_and_back_down() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cameras, stop) = flood(dir.path(), 3);
    let config = daemon_config(dir.path(), &broker, &(cameras + "[health]\ninterval = 1\n"));
    // daemon_config sets `threads = 1`; `workers` is left to camclassd.
    let witness = Witness::start(&broker, "camclassd/testnode/health");
    let daemon = Daemon::start(&config);
    let at_start = witness.wait_for("a health message", Duration::from_secs(30), |m| inference_health(m).is_some());
    let h = inference_health(&at_start).expect("health");
    assert_eq!((h["workers"].as_u64(), h["threads"].as_u64()), (Some(1), Some(1)), "{h}");
    if cores < 2 {
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        let (_, log) = daemon.stop();
        assert!(!log.contains("parallelism"), "one core: one worker\n{log}");
        return;
    }
    // Frames replaced while the one worker is busy: a second, said once with the reason.
    let log = daemon.wait_log("parallelism 1×1 → 2×1: ", Duration::from_secs(60));
    assert!(log.contains("frames waited and were replaced in"), "{log}");
    witness.wait_for("health with 2 workers", Duration::from_secs(30), |m| {
        inference_health(m).is_some_and(|h| h["workers"] == 2)
    });
    // Never more workers than cores.
    std::thread::sleep(Duration::from_secs(5));
    let log = daemon.log();
    assert!(!log.contains(&format!("→ {}×1", cores + 1)), "{log}");
    // The cameras fall silent: back to one.
    stop.store(true, Ordering::Relaxed);
    let log = daemon.wait_log("→ 1×1: the load fits fewer workers", Duration::from_secs(90));
    witness.wait_for("health with 1 worker", Duration::from_secs(30), |m| {
        inference_health(m).is_some_and(|h| h["workers"] == 1)
    });
    // A retired worker is not the end of the pipeline: the daemon runs on until it is told to stop.
    std::thread::sleep(Duration::from_secs(2));
    let running = daemon.log();
    assert!(!running.contains("shutting down") && !running.contains(" stopped "), "{running}");
    let (code, log2) = daemon.stop();
    assert_eq!(code, Some(0), "{log}\n{log2}");
    assert!(!log2.contains("did not finish"), "every worker ended, the retired ones too:\n{log2}");
}

#[test]
fn the_workers_never_outnumber_the_cpus_the_daemon_may_use() {
    // Pinned to one CPU (as a cgroup's cpuset or CPUQuota=100% would): the load never adds a worker.
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cameras, stop) = flood(dir.path(), 2);
    let config = daemon_config(dir.path(), &broker, &cameras);
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let daemon = Daemon::start_pinned(&config, "0");
    witness.wait_for("events", Duration::from_secs(30), |m| m.len() >= 2);
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("parallelism"), "{log}");
}
