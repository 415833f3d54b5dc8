//! TensorRT's side of a session: where its engines are cached (one folder per model and runtime, under
//! systemd's `CacheDirectory=` by default) and whether a model is explicitly quantized (QDQ), which decides
//! its INT8 setting.

use std::path::{Path, PathBuf};

/// The engine cache folder when `engine_cache_dir` is not set: systemd's `CacheDirectory=` (`$CACHE_DIRECTORY`,
/// `/var/cache/camclassd` with the shipped unit), else the user's cache (`$XDG_CACHE_HOME`, `~/.cache`), else
/// `/var/cache/camclassd`; then `tensorrt/` under it.
pub fn default_engine_cache_dir() -> PathBuf {
    crate::config::model::cache_base().join("tensorrt")
}

/// `<base>/<model stem>-<sha256 prefix>-ort<version>/`, created and checked writable. One folder per model
/// and runtime: engines are only valid for the model and the ONNX Runtime/TensorRT that built them, and a
/// stale folder can be deleted by name.
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
pub(crate) fn engine_cache_folder(
    base: &Path,
    model: &Path,
    sha256: &str,
    ort_version: &str,
) -> Result<PathBuf, String> {
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let dir = base.join(format!("{stem}-{}-ort{ort_version}", &sha256[..sha256.len().min(12)]));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // An existing folder may still be read-only (a cache made by root, read by the service user).
    let probe = dir.join(".camclassd-write-test");
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir)
}

/// Just the op types of the main graph, so that decoding skips the weights.
#[derive(Clone, PartialEq, prost::Message)]
struct OpsOnlyModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<OpsOnlyGraph>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OpsOnlyGraph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<OpsOnlyNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OpsOnlyNode {
    #[prost(string, tag = "4")]
    op_type: String,
}

/// Whether the model is explicitly quantized (QDQ): TensorRT then needs INT8 enabled to honour the Q/DQ nodes.
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
pub(crate) fn has_qdq_nodes(bytes: &[u8]) -> bool {
    use prost::Message;
    OpsOnlyModel::decode(bytes)
        .ok()
        .and_then(|m| m.graph)
        .is_some_and(|g| g.node.iter().any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdq_models_are_recognised_without_decoding_the_weights() {
        use prost::Message;
        let model = |ops: &[&str]| {
            OpsOnlyModel {
                graph: Some(OpsOnlyGraph {
                    node: ops.iter().map(|o| OpsOnlyNode { op_type: (*o).to_string() }).collect(),
                }),
            }
            .encode_to_vec()
        };
        assert!(has_qdq_nodes(&model(&["QuantizeLinear", "DequantizeLinear", "Conv"])));
        assert!(!has_qdq_nodes(&model(&["Conv", "Relu"])));
        assert!(!has_qdq_nodes(b"not a model"));
    }

    #[test]
    fn the_engine_cache_folder_is_per_model_and_runtime() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = engine_cache_folder(base.path(), Path::new("models/my model.onnx"), "0123456789abcdef", "1.32.0")
            .expect("created");
        assert_eq!(dir, base.path().join("my_model-0123456789ab-ort1.32.0"));
        assert!(dir.is_dir());
        // A file where the folder should be: a reason, not a panic.
        let blocked = base.path().join("file");
        std::fs::write(&blocked, b"").expect("write");
        assert!(engine_cache_folder(&blocked, Path::new("m.onnx"), "00", "1").is_err());
    }
}
