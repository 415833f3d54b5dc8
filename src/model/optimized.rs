//! The CPU session's optimised-model cache: ONNX Runtime's graph optimisation (fusions, the NCHWc layout,
//! the QDQ folding of an INT8 model) is most of a session's load time, and its result depends only on the
//! model, the runtime, the optimisation level and the CPU's instruction sets. The first load saves the
//! optimised graph in ORT format; later loads open that file with optimisation off.
//!
//! The file's name carries everything its content depends on, so a stale file is never used: another model
//! or ONNX Runtime version, or another CPU (the NCHWc block size and the kernels ORT picks follow the ISA —
//! ORT warns that such a model "should only be used in the same environment"), gets a file of its own. The
//! CPU is identified by the features the program itself detects (CPUID on x86-64, HWCAP on aarch64), not by
//! `/proc/cpuinfo`, which under qemu-user describes the host rather than the emulated CPU.
//!
//! GPU sessions are not cached here (TensorRT has its engine cache; ONNX Runtime documents offline
//! optimisation as CPU-only beyond the basic level), nor models with external data.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Optimization;

/// The cache folder when `optimized_cache_dir` is not set: `onnxruntime/` under systemd's `CacheDirectory=`,
/// the user's cache or `/var/cache/camclassd` (the same base as TensorRT's engines).
pub fn default_cache_dir() -> PathBuf {
    crate::config::model::default_optimized_cache_dir()
}

/// The instruction sets that change which kernels and layouts ONNX Runtime picks, as detected at run time.
pub fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { out.push($f); } )* };
        }
        probe!(
            "sse4.1",
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { out.push($f); } )* };
        }
        probe!("asimd", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2");
    }
    out
}

/// A short, stable name for this CPU class: the architecture and a hash of [`cpu_features`].
pub fn cpu_key() -> String {
    let features = cpu_features().join(",");
    let digest = Sha256::digest(format!("{}:{features}", std::env::consts::ARCH).as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::env::consts::ARCH)
}

fn level_name(o: Optimization) -> &'static str {
    match o {
        Optimization::Disable => "o0",
        Optimization::Basic => "o1",
        Optimization::Extended => "o2",
        Optimization::All => "o3",
    }
}

/// `<dir>/<model stem>-<sha256 prefix>-ort<version>-<cpu key>-<level>.ort`.
pub fn cache_file(dir: &Path, model: &Path, sha256: &str, ort_version: &str, level: Optimization) -> PathBuf {
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    dir.join(format!(
        "{stem}-{}-ort{ort_version}-{}-{}.ort",
        &sha256[..sha256.len().min(12)],
        cpu_key(),
        level_name(level)
    ))
}

/// Creates `dir` and checks that this process can write in it (a folder made by root and read by the service
/// user is not).
pub fn writable_folder(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".camclassd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where a new cache file is written before it is renamed into place, so that a reader (another process
/// starting at the same time) never sees half a file.
pub fn temporary_name(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    file.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_changes_with_everything_the_optimised_graph_depends_on() {
        let dir = Path::new("/c");
        let a = cache_file(dir, Path::new("m/my model.onnx"), "0123456789abcdef", "1.32.0", Optimization::All);
        let name = a.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(name.starts_with("my_model-0123456789ab-ort1.32.0-"), "{name}");
        assert!(name.ends_with("-o3.ort"), "{name}");
        assert!(name.contains(&cpu_key()), "{name}");
        for other in [
            cache_file(dir, Path::new("m/my model.onnx"), "ffff456789abcdef", "1.32.0", Optimization::All),
            cache_file(dir, Path::new("m/my model.onnx"), "0123456789abcdef", "1.31.0", Optimization::All),
            cache_file(dir, Path::new("m/my model.onnx"), "0123456789abcdef", "1.32.0", Optimization::Extended),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn the_cpu_key_names_the_architecture_and_is_stable() {
        assert!(cpu_key().starts_with(std::env::consts::ARCH));
        assert_eq!(cpu_key(), cpu_key());
        #[cfg(target_arch = "x86_64")]
        assert!(cpu_features().contains(&"sse4.1") || !std::arch::is_x86_feature_detected!("sse4.1"));
    }

    #[test]
    fn an_unwritable_folder_is_a_reason_not_a_panic() {
        let base = tempfile::tempdir().expect("tempdir");
        let blocked = base.path().join("file");
        std::fs::write(&blocked, b"").expect("write");
        assert!(writable_folder(&blocked.join("sub")).is_err());
        assert!(writable_folder(&base.path().join("a/b")).is_ok());
        assert_eq!(
            temporary_name(Path::new("/c/x.ort"))
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.starts_with("x.ort.tmp-")),
            Some(true)
        );
    }
}
