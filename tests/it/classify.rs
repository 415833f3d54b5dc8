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

#[test]
fn fp32_and_int8_agree_on_the_test_photos() {
    let images: Vec<_> = PHOTOS.iter().chain(EDGE_IMAGES).map(|n| generated(n)).collect();
    let fp32 = classify_json(&model("fp32"), &images, &["--top", "1"], 0);
    let int8 = classify_json(&model("int8"), &images, &["--top", "1"], 0);
    let agree = fp32.iter().zip(&int8).filter(|(a, b)| a.top[0].class_id == b.top[0].class_id).count();
    let pct = 100.0 * agree as f64 / images.len() as f64;
    eprintln!("FP32 vs INT8 top-1 agreement: {agree}/{} = {pct:.1}%", images.len());
    for (a, b) in fp32.iter().zip(&int8).filter(|(a, b)| a.top[0].class_id != b.top[0].class_id) {
        eprintln!("  differs: {} fp32 {:?} int8 {:?}", a.image, a.top[0], b.top[0]);
    }
    assert!(pct >= 80.0, "agreement {pct:.1}% is below 80%");
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
