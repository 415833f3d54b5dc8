//! Bad inputs: each gets a clear error naming the culprit, and the documented exit code.

use super::*;

#[test]
fn bad_images_fail_alone_and_the_rest_are_classified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = ["truncated.jpg", "empty.jpg", "not_an_image.jpg"];
    let mut images = vec![generated("chelsea.jpg")];
    images.extend(bad.iter().map(|n| generated(n)));
    images.push(dir.path().to_path_buf()); // a directory
    images.push(dir.path().join("missing.jpg"));
    images.push(generated("coffee.jpg"));

    let out = run(camclassd().args(["classify", "--json", "--model"]).arg(model("int8")).args(&images));
    assert_eq!(out.status.code(), Some(1), "partial failure exits 1: {}", stderr(&out));
    let reports: Vec<Report> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let names: Vec<_> = reports.iter().map(|r| r.image.rsplit('/').next().unwrap_or_default().to_string()).collect();
    assert_eq!(names, vec!["chelsea.jpg", "coffee.jpg"]);

    let err = stderr(&out);
    for (file, why) in [
        ("truncated.jpg", "truncated JPEG"),
        ("empty.jpg", "empty file"),
        ("not_an_image.jpg", "not an image"),
        ("missing.jpg", "cannot read"),
    ] {
        assert!(err.lines().any(|l| l.contains(file) && l.contains(why)), "{file}: {why}\n{err}");
    }
    assert!(err.contains("is a directory"), "{err}");
}

/// Runs classify on a model that cannot be used; asserts exit 2 and that stderr has every fragment.
fn model_error(model: &Path, fragments: &[&str]) {
    let out = run(camclassd().arg("classify").arg("--model").arg(model).arg(generated("chelsea.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(stdout(&out).is_empty());
    for f in fragments {
        assert!(err.contains(f), "expected {f:?} in:\n{err}");
    }
}

#[test]
fn unusable_models_are_usage_errors_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.onnx");
    model_error(&missing, &["nope.onnx", "cannot read", "No such file"]);
    model_error(&generated("garbage.onnx"), &["garbage.onnx", "not a valid ONNX model"]);
    model_error(&generated("truncated.onnx"), &["truncated.onnx", "not a valid ONNX model"]);
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    model_error(&empty, &["empty.onnx", "not a valid ONNX model", "empty"]);
    model_error(&generated("not_image.onnx"), &["not_image.onnx", "not an image classifier", "4 dimensions"]);
    model_error(&generated("two_inputs.onnx"), &["two_inputs.onnx", "not an image classifier", "2 inputs"]);
    model_error(&generated("no_metadata.onnx"), &["no_metadata.onnx", "mean, std", "[model.preprocess]"]);
}

#[test]
fn a_missing_onnx_runtime_lists_every_place_looked_and_the_fix() {
    let out = run(camclassd()
        .args(["classify", "--ort-lib", "/nonexistent/libonnxruntime.so", "--model"])
        .arg(model("int8"))
        .arg(generated("chelsea.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/libonnxruntime.so") && err.contains("not found"), "{err}");
    assert!(err.contains("scripts/setup"), "{err}");

    // A copy of the binary far from the source tree, with no ORT anywhere it searches.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("camclassd");
    std::fs::copy(env!("CARGO_BIN_EXE_camclassd"), &exe).expect("copy binary");
    let classify_with = |ort_dylib_path: Option<&Path>| {
        let mut cmd = Command::new(&exe);
        cmd.env_remove("ORT_DYLIB_PATH").env_remove("LD_LIBRARY_PATH");
        if let Some(p) = ort_dylib_path {
            cmd.env("ORT_DYLIB_PATH", p);
        }
        run(cmd.arg("classify").arg("--model").arg(model("int8")).arg(generated("chelsea.jpg")))
    };
    let out = classify_with(None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for place in ["next to the executable", "package folder", "system path", "/usr/lib/camclassd", "dynamic loader"] {
        assert!(err.contains(place), "{place} not listed:\n{err}");
    }
    assert!(err.contains(&dir.path().join("libonnxruntime.so").display().to_string()), "{err}");

    // ORT_DYLIB_PATH is honoured, and a bad one is reported as such...
    let not_a_lib = dir.path().join("libonnxruntime.so.bogus");
    std::fs::write(&not_a_lib, b"not a shared object").expect("write");
    let out = classify_with(Some(&not_a_lib));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("$ORT_DYLIB_PATH") && err.contains("libonnxruntime.so.bogus"), "{err}");

    // ...and a good one is used.
    let lib = root().join(".cache/onnxruntime").join(std::env::consts::ARCH).join("libonnxruntime.so");
    let out = classify_with(Some(&lib));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let out = run(camclassd().args(["classify", "x.jpg"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--model"), "{}", stderr(&out));
    let out = run(camclassd().args(["classify", "--ep", "gpu", "--model", "m.onnx", "x.jpg"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown execution provider"), "{}", stderr(&out));
}

#[test]
fn bad_config_names_file_line_column_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("camclassd.toml");
    std::fs::write(&config, "version = 1\n[model]\npath = \"models/efficientnet-lite0-int8.onnx\"\ntop_k = \"five\"\n")
        .expect("write");
    let out = run(camclassd().arg("check-config").arg(&config));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:4:9: model.top_k: invalid type: string \"five\"", config.display())), "{err}");

    let out = run(camclassd().arg("classify").arg("--config").arg(&config).arg(generated("chelsea.jpg")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("camclassd.toml:4:9"), "{}", stderr(&out));
}

#[test]
fn unavailable_execution_providers_fall_back_to_cpu_with_a_reason() {
    let out = run(camclassd()
        .args(["--log-level", "info", "classify", "--json", "--ep", "tensorrt,cuda,cpu", "--model"])
        .arg(model("int8"))
        .arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("provider=tensorrt") && err.contains("provider=cuda"), "{err}");
    assert!(err.contains("no TensorRT execution provider") && err.contains("no CUDA execution provider"), "{err}");
    assert!(err.lines().any(|l| l.contains("execution provider active") && l.contains("provider=cpu")), "{err}");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::{BufRead, BufReader};
    let images: Vec<_> = PHOTOS.iter().map(|n| generated(n)).collect();
    let mut child = camclassd()
        .args(["classify", "--json", "--model"])
        .arg(model("int8"))
        .args(&images)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("one line"); // then dropped
    let out = child.wait_with_output().expect("wait");
    assert!(first.contains("\"top\""), "{first}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// `[queue] path` pointing at something that is not a queue: refused by check-config and by run (exit 2,
/// naming the key), and the thing itself is left exactly as it was — never renamed, never replaced.
#[test]
fn a_queue_path_that_is_not_a_queue_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("camclassd.toml");
    let int8 = model("int8").display().to_string();
    let camera = format!("[[cameras]]\nname = \"c\"\nsource = {:?}\n", generated("coffee.jpg").display().to_string());
    for target in [config.display().to_string(), "/dev/full".to_string(), "/dev/null".to_string()] {
        let text = format!(
            "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n[queue]\npath = {target:?}\n[model]\npath = {int8:?}\n{camera}"
        );
        std::fs::write(&config, &text).expect("config");
        let out = run(camclassd().arg("check-config").arg(&config));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(err.contains("queue.path") && err.contains("never replaces it"), "{target}: {err}");
        assert!(err.contains(&format!("{}:6:", config.display())), "the line: {err}");

        let out = run(camclassd().args(["run", "--config"]).arg(&config));
        assert_eq!(out.status.code(), Some(2), "{target}: {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&config).expect("config"), text, "{target}: the config is untouched");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "{target}: nothing moved aside or created: {names:?}");
    }
    let dev = std::fs::metadata("/dev/full").expect("/dev/full").file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&dev), "/dev/full is still a device");
}

/// A model whose scores are NaN: an error naming the model and each image (exit 1), never an empty
/// "no class" answer, and no panic in compare.
#[test]
fn nan_scores_are_an_error_naming_model_and_image() {
    let nan = generated("nan.onnx");
    let out = run(camclassd()
        .arg("classify")
        .arg("--model")
        .arg(&nan)
        .arg(generated("coffee.jpg"))
        .arg(generated("chelsea.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("coffee.jpg") && err.contains("chelsea.jpg") && err.contains("nan.onnx"), "{err}");
    assert!(err.contains("not numbers"), "{err}");
    assert!(!stdout(&out).contains("no class above"), "{}", stdout(&out));

    let out = run(camclassd().arg("compare").arg(&nan).arg(&nan).arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert!(matches!(out.status.code(), Some(1 | 2)), "no panic (101): {err}");
    assert!(err.contains("coffee.jpg") && err.contains("not numbers"), "{err}");
}

/// Errors keep their cause: the OS error of a failed write, whatever command wrote.
#[test]
fn write_errors_say_why() {
    let out = run(camclassd().args(["bench", "--runs", "2", "--json", "/nonexistent/dir/x.json"]).arg(model("int8")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/dir/x.json: No such file or directory"), "{}", stderr(&out));

    let full = std::fs::File::create("/dev/full").expect("/dev/full");
    let out = camclassd()
        .arg("classify")
        .arg("--model")
        .arg(model("int8"))
        .arg(generated("coffee.jpg"))
        .stdout(full)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("writing to stdout: No space left on device"), "{}", stderr(&out));
}

#[test]
fn compare_refuses_a_gate_outside_0_to_100() {
    for bad in ["nan", "101", "-0.5"] {
        let out = run(camclassd()
            .arg("compare")
            .arg(model("int8"))
            .arg(model("int8"))
            .arg(generated("coffee.jpg"))
            .arg(format!("--fail-below={bad}")));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("not a percentage from 0 to 100"), "{bad}: {}", stderr(&out));
    }
}

#[test]
fn an_empty_labels_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "").expect("labels");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\nlabels = {:?}\n",
            model("int8").display().to_string(),
            labels.display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd().args(["classify", "--config"]).arg(&config).arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 labels") && stderr(&out).contains("1000 output classes"), "{}", stderr(&out));
}

/// A 16384x16384 grey PNG (260 kB on disk) is refused before it is decoded, with its size and the limit,
/// and the process never holds the gigabyte decoding it would take.
#[test]
#[allow(clippy::zombie_processes, reason = "the child is reaped by wait4, which also gives its peak RSS")]
fn an_oversized_picture_is_refused_with_its_size_and_the_limit_and_memory_stays_bounded() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let err_path = dir.path().join("stderr");
    let child = camclassd()
        .args(["classify", "--model"])
        .arg(model("int8"))
        .arg(generated("huge_grey.png"))
        .arg(generated("coffee.jpg"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    // wait4 gives this child's own peak RSS (other tests' children run at the same time).
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our child's, not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let status = std::process::ExitStatus::from_raw(status);
    let err = std::fs::read_to_string(&err_path).expect("stderr");
    assert_eq!(status.code(), Some(1), "the other picture is still classified: {err}");
    assert!(err.contains("huge_grey.png") && err.contains("16384x16384 pixels"), "{err}");
    assert!(err.contains("at most 32 megapixels"), "{err}");
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    assert!(peak_mib < 400.0, "peak RSS {peak_mib:.0} MiB: the picture was decoded after all");
}

#[test]
fn a_corrupt_png_is_named_and_described_in_words() {
    let out = run(camclassd().args(["classify", "--model"]).arg(model("int8")).arg(generated("corrupt.png")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("corrupt.png: cannot decode: corrupt PNG") && err.contains("\"IDXT\""), "{err}");
    assert!(!err.contains("ChunkType"), "{err}");
}

/// A model whose weights are ONNX external data loads from any working directory (systemd's is `/`), and a
/// data path that leaves the model's folder is refused.
#[test]
fn external_data_is_read_beside_the_model_whatever_the_working_directory() {
    let out = run(camclassd()
        .current_dir("/")
        .args(["classify", "--json", "--model"])
        .arg(generated("extdata.onnx"))
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"label\":\"a\""), "{}", stdout(&out));

    let out = run(camclassd()
        .current_dir("/")
        .args(["classify", "--model"])
        .arg(generated("extdata_escape.onnx"))
        .arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("extdata_escape.onnx") && err.contains("../generated/extdata.onnx.data"), "{err}");
    assert!(err.contains("relative to the model's folder"), "{err}");
}

#[test]
fn a_model_that_fails_to_load_gets_one_error_line_and_no_stray_ort_log() {
    for m in ["garbage.onnx", "truncated.onnx", "invalid_graph.onnx"] {
        let out = run(camclassd().args(["classify", "--model"]).arg(generated(m)).arg(generated("coffee.jpg")));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(!err.contains("Could not write a profile"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// `output = "probabilities"` on a logits model would print "1139.84 % espresso": refused with the way out.
#[test]
fn declared_probabilities_that_are_logits_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[model]\npath = {:?}\n[model.preprocess]\noutput = \"probabilities\"\n",
            model("int8").display().to_string()
        ),
    )
    .expect("config");
    let out = run(camclassd().args(["classify", "--config"]).arg(&config).arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}\n{}", stdout(&out));
    assert!(!stdout(&out).contains("espresso"), "{}", stdout(&out));
    assert!(err.contains("outside [0, 1]") && err.contains("output = \"logits\""), "{err}");
}

/// A model with two outputs: a warning naming them when none is chosen, and `--output-name` or `[model]
/// output_name` to choose.
#[test]
fn a_model_with_two_outputs_is_flagged_and_the_output_can_be_named() {
    let two = generated("two_outputs.onnx");
    let out =
        run(camclassd().args(["classify", "--json", "--scores", "--model"]).arg(&two).arg(generated("coffee.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("2 outputs (\"features\", \"logits\")") && err.contains("output_name"), "{err}");
    let scores = |o: &std::process::Output| -> usize {
        let v: serde_json::Value = serde_json::from_str(stdout(o).lines().next().unwrap_or("{}")).expect("json");
        v["scores"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(scores(&out), 3, "the first output, as before");

    let out = run(camclassd()
        .args(["classify", "--json", "--scores", "--output-name", "logits", "--model"])
        .arg(&two)
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("outputs"), "{}", stderr(&out));
    assert_eq!(scores(&out), 5);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("version = 1\n[model]\npath = {:?}\noutput_name = \"logits\"\n", two.display().to_string()),
    )
    .expect("config");
    let out =
        run(camclassd().args(["classify", "--json", "--scores", "--config"]).arg(&config).arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(scores(&out), 5);

    let out =
        run(camclassd().args(["classify", "--output-name", "probs", "--model"]).arg(&two).arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no output named \"probs\"; its outputs are \"features\", \"logits\""),
        "{}",
        stderr(&out)
    );
}

/// A daemon config with `[mqtt]` (an unreachable broker), one replay camera and a private queue.
fn daemon_config_text(dir: &Path, model_section: &str, mqtt_extra: &str) -> String {
    format!(
        "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n{mqtt_extra}[queue]\npath = {:?}\n{model_section}\
         [[cameras]]\nname = \"c\"\nsource = {:?}\n",
        dir.join("queue.redb").display().to_string(),
        generated("coffee.jpg").display().to_string()
    )
}

/// Names, ids and prefixes that no topic can hold, a port or a scheme in `host`, a duplicate key, a
/// secret that is a directory, a camera source that is a device: each refused by check-config with the
/// file, line and key, and advice.
#[test]
fn check_config_names_the_key_of_each_bad_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let int8 = model("int8").display().to_string();
    let model_section = format!("[model]\npath = {int8:?}\n");
    let long = "x".repeat(100_000);
    let cases: Vec<(String, &str)> = vec![
        (
            daemon_config_text(dir.path(), &model_section, "").replace("name = \"c\"", &format!("name = {long:?}")),
            ":10:1: cameras[0].name: is 100000 bytes long; at most 128",
        ),
        (
            daemon_config_text(dir.path(), &model_section, &format!("node_id = \"{}\"\n", "n".repeat(70_000))),
            ":5:1: mqtt.node_id: is 70000 bytes long",
        ),
        (
            daemon_config_text(dir.path(), &model_section, &format!("client_id = \"{}\"\n", "n".repeat(70_000))),
            ":5:1: mqtt.client_id: must be 1 to 256 bytes, got 70000",
        ),
        (
            daemon_config_text(dir.path(), &model_section, "").replace("\"127.0.0.1\"", "\"127.0.0.1:1883\""),
            ":3:1: mqtt.host: \"127.0.0.1:1883\" has a port in it: set host = \"127.0.0.1\" and port = 1883",
        ),
        (
            daemon_config_text(dir.path(), &model_section, "").replace("\"127.0.0.1\"", "\"mqtt://broker.lan\""),
            ":3:1: mqtt.host: \"mqtt://broker.lan\" has a scheme",
        ),
        (daemon_config_text(dir.path(), &model_section, "port = 2\n"), ":5:1: mqtt.port: duplicate key \"port\""),
        (
            daemon_config_text(
                dir.path(),
                &model_section,
                &format!("username = \"u\"\npassword_file = {:?}\n", dir.path().display().to_string()),
            ),
            "is a directory, not a file",
        ),
        (
            daemon_config_text(dir.path(), &model_section, "")
                .replace(&generated("coffee.jpg").display().to_string(), "/dev/null"),
            ":11:1: cameras[0].source: /dev/null is a device node",
        ),
        (
            daemon_config_text(
                dir.path(),
                &format!("{model_section}[model.preprocess]\ninput_size = [20000, 20000]\n"),
                "",
            ),
            ":10:1: model.preprocess.input_size: 20000x20000 is larger than 4096x4096",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("k{i}.toml"));
        std::fs::write(&config, text).expect("config");
        let out = run(camclassd().arg("check-config").arg(&config));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains(&format!("k{i}.toml{want}")) || (!want.starts_with(':') && err.contains(want)),
            "want {want:?}\n{}",
            &err[..err.len().min(2000)]
        );
        assert!(err.len() < 2000, "the long value is not echoed back: {} bytes", err.len());
    }
}

#[test]
fn an_unknown_log_level_is_refused() {
    let out = run(camclassd()
        .args(["--log-level", "verbose", "classify", "--model"])
        .arg(model("int8"))
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"verbose\" is not a log level"), "{}", stderr(&out));
    let out = run(camclassd()
        .args(["--log-level", "camclassd=debug,ort=warn", "classify", "--model"])
        .arg(model("int8"))
        .arg(generated("coffee.jpg")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Every config `run` refuses at start (exit 2, which systemd does not restart), `check-config` refuses
/// too, with the same key and reason.
#[test]
fn check_config_refuses_what_run_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let int8 = model("int8").display().to_string();
    let text_model = dir.path().join("model.onnx");
    std::fs::write(&text_model, "this is a text file, not a model\n").expect("write");
    let empty_ca = dir.path().join("empty.pem");
    std::fs::write(&empty_ca, "").expect("write");
    let key_pem = dir.path().join("key.pem");
    std::fs::write(&key_pem, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDEfuJKeaFPcpHDaGr7hH1Fb1vR7cN9o8Ej1Cyrp6Jn0\n-----END PRIVATE KEY-----\n")
        .expect("write");
    let model_at = |p: &str| format!("[model]\npath = {p:?}\n");
    let tls = |ca: &Path| format!("[mqtt.tls]\nca_file = {:?}\n", ca.display().to_string());
    let cases: Vec<(String, String, &str)> = vec![
        (model_at(&text_model.display().to_string()), String::new(), "not a valid ONNX model"),
        (
            model_at(&generated("no_metadata.onnx").display().to_string()),
            String::new(),
            "no preprocessing metadata for mean, std",
        ),
        (format!("{}[model.preprocess]\nresize = 100\n", model_at(&int8)), String::new(), "resize 100 is smaller"),
        (
            format!("{}[model.preprocess]\ninput_size = [100000, 100000]\n", model_at(&int8)),
            String::new(),
            "model.preprocess.input_size: 100000x100000 is larger than 4096x4096",
        ),
        (
            format!("{}[model.preprocess]\ninput_size = [160, 160]\nresize = 182\n", model_at(&int8)),
            String::new(),
            "does not match the model's fixed input 224x224",
        ),
        (model_at(&int8), tls(Path::new("/etc/passwd")), "mqtt.tls: /etc/passwd: no PEM certificate in it"),
        (model_at(&int8), tls(&empty_ca), "no PEM certificate in it"),
        (model_at(&int8), tls(&key_pem), "key.pem: no PEM certificate in it"),
        (model_at(&int8), tls(dir.path()), "is a directory, not a file"),
    ];
    for (i, (model_section, tls_section, reason)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("c{i}.toml"));
        let text =
            daemon_config_text(dir.path(), model_section, "").replace("[queue]", &format!("{tls_section}[queue]"));
        std::fs::write(&config, &text).expect("config");
        let run_out = run(camclassd().args(["run", "--config"]).arg(&config));
        assert_eq!(run_out.status.code(), Some(2), "run refuses {text}\n{}", stderr(&run_out));
        assert!(stderr(&run_out).contains(reason), "run: {reason}\n{}", stderr(&run_out));
        let check = run(camclassd().arg("check-config").arg(&config));
        let err = stderr(&check);
        assert_eq!(check.status.code(), Some(2), "check-config passes what run refuses:\n{text}\n{err}");
        assert!(err.contains(reason), "check-config: want {reason:?}\n{err}");
        // file:line:column of the key, as for the config's own problems.
        let at = err.find(&format!("c{i}.toml:")).map(|p| &err[p + format!("c{i}.toml:").len()..]);
        assert!(at.is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())), "names file and line: {err}");
        assert!(stdout(&check).is_empty(), "{}", stdout(&check));
    }
    // And a good one is still fine.
    let config = dir.path().join("good.toml");
    std::fs::write(&config, daemon_config_text(dir.path(), &model_at(&int8), "")).expect("config");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The model is opened on the CPU whatever run uses (no TensorRT engine built before every start).
    let gpu = format!("{}execution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\n", model_at(&int8));
    std::fs::write(&config, daemon_config_text(dir.path(), &gpu, "")).expect("config");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("falling back"), "{}", stderr(&out));
}

/// `check-config` run by an admin without sudo, on a password file only the service user may read: a warning
/// that says how to check it, not a config error (exit 2) for a config that is right.
#[test]
fn check_config_by_another_user_warns_about_an_unreadable_secret_instead_of_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).expect("chmod");
    mode(d, 0o755);
    std::fs::write(d.join("pw"), "secret\n").expect("pw");
    mode(&d.join("pw"), 0o600);
    let config = d.join("c.toml");
    let text = format!(
        "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nusername = \"u\"\npassword_file = {:?}\n[model]\npath = {:?}\n\
         [queue]\npath = {:?}\n[[cameras]]\nname = \"a\"\nsource = {:?}\n",
        d.join("pw").display().to_string(),
        model("int8").display().to_string(),
        d.join("q.redb").display().to_string(),
        generated("coffee.jpg").display().to_string(),
    );
    std::fs::write(&config, text).expect("config");
    mode(&config, 0o644);
    // As `nobody` (the tests run as root, which reads everything).
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_camclassd"),
            "check-config",
        ])
        .arg(&config)
        .current_dir(root())
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not readable by this user") && err.contains("sudo -u camclassd camclassd check-config"),
        "{err}"
    );
}

/// `run`'s verdict on a config: accepted (it reached "camclassd running") or refused (its exit code and
/// log). A refused start exits within seconds; an accepted one is stopped.
fn run_verdict(config: &Path) -> Result<(), (Option<i32>, String)> {
    let mut daemon = super::daemon::Daemon::start(config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if daemon.log().contains("camclassd running") {
            let (code, log) = daemon.stop();
            assert_eq!(code, Some(0), "{log}");
            return Ok(());
        }
        if let Some(code) = daemon.try_exit() {
            return Err((code, daemon.log()));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(std::time::Instant::now() < deadline, "run neither started nor exited:\n{}", daemon.log());
    }
}

/// One model-loading policy (`camclassd::load`) for `run` and `check-config`: on every config of the
/// policy's cases — checks that pass, fail, warn or fall back, a broken fallback, models a region uses or
/// not, labels and thresholds the model cannot serve — both give the same verdict, and a refusal names the
/// same keys at the same lines.
#[test]
fn check_config_and_run_agree_on_every_model_loading_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |p: PathBuf| p.display().to_string();
    let (int8, fp32, broken) = (path(model("int8")), path(model("fp32")), path(generated("broken-int8.onnx")));
    let two_class = path(generated("two_class.onnx"));
    let text_file = dir.path().join("not-a-model.onnx");
    std::fs::write(&text_file, "this is a text file, not a model\n").expect("write");
    let text_file = path(text_file);
    let three_labels = dir.path().join("three.txt");
    std::fs::write(&three_labels, "a\nb\nc\n").expect("write");
    let three_labels = path(three_labels);
    let m = |p: &str, extra: &str| format!("[model]\npath = {p:?}\n{extra}");
    let named = |name: &str, p: &str| format!("[[models]]\nname = {name:?}\npath = {p:?}\nthreads = 1\n");
    let region = |extra: &str| format!("[[cameras.regions]]\nname = \"r\"\ncrop = [0, 0, 100, 100]\n{extra}");
    // (model sections, [[models]], regions, run accepts)
    let cases: Vec<(String, String, String, bool)> = vec![
        (m(&int8, ""), String::new(), String::new(), true),
        (m(&broken, ""), String::new(), String::new(), false),
        (m(&broken, "on_check_failure = \"warn\"\n"), String::new(), String::new(), true),
        (
            m(&broken, &format!("on_check_failure = \"fallback\"\nfallback = {fp32:?}\n")),
            String::new(),
            String::new(),
            true,
        ),
        // A broken fallback is refused even while the check passes: it is found at start, not on the day
        // it is needed.
        (
            m(&int8, &format!("on_check_failure = \"fallback\"\nfallback = {text_file:?}\n")),
            String::new(),
            String::new(),
            false,
        ),
        (m(&int8, &format!("labels = {three_labels:?}\n")), String::new(), String::new(), false),
        // A [[models]] entry no region uses is not loaded by either (check-config warns).
        (m(&int8, ""), named("spare", &text_file), String::new(), true),
        (m(&int8, ""), named("door", &text_file), region("model = \"door\"\n"), false),
        (m(&int8, ""), named("door", &two_class), region("model = \"door\"\non_class = \"cat\"\n"), true),
        (m(&int8, ""), named("door", &two_class), region("model = \"door\"\non_class = \"garage\"\n"), false),
        (m(&int8, ""), String::new(), region("thresholds = { \"not a class\" = 0.5 }\n"), false),
        // The fallback must serve the regions too: its classes (cat, coffee) lack the tench the region names.
        (
            m(&int8, &format!("on_check_failure = \"fallback\"\nfallback = {two_class:?}\n")),
            String::new(),
            region("thresholds = { tench = 0.5 }\n"),
            false,
        ),
    ];
    for (i, (model_section, models, regions, accepted)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("c{i}.toml"));
        let text = daemon_config_text(dir.path(), model_section, "").replacen(
            "[[cameras]]",
            &format!("{models}[[cameras]]"),
            1,
        ) + regions;
        std::fs::write(&config, &text).expect("config");
        let check = run(camclassd().arg("check-config").arg(&config));
        let run = run_verdict(&config);
        let check_err = stderr(&check);
        match (&run, check.status.code()) {
            (Ok(()), Some(0)) => assert!(*accepted, "both accept what should be refused:\n{text}\n{check_err}"),
            (Err((code, log)), Some(2)) => {
                assert!(!accepted, "both refuse a good config:\n{text}\n{check_err}\n{log}");
                assert_eq!(*code, Some(2), "run refuses with exit 2:\n{log}");
                // The same problems: every `file:line:col: key` check-config names, run names too.
                for line in check_err.lines().filter(|l| l.contains(&format!("c{i}.toml:"))) {
                    let at = line.split_once(&format!("c{i}.toml:")).map(|(_, rest)| rest).expect("located");
                    let place: String = at.splitn(4, ": ").take(2).collect::<Vec<_>>().join(": ");
                    assert!(log.contains(&place), "run does not name {place:?}:\n{log}\ncheck-config:\n{check_err}");
                }
            }
            (run, check) => panic!("check-config ({check:?}) and run ({run:?}) disagree on:\n{text}\n{check_err}"),
        }
    }
}

/// A library older than the C API camclassd needs (here a shim reporting 1.16.3, as JetPack 5's oldest
/// builds would) is refused with its version, the floor and where to get a newer one; never a panic.
#[test]
fn an_onnx_runtime_older_than_1_17_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("shim.c");
    std::fs::write(
        &source,
        "#include <stddef.h>\n\
         typedef struct { const void *(*GetApi)(unsigned); const char *(*GetVersionString)(void); } OrtApiBase;\n\
         static const void *get_api(unsigned v) { (void)v; return NULL; }\n\
         static const char *version(void) { return \"1.16.3\"; }\n\
         static const OrtApiBase base = { get_api, version };\n\
         const OrtApiBase *OrtGetApiBase(void) { return &base; }\n",
    )
    .expect("shim source");
    let lib = dir.path().join("libonnxruntime.so.1.16.3");
    let built = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&source).status().expect("cc");
    assert!(built.success(), "cc (scripts/setup installs gcc)");
    let out = run(camclassd()
        .arg("classify")
        .arg("--ort-lib")
        .arg(&lib)
        .arg("--model")
        .arg(model("int8"))
        .arg(generated("chelsea.jpg")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in ["1.16.3", "older than 1.17", "pip install onnxruntime", "libonnxruntime.so.1.16.3"] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// The oldest ONNX Runtime the project can get (ONNXRUNTIME_OLDEST: Microsoft's 1.19.2, the first PyPI wheel
/// with libonnxruntime.so; a Jetson's JetPack build trails the pin the same way) loads, passes the model
/// check, says what it lacks, and classifies the photos as the pinned version does.
#[test]
fn the_oldest_onnx_runtime_at_hand_classifies_as_the_pinned_one_and_says_what_it_lacks() {
    let oldest = std::fs::read_to_string(root().join("ONNXRUNTIME_OLDEST")).expect("ONNXRUNTIME_OLDEST");
    let oldest = oldest.trim();
    let lib = root().join(format!(".cache/onnxruntime/{}-{oldest}/libonnxruntime.so.{oldest}", std::env::consts::ARCH));
    assert!(lib.exists(), "{} is missing: run scripts/setup", lib.display());
    let photos: Vec<PathBuf> = PHOTOS.iter().map(|p| generated(p)).collect();
    let pinned = classify_json(&model("int8"), &photos, &["--top", "2"], 0);
    let out = run(camclassd()
        .args(["--log-level", "info", "classify", "--json", "--top", "2", "--ort-lib"])
        .arg(&lib)
        .arg("--model")
        .arg(model("int8"))
        .args(&photos));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for want in [
        format!("version={oldest}"),
        format!("ONNX Runtime {oldest} is older than the tested"),
        "a model needing a newer opset".to_string(),
        "model check passed".to_string(),
    ] {
        assert!(err.contains(&want), "{want}:\n{err}");
    }
    let old: Vec<Report> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON report per line")).collect();
    assert_eq!(old.len(), pinned.len(), "{err}");
    for (new, old) in pinned.iter().zip(&old) {
        // A near tie (top-2 within 0.02 on the pinned version) may go either way between kernel releases.
        let tie = new.top[0].score - new.top[1].score < 0.02;
        let same = old.top[0].class_id == new.top[0].class_id || (tie && old.top[0].class_id == new.top[1].class_id);
        assert!(same, "{}: {oldest} says {:?}, the pinned version {:?}", new.image, old.top, new.top);
        assert!(
            (old.top[0].score - new.top[0].score).abs() < 0.05 || tie,
            "{}: {:?} vs {:?}",
            new.image,
            old.top,
            new.top
        );
    }
}
