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

/// One row of the `bench --cameras` table.
#[derive(Debug)]
struct LoadRow {
    cameras: usize,
    offered: f64,
    classified: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
    fits: bool,
}

/// The table's rows (between the header and the legend) and the answer line (the last).
fn camera_table(text: &str) -> (Vec<LoadRow>, String) {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4 && lines[0].split_whitespace().next() == Some("cameras"), "{text}");
    let legend = lines.iter().position(|l| l.starts_with("cpu % of all ")).unwrap_or_else(|| panic!("{text}"));
    let rows = lines[1..legend]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 9, "a row of 9 columns: {l}");
            let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|_| panic!("column {i} of {l}"));
            LoadRow {
                cameras: f[0].parse().unwrap_or_else(|_| panic!("{l}")),
                offered: num(1),
                classified: num(3),
                cpu: num(5),
                p50: num(6),
                p99: num(7),
                fits: f[8] == "fits",
            }
        })
        .collect();
    assert_eq!(legend + 2, lines.len(), "one answer line after the legend: {text}");
    (rows, lines[legend + 1].to_string())
}

/// The P50 and P99 of a "this board takes …" answer.
fn answer_latencies(answer: &str) -> (f64, f64) {
    let ms = |key: &str| {
        answer
            .split(key)
            .nth(1)
            .and_then(|rest| rest.split(" ms").next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{key} in {answer}"))
    };
    (ms("(P50 "), ms("P99 "))
}

/// The daemon's pipeline under 2 replay cameras: the table parses, its figures are sane, the answer agrees.
#[test]
fn camera_load_runs_the_daemon_pipeline_and_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("cameras.json");
    let out = run(camclassd()
        .arg("bench")
        .arg(model("int8"))
        .args(["--cameras", "2", "--fps", "2", "--seconds", "2", "--image"])
        .arg(generated("coffee.jpg"))
        .arg("--json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let (rows, answer) = camera_table(&text);
    assert_eq!(rows.len(), 1, "{text}");
    let r = &rows[0];
    assert_eq!((r.cameras, r.offered), (2, 4.0), "{text}");
    // Loose: a loaded shared machine may run late, but 4 frames/s must flow.
    assert!((2.0..=5.0).contains(&r.classified), "classified {} of 4 fps offered: {text}", r.classified);
    assert!(r.cpu > 0.0 && r.p50 > 0.0 && r.p50 <= r.p99, "{text}");
    if r.fits {
        assert!(answer.starts_with("this board takes 2 cameras at 2 fps under 80 % CPU (P50 "), "{answer}");
        assert_eq!(answer_latencies(&answer), (r.p50, r.p99), "{text}");
    } else {
        assert!(answer.starts_with("this board does not take 2 cameras at 2 fps under 80 % CPU: "), "{answer}");
    }
    assert!(stderr(&out).lines().any(|l| l == "bench: 2 cameras at 2 fps: done"), "{}", stderr(&out));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("valid JSON");
    assert_eq!(report["answer"], answer.as_str());
    assert_eq!(report["fps"], 2.0);
    assert_eq!(report["steps"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["cameras"].as_u64(), r.fits.then_some(2));
    assert!(report["steps"][0]["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{report}");
}

/// `--cameras max` grows the count while it fits, bisects, and answers with the most that fitted.
#[test]
fn camera_max_searches_for_the_most_that_fit() {
    let out = run(camclassd()
        .arg("bench")
        .arg(model("int8"))
        .args(["--cameras", "max", "--fps", "30", "--seconds", "1", "--image"])
        .arg(generated("frame640x480.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let (rows, answer) = camera_table(&text);
    assert_eq!(rows[0].cameras, 1, "{text}");
    // Doubling while it fits, then each count at most once.
    let grown = rows.iter().position(|r| !r.fits).unwrap_or(rows.len() - 1);
    for w in rows[..=grown].windows(2) {
        assert_eq!(w[1].cameras, 2 * w[0].cameras, "{text}");
    }
    let mut counts: Vec<usize> = rows.iter().map(|r| r.cameras).collect();
    counts.sort_unstable();
    counts.dedup();
    assert_eq!(counts.len(), rows.len(), "no count measured twice: {text}");
    for r in &rows {
        assert!(r.cpu > 0.0 && r.p50 <= r.p99 && r.offered == 30.0 * r.cameras as f64, "{text}");
    }
    match rows.iter().filter(|r| r.fits).map(|r| r.cameras).max() {
        Some(most) => {
            let want = format!(
                "this board takes {} at 30 fps under 80 % CPU (P50 ",
                match most {
                    1 => "1 camera".to_string(),
                    n => format!("{n} cameras"),
                }
            );
            assert!(answer.starts_with(&want), "{answer}\n{text}");
            assert!(rows.iter().filter(|r| r.cameras > most).all(|r| !r.fits), "{text}");
        }
        None => assert!(answer.starts_with("this board does not take even 1 camera at 30 fps"), "{answer}"),
    }
}

/// What `--cameras` needs, and what does not go with it, is said before anything loads.
#[test]
fn camera_load_arguments_are_checked() {
    let image = generated("coffee.jpg");
    let image = image.to_str().expect("UTF-8 path");
    for (args, want) in [
        (vec!["--cameras", "2", "--image", image], "--cameras needs --fps"),
        (vec!["--cameras", "2", "--fps", "2"], "--cameras needs --image"),
        (vec!["--cameras", "0", "--fps", "2", "--image", image], "expected max or a number of cameras from 1 to 256"),
        (
            vec!["--cameras", "2", "--fps", "500", "--image", image],
            "--fps: expected a number from 0.01 to 120, got 500",
        ),
        (vec!["--cameras", "2", "--fps", "2", "--image", image, "--runs", "3"], "cannot be used with"),
        (vec!["--cameras", "2", "--fps", "2", "--image", "tests/data/generated/truncated.jpg"], "truncated.jpg"),
    ] {
        let out = run(camclassd().arg("bench").arg(model("int8")).args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
