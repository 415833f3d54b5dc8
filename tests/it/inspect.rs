//! `camclassd inspect` against the official `onnx` Python package reading the same files.

use super::*;

const PYTHON_SUMMARY: &str = r#"
import json, sys, collections, onnx, numpy as np
from onnx import helper
for path in sys.argv[1:]:
    m = onnx.load(path)
    g = m.graph
    inits = {t.name for t in g.initializer}
    def io(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return {"name": v.name, "element_type": helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "unknown", "shape": dims}
    ops = collections.Counter((n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}") for n in g.node)
    print(json.dumps({
        "ir_version": m.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "nodes": len(g.node),
        "operators": dict(ops),
        "parameters": int(sum(int(np.prod(t.dims)) for t in g.initializer)),
        "inputs": [io(v) for v in g.input if v.name not in inits],
        "outputs": [io(v) for v in g.output],
        "metadata": {p.key: (f"({len(p.value.encode())} bytes: the model check, see `check`)" if p.key == "camclassd.check" else p.value) for p in m.metadata_props},
        "check_inputs": next((len(json.loads(p.value)["inputs"]) for p in m.metadata_props if p.key == "camclassd.check"), None),
        "producer_name": m.producer_name,
    }))
"#;

fn python_summaries(models: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = Command::new(root().join(".cache/venv/bin/python"))
        .arg("-c")
        .arg(PYTHON_SUMMARY)
        .args(models)
        .output()
        .expect("python runs (scripts/setup)");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

#[test]
fn inspect_agrees_with_the_onnx_package() {
    let models = vec![
        model("fp32"),
        model("int8"),
        generated("no_metadata.onnx"),
        generated("two_inputs.onnx"),
        generated("not_image.onnx"),
        generated("dynamic_dims.onnx"),
        generated("fp16.onnx"),
        generated("qoperator.onnx"),
    ];
    let theirs = python_summaries(&models);
    for (path, t) in models.iter().zip(&theirs) {
        let out = run(camclassd().args(["inspect", "--json"]).arg(path));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let ours: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        let name = path.display();
        for key in ["ir_version", "nodes", "parameters", "metadata", "producer_name"] {
            assert_eq!(ours[key], t[key], "{name}: {key}");
        }
        assert_eq!(ours["check"]["inputs"], t["check_inputs"], "{name}: the model check's inputs");
        let opsets: serde_json::Map<String, serde_json::Value> = ours["opsets"]
            .as_array()
            .expect("opsets")
            .iter()
            .map(|o| (o["domain"].as_str().unwrap_or_default().to_string(), o["version"].clone()))
            .collect();
        assert_eq!(serde_json::Value::Object(opsets), t["opsets"], "{name}: opsets");
        let ops: serde_json::Map<String, serde_json::Value> = ours["operators"]
            .as_array()
            .expect("operators")
            .iter()
            .map(|pair| (pair[0].as_str().unwrap_or_default().to_string(), pair[1].clone()))
            .collect();
        assert_eq!(serde_json::Value::Object(ops), t["operators"], "{name}: operator histogram");
        for side in ["inputs", "outputs"] {
            let (a, b) = (ours[side].as_array().expect("io"), t[side].as_array().expect("io"));
            assert_eq!(a.len(), b.len(), "{name}: {side}");
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x["name"], y["name"]);
                assert_eq!(x["element_type"], y["element_type"], "{name}: element type (numpy's names)");
                assert_eq!(x["shape"], y["shape"], "{name}: {side} shape");
            }
        }
    }
}

#[test]
fn inspect_reports_quantization_and_symbolic_dims() {
    let out = run(camclassd().args(["inspect", "--json"]).arg(model("int8")));
    let m: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(m["quantization"]["kind"], "qdq_static");
    assert_eq!(m["quantization"]["granularity"], "per_channel");
    // U8U8: uint8 weights are exact on every CPU (models/README.md, "The INT8 recipe").
    assert_eq!(m["quantization"]["weight_type"], "uint8");
    assert_eq!(m["quantization"]["activation_type"], "uint8");
    assert_eq!(m["inputs"][0]["shape"][0], "batch");
    let out = run(camclassd().args(["inspect", "--json"]).arg(model("fp32")));
    let m: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(m["quantization"]["kind"], "none");
    assert!(m["initializers"]["float32"]["bytes"].as_u64().is_some_and(|b| b > 18_000_000), "{}", m["initializers"]);

    let text = stdout(&run(camclassd().arg("inspect").arg(model("int8"))));
    for want in [
        "IR version    7",
        "input  float32  [batch, 3, 224, 224]",
        "QuantizeLinear",
        "camclassd.labels = tench … (1000 lines)",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}

#[test]
fn edge_case_models_are_described() {
    let json = |name: &str| -> serde_json::Value {
        let out = run(camclassd().args(["inspect", "--json"]).arg(generated(name)));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("json")
    };
    let q = json("qoperator.onnx");
    assert_eq!(q["quantization"]["kind"], "qoperator");
    assert_eq!(q["quantization"]["granularity"], "per_channel");
    assert_eq!(q["quantization"]["weight_type"], "int8");
    assert_eq!(q["quantization"]["activation_type"], "uint8");
    let h = json("fp16.onnx");
    assert_eq!(h["inputs"][0]["element_type"], "float16");
    assert_eq!(h["initializers"]["float16"]["bytes"], 30);
    let d = json("dynamic_dims.onnx");
    assert_eq!(d["inputs"][0]["shape"], serde_json::json!(["batch", 3, "height", "width"]));
    assert!(
        stdout(&run(camclassd().arg("inspect").arg(generated("dynamic_dims.onnx"))))
            .contains("[batch, 3, height, width]")
    );
}

#[test]
fn non_onnx_files_get_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    for (file, why) in [
        (generated("garbage.onnx"), "not an ONNX model"),
        (generated("truncated.onnx"), "not an ONNX model"),
        (generated("chelsea.jpg"), "not an ONNX model"),
        (empty, "empty"),
        (dir.path().join("missing.onnx"), "cannot read"),
    ] {
        let out = run(camclassd().arg("inspect").arg(&file));
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        assert!(stderr(&out).contains(why), "{}: {}", file.display(), stderr(&out));
    }
}
