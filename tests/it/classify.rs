//! `camclassd classify` on real photographs with the real FP32 and INT8 models.

use super::*;

const CAT: std::ops::RangeInclusive<usize> = 281..=285;
/// espresso, cup, coffee mug, tea cup classes.
const COFFEE: &[usize] = &[967, 968, 504];

#[test]
fn chelsea_is_a_cat_and_coffee_is_coffee_with_both_models() {
    for precision in ["fp32", "int8"] {
        let images = [generated("chelsea.jpg"), generated("coffee.jpg")];
        let reports = classify_json(&model(precision), &images, &["--top", "5"], 0);
        assert_eq!(reports.len(), 2);
        let cat = &reports[0].top[0];
        assert!(CAT.contains(&cat.class_id), "{precision}: chelsea → {cat:?}");
        assert!(reports[0].top.len() == 5 && reports[0].top.windows(2).all(|w| w[0].score >= w[1].score));
        let cat_mass: f64 = reports[0].top.iter().filter(|c| CAT.contains(&c.class_id)).map(|c| c.score).sum();
        assert!(cat_mass > 0.8, "{precision}: cat classes hold {cat_mass}");
        let coffee = &reports[1].top[0];
        assert!(COFFEE.contains(&coffee.class_id) && coffee.score > 0.5, "{precision}: coffee → {coffee:?}");
        assert_eq!(coffee.label, "espresso");
        for key in ["decode", "preprocess", "infer"] {
            let v = reports[0].timing_ms[key].as_f64().expect("timing is a number");
            assert!(v >= 0.0, "{key}: {v}");
        }
    }
}

#[test]
fn pixel_format_edge_cases_classify_as_their_source_photo() {
    let images: Vec<_> = EDGE_IMAGES.iter().map(|n| generated(n)).collect();
    let reports = classify_json(&model("int8"), &images, &[], 0);
    assert_eq!(reports.len(), EDGE_IMAGES.len());
    for r in &reports {
        if r.image.ends_with("tiny.png") {
            // 3x2 pixels: nothing to recognise, but it must come through the pipeline.
            assert_eq!(r.top.len(), 5);
            continue;
        }
        // Grey, RGBA, CMYK, 16-bit and EXIF-rotated versions of the cat photo.
        assert!(CAT.contains(&r.top[0].class_id), "{}: {:?}", r.image, r.top[0]);
    }
}

#[test]
fn exif_orientation_is_applied() {
    // The fixture stores the cat's pixels rotated, with an EXIF tag that turns them upright. Upright, its
    // class distribution matches the original photo; a sideways cat is still a cat to this model, but
    // with clearly different probabilities (285 at 0.53-0.63 instead of 0.38).
    let images = [generated("chelsea.jpg"), generated("exif_rotated.jpg")];
    let r = classify_json(&model("fp32"), &images, &["--top", "10"], 0);
    let score = |report: &Report, id: usize| report.top.iter().find(|c| c.class_id == id).map_or(0.0, |c| c.score);
    for id in [281, 282, 285] {
        let (upright, tagged) = (score(&r[0], id), score(&r[1], id));
        assert!((upright - tagged).abs() < 0.06, "class {id}: {upright} upright vs {tagged} via EXIF");
    }
}

/// The INT8 model against the FP32 one on the evaluation set (photos calibration never saw), on this
/// machine's CPU. The same targets hold on the emulated CPUs in scripts/cross-check (AVX2-only x86-64,
/// Cortex-A72, Cortex-A76), so a green run does not depend on which CPU it ran on.
#[test]
fn int8_meets_its_accuracy_targets_on_this_cpu() {
    let dir = root().join("tests/data/generated/int8-eval");
    assert!(dir.join("subset.txt").exists(), "{} is missing: run scripts/setup first", dir.display());
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("evaluation folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    images.sort();
    assert!(images.len() >= 300, "{} evaluation images, expected >= 300", images.len());
    let tmp = tempfile::tempdir().expect("tempdir");
    for precision in ["fp32", "int8"] {
        let out = run(camclassd()
            .args(["classify", "--json", "--scores", "--top", "1", "--threads", "2", "--model"])
            .arg(model(precision))
            .args(&images));
        assert_eq!(out.status.code(), Some(0), "{precision}: {}", stderr(&out));
        std::fs::write(tmp.path().join(format!("{precision}.jsonl")), &out.stdout).expect("write scores");
    }
    let out = run(Command::new(root().join(".cache/venv/bin/python"))
        .arg(root().join("models/int8_eval.py"))
        .args(["score", "--check", "--platform", "this machine"])
        .arg("--reference")
        .arg(tmp.path().join("fp32.jsonl"))
        .arg("--candidate")
        .arg(tmp.path().join("int8.jsonl")));
    eprint!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "INT8 misses its targets on this CPU: {}", stderr(&out));
}

#[test]
fn table_output_is_readable_and_top_and_min_score_apply() {
    let out =
        run(camclassd().args(["classify", "--top", "3", "--model"]).arg(model("int8")).arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("coffee.jpg") && text.contains("espresso") && text.contains('%'), "{text}");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count(), 3, "{text}");

    let r = classify_json(&model("int8"), &[generated("coffee.jpg")], &["--min-score", "0.5"], 0);
    assert_eq!(r[0].top.len(), 1, "only espresso is above 0.5: {:?}", r[0].top);
}

#[test]
fn config_file_supplies_the_model_and_its_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("camclassd.toml");
    let text =
        format!("version = 1\n[model]\npath = {:?}\ntop_k = 2\nthreads = 1\n", model("int8").display().to_string());
    std::fs::write(&config, text).expect("write config");
    let out = run(camclassd().arg("classify").arg("--json").arg("--config").arg(&config).arg(generated("chelsea.png")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Report = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(r.top.len(), 2);

    // Tools need only [model]; the daemon's check wants [mqtt] and cameras too, and says so.
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing [mqtt] section") && stderr(&out).contains("no [[cameras]]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_model_without_metadata_works_once_the_config_supplies_the_recipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "zero\none\ntwo\nthree\nfour\n").expect("labels");
    let config = dir.path().join("c.toml");
    let text = format!(
        "version = 1\n[model]\npath = {:?}\nlabels = {:?}\n[model.preprocess]\nmean = [0.0, 0.0, 0.0]\nstd = [255.0, 255.0, 255.0]\n",
        generated("no_metadata.onnx").display().to_string(),
        labels.display().to_string()
    );
    std::fs::write(&config, text).expect("config");
    let out = run(camclassd().args(["classify", "--json", "--config"]).arg(&config).arg(generated("coffee.png")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Report = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(r.top.len(), 5);
    let labels: Vec<_> = r.top.iter().map(|c| c.label.as_str()).collect();
    assert!(labels.contains(&"zero") && labels.contains(&"four"), "{labels:?}");
    let total: f64 = r.top.iter().map(|c| c.score).sum();
    assert!((total - 1.0).abs() < 1e-3, "softmax over 5 classes sums to 1: {total}");
}

#[test]
fn the_documented_example_config_is_valid_and_classifies() {
    let config = root().join("config/camclassd.toml");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = classify_json_with_config(&config, &generated("coffee.jpg"));
    assert_eq!(r.top[0].class_id, 967);
}

fn classify_json_with_config(config: &Path, image: &Path) -> Report {
    let out = run(camclassd().args(["classify", "--json", "--config"]).arg(config).arg(image));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("json")
}
