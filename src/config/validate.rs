//! Validation of a parsed config: every value checked, every problem collected with its key, so a user fixes
//! the file in one pass.

use std::path::Path;

use super::BINARY_SENSOR_DEVICE_CLASSES;
use super::model::OnCheckFailure;
use super::spans::{line_col, locate};
use super::{Config, ModelConfig, Problem, VERSION, max_threads};
use crate::config::model::Provider;

impl Config {
    pub(super) fn validate(&self, text: &str) -> Vec<Problem> {
        let doc = toml::de::DeTable::parse(text).ok();
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            let position = doc.as_ref().and_then(|d| locate(d.get_ref(), key)).map(|span| line_col(text, span.start));
            problems.push(Problem { position, key: key.to_string(), message });
        };
        if self.version != VERSION {
            problem(
                "version",
                format!("unsupported config version {}; this camclassd reads version {VERSION}", self.version),
            );
        }
        match (&self.model.fallback, self.model.on_check_failure) {
            (None, OnCheckFailure::Fallback) => problem(
                "model.on_check_failure",
                "\"fallback\" needs [model] fallback = the model to use instead (the FP32 model)".into(),
            ),
            (Some(f), _) if !f.is_file() => problem("model.fallback", format!("model file {} not found", f.display())),
            (Some(_), OnCheckFailure::Fail | OnCheckFailure::Warn) => problem(
                "model.fallback",
                "is only used with on_check_failure = \"fallback\"; set that or remove this key".into(),
            ),
            _ => {}
        }
        if self.model.path.is_dir() {
            problem("model.path", format!("{} is a directory, not a model file", self.model.path.display()));
        } else if !self.model.path.is_file() {
            problem("model.path", format!("model file {} not found", self.model.path.display()));
        }
        if self.model.threads > max_threads() {
            problem(
                "model.threads",
                format!("{} is more than {} (4 per core); 0 means all cores", self.model.threads, max_threads()),
            );
        }
        if let Some(labels) = self.model.labels.as_ref().filter(|p| !p.is_file()) {
            problem("model.labels", format!("labels file {} not found", labels.display()));
        }
        if let Some(lib) = self.onnxruntime.library.as_ref().filter(|p| !p.is_file()) {
            problem("onnxruntime.library", format!("{} not found", lib.display()));
        }
        if self.model.execution_providers.is_empty() {
            problem("model.execution_providers", "must name at least one provider (e.g. [\"cpu\"])".into());
        }
        if self.model.workers > 16 {
            problem("model.workers", format!("must be between 0 (automatic) and 16, got {}", self.model.workers));
        }
        if !(1..=MAX_BATCH).contains(&self.model.max_batch) {
            problem("model.max_batch", format!("must be between 1 and {MAX_BATCH}, got {}", self.model.max_batch));
        }
        if self.model.max_batch_delay_ms > 1000 {
            problem(
                "model.max_batch_delay_ms",
                format!(
                    "must be at most 1000 (a frame waits this long for a batch), got {}",
                    self.model.max_batch_delay_ms
                ),
            );
        }
        if let Some(m) = &self.mqtt {
            if let Some(why) = host_problem(&m.host) {
                problem("mqtt.host", why);
            }
            if let Some(id) = &m.client_id {
                if id.is_empty() || id.len() > MAX_CLIENT_ID {
                    problem(
                        "mqtt.client_id",
                        format!(
                            "must be 1 to {MAX_CLIENT_ID} bytes, got {} (brokers guarantee 23; most take more)",
                            id.len()
                        ),
                    );
                }
            }
            if m.port == Some(0) {
                problem("mqtt.port", "must be between 1 and 65535".into());
            }
            if m.qos > 2 {
                problem("mqtt.qos", format!("must be 0, 1 or 2, got {}", m.qos));
            }
            if m.keepalive < 5 || m.keepalive > 3600 {
                problem("mqtt.keepalive", format!("must be between 5 and 3600 seconds, got {}", m.keepalive));
            }
            if m.password.is_some() && m.password_file.is_some() {
                problem("mqtt.password_file", "set either password or password_file, not both".into());
            }
            if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
                problem("mqtt.username", "a password needs a username".into());
            }
            if let Some(why) = m.password_file.as_deref().and_then(not_a_file) {
                problem("mqtt.password_file", why);
            }
            if m.topic_prefix.len() > MAX_TOPIC_PREFIX {
                problem("mqtt.topic_prefix", too_long(m.topic_prefix.len(), MAX_TOPIC_PREFIX));
            } else if !is_topic_level(&m.topic_prefix.replace('/', "_")) {
                problem(
                    "mqtt.topic_prefix",
                    format!("{:?} must not be empty or contain +, # or spaces", m.topic_prefix),
                );
            }
            if let Some(node) = &m.node_id {
                if node.len() > MAX_TOPIC_LEVEL {
                    problem("mqtt.node_id", too_long(node.len(), MAX_TOPIC_LEVEL));
                } else if !is_topic_level(node) {
                    problem("mqtt.node_id", format!("{node:?} must be letters, digits, '-' or '_'"));
                }
            }
            if !(m.reconnect_max.is_finite() && (1.0..=3600.0).contains(&m.reconnect_max)) {
                problem("mqtt.reconnect_max", format!("expected seconds from 1 to 3600, got {}", m.reconnect_max));
            }
            if let Some(tls) = &m.tls {
                if let Some(why) = not_a_file(&tls.ca_file) {
                    problem("mqtt.tls.ca_file", why);
                }
                match (&tls.cert_file, &tls.key_file) {
                    (Some(_), None) => problem("mqtt.tls.key_file", "cert_file needs key_file".into()),
                    (None, Some(_)) => problem("mqtt.tls.cert_file", "key_file needs cert_file".into()),
                    _ => {}
                }
                for (key, f) in [("mqtt.tls.cert_file", &tls.cert_file), ("mqtt.tls.key_file", &tls.key_file)] {
                    if let Some(why) = f.as_deref().and_then(not_a_file) {
                        problem(key, why);
                    }
                }
            }
        }
        if let Some(why) = super::files::foreign(&self.queue.path).filter(|_| !self.queue.path.is_dir()) {
            problem("queue.path", format!("{} {why}; point it at a new file", self.queue.path.display()));
        }
        if self.queue.path.as_os_str().is_empty() || self.queue.path.is_dir() {
            problem(
                "queue.path",
                format!("{:?} must be a file path (e.g. /var/lib/camclassd/queue.redb)", self.queue.path),
            );
        }
        if self.queue.max_events == 0 {
            problem("queue.max_events", "must be at least 1".into());
        }
        if !(1..=1_048_576).contains(&self.queue.max_mb) {
            problem("queue.max_mb", format!("expected 1 to 1048576 MiB, got {}", self.queue.max_mb));
        }
        if let Some(ha) = &self.homeassistant {
            let p = &ha.discovery_prefix;
            if p.len() > MAX_TOPIC_PREFIX {
                problem("homeassistant.discovery_prefix", too_long(p.len(), MAX_TOPIC_PREFIX));
            } else if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains(['+', '#', ' ']) {
                problem("homeassistant.discovery_prefix", format!("{p:?} must be a topic without wildcards"));
            }
        }
        if let Some(http) = &self.http {
            match http.listen.parse::<std::net::SocketAddr>() {
                Err(_) => problem(
                    "http.listen",
                    format!("{:?} is not address:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")", http.listen),
                ),
                Ok(addr) if !addr.ip().is_loopback() && http.token_file.is_none() => problem(
                    "http.listen",
                    format!(
                        "{addr} is reachable from other machines: set http.token_file (a file holding the bearer \
                         token every request must carry), or listen on 127.0.0.1"
                    ),
                ),
                Ok(_) => {}
            }
            if let Some(why) = http.token_file.as_deref().and_then(not_a_file) {
                problem("http.token_file", why);
            }
            match (&http.cert_file, &http.key_file) {
                // Located at the key that is there.
                (Some(_), None) => problem("http.cert_file", "needs key_file (the certificate's private key)".into()),
                (None, Some(_)) => problem("http.key_file", "needs cert_file (the certificate chain)".into()),
                _ => {}
            }
            for (key, f) in [("http.cert_file", &http.cert_file), ("http.key_file", &http.key_file)] {
                if let Some(why) = f.as_deref().and_then(not_a_file) {
                    problem(key, why);
                }
            }
            if !(1..=256).contains(&http.max_body_mb) {
                problem("http.max_body_mb", format!("expected 1 to 256 MiB, got {}", http.max_body_mb));
            }
            if !(1..=16).contains(&http.classify_workers) {
                problem("http.classify_workers", format!("must be between 1 and 16, got {}", http.classify_workers));
            }
            if http.classify_queue > 1024 {
                problem("http.classify_queue", format!("must be at most 1024, got {}", http.classify_queue));
            }
            if !(1..=300).contains(&http.header_timeout_s) {
                problem("http.header_timeout_s", format!("expected 1 to 300 s, got {}", http.header_timeout_s));
            }
            if !(1..=http.header_timeout_s.max(1)).contains(&http.idle_timeout_s) {
                // hyper's header deadline also runs while a kept-alive connection waits: it would cut a longer wait.
                problem(
                    "http.idle_timeout_s",
                    format!(
                        "expected 1 s to header_timeout_s ({} s), got {}",
                        http.header_timeout_s, http.idle_timeout_s
                    ),
                );
            }
            if !(1..=3600).contains(&http.body_timeout_s) {
                problem("http.body_timeout_s", format!("expected 1 to 3600 s, got {}", http.body_timeout_s));
            }
            if !(1..=65_536).contains(&http.max_connections) {
                problem("http.max_connections", format!("expected 1 to 65536, got {}", http.max_connections));
            }
            if let Some(url) = &http.url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problem("http.url", format!("{url:?} must start with http:// or https://"));
            }
        }
        if !(self.health.interval.is_finite() && (0.1..=86_400.0).contains(&self.health.interval)) {
            problem("health.interval", format!("expected seconds from 0.1 to 86400, got {}", self.health.interval));
        }
        let mut model_names = vec![super::DEFAULT_MODEL];
        for (i, m) in self.models.iter().enumerate() {
            let key = |field: &str| format!("models[{i}].{field}");
            if !is_topic_level(&m.name) || m.name.len() > MAX_TOPIC_LEVEL {
                problem(&key("name"), format!("{:?} must be letters, digits, '-' or '_'", m.name));
            } else if model_names.contains(&m.name.as_str()) {
                let why = if m.name == super::DEFAULT_MODEL { " ([model] is the model named \"default\")" } else { "" };
                problem(&key("name"), format!("duplicate model name {:?}{why}", m.name));
            } else {
                model_names.push(&m.name);
            }
            match (&m.path, &m.teach) {
                (Some(_), Some(_)) => problem(
                    &key("path"),
                    "a taught model (teach = [...]) lives in [teach] dir: remove path (or teach)".into(),
                ),
                (None, None) => problem(
                    &format!("models[{i}]"),
                    "no path: name the model file (path = ...), or its classes (teach = [\"closed\", \"open\"]) \
                     for a model taught on this board"
                        .into(),
                ),
                (Some(path), None) if path.is_dir() => {
                    problem(&key("path"), format!("{} is a directory, not a model file", path.display()))
                }
                (Some(path), None) if !path.is_file() => {
                    problem(&key("path"), format!("model file {} not found", path.display()))
                }
                _ => {}
            }
            if let Some(classes) = &m.teach {
                if let Some(e) = taught_classes_problem(classes) {
                    problem(&key("teach"), e);
                }
            } else if m.base.is_some() {
                problem(&key("base"), "only a taught model (teach = [...]) has a base".into());
            }
            if let Some(base) = m.base.as_ref().filter(|p| !p.is_file()) {
                problem(&key("base"), format!("base model {} not found", base.display()));
            }
            if let Some(labels) = m.labels.as_ref().filter(|p| !p.is_file()) {
                problem(&key("labels"), format!("labels file {} not found", labels.display()));
            }
            if m.threads.is_some_and(|t| t > max_threads()) {
                problem(&key("threads"), format!("more than {} (4 per core); 0 means all cores", max_threads()));
            }
            if m.execution_providers.as_ref().is_some_and(Vec::is_empty) {
                problem(&key("execution_providers"), "must name at least one provider (e.g. [\"cpu\"])".into());
            }
        }
        let t = &self.teach;
        if !(10..=100_000).contains(&t.max_samples) {
            problem("teach.max_samples", format!("expected 10 to 100000, got {}", t.max_samples));
        }
        if !(1..=1_000_000).contains(&t.max_mb) {
            problem("teach.max_mb", format!("expected 1 to 1000000 MiB, got {}", t.max_mb));
        }
        if !(t.sample_every.is_finite() && (0.1..=86_400.0).contains(&t.sample_every)) {
            problem("teach.sample_every", format!("expected seconds from 0.1 to 86400, got {}", t.sample_every));
        }
        if !(t.diversity.is_finite() && (0.0..=1.0).contains(&t.diversity)) {
            problem("teach.diversity", format!("expected a fraction from 0 to 1, got {}", t.diversity));
        }
        if t.train_threads > max_threads() {
            problem("teach.train_threads", format!("more than {} (4 per core); 0 means all cores", max_threads()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let key = |field: &str| format!("cameras[{i}].{field}");
            if cam.name.len() > MAX_TOPIC_LEVEL {
                problem(&key("name"), too_long(cam.name.len(), MAX_TOPIC_LEVEL));
            } else if !is_topic_level(&cam.name) {
                problem(
                    &key("name"),
                    format!("{:?} must be letters, digits, '-' or '_' (it is a topic level)", cam.name),
                );
            } else if !seen.insert(cam.name.as_str()) {
                problem(&key("name"), format!("duplicate camera name {:?}", cam.name));
            }
            if !(cam.fps.is_finite() && (0.01..=120.0).contains(&cam.fps)) {
                problem(&key("fps"), format!("expected a number from 0.01 to 120, got {}", cam.fps));
            }
            match (&cam.pipeline, cam.source.trim().is_empty()) {
                (Some(_), false) => problem(&key("pipeline"), "set either source or pipeline, not both".into()),
                (None, true) => problem(
                    &key("source"),
                    "must name a device, an image file, a folder, a glob, a video file or an rtsp:// or http:// URL (or set pipeline)".into(),
                ),
                _ => {}
            }
            // A mistyped URL (`rtsp:/admin:pw@cam`) would be taken for a file name and echoed, password and
            // all, in "does not exist" lines: refused here, in words that never quote its user info.
            if let Some(why) = super::url::url_problem(&cam.source).filter(|_| cam.pipeline.is_none()) {
                problem(&key("source"), why);
            } else if let Some(why) = replay_source_problem(&cam.source) {
                problem(&key("source"), why);
            }
            validate_stream(cam, &key, &mut problem);
            if cam.debounce == 0 {
                problem(&key("debounce"), "must be at least 1 frame".into());
            }
            if !(cam.interval.is_finite() && (0.0..=604_800.0).contains(&cam.interval)) {
                problem(
                    &key("interval"),
                    format!("expected seconds up to a week (0 for no heartbeat), got {}", cam.interval),
                );
            }
            if cam.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
                problem(&key("min_score"), "must be between 0 and 1".into());
            }
            if cam.resolution.is_some_and(|[w, h]| w == 0 || h == 0) {
                problem(&key("resolution"), "must be [width, height], both positive".into());
            }
            validate_regions(i, cam, &model_names, &mut problem);
        }
        if self.model.output_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
            problem("model.output_name", "must name one of the model's outputs (camclassd inspect lists them)".into());
        }
        if self.model.top_k == 0 {
            problem("model.top_k", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.model.min_score) {
            problem("model.min_score", format!("must be between 0 and 1, got {}", self.model.min_score));
        }
        let pre = &self.model.preprocess;
        if let Some(std) = pre.std.filter(|s| s.iter().any(|v| !v.is_finite() || *v <= 0.0)) {
            problem("model.preprocess.std", format!("every value must be positive, got {std:?}"));
        }
        if let Some(mean) = pre.mean.filter(|m| m.iter().any(|v| !v.is_finite())) {
            problem("model.preprocess.mean", format!("every value must be a finite number, got {mean:?}"));
        }
        if let (Some(resize), Some([h, w])) = (pre.resize, pre.input_size)
            && resize < h.max(w)
        {
            problem("model.preprocess.resize", format!("{resize} is smaller than the input size {h}x{w}"));
        }
        if pre.input_size.is_some_and(|[h, w]| h == 0 || w == 0) {
            problem("model.preprocess.input_size", "must be [height, width], both positive".into());
        } else if let Some([h, w]) = pre.input_size.filter(|&[h, w]| h.max(w) > MAX_INPUT_SIDE) {
            problem("model.preprocess.input_size", input_size_too_large(h, w));
        }
        if let Some(resize) = pre.resize.filter(|&r| r > MAX_RESIZE) {
            problem(
                "model.preprocess.resize",
                format!("{resize} is more than {MAX_RESIZE}; it is the shorter side before the centre crop"),
            );
        }
        validate_gpu(&self.model, &mut problem);
        validate_optimized_cache(&self.model, &mut problem);
        problems
    }
}

/// `[model] optimized_cache_dir`: a folder, if it exists.
fn validate_optimized_cache(model: &ModelConfig, problem: &mut impl FnMut(&str, String)) {
    if let Some(dir) = &model.optimized_cache_dir {
        if dir.as_os_str().is_empty() {
            problem(
                "model.optimized_cache_dir",
                "must not be empty (set optimized_cache = false to turn the cache off)".into(),
            );
        } else if dir.exists() && !dir.is_dir() {
            problem("model.optimized_cache_dir", format!("{} exists and is not a directory", dir.display()));
        }
    }
}

/// The most regions one camera may have.
pub const MAX_REGIONS: usize = 32;
/// The largest `[model] max_batch`: beyond it a batch only adds latency.
pub const MAX_BATCH: usize = 32;

/// `[[cameras.regions]]` of camera `i`: names, models, crops and the policy's values. Crops against the
/// frame size and thresholds against the model's classes are checked when those are known.
fn validate_regions(i: usize, cam: &super::CameraConfig, model_names: &[&str], problem: &mut impl FnMut(&str, String)) {
    if cam.regions.len() > MAX_REGIONS {
        problem(&format!("cameras[{i}].regions"), format!("at most {MAX_REGIONS} regions per camera"));
    }
    if cam.snapshot && !cam.regions.is_empty() {
        problem(
            &format!("cameras[{i}].snapshot"),
            "a camera with regions takes snapshots per region: set snapshot on its [[cameras.regions]]".into(),
        );
    }
    if !(16..=4096).contains(&cam.snapshot_size) {
        problem(
            &format!("cameras[{i}].snapshot_size"),
            format!("expected 16 to 4096 pixels, got {}", cam.snapshot_size),
        );
    }
    let mut names = std::collections::HashSet::new();
    for (j, r) in cam.regions.iter().enumerate() {
        let key = |field: &str| format!("cameras[{i}].regions[{j}].{field}");
        if r.name.len() > MAX_TOPIC_LEVEL || !is_topic_level(&r.name) {
            problem(&key("name"), format!("{:?} must be letters, digits, '-' or '_' (it is a topic level)", r.name));
        } else if matches!(r.name.as_str(), "event" | "state" | "snapshot") {
            problem(&key("name"), format!("{:?} is a topic of the camera itself; choose another name", r.name));
        } else if !names.insert(r.name.as_str()) {
            problem(&key("name"), format!("duplicate region name {:?} in camera {:?}", r.name, cam.name));
        }
        if !model_names.contains(&r.model.as_str()) {
            problem(
                &key("model"),
                format!(
                    "unknown model {:?}; the models are {} ([model] is \"default\")",
                    r.model,
                    model_names.join(", ")
                ),
            );
        }
        if let Some(crop) = r.crop {
            if let Some(why) = crop_problem(crop) {
                problem(&key("crop"), why);
            }
        }
        if r.debounce == Some(0) {
            problem(&key("debounce"), "must be at least 1 frame".into());
        }
        if r.interval.is_some_and(|s| !(s.is_finite() && (0.0..=604_800.0).contains(&s))) {
            problem(&key("interval"), "expected seconds up to a week (0 for no heartbeat)".into());
        }
        if r.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            problem(&key("min_score"), "must be between 0 and 1".into());
        }
        for (class, t) in &r.thresholds {
            if !(0.0..=1.0).contains(t) {
                problem(&format!("{}.{class}", key("thresholds")), format!("must be between 0 and 1, got {t}"));
            }
        }
        if r.classes.as_ref().is_some_and(Vec::is_empty) {
            problem(&key("classes"), "must name at least one class (remove the key to report every class)".into());
        }
        if !(r.classify_every.is_finite() && (0.0..=86_400.0).contains(&r.classify_every)) {
            problem(&key("classify_every"), format!("expected seconds from 0 to 86400, got {}", r.classify_every));
        }
        if r.motion_threshold.is_some_and(|t| !(t.is_finite() && (0.0..=1.0).contains(&t))) {
            problem(&key("motion_threshold"), "expected a fraction from 0 to 1 (0.02: 2 % of full scale)".into());
        }
        if !(r.max_skip.is_finite() && (0.0..=86_400.0).contains(&r.max_skip)) {
            problem(&key("max_skip"), format!("expected seconds from 0 to 86400, got {}", r.max_skip));
        }
        if !(16..=4096).contains(&r.snapshot_size) {
            problem(&key("snapshot_size"), format!("expected 16 to 4096 pixels, got {}", r.snapshot_size));
        }
        if r.device_class.is_some() && r.on_class.is_none() {
            problem(&key("device_class"), "needs on_class (the class that turns the binary_sensor on)".into());
        }
        if let Some(class) = r.device_class.as_deref().filter(|c| !BINARY_SENSOR_DEVICE_CLASSES.contains(c)) {
            problem(
                &key("device_class"),
                format!(
                    "{class:?} is not a Home Assistant binary_sensor device class (one of {})",
                    BINARY_SENSOR_DEVICE_CLASSES.join(", ")
                ),
            );
        }
    }
}

/// A camera's GStreamer keys: a source this build can play, a scheme GStreamer is asked for, a pipeline that
/// ends where camclassd takes the frames, and ranges that catch typos.
fn validate_stream(
    cam: &crate::config::CameraConfig,
    key: &dyn Fn(&str) -> String,
    problem: &mut impl FnMut(&str, String),
) {
    use super::SourceKind;
    let kind = SourceKind::of(cam);
    let field = if cam.pipeline.is_some() { "pipeline" } else { "source" };
    if kind.is_gstreamer() && !cfg!(feature = "gstreamer") {
        problem(
            &key(field),
            "needs GStreamer, and this camclassd was built without it (cargo feature gstreamer): only V4L2 devices and image files"
                .into(),
        );
    }
    if let SourceKind::Url(url) = &kind {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "rtsp" | "rtsps" | "rtspt" | "http" | "https") {
            // Quoted only when it is a scheme (RFC 3986: a letter, then letters, digits, + - .): anything
            // before `://` may hold a password (`admin:pw@cam/x?next=http://…`).
            let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            let what = if is_scheme { format!("{scheme}://") } else { "this source".to_string() };
            problem(&key("source"), format!("{what} is not a camera URL: use rtsp:// or http(s)://"));
        }
    }
    if let Some(p) = &cam.pipeline
        && !(p.contains("appsink") && p.contains("name=camclassd"))
    {
        problem(
            &key("pipeline"),
            "must end in `appsink name=camclassd` (e.g. `… ! videoconvert ! appsink name=camclassd`)".into(),
        );
    }
    if let Some(pw) = &cam.password_file {
        if !matches!(kind, SourceKind::Url(_)) {
            problem(&key("password_file"), "is for rtsp:// and http:// sources (the user name goes in the URL)".into());
        } else if let Some(why) = not_a_file(pw) {
            problem(&key("password_file"), why);
        }
    }
    if cam.latency_ms > 10_000 {
        problem(&key("latency_ms"), format!("expected milliseconds up to 10000, got {}", cam.latency_ms));
    }
    if !(cam.stall_timeout.is_finite() && (1.0..=3600.0).contains(&cam.stall_timeout)) {
        problem(&key("stall_timeout"), format!("expected seconds from 1 to 3600, got {}", cam.stall_timeout));
    }
    if cam.decode_size.is_some_and(|[w, h]| w == 0 || h == 0 || w > 8192 || h > 8192) {
        problem(&key("decode_size"), "must be [width, height], each from 1 to 8192".into());
    }
    let d = &cam.decoder;
    if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        problem(
            &key("decoder"),
            format!("{d:?}: expected \"auto\", \"software\" or a GStreamer element name (gst-inspect-1.0 lists them)"),
        );
    }
}

/// Why a region's `[x, y, w, h]` can never fit a frame: negative, empty, or fractions beyond the frame.
pub fn crop_problem(crop: [f64; 4]) -> Option<String> {
    let [x, y, w, h] = crop;
    if crop.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Some(format!("{crop:?}: expected [x, y, width, height], none negative"));
    }
    if w == 0.0 || h == 0.0 {
        return Some(format!("{crop:?}: width and height must be positive"));
    }
    if crop.iter().all(|v| *v <= 1.0) {
        if x + w > 1.0 + 1e-9 || y + h > 1.0 + 1e-9 {
            return Some(format!("{crop:?}: as fractions of the frame, x + width and y + height must be at most 1"));
        }
    } else if crop.iter().any(|v| v.fract() != 0.0) {
        return Some(format!(
            "{crop:?}: pixels are whole numbers (fractions of the frame need all four values at most 1)"
        ));
    }
    None
}

/// `[model.tensorrt]` and `[model.cuda]`: ranges that catch typos (a workspace in bytes, not MiB).
fn validate_gpu(model: &ModelConfig, problem: &mut impl FnMut(&str, String)) {
    // Ordinals beyond this are typos: no board or server has that many GPUs.
    const MAX_DEVICE: u32 = 63;
    let (trt, cuda) = (&model.tensorrt, &model.cuda);
    if trt.device_id > MAX_DEVICE {
        problem(
            "model.tensorrt.device_id",
            format!("must be a GPU ordinal from 0 to {MAX_DEVICE}, got {}", trt.device_id),
        );
    }
    if cuda.device_id > MAX_DEVICE {
        problem(
            "model.cuda.device_id",
            format!("must be a GPU ordinal from 0 to {MAX_DEVICE}, got {}", cuda.device_id),
        );
    } else if trt.device_id != cuda.device_id
        && [Provider::Tensorrt, Provider::Cuda].iter().all(|p| model.execution_providers.contains(p))
    {
        // CUDA runs the nodes TensorRT leaves, in the same session: both must be on one GPU.
        problem(
            "model.cuda.device_id",
            format!(
                "{} differs from model.tensorrt.device_id {}; with both providers they share one GPU",
                cuda.device_id, trt.device_id
            ),
        );
    }
    if trt.max_workspace_mb > 1 << 20 {
        problem(
            "model.tensorrt.max_workspace_mb",
            format!("{} MiB is more than 1 TiB; the value is in MiB (0 lets TensorRT choose)", trt.max_workspace_mb),
        );
    }
    if trt.min_subgraph_size == 0 {
        problem("model.tensorrt.min_subgraph_size", "must be at least 1 node".into());
    }
    if trt.dla_core.is_some_and(|c| c > 1) {
        problem(
            "model.tensorrt.dla_core",
            format!("Jetson boards have DLA cores 0 and 1, got {}", trt.dla_core.unwrap_or_default()),
        );
    }
    if trt.dla_core.is_some() && !trt.fp16 && trt.int8 != Some(true) {
        problem("model.tensorrt.dla_core", "the DLA runs FP16 or INT8 only: set fp16 = true or int8 = true".into());
    }
    if let Some(dir) = &trt.engine_cache_dir {
        if dir.as_os_str().is_empty() {
            problem(
                "model.tensorrt.engine_cache_dir",
                "must not be empty (set engine_cache = false to turn the cache off)".into(),
            );
        } else if dir.exists() && !dir.is_dir() {
            problem("model.tensorrt.engine_cache_dir", format!("{} exists and is not a directory", dir.display()));
        }
    }
    if cuda.memory_limit_mb > 1 << 20 {
        problem(
            "model.cuda.memory_limit_mb",
            format!("{} MiB is more than 1 TiB; the value is in MiB (0 for no cap)", cuda.memory_limit_mb),
        );
    }
}

/// The longest `[mqtt] node_id` and camera `name`, in bytes. With the prefixes below, the longest topic
/// camclassd builds (`<discovery_prefix>/binary_sensor/<node>/<camera>_<entity>/config`) stays far under
/// MQTT's limit of 65 535 bytes, and names stay readable in Home Assistant.
pub const MAX_TOPIC_LEVEL: usize = 128;
/// The longest `[mqtt] topic_prefix` and `[homeassistant] discovery_prefix`, in bytes.
pub const MAX_TOPIC_PREFIX: usize = 256;
/// The longest `[mqtt] client_id`, in bytes. MQTT 3.1.1 only guarantees 23; mosquitto, EMQX and HiveMQ take
/// this and more.
pub const MAX_CLIENT_ID: usize = 256;
pub use super::model::{MAX_INPUT_SIDE, MAX_RESIZE, input_size_too_large};

fn too_long(len: usize, max: usize) -> String {
    format!("is {len} bytes long; at most {max} bytes (it is part of every MQTT topic camclassd publishes)")
}

/// Why an MQTT `host` is not a host name or address: a scheme or a port in it, spaces, slashes.
fn host_problem(host: &str) -> Option<String> {
    let h = host.trim();
    if h.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some((scheme, rest)) = h.split_once("://") {
        let rest = rest.trim_end_matches('/');
        let tls =
            if matches!(scheme, "mqtts" | "ssl" | "tls" | "wss") { "; for TLS add a [mqtt.tls] section" } else { "" };
        return Some(format!(
            "{host:?} has a scheme: give the host name or address alone (host = {:?}), the port in port{tls}",
            rest.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(rest, |(h, _)| h)
        ));
    }
    if h.parse::<std::net::Ipv6Addr>().is_ok() {
        return None;
    }
    if let Some((name, port)) = h.rsplit_once(':') {
        return Some(if port.parse::<u16>().is_ok() {
            format!("{host:?} has a port in it: set host = {name:?} and port = {port}")
        } else {
            format!("{host:?} is not a host name or address (a ':' belongs only in an IPv6 address, without brackets)")
        });
    }
    if h.len() > 253 || h.contains(|c: char| c.is_whitespace() || c == '/' || c == '@' || c == '[' || c == ']') {
        return Some(format!("{host:?} is not a host name or address"));
    }
    None
}

/// Why a file named in the config cannot be read as one (missing, a directory, a device); `None` when fine.
fn not_a_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some(format!("{} is a directory, not a file", path.display())),
        Ok(_) => Some(format!("{} is not a regular file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("{} not found", path.display())),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

/// Why a replay source (not a V4L2 device, not a glob) can never give a picture: a device node, a socket, or
/// a symbolic link loop. A FIFO is a live MJPEG stream (capture/replay.rs); a missing source is fine here:
/// the camera is retried until it appears.
fn replay_source_problem(source: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let crate::config::SourceKind::Replay(s) = crate::config::SourceKind::parse(source) else { return None };
    if s.is_empty() {
        return None;
    }
    if s.contains(['*', '?', '[']) {
        return None;
    }
    let what = match std::fs::metadata(&s) {
        Ok(m) if m.is_file() || m.is_dir() || m.file_type().is_fifo() => return None,
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => "a device node",
        Ok(m) if m.file_type().is_socket() => "a socket",
        Ok(_) => "not a regular file",
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => "a symbolic link loop",
        Err(_) => return None,
    };
    Some(format!(
        "{s} is {what}: a camera source is a V4L2 device (/dev/videoN or N), an image file, a folder of images, a glob or a named pipe carrying MJPEG"
    ))
}

/// One MQTT topic level: non-empty, no wildcards, separators or spaces.
fn is_topic_level(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Makes a hostname usable as a topic level.
pub(super) fn sanitize_topic_level(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned.is_empty() { "camclassd".into() } else { cleaned }
}

/// The most classes a taught model may have (the page assigns the first 9 with the keys 1 to 9).
pub const MAX_TAUGHT_CLASSES: usize = 16;

/// Why a taught model's classes cannot be used (they name its label folders and its MQTT states), if so.
pub fn taught_classes_problem(classes: &[String]) -> Option<String> {
    if !(2..=MAX_TAUGHT_CLASSES).contains(&classes.len()) {
        return Some(format!("expected 2 to {MAX_TAUGHT_CLASSES} classes, got {}", classes.len()));
    }
    for (i, c) in classes.iter().enumerate() {
        if !is_topic_level(c) || c.len() > 64 {
            return Some(format!("class {c:?} must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if classes[..i].contains(c) {
            return Some(format!("class {c:?} is named twice"));
        }
    }
    None
}
