//! The model check: `camclassd verify`, `camclassd stamp`, and the check every load runs
//! (`[model] on_check_failure`), with the shipped INT8 model and a deliberately broken copy of it
//! (tests/fixtures/make_broken_int8.py: one weight DequantizeLinear scale multiplied by 4).

use std::time::Duration;

use super::broker::{Broker, Witness, daemon_config};
use super::daemon::Daemon;
use super::*;

#[test]
fn the_shipped_int8_model_passes_its_check_on_this_cpu() {
    let out = run(camclassd().arg("verify").arg(model("int8")));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("passed:") && text.contains("efficientnet-lite0-fp32.onnx"), "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    // The CPU features that pick the INT8 kernels are named.
    assert!(text.contains("cpu  x86-64 (") || text.contains("cpu  aarch64 ("), "{text}");
    assert!(text.lines().filter(|l| l.contains(".png") || l.contains(".jpg")).count() >= 4, "{text}");
}

#[test]
fn verify_catches_a_broken_int8_model() {
    let out = run(camclassd().arg("verify").arg(generated("broken-int8.onnx")));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("FAILED:") && text.contains("MISMATCH"), "{text}");

    let json = run(camclassd().args(["verify", "--json"]).arg(generated("broken-int8.onnx")));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(report["passed"], false);
    assert!(report["mean_cosine"].as_f64().is_some_and(|c| c < 0.9), "{report}");
}

#[test]
fn verify_of_a_model_without_a_check_says_how_to_stamp_one() {
    let out = run(camclassd().arg("verify").arg(model("fp32")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("carries no check") && stderr(&out).contains("camclassd stamp"), "{}", stderr(&out));
}

#[test]
fn classify_refuses_a_model_that_fails_its_check_and_names_the_cpu_and_the_way_out() {
    let out =
        run(camclassd().args(["classify", "--model"]).arg(generated("broken-int8.onnx")).arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fails its check on this CPU"), "{err}");
    assert!(err.contains("x86-64 (") || err.contains("aarch64 ("), "the CPU's features: {err}");
    assert!(err.contains("on_check_failure") && err.contains("FP32"), "the way out: {err}");
}

#[test]
fn classify_with_a_fallback_config_uses_the_fp32_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\non_check_failure = \"fallback\"\nfallback = {:?}\n",
            generated("broken-int8.onnx").display().to_string(),
            model("fp32").display().to_string()
        ),
    )
    .expect("config");
    let got = run(camclassd()
        .args(["classify", "--json", "--top", "1", "--config"])
        .arg(&config)
        .arg(generated("coffee.jpg")));
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert!(stderr(&got).contains("fails its check here"), "{}", stderr(&got));
    let want = classify_json(&model("fp32"), &[generated("coffee.jpg")], &["--top", "1"], 0);
    let got: Report = serde_json::from_slice(&got.stdout).expect("JSON");
    assert_eq!(got.top[0].class_id, want[0].top[0].class_id);
    assert!((got.top[0].score - want[0].top[0].score).abs() < 1e-6, "the FP32 model's own scores");
}

#[test]
fn check_config_wants_a_fallback_exactly_when_the_policy_is_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let int8 = model("int8").display().to_string();
    for (extra, expect) in [
        ("on_check_failure = \"fallback\"\n", "model.on_check_failure"),
        ("fallback = \"models/efficientnet-lite0-fp32.onnx\"\n", "model.fallback"),
        (
            "on_check_failure = \"fallback\"\nfallback = \"no/such.onnx\"\n",
            "model.fallback: model file no/such.onnx not found",
        ),
        ("on_check_failure = \"sometimes\"\n", "on_check_failure"),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("version = 1\n[model]\npath = {int8:?}\n{extra}")).expect("config");
        let out = run(camclassd().arg("check-config").arg(&config));
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stdout(&out));
        assert!(stderr(&out).contains(expect), "{extra}: {}", stderr(&out));
    }
}

#[test]
fn stamp_protects_any_model_and_refuses_one_that_already_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Any model: here the FP32 model checked against itself, with three evaluation pictures too few.
    let eval = root().join("tests/data/generated/int8-eval");
    let out_model = dir.path().join("mine.onnx");
    let out = run(camclassd()
        .arg("stamp")
        .arg(model("fp32"))
        .arg("--reference")
        .arg(model("fp32"))
        .arg("--images")
        .arg(&eval)
        .arg("--count")
        .arg("4")
        .arg("--output")
        .arg(&out_model));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let verify = run(camclassd().arg("verify").arg(&out_model));
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(stdout(&verify).matches(" 1.0000 ").count() >= 4, "a model against itself: {}", stdout(&verify));
    // The stamped model still classifies exactly as before.
    let image = [generated("coffee.jpg")];
    let (a, b) = (classify_json(&model("fp32"), &image, &[], 0), classify_json(&out_model, &image, &[], 0));
    assert_eq!(a[0].top[0].class_id, b[0].top[0].class_id);
    assert_eq!(a[0].top[0].score, b[0].top[0].score);

    let broken = dir.path().join("broken.onnx");
    std::fs::copy(generated("broken-int8.onnx"), &broken).expect("copy");
    let before = std::fs::read(&broken).expect("read");
    let out =
        run(camclassd().arg("stamp").arg(&broken).arg("--reference").arg(model("fp32")).arg("--images").arg(&eval));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("fails this check already"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&broken).expect("read"), before, "nothing written");
}

#[test]
fn the_daemon_takes_the_fallback_and_says_so_once() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\n",
        generated("coffee.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("path = {:?}\nthreads = 1\n", model("int8").display().to_string()),
        &format!(
            "path = {:?}\nthreads = 1\non_check_failure = \"fallback\"\nfallback = {:?}\n",
            generated("broken-int8.onnx").display().to_string(),
            model("fp32").display().to_string()
        ),
    );
    assert!(text.contains("broken-int8.onnx"), "{text}");
    std::fs::write(&config, text).expect("config");

    let daemon = Daemon::start(&config);
    let messages =
        witness.wait_for("an event", Duration::from_secs(30), |m| m.iter().any(|m| m.topic.ends_with("/event")));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("model check FAILED").count(), 1, "{log}");
    assert!(log.contains("running the fallback model"), "{log}");
    let event: serde_json::Value =
        serde_json::from_str(&messages.iter().find(|m| m.topic.ends_with("/event")).expect("event").payload)
            .expect("event JSON");
    let want = classify_json(&model("fp32"), &[generated("coffee.jpg")], &["--top", "1"], 0);
    assert_eq!(event["top"][0]["class_id"], want[0].top[0].class_id as u64, "{event}");
}

/// `[model.preprocess]` overrides change what the golden inputs become, so the check, recorded with the
/// model's own recipe, is not run (and never blamed on the CPU).
#[test]
fn a_recipe_override_skips_the_check_instead_of_failing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\n[model.preprocess]\nmean = [1.0, 2.0, 3.0]\n",
            model("int8").display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd()
        .args(["--log-level", "info", "classify", "--config"])
        .arg(&config)
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("model check not run: [model.preprocess]"), "{}", stderr(&out));
}
