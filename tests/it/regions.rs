//! Regions of a camera, each with its model and policy: what each publishes (compared with `classify --crop`
//! on the same picture), a two-class model as a Home Assistant binary_sensor, per-class thresholds and the
//! allow-list, sessions shared between regions, and config errors. Real mosquitto, real binary, real models.

use std::time::Duration;

use super::broker::{Broker, Message, Witness, daemon_config, retained};
use super::daemon::Daemon;
use super::ha;
use super::*;

const LEFT: &str = "[0, 0, 0.5, 1]";
const RIGHT: &str = "[0.5, 0, 0.5, 1]";

/// A replay camera `desk` on the composite (cat left, coffee right), with `regions` appended.
fn composite_camera(publish: &str, regions: &str) -> String {
    format!(
        "[[cameras]]\nname = \"desk\"\nsource = {:?}\nfps = 5\npublish = {publish:?}\ndebounce = 1\n{regions}",
        generated("composite_cat_coffee.png").display().to_string()
    )
}

fn region(name: &str, crop: &str, extra: &str) -> String {
    format!("[[cameras.regions]]\nname = {name:?}\ncrop = {crop}\n{extra}")
}

/// `classify --json --crop` of the composite with `model`: the region's answer from the still.
fn classify_crop(model: &Path, crop: &str) -> Report {
    let reports =
        classify_json(model, &[generated("composite_cat_coffee.png")], &["--crop", crop, "--threads", "1"], 0);
    reports.into_iter().next().expect("one report")
}

fn json(m: &Message) -> serde_json::Value {
    serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{}: {e}: {}", m.topic, m.payload))
}

fn last_on<'a>(messages: &'a [Message], topic: &str) -> Option<&'a Message> {
    messages.iter().rev().find(|m| m.topic == topic && !m.payload.is_empty())
}

/// Every discovery config is one Home Assistant accepts whole (its own discovery code and schemas, see
/// `ha`), under the node's device and available with the node's status.
fn assert_discovery(configs: &[Message]) {
    ha::assert_accepted(configs);
    for m in configs.iter().filter(|m| !m.payload.is_empty()) {
        let v = json(m);
        assert_eq!(
            v["device"]["identifiers"][0], "camclassd_testnode",
            "every entity under the node's device: {}",
            m.topic
        );
        assert_eq!(v["availability_topic"], "camclassd/testnode/status", "{}", m.topic);
    }
}

#[test]
fn each_region_publishes_what_classify_crop_gives_for_its_half() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = composite_camera(
        "every_frame",
        &[
            region("left", LEFT, ""),
            region("right", "[450, 0, 450, 300]", ""),
            region("beyond", "[800, 0, 400, 300]", ""),
        ]
        .concat(),
    ) + &format!(
        "[[cameras]]\nname = \"whole\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\n",
        generated("composite_cat_coffee.png").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    std::fs::write(&config, std::fs::read_to_string(&config).expect("config") + "[homeassistant]\n").expect("write");
    let daemon = Daemon::start(&config);
    let topics = ["desk/left", "desk/right", "whole"].map(|p| format!("camclassd/testnode/{p}/event"));
    let messages = witness.wait_for("each region's events", Duration::from_secs(40), |m| {
        topics.iter().all(|t| m.iter().filter(|m| &m.topic == t).count() >= 3)
    });
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    let int8 = model("int8");
    for (path, crop) in [("desk/left", "0,0,0.5,1"), ("desk/right", "450,0,450,300")] {
        let want = classify_crop(&int8, crop);
        let e = json(last_on(&messages, &format!("camclassd/testnode/{path}/event")).expect("an event"));
        assert_eq!(e["schema"], "camclassd.event/2", "{e}");
        assert_eq!((e["camera"].as_str(), e["region"].as_str()), (Some("desk"), path.split('/').nth(1)));
        assert_eq!(e["model"]["name"], "default");
        assert_eq!(e["model"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(e["top"][0]["class_id"].as_u64(), Some(want.top[0].class_id as u64), "{path}: {e}");
        let score = e["top"][0]["score"].as_f64().expect("score");
        assert!((score - want.top[0].score).abs() < 1e-3, "{path}: {score} vs {}", want.top[0].score);
        let state = json(last_on(&messages, &format!("camclassd/testnode/{path}/state")).expect("a state"));
        assert_eq!(state["class_id"], e["top"][0]["class_id"]);
    }
    // The two halves are different photos: the regions really are different crops.
    let top = |p: &str| {
        json(last_on(&messages, &format!("camclassd/testnode/desk/{p}/event")).unwrap())["top"][0]["class_id"].clone()
    };
    assert_ne!(top("left"), top("right"));

    // The camera without regions keeps version 1 and its own topics.
    let whole = json(last_on(&messages, "camclassd/testnode/whole/event").expect("whole-frame event"));
    assert_eq!(whole["schema"], "camclassd.event/1");
    assert!(whole.get("region").is_none(), "{whole}");
    assert_eq!(whole["top"][0]["class_id"].as_u64(), Some(classify_crop(&int8, "0,0,1,1").top[0].class_id as u64));
    assert!(!messages.iter().any(|m| m.topic == "camclassd/testnode/desk/event"), "no whole-frame event for desk");

    // The crop beyond the frame: said once, the region disabled, the others carried on.
    assert_eq!(log.matches("is outside the 900x300 frame").count(), 1, "{log}");
    assert!(!messages.iter().any(|m| m.topic.contains("/beyond/")));

    // Discovery: per region a label sensor, a score sensor and an event entity, under the camera's node device.
    let configs = retained(&broker, "homeassistant/#");
    for object in ["desk_left_label", "desk_right_score"] {
        assert!(
            configs.iter().any(|m| m.topic == format!("homeassistant/sensor/testnode/{object}/config")),
            "{object}"
        );
    }
    let event = configs.iter().find(|m| m.topic == "homeassistant/event/testnode/desk_left_classification/config");
    assert_eq!(json(event.expect("event entity"))["state_topic"], "camclassd/testnode/desk/left/event");
    assert!(configs.iter().any(|m| m.topic == "homeassistant/sensor/testnode/whole_label/config"));
    // The diagnostics: per camera (a connectivity binary_sensor among them), and the node's own.
    for t in [
        "binary_sensor/testnode/desk_connected",
        "sensor/testnode/whole_fps",
        "sensor/testnode/queue_depth",
        "sensor/testnode/model_check",
    ] {
        assert!(configs.iter().any(|m| m.topic == format!("homeassistant/{t}/config")), "{t}");
    }
    assert_discovery(&configs);
}

#[test]
fn a_two_class_region_is_a_binary_sensor_and_thresholds_and_classes_change_what_is_said() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = [
        region("left", LEFT, "model = \"catcoffee\"\non_class = \"cat\"\ndevice_class = \"occupancy\"\n"),
        region("right", RIGHT, "model = \"catcoffee\"\non_class = \"cat\"\n"),
        // The cat scores below 1: nothing reaches its threshold, the coffee not "*".
        region("strict", LEFT, "model = \"catcoffee\"\nthresholds = { cat = 1.0, \"*\" = 0.5 }\n"),
        // Only the coffee may be reported: on the cat's half it is the answer, however low.
        region("coffee_only", LEFT, "model = \"catcoffee\"\nclasses = [\"coffee\"]\n"),
    ]
    .concat();
    let config = daemon_config(dir.path(), &broker, &composite_camera("on_change", &regions));
    let text = std::fs::read_to_string(&config).expect("config");
    let models = format!(
        "[[models]]\nname = \"catcoffee\"\npath = {:?}\nthreads = 1\n[homeassistant]\n",
        generated("two_class.onnx").display().to_string()
    );
    std::fs::write(&config, text.replacen("[[cameras]]", &format!("{models}[[cameras]]"), 1)).expect("write");
    let daemon = Daemon::start(&config);
    let states = ["left", "right", "strict", "coffee_only"].map(|r| format!("camclassd/testnode/desk/{r}/state"));
    witness.wait_for("each region's state", Duration::from_secs(40), |m| {
        states.iter().all(|t| m.iter().any(|m| &m.topic == t))
    });
    let retained_states = retained(&broker, "camclassd/testnode/desk/+/state");
    let configs = retained(&broker, "homeassistant/#");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    let two = generated("two_class.onnx");
    let state = |r: &str| {
        json(
            retained_states.iter().find(|m| m.topic == format!("camclassd/testnode/desk/{r}/state")).expect("retained"),
        )
    };
    // Each half's label is what classify --crop says with the same model.
    assert_eq!(state("left")["label"].as_str(), Some(classify_crop(&two, "0,0,0.5,1").top[0].label.as_str()));
    assert_eq!(state("right")["label"].as_str(), Some(classify_crop(&two, "0.5,0,0.5,1").top[0].label.as_str()));
    assert_eq!((state("left")["label"].as_str(), state("right")["label"].as_str()), (Some("cat"), Some("coffee")));
    // The label sensor's attributes are the state: with the top classes.
    assert_eq!(state("left")["top"][0]["label"], "cat");
    assert_eq!(state("left")["top"].as_array().map(Vec::len), Some(2));

    // The binary_sensors: retained configs, ON for the cat's half, OFF for the coffee's.
    let binary = |r: &str| {
        let m = configs
            .iter()
            .find(|m| m.topic == format!("homeassistant/binary_sensor/testnode/desk_{r}/config"))
            .unwrap_or_else(|| panic!("binary_sensor for {r}"));
        json(m)
    };
    assert_eq!(binary("left")["device_class"], "occupancy");
    assert!(binary("right").get("device_class").is_none());
    for r in ["left", "right"] {
        let b = binary(r);
        assert_eq!(b["state_topic"], format!("camclassd/testnode/desk/{r}/state"));
        // What Home Assistant renders from the template for this state.
        let template = b["value_template"].as_str().expect("template");
        // A state without a class (nothing over its threshold) is unknown, not OFF.
        assert_eq!(
            template,
            "{{ 'None' if value_json.label is none else ('ON' if value_json.label == \"cat\" else 'OFF') }}"
        );
        let on = state(r)["label"] == "cat";
        assert_eq!((r, on), (r, r == "left"), "left is ON, right is OFF");
    }
    assert!(!configs.iter().any(|m| m.topic.ends_with("/desk_strict/config")), "no binary_sensor without on_class");

    // Thresholds: the cat (below 1.0) and the coffee (below 0.5) are both left out: "nothing".
    assert_eq!(
        (state("strict")["class_id"].clone(), state("strict")["label"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null)
    );
    // The allow-list: the coffee is the only class reported.
    assert_eq!(state("coffee_only")["label"], "coffee");
    let events = witness.messages();
    let e = json(last_on(&events, "camclassd/testnode/desk/coffee_only/event").expect("event"));
    assert_eq!(e["top"].as_array().map(Vec::len), Some(1), "{e}");
    assert_eq!(e["model"]["name"], "catcoffee");
    assert_discovery(&configs);
}

/// The retained payload of `topic`, as raw bytes (`mosquitto_sub` prints binary payloads as they are).
fn retained_bytes(broker: &Broker, topic: &str) -> Vec<u8> {
    let out = std::process::Command::new("mosquitto_sub")
        .args(broker.client_args())
        .args(["-t", topic, "-C", "1", "-N", "-W", "5", "--retained-only"])
        .output()
        .expect("mosquitto_sub runs");
    assert!(out.status.success(), "no retained message on {topic}");
    out.stdout
}

#[test]
fn a_snapshot_is_a_retained_jpeg_of_the_crop_with_an_image_entity() {
    let broker = Broker::start();
    // Text topics only: the witness reads lines of text, and a JPEG is not one.
    let witness = Witness::start(&broker, "camclassd/testnode/+/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = [
        region("left", LEFT, "snapshot = true\nsnapshot_size = 200\n"),
        region("right", "[450, 100, 300, 200]", "snapshot = true\nsnapshot_frame = true\nsnapshot_size = 300\n"),
        region("plain", LEFT, ""),
    ]
    .concat();
    let config = daemon_config(dir.path(), &broker, &composite_camera("on_change", &regions));
    std::fs::write(&config, std::fs::read_to_string(&config).expect("config") + "[homeassistant]\n").expect("write");
    let daemon = Daemon::start(&config);
    witness.wait_for("the regions' changes", Duration::from_secs(40), |m| {
        ["left", "right"].iter().all(|r| m.iter().any(|m| m.topic == format!("camclassd/testnode/desk/{r}/event")))
    });
    let configs = retained(&broker, "homeassistant/#");
    // The crop alone (450x300), longest side 200: the crop's aspect.
    let left =
        image::load_from_memory(&retained_bytes(&broker, "camclassd/testnode/desk/left/snapshot")).expect("a JPEG");
    assert_eq!((left.width(), left.height()), (200, 133));
    // The whole 900x300 frame with the box, longest side 300; the box's top edge is red.
    let right = image::load_from_memory(&retained_bytes(&broker, "camclassd/testnode/desk/right/snapshot"))
        .expect("a JPEG")
        .to_rgb8();
    assert_eq!(right.dimensions(), (300, 100));
    let p = right.get_pixel(200, 33);
    assert!(p[0] > 180 && p[1] < 90 && p[2] < 90, "the box at (200, 33): {p:?}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let plain = std::process::Command::new("mosquitto_sub")
        .args(broker.client_args())
        .args(["-t", "camclassd/testnode/desk/plain/snapshot", "-C", "1", "-W", "2", "--retained-only"])
        .output()
        .expect("mosquitto_sub runs");
    assert!(plain.stdout.is_empty(), "a snapshot only where asked for");

    let image = configs.iter().find(|m| m.topic == "homeassistant/image/testnode/desk_left_snapshot/config");
    let v = json(image.expect("an image entity"));
    assert_eq!(
        (v["image_topic"].as_str(), v["content_type"].as_str()),
        (Some("camclassd/testnode/desk/left/snapshot"), Some("image/jpeg"))
    );
    assert_discovery(&configs);
}

#[test]
fn a_camera_without_regions_snapshots_its_whole_frame_on_change_and_on_command() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/desk/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = composite_camera("on_change", "snapshot = true\nsnapshot_size = 300\n");
    let config = daemon_config(dir.path(), &broker, &camera);
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("keepalive = 5\n", "keepalive = 5\ncommands = true\n");
    std::fs::write(&config, text + "[homeassistant]\n").expect("write");
    let daemon = Daemon::start(&config);
    witness.wait_for("the change event", Duration::from_secs(40), |m| {
        m.iter().any(|m| m.payload.contains("\"reason\":\"change\""))
    });
    // The whole 900x300 frame, longest side 300, on the camera's own topic.
    let whole = image::load_from_memory(&retained_bytes(&broker, "camclassd/testnode/desk/snapshot")).expect("a JPEG");
    assert_eq!((whole.width(), whole.height()), (300, 100));
    // Cleared, it comes back with the `snapshot` command's event.
    broker.publish("camclassd/testnode/desk/snapshot", "", true);
    broker.publish("camclassd/testnode/command", "snapshot desk", false);
    witness.wait_for("the snapshot event", Duration::from_secs(20), |m| {
        m.iter().any(|m| m.payload.contains("\"reason\":\"snapshot\""))
    });
    let again = image::load_from_memory(&retained_bytes(&broker, "camclassd/testnode/desk/snapshot")).expect("a JPEG");
    assert_eq!((again.width(), again.height()), (300, 100));
    let configs = retained(&broker, "homeassistant/#");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let image = configs.iter().find(|m| m.topic == "homeassistant/image/testnode/desk_snapshot/config");
    let v = json(image.expect("an image entity"));
    assert_eq!(
        (v["image_topic"].as_str(), v["content_type"].as_str()),
        (Some("camclassd/testnode/desk/snapshot"), Some("image/jpeg"))
    );
    assert_discovery(&configs);

    // With regions, snapshots are set per region: the camera's own key is refused where it is.
    let both = daemon_config(
        dir.path(),
        &broker,
        &composite_camera("on_change", &format!("snapshot = true\n{}", region("a", LEFT, ""))),
    );
    let out = run(camclassd().arg("check-config").arg(&both));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line =
        std::fs::read_to_string(&both).expect("config").lines().position(|l| l == "snapshot = true").expect("line") + 1;
    assert!(
        stderr(&out).contains(&format!("{}:{line}:", both.display()))
            && stderr(&out).contains("cameras[0].snapshot: a camera with regions takes snapshots per region"),
        "{}",
        stderr(&out)
    );
}

/// `classify --json --scores --crop` of the composite with the multi-label fixture and `--threshold`s.
fn classify_multi(crop: &str, thresholds: &[(String, f64)]) -> serde_json::Value {
    let mut cmd = camclassd();
    cmd.arg("classify").arg("--model").arg(generated("effnet-sigmoid.onnx")).args([
        "--json",
        "--scores",
        "--threads",
        "1",
        "--top",
        "5",
        "--crop",
        crop,
    ]);
    for (class, p) in thresholds {
        cmd.arg("--threshold").arg(format!("{class}={p}"));
    }
    let out = run(cmd.arg(generated("composite_cat_coffee.png")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("one JSON report")
}

/// `on` as (class_id, label) pairs, with its scores.
fn on_list(v: &serde_json::Value) -> (Vec<(u64, String)>, Vec<f64>) {
    let on = v["on"].as_array().unwrap_or_else(|| panic!("an `on` list: {v}"));
    (
        on.iter()
            .map(|c| (c["class_id"].as_u64().expect("id"), c["label"].as_str().expect("label").to_string()))
            .collect(),
        on.iter().map(|c| c["score"].as_f64().expect("score")).collect(),
    )
}

#[test]
fn a_multi_label_regions_thresholds_decide_its_classes_on_as_classify_does() {
    // The cat's half through the sigmoid model: its three best classes, a > b > c.
    let crop = "0,0,0.5,1";
    let free = classify_multi(crop, &[]);
    let scores: Vec<f64> =
        free["scores"].as_array().expect("scores").iter().map(|s| s.as_f64().expect("number")).collect();
    let top: Vec<(usize, String)> = free["top"]
        .as_array()
        .expect("top")
        .iter()
        .map(|c| (c["class_id"].as_u64().expect("id") as usize, c["label"].as_str().expect("label").to_string()))
        .collect();
    let [a, b, c] = [0, 1, 2].map(|i| scores[top[i].0]);
    assert!(a > b && b > c, "three distinct scores: {a} {b} {c}");
    // "two": the two best are on; "first_third": the best, and the third by its own threshold.
    let two = vec![("*".to_string(), (b + c) / 2.0)];
    let first_third = vec![("*".to_string(), (a + b) / 2.0), (top[2].1.clone(), c / 2.0)];
    let toml = |t: &[(String, f64)]| {
        let pairs: Vec<String> = t.iter().map(|(k, p)| format!("{k:?} = {p:?}")).collect();
        format!("model = \"multi\"\nthresholds = {{ {} }}\n", pairs.join(", "))
    };
    let regions = [
        region("two", LEFT, &toml(&two)),
        region("first_third", LEFT, &toml(&first_third)),
        region("plain", LEFT, "model = \"multi\"\n"),
    ]
    .concat();
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/desk/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = daemon_config(dir.path(), &broker, &composite_camera("on_change", &regions));
    let text = std::fs::read_to_string(&config).expect("config");
    let models = format!(
        "[[models]]\nname = \"multi\"\npath = {:?}\nthreads = 1\n",
        generated("effnet-sigmoid.onnx").display().to_string()
    );
    std::fs::write(&config, text.replacen("[[cameras]]", &format!("{models}[[cameras]]"), 1)).expect("write");
    let daemon = Daemon::start(&config);
    let names = ["two", "first_third", "plain"];
    let events = witness.wait_for("each region's event", Duration::from_secs(60), |m| {
        names.iter().all(|r| m.iter().any(|m| m.topic == format!("camclassd/testnode/desk/{r}/event")))
    });
    let states = retained(&broker, "camclassd/testnode/desk/+/state");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    let mut seen = Vec::new();
    for (r, thresholds) in names.iter().zip([two, first_third, Vec::new()]) {
        let want = on_list(&classify_multi(crop, &thresholds));
        let event = json(last_on(&events, &format!("camclassd/testnode/desk/{r}/event")).expect("event"));
        let state = json(last_on(&states, &format!("camclassd/testnode/desk/{r}/state")).expect("retained state"));
        for got in [on_list(&event), on_list(&state)] {
            assert_eq!(got.0, want.0, "{r}: the classes on, as classify --threshold says");
            for (g, w) in got.1.iter().zip(&want.1) {
                assert!((g - w).abs() < 1e-4, "{r}: score {g} vs classify's {w}");
            }
        }
        seen.push(want.0);
    }
    let ids = |v: &[(u64, String)]| v.iter().map(|(id, _)| *id as usize).collect::<Vec<_>>();
    assert_eq!(ids(&seen[0]), vec![top[0].0, top[1].0], "two on");
    assert_eq!(ids(&seen[1]), vec![top[0].0, top[2].0], "the best and the third");
}

/// Resident memory of a running daemon, in KiB.
fn rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

#[test]
fn regions_on_one_model_share_its_session() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rss = Vec::new();
    // The FP32 model: a second session of it would take its 18 MB of weights again.
    let models = format!("[[models]]\nname = \"fp32\"\npath = {:?}\n", model("fp32").display().to_string());
    for crops in [&[LEFT][..], &[LEFT, RIGHT, "[0.25, 0, 0.5, 1]"][..]] {
        // On change, without heartbeats: one event per region, so that the event queue's own memory is the
        // same for both runs and only the regions differ.
        let regions: String = crops
            .iter()
            .enumerate()
            .map(|(i, c)| region(&format!("r{i}"), c, "model = \"fp32\"\ninterval = 0\n"))
            .collect();
        let config = daemon_config(dir.path(), &broker, &composite_camera("on_change", &regions));
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen("[[cameras]]", &format!("{models}[[cameras]]"), 1);
        std::fs::write(&config, text + "[health]\ninterval = 0.5\n").expect("write");
        let before = witness.messages().len();
        // glibc's malloc makes an arena per contended thread, and raises its mmap threshold as large blocks
        // (the model files read at load) are freed, so what it keeps depends on thread timing (±8 MiB on a
        // busy machine): fixed settings, so that the figure measures camclassd's memory.
        let malloc =
            [("MALLOC_ARENA_MAX", "1"), ("MALLOC_MMAP_THRESHOLD_", "131072"), ("MALLOC_TRIM_THRESHOLD_", "131072")];
        let daemon = Daemon::start_env(&config, &malloc);
        // Every region has spoken, and then the camera classified 20 more frames (the health topic counts).
        let states: Vec<String> = (0..crops.len()).map(|i| format!("camclassd/testnode/desk/r{i}/state")).collect();
        let frames = |m: &[Message]| {
            m.iter()
                .rev()
                .find(|m| m.topic == "camclassd/testnode/health")
                .and_then(|m| json(m)["cameras"]["desk"]["frames"].as_u64())
                .unwrap_or(0)
        };
        let seen = witness.wait_for("every region's state", Duration::from_secs(60), |m| {
            states.iter().all(|t| m[before..].iter().any(|m| &m.topic == t))
        });
        let start = frames(&seen[before..]);
        witness.wait_for("20 more frames", Duration::from_secs(60), |m| frames(&m[before..]) >= start + 20);
        rss.push(rss_kib(&daemon));
        let (code, log) = daemon.stop();
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(log.matches("model loaded").count(), 1, "one fp32 session:\n{log}");
    }
    let (one, three) = (rss[0] as i64, rss[1] as i64);
    eprintln!("RSS: one region {one} KiB, three regions {three} KiB");
    assert!((three - one).abs() <= 5 * 1024, "one region {one} KiB, three {three} KiB");
}

#[test]
fn region_config_errors_name_the_key_and_line() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = [
        region("a", LEFT, "model = \"nosuch\"\n"),
        region("a", "[0.5, 0, 0.6, 1]", ""),
        // A device class Home Assistant does not have would make it refuse the binary_sensor's config.
        region("b", RIGHT, "thresholds = { ajar = 0.8 }\ndevice_class = \"doorbell\"\n"),
    ]
    .concat();
    let config = daemon_config(dir.path(), &broker, &composite_camera("on_change", &regions));
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let text = std::fs::read_to_string(&config).expect("config");
    let line_of = |needle: &str, nth: usize| {
        text.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(nth).expect(needle).0 + 1
    };
    let at = |line: usize| format!("{}:{line}:", config.display());
    for (line, want) in [
        (line_of("model = \"nosuch\"", 0), "cameras[0].regions[0].model: unknown model \"nosuch\""),
        (line_of("name = \"a\"", 1), "cameras[0].regions[1].name: duplicate region name \"a\""),
        (line_of("crop = [0.5, 0, 0.6, 1]", 0), "cameras[0].regions[1].crop: "),
        (
            line_of("device_class", 0),
            "cameras[0].regions[2].device_class: \"doorbell\" is not a Home Assistant binary_sensor device class \
             (one of battery, battery_charging, ",
        ),
    ] {
        assert!(err.lines().any(|l| l.contains(&at(line)) && l.contains(want)), "{want} at line {line}:\n{err}");
    }
    // Classes are known once the model is open: check-config opens it and names the key's line.
    let fixed = text
        .replace("model = \"nosuch\"\n", "")
        .replace("device_class = \"doorbell\"\n", "")
        .replacen("name = \"a\"", "name = \"c\"", 1)
        .replace("0.6, 1]", "0.5, 1]");
    std::fs::write(&config, &fixed).expect("write");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = fixed.lines().position(|l| l.contains("ajar")).expect("line") + 1;
    assert!(
        stderr(&out).contains(&format!("{}:{line}:", config.display()))
            && stderr(&out).contains("cameras[0].regions[2].thresholds.ajar: model \"default\" has no class \"ajar\""),
        "{}",
        stderr(&out)
    );
    // `run` refuses it the same way (exit 2), located in the file.
    let out = run(camclassd().args(["run", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{}:{line}:", config.display())), "{}", stderr(&out));
    // A camera without regions: today's config, and check-config says [model] is the model "default".
    let plain = daemon_config(dir.path(), &broker, &composite_camera("on_change", ""));
    let out = run(camclassd().arg("check-config").arg(&plain));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 model: default, [model] being \"default\""), "{}", stdout(&out));
}

#[test]
fn the_motion_gate_skips_a_still_picture_and_classifies_a_change_at_once() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    // A still scene (40 identical frames), then one changed frame; replayed in a loop.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    for i in 0..40 {
        std::fs::copy(generated("coffee.png"), frames.join(format!("{i:03}.png"))).expect("copy");
    }
    std::fs::copy(generated("chelsea.png"), frames.join("040.png")).expect("copy");
    let camera = format!(
        "[[cameras]]\nname = \"desk\"\nsource = {:?}\nfps = 20\npublish = \"every_frame\"\n\
         [[cameras.regions]]\nname = \"all\"\nmotion_threshold = 0.02\nmax_skip = 600\n",
        frames.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &camera);
    std::fs::write(&config, std::fs::read_to_string(&config).expect("config") + "[health]\ninterval = 0.5\n")
        .expect("write");
    let daemon = Daemon::start(&config);
    let counts = |m: &[Message]| {
        m.iter().rev().find(|m| m.topic == "camclassd/testnode/health").map_or((0, 0), |m| {
            let c = &json(m)["cameras"]["desk"];
            (c["frames"].as_u64().unwrap_or(0), c["motion_skipped"].as_u64().unwrap_or(0))
        })
    };
    let messages = witness.wait_for("two loops of the replay", Duration::from_secs(60), |m| counts(m).1 >= 80);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    let (classified, skipped) = counts(&messages);
    let share = classified as f64 / (classified + skipped) as f64;
    assert!(share < 0.1, "inference ran on {classified} of {} frames", classified + skipped);
    // Every event is a change of picture: the first coffee frame after the cat, or the cat right after the
    // still coffee frames (classified at once); never the still frames in between.
    let want =
        |image: &str| classify_json(&model("int8"), &[generated(image)], &["--threads", "1"], 0)[0].top[0].class_id;
    let (coffee, cat) = (want("coffee.png"), want("chelsea.png"));
    let tops: Vec<u64> = messages
        .iter()
        .filter(|m| m.topic == "camclassd/testnode/desk/all/event")
        .map(|m| json(m)["top"][0]["class_id"].as_u64().expect("class"))
        .collect();
    assert!(tops.len() >= 3, "{tops:?}");
    assert_eq!(tops[0], coffee as u64);
    for pair in tops.windows(2) {
        assert_ne!(pair[0], pair[1], "an event without a change of picture: {tops:?}");
        assert!(pair.iter().all(|&t| t == coffee as u64 || t == cat as u64), "{tops:?}");
    }
}

#[test]
fn classify_every_spaces_a_regions_classifications() {
    // One worker, and two: the second worker's prepare thread must not classify the region again within
    // the period (each kept its own time before).
    for workers in [1, 2] {
        classify_every_with(workers);
    }
}

fn classify_every_with(workers: usize) {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = [region("fast", LEFT, ""), region("slow", LEFT, "classify_every = 1.0\n")].concat();
    let camera = composite_camera("every_frame", &regions).replace("fps = 5", "fps = 10");
    let config = daemon_config(dir.path(), &broker, &format!("workers = {workers}\n{camera}"));
    let daemon = Daemon::start(&config);
    let events = |m: &[Message], r: &str| -> Vec<f64> {
        m.iter()
            .filter(|m| m.topic == format!("camclassd/testnode/desk/{r}/event"))
            .map(|m| {
                let at = json(m)["captured_at"].as_str().expect("captured_at").to_string();
                let t = humantime::parse_rfc3339(&at).expect("RFC 3339");
                t.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64()
            })
            .collect()
    };
    let messages = witness.wait_for("four slow events", Duration::from_secs(40), |m| events(m, "slow").len() >= 4);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    // Capture times, not wall-clock: the slow region's frames are at least a second apart, the fast one's not.
    let gaps = |t: Vec<f64>| t.windows(2).map(|w| w[1] - w[0]).collect::<Vec<f64>>();
    let slow = gaps(events(&messages, "slow"));
    assert!(slow.iter().all(|&g| g >= 0.999), "{workers} workers: {slow:?}");
    let fast = gaps(events(&messages, "fast"));
    assert!(fast.iter().any(|&g| g < 0.5), "{fast:?}");
}
