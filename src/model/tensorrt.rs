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

/// `<base>/<model stem>-<sha256 prefix>-ort<version>[-trt<version>]/`, created and checked writable. One
/// folder per model, ONNX Runtime and TensorRT: an engine is only valid for the model and the ONNX Runtime
/// and TensorRT that built it (a new JetPack brings a new TensorRT: its engines go to a new folder instead of
/// failing to deserialise), and a stale folder can be deleted by name. `trt_version`: [`tensorrt_version`].
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
pub(crate) fn engine_cache_folder(
    base: &Path,
    model: &Path,
    sha256: &str,
    ort_version: &str,
    trt_version: Option<&str>,
) -> Result<PathBuf, String> {
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let trt = trt_version.map(|v| format!("-trt{v}")).unwrap_or_default();
    let dir = base.join(format!("{stem}-{}-ort{ort_version}{trt}", &sha256[..sha256.len().min(12)]));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // An existing folder may still be read-only (a cache made by root, read by the service user).
    let probe = dir.join(".camclassd-write-test");
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir)
}

/// The TensorRT the TensorRT provider will load (JetPack's, or the one on the library path), as
/// `major.minor.patch`: `libnvinfer`'s own `getInferLibVersion()`. `None` when no `libnvinfer` loads here
/// (the provider then fails to start, with its own reason).
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
pub(crate) fn tensorrt_version() -> Option<String> {
    // Once per process: every TensorRT session asks, and the answer cannot change.
    static VERSION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            // TensorRT 10 (JetPack 6), 8 (JetPack 5), then whatever the unversioned name is.
            ["libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"].iter().find_map(|name| tensorrt_version_in(name))
        })
        .clone()
}

/// [`tensorrt_version`] of one library name or path.
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
pub(crate) fn tensorrt_version_in(library: &str) -> Option<String> {
    // SAFETY: loading libnvinfer runs its initialisers, as the TensorRT provider's own load does a moment
    // later; `getInferLibVersion` is a plain `extern "C" int32_t getInferLibVersion()` in every TensorRT
    // release, returning a constant.
    let version = unsafe {
        let lib = libloading::Library::new(library).ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib.get(b"getInferLibVersion\0").ok()?;
        let version = get();
        // Kept loaded: the provider loads it a moment later, and unloading TensorRT's large library only to
        // map and initialise it again costs seconds on a Jetson's storage.
        std::mem::forget(lib);
        version
    };
    decode_tensorrt_version(version)
}

/// TensorRT's version number: `major * 1000 + minor * 100 + patch` up to TensorRT 8, `major * 10000 + minor *
/// 100 + patch` from 10 on.
#[cfg_attr(not(feature = "tensorrt"), allow(dead_code))]
fn decode_tensorrt_version(v: i32) -> Option<String> {
    let (major, minor, patch) = match v {
        ..=0 => return None,
        10_000.. => (v / 10_000, v / 100 % 100, v % 100),
        _ => (v / 1000, v / 100 % 10, v % 100),
    };
    Some(format!("{major}.{minor}.{patch}"))
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
        let dir =
            engine_cache_folder(base.path(), Path::new("models/my model.onnx"), "0123456789abcdef", "1.32.0", None)
                .expect("created");
        assert_eq!(dir, base.path().join("my_model-0123456789ab-ort1.32.0"));
        assert!(dir.is_dir());
        // Another TensorRT (a JetPack upgrade): another folder.
        let trt = engine_cache_folder(base.path(), Path::new("m.onnx"), "00", "1.18.0", Some("8.5.2")).expect("made");
        assert_eq!(trt, base.path().join("m-00-ort1.18.0-trt8.5.2"));
        // A file where the folder should be: a reason, not a panic.
        let blocked = base.path().join("file");
        std::fs::write(&blocked, b"").expect("write");
        assert!(engine_cache_folder(&blocked, Path::new("m.onnx"), "00", "1", None).is_err());
    }

    #[test]
    fn tensorrt_versions_decode_in_both_numberings() {
        assert_eq!(decode_tensorrt_version(8502).as_deref(), Some("8.5.2")); // JetPack 5.1
        assert_eq!(decode_tensorrt_version(8602).as_deref(), Some("8.6.2")); // JetPack 6.0
        assert_eq!(decode_tensorrt_version(100_300).as_deref(), Some("10.3.0")); // JetPack 6.1/6.2
        assert_eq!(decode_tensorrt_version(0), None);
        assert_eq!(tensorrt_version_in("/nonexistent/libnvinfer.so.10"), None);
    }

    /// A stand-in libnvinfer (built here with the C compiler; TensorRT itself cannot be had on this machine)
    /// answering `getInferLibVersion` as TensorRT 10.3 does.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_tensorrt_version_is_read_from_libnvinfer_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("nvinfer.c");
        std::fs::write(&source, "int getInferLibVersion(void) { return 100300; }\n").expect("source");
        let lib = dir.path().join("libnvinfer.so.10");
        let built = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&source).status();
        assert!(built.is_ok_and(|s| s.success()), "cc (scripts/setup installs gcc)");
        assert_eq!(tensorrt_version_in(&lib.display().to_string()).as_deref(), Some("10.3.0"));
    }
}
