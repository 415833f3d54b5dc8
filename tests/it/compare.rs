//! `camclassd compare`: a model against itself, FP32 against INT8, and the CI gate.

use super::*;

fn compare_json(a: &Path, b: &Path, images: &[PathBuf], extra: &[&str], expect: i32) -> serde_json::Value {
    let out = run(camclassd().arg("compare").arg(a).arg(b).arg("--json").args(extra).args(images));
    assert_eq!(out.status.code(), Some(expect), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("json report")
}

fn test_images() -> Vec<PathBuf> {
    PHOTOS.iter().chain(EDGE_IMAGES).map(|n| generated(n)).collect()
}

#[test]
fn a_model_against_itself_agrees_completely() {
    let r = compare_json(&model("int8"), &model("int8"), &test_images(), &[], 0);
    assert_eq!(r["top1_agreement_pct"], 100.0);
    assert_eq!(r["topk_containment_pct"], 100.0);
    assert_eq!(r["probability_error"]["max_abs"], 0.0);
    assert!((r["probability_error"]["cosine_min"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-9, "{r}");
    assert!(r["differences"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn fp32_against_int8_matches_classify_and_gates() {
    let images = test_images();
    let r = compare_json(&model("fp32"), &model("int8"), &images, &[], 0);
    // The same figure computed independently from two `classify` runs.
    let fp32 = classify_json(&model("fp32"), &images, &["--top", "1"], 0);
    let int8 = classify_json(&model("int8"), &images, &["--top", "1"], 0);
    let agree = fp32.iter().zip(&int8).filter(|(a, b)| a.top[0].class_id == b.top[0].class_id).count();
    assert_eq!(r["top1_agree"], agree as u64);
    assert_eq!(r["images"], images.len() as u64);
    assert_eq!(r["differences"].as_array().map(Vec::len), Some(images.len() - agree));
    let e = &r["probability_error"];
    let (max, mean, p99) = (
        e["max_abs"].as_f64().unwrap_or(-1.0),
        e["mean_abs"].as_f64().unwrap_or(-1.0),
        e["p99_abs"].as_f64().unwrap_or(-1.0),
    );
    assert!(0.0 < mean && mean <= p99 && p99 <= max && max < 0.2, "{e}");
    assert!(e["cosine_min"].as_f64().is_some_and(|c| c > 0.9), "{e}");
    eprintln!("FP32 vs INT8: {} % top-1, {} % in top-5, {e}", r["top1_agreement_pct"], r["topk_containment_pct"]);

    let gate = |pct: &str| {
        run(camclassd().arg("compare").arg(model("fp32")).arg(model("int8")).args(["--fail-below", pct]).args(&images))
    };
    assert_eq!(gate("50").status.code(), Some(0));
    let out = gate("99");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("below --fail-below 99.0"), "{}", stderr(&out));
    assert!(stdout(&out).contains("top-1 differs on:"), "{}", stdout(&out));
}

#[test]
fn unusable_inputs_are_explained() {
    let out = run(camclassd()
        .arg("compare")
        .arg(model("int8"))
        .arg(generated("no_metadata.onnx"))
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no_metadata.onnx") && stderr(&out).contains("mean, std"), "{}", stderr(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(camclassd().arg("compare").arg(model("int8")).arg(model("fp32")).arg("--images").arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no JPEG or PNG images"), "{}", stderr(&out));
}
