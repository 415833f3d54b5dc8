//! camclassd against the independent Python reference (PIL + onnxruntime, `tests/reference/reference.py`).
//!
//! The FP32 model is compared on every decodable test image: same top-1, and top-1 probabilities within
//! 0.03. PNG input decodes to the same pixels on both sides and camclassd resamples exactly as Pillow does,
//! so there the scores agree to float rounding, for INT8 too; JPEG input goes through two different
//! decoders (libjpeg-turbo in PIL, zune-jpeg here), which differ by a level here and there.

use super::*;

fn reference(model: &Path, images: &[PathBuf]) -> Vec<Report> {
    let python = root().join(".cache/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup first", python.display());
    let out = Command::new(python)
        .arg(root().join("tests/reference/reference.py"))
        .arg("--model")
        .arg(model)
        .args(["--top", "5"])
        .args(images)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "reference failed: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("reference JSON")).collect()
}

#[test]
fn fp32_matches_the_python_reference_on_every_test_image() {
    let images: Vec<_> = PHOTOS.iter().chain(EDGE_IMAGES).map(|n| generated(n)).collect();
    let ours = classify_json(&model("fp32"), &images, &["--top", "5"], 0);
    let theirs = reference(&model("fp32"), &images);
    assert_eq!(ours.len(), theirs.len());
    let mut failures = Vec::new();
    let mut worst: f64 = 0.0;
    for (a, b) in ours.iter().zip(&theirs) {
        let (x, y) = (&a.top[0], &b.top[0]);
        let diff = (x.score - y.score).abs();
        worst = worst.max(diff);
        if x.class_id != y.class_id || diff > 0.03 {
            failures.push(format!("{}: ours {x:?} reference {y:?}", a.image));
        }
    }
    eprintln!("largest top-1 probability difference: {worst:.4}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lossless_images_give_the_reference_scores_with_both_models() {
    // Same pixels on both sides and the same resampling: the whole top-5 must agree, class and score.
    let images: Vec<_> =
        PHOTOS.iter().chain(EDGE_IMAGES).filter(|n| n.ends_with(".png")).map(|n| generated(n)).collect();
    for precision in ["fp32", "int8"] {
        let ours = classify_json(&model(precision), &images, &["--top", "5"], 0);
        let theirs = reference(&model(precision), &images);
        for (a, b) in ours.iter().zip(&theirs) {
            for (x, y) in a.top.iter().zip(&b.top) {
                assert!(
                    x.class_id == y.class_id && (x.score - y.score).abs() < 1e-4,
                    "{precision} {}: {:?} vs {:?}",
                    a.image,
                    a.top,
                    b.top
                );
            }
        }
    }
}
