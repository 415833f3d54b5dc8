//! Hostile input (issue 26): pictures built to break a decoder, through every path a picture takes
//! (`classify`, `POST /api/v1/classify`, a camera), and the daemon's answer to a camera whose frames never
//! decode. Real binary, real mosquitto, real libjpeg-turbo.

use std::time::{Duration, Instant};

use super::broker::{Broker, Witness, daemon_config};
use super::daemon::Daemon;
use super::*;

/// The index of the first start-of-frame marker (SOF0, SOF1 or SOF2) of a JPEG.
fn sof(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w[0] == 0xff && matches!(w[1], 0xc0..=0xc2)).expect("the JPEG has a SOF marker")
}

/// `good` with its frame header corrupted in each way that poisoned a libjpeg-turbo 2.x handle: 12-bit
/// precision, lossless (SOF3), a zero side, a side over libjpeg's 65500, a bad component count.
pub fn corrupt_jpegs(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let at = sof(good);
    let patch = |edits: &[(usize, u8)]| {
        let mut bad = good.to_vec();
        for &(i, v) in edits {
            bad[at + i] = v;
        }
        bad
    };
    vec![
        ("12-bit", patch(&[(4, 12)])),
        ("lossless", patch(&[(1, 0xc3)])),
        ("height-0", patch(&[(5, 0), (6, 0)])),
        ("width-0", patch(&[(7, 0), (8, 0)])),
        ("width-65535", patch(&[(7, 0xff), (8, 0xff)])),
        ("components-2", patch(&[(9, 2)])),
    ]
}

/// `classify bad.jpg good.jpg good2.jpg`: the bad file fails alone (exit 1), both good ones are classified
/// as they are on their own (before: all three failed, "two SOI markers").
#[test]
fn a_bad_jpeg_fails_alone_in_classify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coffee = std::fs::read(generated("coffee.jpg")).expect("coffee.jpg");
    for (what, bad) in corrupt_jpegs(&coffee) {
        let path = dir.path().join(format!("{what}.jpg"));
        std::fs::write(&path, bad).expect("write");
        let out = run(camclassd()
            .args(["classify", "--json", "--model"])
            .arg(model("int8"))
            .arg(&path)
            .arg(generated("coffee.jpg"))
            .arg(generated("chelsea.jpg")));
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let reports: Vec<Report> =
            stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a classify --json line")).collect();
        assert_eq!(reports.len(), 2, "{what}: both good pictures are classified: {}", stderr(&out));
        assert_eq!(reports[0].top[0].class_id, 967, "{what}: coffee is espresso");
        assert!((281..=285).contains(&reports[1].top[0].class_id), "{what}: chelsea is a cat: {:?}", reports[1].top);
        assert!(stderr(&out).contains(&format!("{what}.jpg")), "{what}: the bad file is named: {}", stderr(&out));
    }
}

/// `POST /api/v1/classify`: a bad JPEG gets 422, and the next good one 200 (before: 422 for ever after).
#[test]
fn a_bad_jpeg_over_http_does_not_poison_the_next_request() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 2\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        generated("coffee.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let daemon = Daemon::start(&config);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(format!("{base}/healthz")).send().is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "no HTTP server:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let post = |body: Vec<u8>| {
        http.post(format!("{base}/api/v1/classify"))
            .header("content-type", "image/jpeg")
            .body(body)
            .send()
            .expect("classify")
    };
    let coffee = std::fs::read(generated("coffee.jpg")).expect("coffee.jpg");
    assert_eq!(post(coffee.clone()).status(), 200);
    for (what, bad) in corrupt_jpegs(&coffee) {
        assert_eq!(post(bad).status(), 422, "{what}");
        let good = post(coffee.clone());
        assert_eq!(good.status(), 200, "{what}: the next good picture");
        let report: serde_json::Value = good.json().expect("json");
        assert_eq!(report["top"][0]["class_id"], 967, "{what}: {report}");
    }
}

/// `camera`'s entry in the first health message where `pred` holds of it.
fn health_where(
    witness: &Witness,
    camera: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let entry = |payload: &str| {
        serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default()["cameras"][camera].clone()
    };
    let found = witness.wait_for(what, timeout, |messages| {
        messages.iter().filter(|m| m.topic.ends_with("/health")).any(|m| pred(&entry(&m.payload)))
    });
    found.iter().filter(|m| m.topic.ends_with("/health")).map(|m| entry(&m.payload)).find(|h| pred(h)).expect("found")
}

/// A camera (a replay folder: the worker's decoder, as for V4L2 MJPEG and GStreamer JPEG streams) with one
/// corrupt frame of each kind between good ones: each bad frame is skipped and counted, every good one is
/// classified (before: one event, then "frame skipped" for ever). A camera whose every frame is corrupt is
/// not "connected", and /readyz says why.
#[test]
fn a_camera_skips_and_counts_bad_frames_and_one_that_never_decodes_is_not_ready() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let coffee = std::fs::read(generated("coffee.jpg")).expect("coffee.jpg");
    let (mixed, all_bad) = (dir.path().join("mixed"), dir.path().join("bad"));
    std::fs::create_dir_all(&mixed).expect("mkdir");
    std::fs::create_dir_all(&all_bad).expect("mkdir");
    let bad = corrupt_jpegs(&coffee);
    for (i, (what, jpeg)) in bad.iter().enumerate() {
        std::fs::write(mixed.join(format!("{i:02}a-{what}.jpg")), jpeg).expect("write");
        std::fs::write(mixed.join(format!("{i:02}b-good.jpg")), &coffee).expect("write");
        std::fs::write(all_bad.join(format!("{i:02}-{what}.jpg")), jpeg).expect("write");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let cameras = format!(
        "[[cameras]]\nname = \"mixed\"\nsource = {:?}\nfps = 4\npublish = \"every_frame\"\nloop = false\n\
         [[cameras]]\nname = \"broken\"\nsource = {:?}\nfps = 5\n\
         [health]\ninterval = 2\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        mixed.display().to_string(),
        all_bad.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let daemon = Daemon::start(&config);
    let events = witness.wait_for("6 events of mixed", Duration::from_secs(60), |m| {
        m.iter().filter(|m| m.topic == "camclassd/testnode/mixed/event").count() >= bad.len()
    });
    for e in events.iter().filter(|m| m.topic == "camclassd/testnode/mixed/event") {
        let e: serde_json::Value = serde_json::from_str(&e.payload).expect("event");
        assert_eq!(e["top"][0]["class_id"], 967, "{e}");
    }
    let n = bad.len() as u64;
    let mixed_health = health_where(&witness, "mixed", "mixed's bad frames counted", Duration::from_secs(30), |h| {
        h["frames_undecodable"].as_u64().is_some_and(|u| u >= n)
    });
    assert_eq!(mixed_health["frames_undecodable"], bad.len() as u64, "{mixed_health}");
    assert!(mixed_health["frames_dropped"].as_u64() >= Some(bad.len() as u64), "{mixed_health}");

    // The broken camera: stale after 10 s of frames that all fail, with its own reason.
    let log = daemon.wait_log("none decodes", Duration::from_secs(30));
    assert!(log.contains("camera=broken"), "{log}");
    let broken = health_where(&witness, "broken", "broken disconnected", Duration::from_secs(20), |h| {
        h["connected"] == false && h["frames_undecodable"].as_u64().is_some_and(|u| u >= 10)
    });
    assert_eq!(broken["frames"], 0, "{broken}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readyz = String::new();
    while Instant::now() < deadline {
        let r = reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz")).expect("readyz");
        readyz = r.text().unwrap_or_default();
        if readyz.contains("broken") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(readyz.starts_with("not ready") && readyz.contains("camera broken"), "{readyz}");
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")).expect("metrics");
    let metrics = metrics.text().expect("metrics text");
    let line = format!("camclassd_frames_undecodable_total{{camera=\"mixed\"}} {n}");
    assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    assert!(metrics.lines().any(|l| l == "camclassd_camera_connected{camera=\"broken\"} 0"), "{metrics}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A region outside the frame, on a camera whose frames alternate between two sizes: one error line per
/// size (before: one per frame, ~20 lines a second with four regions).
#[test]
fn a_region_outside_alternating_frame_sizes_is_reported_once_per_size() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    for i in 0..10 {
        let name = if i % 2 == 0 { "composite_cat_coffee.png" } else { "coffee.jpg" };
        let ext = name.rsplit('.').next().unwrap_or("jpg");
        std::fs::copy(generated(name), frames.join(format!("{i:02}.{ext}"))).expect("copy");
    }
    let cameras = format!(
        "[[cameras]]\nname = \"desk\"\nsource = {:?}\nfps = 10\npublish = \"every_frame\"\n\
         [[cameras.regions]]\nname = \"inside\"\ncrop = [0, 0, 0.5, 1]\n\
         [[cameras.regions]]\nname = \"beyond\"\ncrop = [5000, 0, 400, 300]\n",
        frames.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let witness = Witness::start(&broker, "camclassd/testnode/desk/inside/event");
    let daemon = Daemon::start(&config);
    witness.wait_for("40 frames of the inside region", Duration::from_secs(60), |m| m.len() >= 40);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("is outside the").count(), 2, "{log}");
}
