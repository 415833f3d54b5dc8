//! `camclassd bench`: sane, ordered figures, valid JSON, unavailable providers reported, ratios.

use super::*;

#[test]
fn bench_reports_ordered_percentiles_ratios_and_unavailable_providers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["chelsea.jpg", "coffee.jpg", "frame640x480.jpg"] {
        std::fs::copy(generated(name), dir.path().join(name)).expect("copy");
    }
    let json = dir.path().join("bench.json");
    let out = run(camclassd()
        .arg("bench")
        .arg(model("fp32"))
        .arg(model("int8"))
        .args(["--runs", "20", "--threads", "1", "--ep", "cpu,cuda", "--batch", "1,2", "--images"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(dir.path().join("latency.svg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("efficientnet-lite0-int8.onnx")
            && table.contains("unavailable: this ONNX Runtime build has no CUDA"),
        "{table}"
    );
    // Not a terminal here: plain progress lines, one per finished measurement.
    assert_eq!(
        stderr(&out).lines().filter(|l| l.starts_with("bench: ") && l.ends_with(": done")).count(),
        4,
        "{}",
        stderr(&out)
    );

    let svg = std::fs::read_to_string(dir.path().join("latency.svg")).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("efficientnet-lite0-int8.onnx cpu batch 2"),
        "{}",
        &svg[..svg.len().min(300)]
    );
    assert!(svg.matches("<polyline").count() >= 4, "one line per measured row");

    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("valid JSON");
    assert_eq!(rows.len(), 8, "2 models x 2 providers x 2 batches");
    let ran: Vec<_> = rows.iter().filter(|r| r["unavailable"].is_null()).collect();
    assert_eq!(ran.len(), 4);
    assert!(
        rows.iter()
            .filter(|r| r["provider"] == "cuda")
            .all(|r| r["unavailable"].as_str().is_some_and(|s| s.contains("CUDA")))
    );
    for r in &ran {
        for part in ["inference", "pipeline"] {
            let l = &r[part];
            assert_eq!(l["runs"], 20, "{r}");
            let q: Vec<f64> = ["p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms"]
                .iter()
                .map(|k| l[k].as_f64().unwrap_or(-1.0))
                .collect();
            assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{part} percentiles out of order: {q:?}");
            assert!(
                l["throughput"].as_f64().is_some_and(|t| t > 0.0) && l["cpu_pct"].as_f64().is_some_and(|c| c > 0.0)
            );
        }
        assert!(
            r["session_ms"].as_f64().is_some_and(|v| v > 0.0)
                && r["first_inference_ms"].as_f64().is_some_and(|v| v > 0.0)
        );
        // CPU rows also time the load a restarted daemon sees, from the optimised-model cache.
        assert!(r["cached_session_ms"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert!(r["peak_rss_mib"].as_f64().is_some_and(|v| v > 10.0), "{r}");
    }
    assert_eq!(ran[0]["speedup_vs_first"], 1.0);
    let int8_size = ran
        .iter()
        .find(|r| r["model"].as_str().is_some_and(|m| m.ends_with("int8.onnx")))
        .map(|r| r["size_vs_first"].as_f64().unwrap_or(0.0));
    assert!(int8_size.is_some_and(|s| (0.2..0.35).contains(&s)), "INT8 is about 27 % of the FP32 size: {int8_size:?}");
}

#[test]
fn input_sizes_are_selectable_where_the_model_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = run(camclassd()
        .arg("bench")
        .arg(generated("dynamic_dims.onnx"))
        .args(["--runs", "5", "--batch", "1,3", "--input-size", "160x120", "--json"])
        .arg(&json));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("160x120") && stdout(&out).contains("note: dynamic_dims.onnx"), "{}", stdout(&out));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid");
    assert_eq!(rows.len(), 2);
    for (r, batch) in rows.iter().zip([1, 3]) {
        assert!(r["unavailable"].is_null(), "{r}");
        assert_eq!(r["batch"], batch);
        assert_eq!(r["input_size"], serde_json::json!([160, 120]));
        assert_eq!(r["inference"]["runs"], 5);
    }
    // A fixed 224x224 model cannot take another size, and says so.
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "2", "--input-size", "160x160"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not match the model's fixed input 224x224"), "{}", stderr(&out));
}

/// One file that cannot be decoded is named and left out, as classify and compare do; the rest are timed.
#[test]
fn a_bad_image_is_named_and_skipped_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["coffee.jpg", "truncated.jpg"] {
        std::fs::copy(generated(name), dir.path().join(name)).expect("copy");
    }
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "3", "--images"]).arg(dir.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "partial failure: {err}");
    assert!(err.lines().any(|l| l.contains("truncated.jpg") && l.contains("truncated JPEG")), "{err}");
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("efficientnet-lite0-int8.onnx") && l.contains("224x224")),
        "{}",
        stdout(&out)
    );

    // An empty folder, a size too large and no images at all each get their own words.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "2", "--images"]).arg(empty.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no JPEG or PNG images in"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("compare"), "{}", stderr(&out));
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "2", "--input-size", "10000x10000"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("larger than 4096x4096"), "{}", stderr(&out));
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "2"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("NaN"), "{}", stdout(&out));
}
