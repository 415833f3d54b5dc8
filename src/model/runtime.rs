//! Finding and loading the ONNX Runtime shared library.
//!
//! camclassd links ONNX Runtime at run time (`ort`'s `load-dynamic`), so the same binary runs with a CPU
//! build on a Raspberry Pi and a CUDA/TensorRT build on a Jetson. The library is looked for in a fixed
//! order, and when nothing loads the error lists every place that was tried and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime version this build is tested with (the one pin, in `ONNXRUNTIME_VERSION`).
pub const PINNED_VERSION: &str = include_str!("../../ONNXRUNTIME_VERSION").trim_ascii();

/// Environment variable honoured after an explicit path (the variable `ort` itself knows).
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// Where the library was looked for, and what happened there.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub origin: &'static str,
    pub path: PathBuf,
    pub outcome: String,
}

/// No candidate loaded.
#[derive(Debug, thiserror::Error)]
pub struct RuntimeError {
    pub attempts: Vec<Attempt>,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "could not load the ONNX Runtime library (version {PINNED_VERSION} expected). Looked in:")?;
        for a in &self.attempts {
            writeln!(f, "  - {} ({}): {}", a.path.display(), a.origin, a.outcome)?;
        }
        write!(
            f,
            "fix: run scripts/setup (it installs ONNX Runtime {PINNED_VERSION} into .cache/onnxruntime/), or pass \
             --ort-lib /path/to/libonnxruntime.so.{PINNED_VERSION}, set [onnxruntime] library in the config, \
             or set {ENV_VAR}"
        )
    }
}

/// The loaded runtime: the library's path and version, and the process-wide ONNX Runtime environment.
#[derive(Debug)]
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    pub(crate) environment: ort::environment::Environment,
}

impl Runtime {
    /// The ONNX Runtime environment, for callers that open sessions of their own (benchmarks, tools).
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Loads ONNX Runtime once per process. `explicit` (from `--ort-lib` or the config) is tried first and,
/// when given, is the only candidate: a user who names a library must get that library or an error.
pub fn load(explicit: Option<&Path>) -> Result<&'static Runtime, RuntimeError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    // One loader at a time: two threads initialising ONNX Runtime's library and environment at once crash
    // it (seen as a SIGSEGV when two tests of one binary loaded it together). The second waits and takes the
    // first one's runtime.
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOADING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let mut attempts = Vec::new();
    for (origin, path) in candidates(explicit) {
        match try_load(&path) {
            Ok(runtime) => {
                tracing::info!(library = %runtime.library.display(), version = %runtime.version, "loaded ONNX Runtime ({origin})");
                if let Some(what) = off_the_pin(&runtime.version) {
                    tracing::warn!("{what}");
                }
                return Ok(RUNTIME.get_or_init(|| runtime));
            }
            Err(outcome) => {
                if origin == "$ORT_DYLIB_PATH" {
                    // The user pointed at this library; falling back silently would hide the mistake.
                    tracing::warn!("ignoring {ENV_VAR}={}: {outcome}", path.display());
                }
                attempts.push(Attempt { origin, path, outcome })
            }
        }
    }
    Err(RuntimeError { attempts })
}

fn try_load(path: &Path) -> Result<Runtime, String> {
    // A bare file name is resolved by the dynamic loader (LD_LIBRARY_PATH, ld.so.cache); anything with a
    // directory must exist, so that the error says "not found" rather than a dlopen message.
    if path.components().count() > 1 && !path.exists() {
        return Err("not found".into());
    }
    // A library older than the C API `ort` asks for is refused with its version, before `ort` meets it.
    let version = library_version(path);
    if let Some(why) = version.as_deref().and_then(too_old) {
        return Err(why);
    }
    let builder = ort::init_from(path).map_err(|e| e.to_string())?;
    let environment =
        builder.with_name("camclassd").with_logger(std::sync::Arc::new(ort_log)).build().map_err(|e| e.to_string())?;
    let library = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let version = version.unwrap_or_else(|| "unknown".into());
    Ok(Runtime { library, version, environment })
}

/// ONNX Runtime's log lines, as `tracing` events under the `ort::logging` target (as `ort` itself routes them),
/// less one: a session profiled for the node placement that fails to load logs "Could not write a profile
/// because no model was loaded" when it is dropped, after the load's own error, which camclassd reports.
fn ort_log(level: ort::logging::LogLevel, _category: &str, id: &str, location: &str, message: &str) {
    use ort::logging::LogLevel;
    if is_noise(message) {
        return;
    }
    let span = tracing::span!(target: "ort::logging", tracing::Level::TRACE, "ort", id = id, location = location);
    match level {
        LogLevel::Verbose => tracing::event!(target: "ort::logging", parent: &span, tracing::Level::TRACE, "{message}"),
        LogLevel::Info => tracing::event!(target: "ort::logging", parent: &span, tracing::Level::INFO, "{message}"),
        LogLevel::Warning => tracing::event!(target: "ort::logging", parent: &span, tracing::Level::WARN, "{message}"),
        LogLevel::Error => tracing::event!(target: "ort::logging", parent: &span, tracing::Level::ERROR, "{message}"),
        LogLevel::Fatal => {
            tracing::event!(target: "ort::logging", parent: &span, tracing::Level::ERROR, "(FATAL): {message}")
        }
    }
}

fn is_noise(message: &str) -> bool {
    message.starts_with("Could not write a profile because no model was loaded")
}

/// The oldest ONNX Runtime minor version (1.x) this build can use: `ort` asks for this C API version, which
/// ONNX Runtime 1.x first offers.
pub const OLDEST_MINOR: u32 = ort::sys::ORT_API_VERSION;

/// Why a library reporting `version` cannot be used (older than 1.[`OLDEST_MINOR`]), if so. A version that
/// does not parse is left to the loader.
fn too_old(version: &str) -> Option<String> {
    if release(version)? >= (1, OLDEST_MINOR) {
        return None;
    }
    Some(format!(
        "ONNX Runtime {version} is older than 1.{OLDEST_MINOR}, the oldest camclassd can use (it needs C API \
         version {OLDEST_MINOR}): install 1.{OLDEST_MINOR} or newer (Microsoft's `pip install onnxruntime` \
         wheel has libonnxruntime.so in onnxruntime/capi/; on a Jetson, the JetPack build of 1.{OLDEST_MINOR} \
         or newer, see docs/gpu.md) and name it in [onnxruntime] library or --ort-lib"
    ))
}

/// What a library reporting `version` means when it is not the pinned one: an older one (a Jetson's JetPack
/// build trails the pin) works, and the line says what it lacks; `None` for the pinned version.
fn off_the_pin(version: &str) -> Option<String> {
    if version == PINNED_VERSION {
        return None;
    }
    match (release(version), release(PINNED_VERSION)) {
        (Some((1, have)), Some((1, pinned))) if have < pinned => Some(format!(
            "ONNX Runtime {version} is older than the tested {PINNED_VERSION}: camclassd runs on it (C API \
             {OLDEST_MINOR}), but it lacks {} releases of operators and kernels: a model needing a newer opset or \
             operator fails to load (the error names it), speed and INT8 results may differ (the model check \
             says whether this model is right on it), and an execution-provider option newer than it may be \
             refused",
            pinned - have
        )),
        _ => Some(format!("ONNX Runtime {version} is not the tested version {PINNED_VERSION}; results may differ")),
    }
}

/// (major, minor) of a version string such as `1.19.2`; `None` when it does not parse.
fn release(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(Some(major)), Some(Some(minor))) => Some((major, minor)),
        _ => None,
    }
}

/// The version the library reports through its API base (`OrtGetApiBase()->GetVersionString()`).
fn library_version(path: &Path) -> Option<String> {
    // SAFETY: this loads the library before `ort::init_from` does (ONNX Runtime's initialisers run once, as
    // they would there; later loads only bump its reference count), and OrtGetApiBase/GetVersionString are
    // plain C functions of every ONNX Runtime release, returning static data.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get_base();
        if base.is_null() {
            return None;
        }
        let raw = ((*base).GetVersionString)();
        if raw.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(raw).to_string_lossy().into_owned())
    }
}

/// The search order; see the module documentation.
pub fn candidates(explicit: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    if let Some(p) = explicit {
        return vec![("--ort-lib / [onnxruntime] library", p.to_path_buf())];
    }
    let versioned = format!("libonnxruntime.so.{PINNED_VERSION}");
    let names = [versioned.as_str(), "libonnxruntime.so"];
    let mut out: Vec<(&'static str, PathBuf)> = Vec::new();
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        out.push(("$ORT_DYLIB_PATH", PathBuf::from(p)));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        for name in names {
            out.push(("next to the executable", exe_dir.join(name)));
        }
        // A package installs the binary in /usr/bin and the library privately in /usr/lib/camclassd.
        for name in names {
            out.push(("package folder", exe_dir.join("../lib/camclassd").join(name)));
        }
        // A source checkout: scripts/setup puts the library in <repo>/.cache/onnxruntime/<arch>/ and the
        // binary lives in <repo>/target/[<triple>/]<profile>/.
        for dir in exe_dir.ancestors().skip(1).take(3) {
            let lib = dir.join(".cache/onnxruntime").join(std::env::consts::ARCH).join(&versioned);
            if lib.exists() {
                out.push(("project install folder", lib));
                break;
            }
        }
    }
    for dir in ["/usr/lib/camclassd", "/usr/local/lib", "/usr/lib"] {
        for name in names {
            out.push(("system path", Path::new(dir).join(name)));
        }
    }
    out.push(("dynamic loader search path", PathBuf::from("libonnxruntime.so")));
    dedup_by_path(out)
}

fn dedup_by_path(list: Vec<(&'static str, PathBuf)>) -> Vec<(&'static str, PathBuf)> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter().filter(|(_, p)| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))).collect()
}

/// Nice 10 for the calling thread (Linux threads have their own nice value, and the threads it starts
/// afterwards, ONNX Runtime's included, inherit it): when the CPU is short, the cameras' threads get about
/// ten times its share. For the HTTP classify pool, trainings and the sample store.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read and set this thread's scheduling priority.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
        if rc != 0 {
            tracing::debug!("cannot lower a thread's priority: {}", std::io::Error::last_os_error());
        }
    }
}

/// Freed memory back to the system: glibc keeps what a burst freed (HTTP bodies, pictures, a training's
/// embeddings and sessions) in its free lists; once the burst is over, the daemon's memory returns to where
/// it was.
/// For a process that runs for months: large blocks (the model file read at load, ONNX Runtime's arena
/// regions, a teach run's embeddings) always get their own mapping, returned to the system when freed,
/// instead of glibc's default, which raises its mmap threshold after the first large free (the 5.8 MB model
/// file) and from then on keeps such blocks in the heap, where they stay resident. The frame path allocates
/// nothing per frame after warm-up, so this costs no system calls per frame (measured in the README).
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator settings, under its own lock; called before the models
    // and sessions are made, so the blocks they allocate follow the settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let c = candidates(Some(Path::new("/opt/ort/libonnxruntime.so")));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, Path::new("/opt/ort/libonnxruntime.so"));
    }

    #[test]
    fn a_library_older_than_the_c_api_is_refused_by_its_version() {
        assert_eq!(OLDEST_MINOR, 17, "ort asks for C API 17: ONNX Runtime 1.17");
        let why = too_old("1.16.3").expect("too old");
        assert!(why.contains("1.16.3") && why.contains("1.17") && why.contains("pip install onnxruntime"), "{why}");
        assert!(too_old("0.9.0").is_some());
        for fine in ["1.17.0", "1.18.1", "1.32.0", "2.0.0", "unknown", ""] {
            assert!(too_old(fine).is_none(), "{fine}");
        }
    }

    #[test]
    fn an_older_library_is_told_what_it_lacks() {
        assert_eq!(off_the_pin(PINNED_VERSION), None);
        let older = off_the_pin("1.19.2").expect("older");
        assert!(older.contains("older than the tested") && older.contains("opset"), "{older}");
        let behind: u32 = PINNED_VERSION.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).expect("pin") - 19;
        assert!(older.contains(&format!("lacks {behind} releases")), "{older}");
        assert!(off_the_pin("9.99.0").expect("other").contains("not the tested version"));
        // Another major version is not "older by some releases".
        assert!(off_the_pin("0.40.0").expect("other").contains("not the tested version"));
        assert_eq!(release(" 1.19.2\n"), Some((1, 19)));
        assert_eq!(release("unknown"), None);
    }

    #[test]
    fn pinned_version_is_a_release_number() {
        assert_eq!(PINNED_VERSION.split('.').count(), 3, "{PINNED_VERSION}");
    }
}
