//! Any classifier a user brings: uint8 (raw pixel) inputs, NHWC layouts, sigmoid multi-label outputs and
//! labels as JSON, through the real binary. The fixtures are the FP32 model rebuilt each way
//! (tests/fixtures/make_fixtures.py), so the FP32 model's own answers on the same photos are the oracle.

use std::time::Duration;

use super::broker::{Broker, Witness, daemon_config};
use super::*;

/// `effnet-sigmoid.onnx` is sigmoid(logits - SIGMOID_SHIFT) (make_fixtures.py).
const SIGMOID_SHIFT: f64 = 7.0;

fn photos() -> Vec<PathBuf> {
    PHOTOS.iter().map(|n| generated(n)).collect()
}

/// `classify --json` lines as JSON values (with the fields `Report` leaves out: `on`, `scores`).
fn classify_values(model: &Path, images: &[PathBuf], extra: &[&str]) -> Vec<serde_json::Value> {
    let out = run(camclassd()
        .arg("classify")
        .arg("--model")
        .arg(model)
        .args(["--json", "--threads", "2"])
        .args(extra)
        .args(images));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON report per line")).collect()
}

fn fail(model: &Path, extra: &[&str]) -> String {
    let out = run(camclassd().arg("classify").arg("--model").arg(model).args(extra).arg(generated("chelsea.jpg")));
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    stderr(&out)
}

#[test]
fn uint8_nhwc_and_nhwc_float_models_answer_as_the_fp32_model_on_every_photo() {
    let images = photos();
    let fp32 = classify_json(&model("fp32"), &images, &["--top", "3", "--threads", "2"], 0);
    // No camclassd metadata at all in the uint8 model: type, layout and size come from its input.
    let labels = generated("labels_map.txt");
    let labels = labels.to_str().expect("utf-8 path");
    let uint8 = classify_json(
        &generated("effnet-uint8-nhwc.onnx"),
        &images,
        &["--top", "3", "--threads", "2", "--labels", labels],
        0,
    );
    let nhwc = classify_json(&generated("effnet-nhwc.onnx"), &images, &["--top", "3", "--threads", "2"], 0);
    assert_eq!((fp32.len(), uint8.len(), nhwc.len()), (images.len(), images.len(), images.len()));
    for ((f, u), n) in fp32.iter().zip(&uint8).zip(&nhwc) {
        for (name, other) in [("uint8 NHWC", u), ("float NHWC", n)] {
            assert_eq!(other.top[0].class_id, f.top[0].class_id, "{name} top-1 on {}", f.image);
            assert_eq!(other.top[0].label, f.top[0].label, "{name} label on {}", f.image);
            // The same pixels reach the same network: only the graph's extra nodes may round differently.
            for (a, b) in other.top.iter().zip(&f.top) {
                assert!((a.score - b.score).abs() < 1e-3, "{name} on {}: {a:?} vs {b:?}", f.image);
            }
        }
    }
}

#[test]
fn labels_from_a_json_map_or_list_name_classes_as_the_text_file_does() {
    let images = [generated("chelsea.jpg"), generated("coffee.png"), generated("rocket.jpg")];
    let uint8 = generated("effnet-uint8-nhwc.onnx");
    let fp32 = classify_json(&model("fp32"), &images, &["--top", "5"], 0);
    for file in ["imagenet-labels.txt", "labels_map.txt", "imagenet-labels.json"] {
        let path = generated(file);
        let got = classify_json(&uint8, &images, &["--top", "5", "--labels", path.to_str().expect("utf-8")], 0);
        for (g, f) in got.iter().zip(&fp32) {
            let names = |r: &Report| r.top.iter().map(|c| (c.class_id, c.label.clone())).collect::<Vec<_>>();
            assert_eq!(names(g), names(f), "{file} on {}", f.image);
        }
    }
    // Without labels, classes are numbered.
    let bare = classify_json(&uint8, &images[..1], &["--top", "1"], 0);
    assert_eq!(bare[0].top[0].label, format!("class_{}", fp32[0].top[0].class_id));

    // A labels file that starts like JSON but is broken, or maps ids with a gap: the file and the fault.
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, why) in [
        (r#"{"0": "tench", "1": "goldfish""#, "starts like JSON but is not valid JSON"),
        (r#"{"0": "tench", "2": "goldfish"}"#, "class id 2 is out of range"),
    ] {
        let bad = dir.path().join("labels_map.txt");
        std::fs::write(&bad, text).expect("write");
        let e = fail(&uint8, &["--labels", bad.to_str().expect("utf-8")]);
        assert!(e.contains(&format!("labels file {}", bad.display())) && e.contains(why), "{e}");
    }
    // check-config points at the labels key.
    let bad = dir.path().join("labels_map.txt");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\n[queue]\npath = {:?}\n[model]\npath = {:?}\nlabels = {:?}\n\
             [[cameras]]\nname = \"c\"\nsource = {:?}\n",
            dir.path().join("q.redb").display().to_string(),
            uint8.display().to_string(),
            bad.display().to_string(),
            generated("chelsea.jpg").display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("c.toml:8:1: model.labels: labels file"), "{}", stderr(&out));
    // A JSON map of the wrong size is counted like a text file.
    let short = dir.path().join("short.json");
    std::fs::write(&short, r#"{"0": "tench", "1": "goldfish"}"#).expect("write");
    let e = fail(&uint8, &["--labels", short.to_str().expect("utf-8")]);
    assert!(e.contains("2 labels") && e.contains("1000 output classes"), "{e}");
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn scores(v: &serde_json::Value) -> Vec<f64> {
    v["scores"].as_array().expect("scores").iter().map(|s| s.as_f64().expect("number")).collect()
}

fn on_ids(v: &serde_json::Value) -> Vec<u64> {
    v["on"].as_array().expect("on").iter().map(|c| c["class_id"].as_u64().expect("id")).collect()
}

/// The classes whose score reaches `threshold(class)`, best first (ties by id), as `on` must list them.
fn expected_on(scores: &[f64], threshold: impl Fn(usize) -> f64) -> Vec<u64> {
    let mut on: Vec<(usize, f64)> = scores.iter().copied().enumerate().filter(|&(i, s)| s >= threshold(i)).collect();
    on.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    on.into_iter().map(|(i, _)| i as u64).collect()
}

#[test]
fn sigmoid_scores_are_independent_and_thresholds_pick_the_classes_on() {
    let images = photos();
    let fp32 = classify_values(&model("fp32"), &images, &["--top", "3", "--scores"]);
    let multi = classify_values(&generated("effnet-sigmoid.onnx"), &images, &["--top", "3", "--scores"]);
    let raw = classify_values(&model("fp32"), &images, &["--top", "3", "--scores", "--output", "sigmoid_logits"]);
    let mut some_on = 0;
    for ((f, m), r) in fp32.iter().zip(&multi).zip(&raw) {
        let image = f["image"].as_str().unwrap_or_default();
        let (softmax, probs, raw_probs) = (scores(f), scores(m), scores(r));
        // Independent probabilities: not a distribution (a softmax sums to 1).
        assert!((softmax.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{image}");
        assert!((probs.iter().sum::<f64>() - 1.0).abs() > 0.5, "{image}: sigmoid scores sum to 1?");
        // Ranked by each class's own probability: the same order as the logits, so the same top-1.
        assert_eq!(m["top"][0]["class_id"], f["top"][0]["class_id"], "{image}");
        assert_eq!(r["top"][0]["class_id"], f["top"][0]["class_id"], "{image}");
        assert!(f.get("on").is_none(), "single-label reports carry no `on`: {f}");
        // `--output sigmoid_logits` applies the sigmoid to the FP32 logits: the fixture's sigmoid(l - 7) follows,
        // and the ratio of two softmax probabilities is the difference of the logits.
        for (i, (&q, &s)) in raw_probs.iter().zip(&probs).enumerate() {
            let want = sigmoid(logit(q.clamp(1e-12, 1.0 - 1e-7)) - SIGMOID_SHIFT);
            assert!((want - s).abs() < 2e-3, "{image} class {i}: sigmoid(logit({q}) - 7) = {want}, model {s}");
        }
        let (a, b) = (
            f["top"][0]["class_id"].as_u64().unwrap_or(0) as usize,
            f["top"][1]["class_id"].as_u64().unwrap_or(0) as usize,
        );
        let softmax_gap = (softmax[a] / softmax[b]).ln();
        let sigmoid_gap = logit(probs[a]) - logit(probs[b]);
        assert!((softmax_gap - sigmoid_gap).abs() < 1e-2, "{image}: {softmax_gap} vs {sigmoid_gap}");
        // On at the default 0.5: exactly the classes whose score reaches it, best first.
        assert_eq!(on_ids(m), expected_on(&probs, |_| 0.5), "{image}");
        some_on += usize::from(!on_ids(m).is_empty());
    }
    assert!(some_on >= 3 && some_on < images.len(), "the photos show both cases: {some_on} with a class on");

    // Per-class thresholds: everything at 0.9, except the second class of the first photo at 0.3.
    let first = &multi[0];
    let second = first["top"][1]["class_id"].as_u64().expect("id") as usize;
    let label = first["top"][1]["label"].as_str().expect("label").to_string();
    let rule = format!("{label}=0.3");
    let strict = classify_values(
        &generated("effnet-sigmoid.onnx"),
        &images,
        &["--top", "3", "--scores", "--threshold", "*=0.9", "--threshold", &rule],
    );
    for (s, m) in strict.iter().zip(&multi) {
        let probs = scores(s);
        assert_eq!(probs, scores(m), "thresholds do not change the scores");
        let want = expected_on(&probs, |i| if i == second { 0.3 } else { 0.9 });
        assert_eq!(on_ids(s), want, "{}", s["image"]);
    }
    assert!(on_ids(&strict[0]).contains(&(second as u64)), "{}", strict[0]);
    // A single-label model with thresholds: its best class is on when it reaches its own threshold.
    let single = classify_values(&model("fp32"), &images, &["--top", "1", "--threshold", "*=0.5"]);
    for s in &single {
        let best = &s["top"][0];
        let want: Vec<u64> =
            if best["score"].as_f64() >= Some(0.5) { vec![best["class_id"].as_u64().unwrap_or(0)] } else { vec![] };
        assert_eq!(on_ids(s), want, "{s}");
    }
    assert!(single.iter().any(|s| on_ids(s).is_empty()) && single.iter().any(|s| !on_ids(s).is_empty()));
    // A threshold for a class the model does not have is refused with the classes' names.
    let e = fail(&generated("effnet-sigmoid.onnx"), &["--threshold", "garage door=0.5"]);
    assert!(e.contains("--threshold: no class named \"garage door\"") && e.contains("1000 classes, e.g. tench"), "{e}");
}

#[test]
fn layouts_and_element_types_camclassd_cannot_guess_say_what_to_set() {
    let ambiguous = generated("ambiguous_layout.onnx");
    let e = fail(&ambiguous, &[]);
    assert!(e.contains(&format!("model {}", ambiguous.display())), "{e}");
    assert!(e.contains("[1, 3, 32, 3]") && e.contains("[model.preprocess] layout = \"nchw\" or \"nhwc\""), "{e}");
    // Set on the command line or in the config, it loads.
    for extra in [["--layout", "nhwc"], ["--layout", "nchw"]] {
        let r = classify_json(&ambiguous, &[generated("chelsea.jpg")], &extra, 0);
        assert_eq!(r[0].top.len(), 5, "{extra:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\n[model.preprocess]\nlayout = \"nhwc\"\n",
            ambiguous.display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd().arg("classify").arg("--config").arg(&config).arg("--json").arg(generated("chelsea.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&config, "version = 1\n[model]\npath = \"m.onnx\"\n[model.preprocess]\nlayout = \"hwc\"\n")
        .expect("config");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert!(stderr(&out).contains("c.toml:5:10: model.preprocess.layout: unknown variant `hwc`"), "{}", stderr(&out));

    // A layout that contradicts the input's shape names the fix.
    let e = fail(&generated("effnet-nhwc.onnx"), &["--layout", "nchw"]);
    assert!(e.contains("224 channels in NCHW layout") && e.contains("layout = \"nhwc\""), "{e}");
    // Element types camclassd does not feed: named, with the two it does.
    let int8 = generated("int8_input.onnx");
    let e = fail(&int8, &[]);
    assert!(e.contains(&format!("model {}", int8.display())) && e.contains("element type int8"), "{e}");
    assert!(e.contains("float32 (normalised pixels) or uint8 (raw pixels 0..255"), "{e}");
    let e = fail(&generated("fp16.onnx"), &[]);
    assert!(e.contains("element type float16"), "{e}");
    // A uint8 model normalises by itself: a mean/std for it is a mistake, said so.
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\n[model.preprocess]\nmean = [127.5, 127.5, 127.5]\n",
            generated("effnet-uint8-nhwc.onnx").display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd().arg("classify").arg("--config").arg(&config).arg(generated("chelsea.jpg")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("takes uint8 pixels (0..255) and normalises them itself; remove mean and std"));
    // Logits declared as sigmoid probabilities: the fix is sigmoid_logits.
    let e = fail(&model("fp32"), &["--output", "sigmoid"]);
    assert!(e.contains("declared as sigmoid") && e.contains("output = \"sigmoid_logits\""), "{e}");
}

#[test]
fn inspect_shows_the_input_type_layout_and_output_kind() {
    let json = |file: &Path| -> serde_json::Value {
        let out = run(camclassd().args(["inspect", "--json"]).arg(file));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("json")
    };
    let u = json(&generated("effnet-uint8-nhwc.onnx"))["interface"].clone();
    assert_eq!((u["input_type"].as_str(), u["layout"].as_str()), (Some("uint8"), Some("NHWC")), "{u}");
    assert_eq!((u["layout_from"].as_str(), u["feeds"].as_str()), (Some("input shape"), Some("raw pixels 0..255")));
    let s = json(&generated("effnet-sigmoid.onnx"))["interface"].clone();
    assert_eq!((s["output"].as_str(), s["multi_label"].as_bool()), (Some("sigmoid"), Some(true)), "{s}");
    let f = json(&model("int8"))["interface"].clone();
    assert_eq!(
        (f["input_type"].as_str(), f["layout"].as_str(), f["output"].as_str()),
        (Some("float32"), Some("NCHW"), Some("logits"))
    );
    assert_eq!(json(&generated("ambiguous_layout.onnx"))["interface"]["layout"], "ambiguous");
    assert!(json(&generated("int8_input.onnx"))["interface"]["feeds"].is_null());
    let text = stdout(&run(camclassd().arg("inspect").arg(generated("effnet-uint8-nhwc.onnx"))));
    assert!(text.contains("interface     input uint8 NHWC (layout from the input shape): raw pixels 0..255"), "{text}");
}

#[test]
fn compare_bench_stamp_and_verify_serve_a_uint8_nhwc_model() {
    let uint8 = generated("effnet-uint8-nhwc.onnx");
    let images = photos();
    let out =
        run(camclassd().arg("compare").arg(model("fp32")).arg(&uint8).args(["--json", "--threads", "2"]).args(&images));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["top1_agreement_pct"], 100.0, "{report}");

    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["chelsea.jpg", "frame640x480.jpg"] {
        std::fs::copy(generated(name), dir.path().join(name)).expect("copy");
    }
    let out =
        run(camclassd().arg("bench").arg(&uint8).args(["--runs", "3", "--threads", "1", "--images"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("effnet-uint8-nhwc.onnx"), "{}", stdout(&out));

    // The model check: golden inputs from the FP32 model's answers, verified through the uint8 path.
    let eval = root().join("tests/data/generated/int8-eval");
    let picks = ["coffee-mirror.png", "chelsea-036.jpg", "motorcycle_left-027.jpg", "rocket-047.jpg", "camera.jpg"];
    let stamped = dir.path().join("stamped.onnx");
    let out = run(camclassd()
        .arg("stamp")
        .arg(&uint8)
        .arg("--reference")
        .arg(model("fp32"))
        .args(["--count", "4", "--threads", "2", "--output"])
        .arg(&stamped)
        .args(picks.iter().map(|p| if eval.join(p).exists() { eval.join(p) } else { generated(p) })));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let verify = run(camclassd().arg("verify").arg(&stamped).args(["--threads", "2"]));
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    // A multi-label model against a single-label reference: refused, not a cosine that means nothing.
    let out = run(camclassd()
        .arg("stamp")
        .arg(generated("effnet-sigmoid.onnx"))
        .arg("--reference")
        .arg(model("fp32"))
        .arg("--output")
        .arg(dir.path().join("no.onnx"))
        .args(picks.iter().map(|p| if eval.join(p).exists() { eval.join(p) } else { generated(p) })));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("the reference is single-label and the model multi-label (sigmoid)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_daemon_classifies_with_a_uint8_model_and_json_labels_as_classify_does() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["chelsea.jpg", "coffee.png", "rocket.jpg"];
    // One frame a second: the hub keeps only the newest frame, and a loaded machine must not drop one.
    let folder = dir.path().join("frames");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for (i, name) in names.iter().enumerate() {
        std::fs::copy(generated(name), folder.join(format!("{i:03}-{name}"))).expect("copy");
    }
    let cameras = format!(
        "[[cameras]]\nname = \"feeder\"\nsource = {:?}\nfps = 1\npublish = \"every_frame\"\nloop = false\n",
        folder.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("path = {:?}\n", model("int8").display().to_string()),
        &format!(
            "path = {:?}\nlabels = {:?}\n",
            generated("effnet-uint8-nhwc.onnx").display().to_string(),
            generated("labels_map.txt").display().to_string()
        ),
    );
    std::fs::write(&config, text).expect("config");
    let mut daemon = super::daemon::Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", daemon.log());
    let messages = witness.wait_for("offline", Duration::from_secs(5), |m| m.iter().any(|m| m.payload == "offline"));
    let events: Vec<serde_json::Value> = messages
        .iter()
        .filter(|m| m.topic == "camclassd/testnode/feeder/event")
        .map(|m| serde_json::from_str(&m.payload).expect("event JSON"))
        .collect();
    assert_eq!(events.len(), names.len(), "{messages:#?}");
    let fp32 = classify_json(&model("fp32"), &names.map(generated), &["--top", "1"], 0);
    for (e, r) in events.iter().zip(&fp32) {
        assert_eq!(e["top"][0]["class_id"], r.top[0].class_id as u64, "{}: {e}", r.image);
        assert_eq!(e["top"][0]["label"], r.top[0].label.as_str(), "{}: {e}", r.image);
        assert_eq!(e["model"]["name"], "effnet-uint8-nhwc", "the file's name, as it has no metadata: {e}");
    }
}
