//! GPU execution providers on a machine without them (the CPU-only `onnxruntime` wheel): asking for CUDA or
//! TensorRT falls back to the CPU with one clear log line per skipped provider, and the results are the CPU's.

use super::*;

const IMAGES: &[&str] = &["coffee.jpg", "chelsea.png", "rocket.jpg"];

fn images() -> Vec<PathBuf> {
    IMAGES.iter().map(|n| generated(n)).collect()
}

/// `classify --json` with `args`; returns the reports and stderr.
fn classify(args: &[&str], config: Option<&Path>) -> (Vec<serde_json::Value>, String) {
    let mut cmd = camclassd();
    cmd.args(["classify", "--json", "--threads", "1"]).args(args);
    match config {
        Some(c) => cmd.arg("--config").arg(c),
        None => cmd.arg("--model").arg(model("int8")),
    };
    let out = run(cmd.args(images()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reports = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    (reports, stderr(&out))
}

/// The fallback lines of a log, one per skipped provider.
fn fallback_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("unavailable, falling back to")).collect()
}

#[test]
fn asking_for_cuda_falls_back_to_cpu_with_one_clear_line_and_identical_results() {
    let (cpu, cpu_log) = classify(&["--ep", "cpu"], None);
    assert!(fallback_lines(&cpu_log).is_empty(), "{cpu_log}");
    let (cuda, log) = classify(&["--ep", "cuda,cpu"], None);

    // Warning level: seen with the default log filter, no --log-level needed.
    let lines = fallback_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("WARN") && lines[0].contains("provider=cuda"), "{log}");
    assert!(lines[0].contains("execution provider cuda unavailable, falling back to cpu"), "{log}");
    assert!(lines[0].contains("this ONNX Runtime build has no CUDA execution provider"), "{log}");
    assert!(lines[0].contains("onnxruntime-gpu") && lines[0].contains("docs/gpu.md"), "{log}");

    assert_eq!(cuda.len(), IMAGES.len());
    for (a, b) in cpu.iter().zip(&cuda) {
        assert_eq!(b["provider"], "cpu", "the report names the provider that ran: {b}");
        // Same session settings on the same provider: bit-identical classes and scores.
        assert_eq!(a["top"], b["top"], "{}", a["image"]);
    }
}

#[test]
fn a_config_asking_for_tensorrt_then_cuda_falls_back_twice_and_matches_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, providers: &str| {
        let path = dir.path().join(name);
        let text = format!(
            "version = 1\n[model]\npath = {:?}\nexecution_providers = {providers}\nthreads = 1\n\
             [model.tensorrt]\nfp16 = true\nint8 = false\nengine_cache_dir = {:?}\nmax_workspace_mb = 256\n\
             [model.cuda]\nconv_algo_search = \"exhaustive\"\nmemory_limit_mb = 512\n",
            model("int8").display().to_string(),
            dir.path().join("trt").display().to_string(),
        );
        std::fs::write(&path, text).expect("write config");
        path
    };
    let gpu = write("gpu.toml", r#"["tensorrt", "cuda", "cpu"]"#);
    let cpu = write("cpu.toml", r#"["cpu"]"#);
    let (gpu_reports, log) = classify(&[], Some(&gpu));
    let (cpu_reports, _) = classify(&[], Some(&cpu));

    let lines = fallback_lines(&log);
    assert_eq!(lines.len(), 2, "one line per skipped provider: {log}");
    assert!(lines[0].contains("execution provider tensorrt unavailable, falling back to cuda"), "{log}");
    assert!(lines[0].contains("no TensorRT execution provider"), "{log}");
    assert!(lines[1].contains("execution provider cuda unavailable, falling back to cpu"), "{log}");
    // TensorRT was never started, so its cache folder was not made.
    assert!(!dir.path().join("trt").exists());
    for (a, b) in cpu_reports.iter().zip(&gpu_reports) {
        assert_eq!(b["provider"], "cpu");
        assert_eq!(a["top"], b["top"], "{}", a["image"]);
    }

    // The table says it too, per image.
    let out = run(camclassd().args(["classify", "--config"]).arg(&gpu).arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).lines().next().is_some_and(|l| l.ends_with(" ms on cpu)")), "{}", stdout(&out));
}

#[test]
fn bench_reports_gpu_providers_as_unavailable_with_the_reason_and_the_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = run(camclassd()
        .arg("bench")
        .arg(model("int8"))
        .args(["--runs", "3", "--threads", "1", "--ep", "cpu,cuda,tensorrt", "--trt-fp16", "off", "--trt-int8", "on"])
        .arg("--trt-cache-dir")
        .arg(dir.path().join("trt"))
        .arg("--json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    let row = |ep: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(ep))
            .unwrap_or_else(|| panic!("no {ep} row in\n{table}"))
    };
    assert!(!row("cpu").contains("unavailable"), "{table}");
    assert!(row("cuda").contains("unavailable: this ONNX Runtime build has no CUDA execution provider"), "{table}");
    assert!(row("cuda").contains("fell back to cpu: not timed"), "{table}");
    assert!(row("tensorrt").contains("unavailable: this ONNX Runtime build has no TensorRT"), "{table}");

    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("valid JSON");
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["ran_on"], "cpu", "{r}");
        let placement = r["placement"].as_array().expect("placement recorded");
        assert_eq!(placement.len(), 1, "{r}");
        assert_eq!(placement[0]["provider"], "cpu");
        assert!(placement[0]["nodes"].as_u64().is_some_and(|n| n > 10), "{r}");
    }
    assert!(
        rows[0]["unavailable"].is_null() && rows[1]["unavailable"].is_string() && rows[2]["unavailable"].is_string()
    );
}

#[test]
fn bench_takes_the_tensorrt_settings_from_a_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    let text = format!(
        "version = 1\n[model]\npath = {:?}\n[model.tensorrt]\nmax_workspace_mb = 0\n",
        model("int8").display().to_string()
    );
    std::fs::write(&config, text).expect("write");
    let out = run(camclassd()
        .arg("bench")
        .arg(model("int8"))
        .args(["--runs", "2", "--ep", "tensorrt", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("unavailable: this ONNX Runtime build has no TensorRT"), "{}", stdout(&out));

    // A config error is a usage error, with the file and line.
    std::fs::write(&config, "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.tensorrt]\nfp16 = 1\n")
        .expect("write");
    let out = run(camclassd().arg("bench").arg(model("int8")).args(["--runs", "2", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("c.toml:5:8: model.tensorrt.fp16: invalid type"), "{}", stderr(&out));
}

#[test]
fn inspect_with_ep_reports_the_provider_that_ran_and_why_others_were_skipped() {
    let out = run(camclassd().args(["inspect", "--ep", "cuda,cpu"]).arg(model("int8")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("  session       cpu (requested cuda, cpu; opened in "), "{text}");
    assert!(text.contains("    skipped     cuda: this ONNX Runtime build has no CUDA execution provider"), "{text}");
    assert!(text.contains("    nodes ran   cpu ") && text.contains("QLinearConv"), "{text}");

    let out = run(camclassd().args(["inspect", "--json", "--ep", "tensorrt,cuda,cpu"]).arg(model("int8")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let s = &report["session"];
    assert_eq!(s["provider"], "cpu", "{s}");
    assert_eq!(s["requested"], serde_json::json!(["tensorrt", "cuda", "cpu"]));
    let skipped: Vec<(&str, &str)> = s["skipped"]
        .as_array()
        .expect("skipped list")
        .iter()
        .map(|k| (k["provider"].as_str().unwrap_or_default(), k["kind"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(skipped, [("tensorrt", "not_in_runtime"), ("cuda", "not_in_runtime")]);
    let placement = s["placement"].as_array().expect("placement");
    assert_eq!(placement.len(), 1, "{s}");
    assert_eq!(placement[0]["provider"], "cpu");
    // 49 convolutions: the stem and the first two blocks stay float (models/README.md), 43 run in INT8.
    assert_eq!(placement[0]["ops"]["QLinearConv"], 43, "{s}");
    assert_eq!(placement[0]["ops"]["Conv"], 6, "{s}");

    // Without --ep there is no session, and nothing is loaded.
    let out = run(camclassd().args(["inspect", "--json"]).arg(model("int8")));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(report.get("session").is_none());
}

#[test]
fn inspect_with_ep_works_for_models_camclassd_cannot_classify_with() {
    // Two inputs: not an image classifier, but ONNX Runtime still opens and runs it on zeros.
    let out = run(camclassd().args(["inspect", "--json", "--ep", "cuda"]).arg(generated("two_inputs.onnx")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["session"]["provider"], "cpu");
    assert!(report["session"]["placement"][0]["nodes"].as_u64().is_some_and(|n| n > 0), "{report}");
}

#[test]
fn no_placement_profile_is_left_in_the_temporary_folder_whatever_the_outcome() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let with_tmp = |cmd: &mut Command| run(cmd.env("TMPDIR", tmp.path()));
    // A fallback, then a success.
    let out = with_tmp(
        camclassd().args(["classify", "--ep", "cuda,cpu", "--model"]).arg(model("int8")).arg(generated("coffee.jpg")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A session that opens, then a model camclassd refuses (two inputs): the session is dropped unfinished.
    let out = with_tmp(
        camclassd().args(["classify", "--model"]).arg(generated("two_inputs.onnx")).arg(generated("coffee.jpg")),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // inspect's probe.
    let out = with_tmp(camclassd().args(["inspect", "--ep", "cuda,cpu"]).arg(generated("not_image.onnx")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // (ONNX Runtime itself leaves a small `.ses` file there, with or without profiling.)
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("camclassd-")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
