//! Configuration: one TOML file, parsed and validated in one place.
//!
//! Unknown keys are rejected, values are checked, and every problem is reported as
//! `file:line:column: key: message`, all at once, so a user fixes the file in one pass.
//! Relative paths in the file are taken from the working directory, as on the command line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::check::OnCheckFailure;
use crate::model::options::{CudaOptions, ModelOptions, Optimization, Provider, TensorRtOptions};
use crate::model::spec::Overrides;

/// Where the daemon reads its configuration when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/camclassd/camclassd.toml";

/// The configuration format version this build reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub onnxruntime: OnnxRuntimeConfig,
    pub model: ModelConfig,
    /// Required by `camclassd run`; the tools ignore it.
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub queue: QueueConfig,
    /// Home Assistant MQTT discovery; on when the section is present.
    pub homeassistant: Option<HomeAssistantConfig>,
    #[serde(default)]
    pub health: HealthConfig,
}

/// `[queue]`: the on-disk queue every event passes through until the broker acknowledges it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Default: `$STATE_DIRECTORY/queue.redb` under systemd, else `/var/lib/camclassd/queue.redb`.
    #[serde(default = "default_queue_path")]
    pub path: PathBuf,
    /// The oldest events are dropped (and counted) beyond this many …
    #[serde(default = "default_queue_events")]
    pub max_events: u64,
    /// … or beyond this many MiB of events.
    #[serde(default = "default_queue_mb")]
    pub max_mb: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { path: default_queue_path(), max_events: default_queue_events(), max_mb: default_queue_mb() }
    }
}

fn default_queue_path() -> PathBuf {
    let dir = std::env::var_os("STATE_DIRECTORY")
        .and_then(|d| std::env::split_paths(&d).next())
        .unwrap_or_else(|| PathBuf::from("/var/lib/camclassd"));
    dir.join("queue.redb")
}
const fn default_queue_events() -> u64 {
    100_000
}
const fn default_queue_mb() -> u64 {
    64
}

/// `[homeassistant]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between retained `<prefix>/<node>/health` messages.
    #[serde(default = "default_health_interval")]
    pub interval: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval: default_health_interval() }
    }
}

const fn default_health_interval() -> f64 {
    60.0
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) that sign the broker's certificate; default: the system's bundle.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM), for brokers that require one; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

fn default_ca_file() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    /// Default: 1883, or 8883 with `[mqtt.tls]`.
    pub port: Option<u16>,
    /// Default: `camclassd-<node_id>`.
    pub client_id: Option<String>,
    /// This device's name in topics; default: the hostname.
    pub node_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (first line), kept out of the config.
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Seconds.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Longest wait between reconnection attempts, seconds (the wait doubles from 1 s, with jitter).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: f64,
    /// Listen on `<prefix>/<node>/command` for `reload` and `snapshot`.
    #[serde(default)]
    pub commands: bool,
    pub tls: Option<TlsConfig>,
}

impl MqttConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }
}

const fn default_reconnect_max() -> f64 {
    30.0
}
fn default_prefix() -> String {
    "camclassd".into()
}
const fn default_keepalive() -> u64 {
    30
}
const fn default_qos() -> u8 {
    1
}

/// When a camera publishes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// Every classified frame.
    EveryFrame,
    /// When the top-1 class changes and holds for `debounce` frames, plus a heartbeat every `interval`.
    #[default]
    OnChange,
}

/// Pixel format asked of a V4L2 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    Mjpeg,
    Yuyv,
}

/// `[[cameras]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub name: String,
    /// A V4L2 device (`/dev/video0`, or its index `"0"`), an image file, a folder of images, or a glob.
    pub source: String,
    /// Frames per second to classify; frames beyond it are skipped before decoding.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Replay sources: start again after the last image (`false`: play once).
    #[serde(default = "default_true", rename = "loop")]
    pub looping: bool,
    /// V4L2: `[width, height]` to ask for; default: the camera's choice.
    #[serde(default, deserialize_with = "crate::model::spec::exact_array")]
    pub resolution: Option<[u32; 2]>,
    /// V4L2: `"mjpeg"` or `"yuyv"`; default: whichever the camera offers.
    pub format: Option<CameraFormat>,
    #[serde(default)]
    pub publish: PublishMode,
    /// `on_change`: frames a new top-1 must hold before it is published.
    #[serde(default = "default_debounce")]
    pub debounce: u32,
    /// `on_change`: heartbeat period in seconds (0: none).
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Below this, the top-1 counts as "nothing"; default: `[model] min_score`.
    pub min_score: Option<f32>,
}

const fn default_fps() -> f64 {
    5.0
}
const fn default_true() -> bool {
    true
}
const fn default_debounce() -> u32 {
    3
}
const fn default_interval() -> f64 {
    60.0
}

/// `[onnxruntime]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Path of `libonnxruntime.so`; when unset, the standard search applies (see `model::runtime`).
    pub library: Option<PathBuf>,
}

/// `[model]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    /// A labels file (one per line) replacing the model's own labels.
    pub labels: Option<PathBuf>,
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<Provider>,
    /// Intra-op threads; 0 = all cores.
    #[serde(default)]
    pub threads: usize,
    /// Inference sessions (each with its own decode thread) that share the cameras.
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default)]
    pub optimization: Optimization,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default)]
    pub min_score: f32,
    #[serde(default)]
    pub preprocess: Overrides,
    /// `[model.tensorrt]`
    #[serde(default)]
    pub tensorrt: TensorRtOptions,
    /// `[model.cuda]`
    #[serde(default)]
    pub cuda: CudaOptions,
    /// What to do when the model fails its own check (`camclassd verify`) on this CPU.
    #[serde(default)]
    pub on_check_failure: OnCheckFailure,
    /// The model to use instead with `on_check_failure = "fallback"` (the FP32 model).
    pub fallback: Option<PathBuf>,
    /// The output holding the class scores, for a model with several; default: the first.
    pub output_name: Option<String>,
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}
const fn default_top_k() -> usize {
    5
}
const fn default_workers() -> usize {
    1
}

impl ModelConfig {
    /// The options [`crate::model::Model::load`] takes.
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            providers: self.execution_providers.clone(),
            threads: (self.threads > 0).then_some(self.threads),
            optimization: self.optimization,
            overrides: self.preprocess.clone(),
            labels: self.labels.clone(),
            tensorrt: self.tensorrt.clone(),
            cuda: self.cuda.clone(),
            output_name: self.output_name.clone(),
            ..ModelOptions::default()
        }
    }
}

/// The most intra-op threads accepted: 4 per core. More only thrashes, and a typo must not spawn thousands.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line and column; `None` when the problem has no place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `model.preprocess.mean` or `cameras[1].fps`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let name = path.display();
    problems
        .iter()
        .map(|p| {
            let key = if p.key.is_empty() { String::new() } else { format!("{}: ", p.key) };
            match p.position {
                Some((line, col)) => format!("{name}:{line}:{col}: {key}{}", p.message),
                None => format!("{name}: {key}{}", p.message),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text).map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
    }

    /// Reads a config for `camclassd run`: as [`Config::load`], and `[mqtt]` and a camera are required.
    pub fn load_for_daemon(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let invalid = |problems| ConfigError::Invalid { path: path.to_path_buf(), problems };
        let config = Config::parse(&text).map_err(invalid)?;
        let mut problems = Vec::new();
        if config.mqtt.is_none() {
            problems.push(Problem {
                position: None,
                key: "mqtt".into(),
                message: "missing [mqtt] section (host, port, …)".into(),
            });
        }
        if config.cameras.is_empty() {
            problems.push(Problem {
                position: None,
                key: "cameras".into(),
                message: "no [[cameras]] configured".into(),
            });
        }
        if problems.is_empty() { Ok(config) } else { Err(invalid(problems)) }
    }

    /// Things that work but should be fixed: a secret readable by every user of the machine.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let secrets = self.mqtt.iter().flat_map(|m| {
            [
                ("mqtt.password_file", m.password_file.as_ref()),
                ("mqtt.tls.key_file", m.tls.as_ref().and_then(|t| t.key_file.as_ref())),
            ]
        });
        for (key, path) in secrets {
            if let Some(path) = path
                && let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o004 != 0
            {
                out.push(format!(
                    "{key}: {} is readable by every user (mode {:o}); run: chmod o-rwx {}",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                ));
            }
        }
        if self.mqtt.as_ref().is_some_and(|m| m.qos == 0) {
            out.push("mqtt.qos = 0: events leave the queue when written to the socket, unacknowledged; an outage can lose the last ones (use 1)".into());
        }
        if self.mqtt.as_ref().is_some_and(|m| m.password.is_some()) {
            out.push("mqtt.password: the password is in the config file; password_file keeps it out".into());
        }
        out
    }

    /// This node's name in topics: `[mqtt] node_id`, else the hostname.
    pub fn node_id(&self) -> String {
        self.mqtt
            .as_ref()
            .and_then(|m| m.node_id.clone())
            .unwrap_or_else(|| sanitize_topic_level(&gethostname::gethostname().to_string_lossy()))
    }

    /// Parses and validates config text; on failure, every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let de = toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(text, String::new(), &e)])?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            vec![toml_problem(text, key, e.inner())]
        })?;
        let problems = config.validate(text);
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }

    fn validate(&self, text: &str) -> Vec<Problem> {
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
        if self.model.workers == 0 || self.model.workers > 16 {
            problem("model.workers", format!("must be between 1 and 16, got {}", self.model.workers));
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
        if let Some(why) = crate::publish::queue::foreign(&self.queue.path).filter(|_| !self.queue.path.is_dir()) {
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
        if !(self.health.interval.is_finite() && (0.1..=86_400.0).contains(&self.health.interval)) {
            problem("health.interval", format!("expected seconds from 0.1 to 86400, got {}", self.health.interval));
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
            if cam.source.trim().is_empty() {
                problem(&key("source"), "must name a device, an image file, a folder or a glob".into());
            } else if let Some(why) = replay_source_problem(&cam.source) {
                problem(&key("source"), why);
            }
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
        problems
    }
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
pub use crate::model::spec::{MAX_INPUT_SIDE, MAX_RESIZE, input_size_too_large};

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
    let crate::capture::SourceKind::Replay(s) = crate::capture::SourceKind::parse(source) else { return None };
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
fn sanitize_topic_level(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned.is_empty() { "camclassd".into() } else { cleaned }
}

fn toml_problem(text: &str, key: String, e: &toml::de::Error) -> Problem {
    let mut message = e.message().trim().to_string();
    let mut key = key;
    // The parser says "duplicate key" without naming it: the key is the text its span covers.
    if message == "duplicate key" && key.is_empty() {
        if let Some(name) = e.span().and_then(|s| text.get(s)).map(str::trim).filter(|n| !n.is_empty()) {
            let line_start = e.span().map_or(0, |s| text[..s.start].rfind('\n').map_or(0, |i| i + 1));
            let header = text[line_start..].trim_start().starts_with('[');
            key = name.trim_matches(['[', ']']).trim().to_string();
            let table = text[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .map(|l| l.trim_matches(['[', ']']).trim().to_string());
            let name = key.clone();
            if let Some(table) = table.filter(|_| !header) {
                key = format!("{table}.{key}");
            }
            message = if header {
                format!("duplicate table [{key}]: each table may appear once; merge the two")
            } else {
                format!("duplicate key {name:?}: each key may appear once in a table; remove one")
            };
        }
    }
    Problem { position: e.span().map(|s| line_col(text, s.start)), key, message }
}

/// 1-based (line, column) of a dotted key (`mqtt.tls.ca_file`, `cameras[1].name`) in config text, for
/// problems found after validation (loading the model, reading the TLS files).
pub fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    locate(doc.get_ref(), key).map(|span| line_col(text, span.start))
}

/// 1-based (line, column) of a byte offset; the column counts characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds the span of a dotted key path (`a.b[2].c`) in the parsed document.
fn locate(root: &toml::de::DeTable<'_>, path: &str) -> Option<Range<usize>> {
    use toml::de::DeValue;
    let mut table = root;
    let mut span = None;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*seg, None),
        };
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        span = Some(key.span());
        let mut value = value;
        if let Some(idx) = index {
            let DeValue::Array(items) = value.get_ref() else { return span };
            value = items.get(idx)?;
            span = Some(value.span());
        }
        if i + 1 < segments.len() {
            let DeValue::Table(t) = value.get_ref() else { return span };
            table = t;
        }
    }
    span
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((l, c)) = self.position {
            write!(f, "{l}:{c}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text).expect_err("invalid").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn lists_longer_than_expected_are_refused_not_cut() {
        for (section, key, value, want) in [
            ("[model.preprocess]", "mean", "[1.0, 2.0, 3.0, 4.0]", "model.preprocess.mean: expected 3 values, got 4"),
            (
                "[model.preprocess]",
                "input_size",
                "[224, 224, 3]",
                "model.preprocess.input_size: expected 2 values, got 3",
            ),
            ("[model.preprocess]", "std", "[1.0]", "model.preprocess.std: expected 3 values, got 1"),
            (
                "[[cameras]]\nname = \"c\"\nsource = \"0\"",
                "resolution",
                "[640, 480, 3]",
                "cameras[0].resolution: expected 2 values, got 3",
            ),
        ] {
            let text = format!("version = 1\n[model]\npath = \"Cargo.toml\"\n{section}\n{key} = {value}\n");
            let got = problems(&text);
            assert!(got.iter().any(|p| p.contains(want)), "{key}: {got:?}");
        }
    }

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let c = Config::parse("version = 1\n[model]\npath = \"Cargo.toml\"\n").expect("valid");
        assert_eq!(c.model.execution_providers, vec![Provider::Cpu]);
        assert_eq!(c.model.top_k, 5);
        assert_eq!(c.model.optimization, Optimization::All);
        assert!(c.onnxruntime.library.is_none());
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\ntop_k = \"five\"\n",
                "4:9: model.top_k: invalid type: string \"five\", expected usize",
            ),
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\ncolour = 3\n",
                "4:1: model.colour: unknown field `colour`, expected one of `path`",
            ),
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"cpu\", \"gpu\"]\n",
                "4:31: model.execution_providers[1]: unknown variant `gpu`",
            ),
            ("version = 1\n[model\n", "2:7: "),
        ];
        for (text, expected) in cases {
            let got = problems(text);
            assert!(got[0].starts_with(expected), "{text:?}\n got: {got:?}\nwant: {expected}");
        }
    }

    #[test]
    fn validation_collects_every_problem() {
        let text = "version = 2\n[model]\npath = \"no/such.onnx\"\ntop_k = 0\nmin_score = 1.5\n[model.preprocess]\nstd = [1.0, 0.0, 1.0]\n";
        let got = problems(text);
        assert_eq!(
            got,
            vec![
                "1:1: version: unsupported config version 2; this camclassd reads version 1",
                "3:1: model.path: model file no/such.onnx not found",
                "4:1: model.top_k: must be at least 1",
                "5:1: model.min_score: must be between 0 and 1, got 1.5",
                "7:1: model.preprocess.std: every value must be positive, got [1.0, 0.0, 1.0]",
            ]
        );
    }

    #[test]
    fn camera_values_out_of_range_are_refused() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\n[[cameras]]\nname = \"a b\"\nsource = \"0\"\nfps = 1e-30\ninterval = 1e20\ndebounce = 0\n";
        let got = problems(text);
        assert_eq!(
            got,
            vec![
                "5:1: cameras[0].name: \"a b\" must be letters, digits, '-' or '_' (it is a topic level)",
                "7:1: cameras[0].fps: expected a number from 0.01 to 120, got 0.000000000000000000000000000001",
                "9:1: cameras[0].debounce: must be at least 1 frame",
                "8:1: cameras[0].interval: expected seconds up to a week (0 for no heartbeat), got 100000000000000000000",
            ]
        );
    }

    #[test]
    fn gpu_sections_default_to_jetson_friendly_settings() {
        let c = Config::parse("version = 1\n[model]\npath = \"Cargo.toml\"\n").expect("valid");
        let (trt, cuda) = (&c.model.tensorrt, &c.model.cuda);
        assert!(trt.fp16 && trt.engine_cache && trt.timing_cache);
        assert_eq!((trt.int8, trt.engine_cache_dir.as_ref(), trt.max_workspace_mb), (None, None, 1024));
        assert_eq!((trt.device_id, trt.min_subgraph_size, trt.dla_core), (0, 1, None));
        assert_eq!(cuda.conv_algo_search, crate::model::options::ConvAlgoSearch::Heuristic);
        assert_eq!(cuda.arena_extend_strategy, crate::model::options::ArenaExtendStrategy::SameAsRequested);
        assert_eq!((cuda.device_id, cuda.memory_limit_mb), (0, 0));
    }

    #[test]
    fn gpu_sections_parse_and_reach_the_model_options() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\n\
                    [model.tensorrt]\nfp16 = false\nint8 = true\nengine_cache_dir = \"/tmp/trt\"\ntiming_cache = false\n\
                    max_workspace_mb = 256\nmin_subgraph_size = 3\ndla_core = 1\ndevice_id = 1\nengine_cache = true\n\
                    [model.cuda]\ndevice_id = 1\nconv_algo_search = \"exhaustive\"\narena_extend_strategy = \"next_power_of_two\"\n\
                    memory_limit_mb = 2048\n";
        let c = Config::parse(text).expect("valid");
        let o = c.model.model_options();
        assert_eq!(o.providers, vec![Provider::Tensorrt, Provider::Cuda, Provider::Cpu]);
        assert!(!o.tensorrt.fp16 && !o.tensorrt.timing_cache && o.tensorrt.engine_cache);
        assert_eq!(o.tensorrt.int8, Some(true));
        assert_eq!(o.tensorrt.engine_cache_dir.as_deref(), Some(Path::new("/tmp/trt")));
        assert_eq!((o.tensorrt.max_workspace_mb, o.tensorrt.min_subgraph_size, o.tensorrt.dla_core), (256, 3, Some(1)));
        assert_eq!((o.tensorrt.device_id, o.cuda.device_id, o.cuda.memory_limit_mb), (1, 1, 2048));
        assert_eq!(o.cuda.conv_algo_search, crate::model::options::ConvAlgoSearch::Exhaustive);
        assert_eq!(o.cuda.arena_extend_strategy, crate::model::options::ArenaExtendStrategy::NextPowerOfTwo);
        assert!(o.record_placement);
    }

    #[test]
    fn gpu_key_errors_name_line_column_and_key() {
        let head = "version = 1\n[model]\npath = \"Cargo.toml\"\n";
        let cases: &[(&str, &str)] = &[
            ("[model.tensorrt]\nfp61 = true\n", "5:1: model.tensorrt.fp61: unknown field `fp61`, expected one of"),
            (
                "[model.tensorrt]\nfp16 = \"yes\"\n",
                "5:8: model.tensorrt.fp16: invalid type: string \"yes\", expected a boolean",
            ),
            ("[model.tensorrt]\nmax_workspace_mb = -1\n", "5:20: model.tensorrt.max_workspace_mb: invalid value"),
            (
                "[model.cuda]\nconv_algo_search = \"fast\"\n",
                "5:20: model.cuda.conv_algo_search: unknown variant `fast`",
            ),
        ];
        for (tail, expected) in cases {
            let got = problems(&format!("{head}{tail}"));
            assert!(got[0].starts_with(expected), "{tail:?}\n got: {got:?}\nwant: {expected}");
        }
    }

    #[test]
    fn gpu_values_out_of_range_are_all_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("write");
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.tensorrt]\ndevice_id = 99\nmax_workspace_mb = 4294967296\n\
             min_subgraph_size = 0\ndla_core = 2\nengine_cache_dir = {:?}\n[model.cuda]\nmemory_limit_mb = 9999999999\n",
            file.display().to_string()
        );
        let got = problems(&text);
        let keys: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap_or_default()).collect();
        assert_eq!(keys, ["5:1", "6:1", "7:1", "8:1", "9:1", "11:1"], "{got:#?}");
        assert!(got[0].contains("model.tensorrt.device_id: must be a GPU ordinal from 0 to 63, got 99"), "{got:#?}");
        assert!(got[1].contains("model.tensorrt.max_workspace_mb: 4294967296 MiB is more than 1 TiB"), "{got:#?}");
        assert!(got[2].contains("model.tensorrt.min_subgraph_size: must be at least 1"), "{got:#?}");
        assert!(got[3].contains("model.tensorrt.dla_core: Jetson boards have DLA cores 0 and 1, got 2"), "{got:#?}");
        assert!(
            got[4].contains("model.tensorrt.engine_cache_dir:") && got[4].contains("is not a directory"),
            "{got:#?}"
        );
        assert!(got[5].contains("model.cuda.memory_limit_mb: 9999999999 MiB"), "{got:#?}");

        let two_gpus = "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"tensorrt\", \"cuda\"]\n\
                        [model.tensorrt]\ndevice_id = 1\n[model.cuda]\ndevice_id = 0\n";
        assert_eq!(
            problems(two_gpus),
            [
                "8:1: model.cuda.device_id: 0 differs from model.tensorrt.device_id 1; with both providers they share one GPU"
            ]
        );
        // Different ordinals are fine when only one of the two providers is used.
        assert!(Config::parse(&two_gpus.replace("\"tensorrt\", ", "")).is_ok());

        let dla_fp32 = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.tensorrt]\nfp16 = false\ndla_core = 0\n";
        assert_eq!(
            problems(dla_fp32),
            ["6:1: model.tensorrt.dla_core: the DLA runs FP16 or INT8 only: set fp16 = true or int8 = true"]
        );
    }

    #[test]
    fn names_and_ids_longer_than_a_topic_can_hold_are_refused() {
        let long = "a".repeat(100_000);
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nnode_id = \"{n}\"\nclient_id = \"{n}\"\n\
             topic_prefix = \"{n}\"\n[homeassistant]\ndiscovery_prefix = \"{n}\"\n[[cameras]]\nname = \"{n}\"\nsource = \"0\"\n",
            n = long
        );
        let got = problems(&text);
        for want in [
            "6:1: mqtt.node_id: is 100000 bytes long; at most 128 bytes",
            "7:1: mqtt.client_id: must be 1 to 256 bytes, got 100000",
            "8:1: mqtt.topic_prefix: is 100000 bytes long; at most 256 bytes",
            "10:1: homeassistant.discovery_prefix: is 100000 bytes long; at most 256 bytes",
            "12:1: cameras[0].name: is 100000 bytes long; at most 128 bytes",
        ] {
            assert!(got.iter().any(|p| p.starts_with(want)), "{want}\n{got:#?}");
        }
        // Nothing quotes the 100 000 characters back.
        assert!(got.iter().all(|p| p.len() < 300), "{got:#?}");
        // At the limits, every topic camclassd builds fits MQTT's 65 535 bytes with room to spare.
        let longest = MAX_TOPIC_PREFIX + "/binary_sensor/".len() + MAX_TOPIC_LEVEL + 1 + MAX_TOPIC_LEVEL + 64;
        assert!(longest < 65_535);
        let ok = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nnode_id = \"{}\"\nclient_id = \"{}\"\n",
            "n".repeat(MAX_TOPIC_LEVEL),
            "c".repeat(MAX_CLIENT_ID)
        );
        assert!(Config::parse(&ok).is_ok());
    }

    #[test]
    fn a_host_with_a_port_or_a_scheme_is_refused_with_advice() {
        let host = |h: &str| {
            let text = format!("version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = {h:?}\n");
            Config::parse(&text).err().map(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        };
        let err = host("127.0.0.1:1883").expect("refused");
        assert!(err.starts_with("5:1: mqtt.host:") && err.contains("host = \"127.0.0.1\" and port = 1883"), "{err}");
        let err = host("mqtt://broker.lan:1883").expect("refused");
        assert!(err.contains("has a scheme") && err.contains("host = \"broker.lan\""), "{err}");
        let err = host("mqtts://broker.lan").expect("refused");
        assert!(err.contains("[mqtt.tls]"), "{err}");
        assert!(host("broker lan").is_some());
        for fine in ["127.0.0.1", "broker.lan", "::1", "fe80::1", "localhost"] {
            assert_eq!(host(fine), None, "{fine}");
        }
    }

    #[test]
    fn an_input_size_beyond_4096_is_refused() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.preprocess]\ninput_size = [20000, 20000]\nresize = 20000\n";
        let got = problems(text);
        assert!(
            got[0].starts_with("5:1: model.preprocess.input_size: 20000x20000 is larger than 4096x4096"),
            "{got:?}"
        );
        assert!(got.iter().any(|p| p.starts_with("6:1: model.preprocess.resize: 20000 is more than 8192")), "{got:?}");
        let ok = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.preprocess]\ninput_size = [4096, 4096]\n";
        assert!(Config::parse(ok).is_ok());
    }

    #[test]
    fn secrets_and_sources_that_are_not_files_say_what_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let loop_link = dir.path().join("loop");
        std::os::unix::fs::symlink(&loop_link, &loop_link).expect("symlink");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nusername = \"u\"\npassword_file = {d:?}\n\
             [mqtt.tls]\nca_file = {d:?}\n[[cameras]]\nname = \"a\"\nsource = \"/dev/null\"\n\
             [[cameras]]\nname = \"b\"\nsource = {:?}\n[[cameras]]\nname = \"c\"\nsource = {:?}\n\
             [[cameras]]\nname = \"d\"\nsource = \"/nonexistent/later/*.jpg\"\n[[cameras]]\nname = \"e\"\nsource = \"/dev/video7\"\n",
            fifo.display().to_string(),
            loop_link.display().to_string(),
        );
        let got = problems(&text);
        let want = [
            format!("7:1: mqtt.password_file: {d} is a directory, not a file"),
            format!("9:1: mqtt.tls.ca_file: {d} is a directory, not a file"),
            "cameras[0].source: /dev/null is a device node: a camera source is".into(),
            // cameras[1], the FIFO, is fine: a live MJPEG stream.
            format!("cameras[2].source: {} is a symbolic link loop", loop_link.display()),
        ];
        for w in &want {
            assert!(got.iter().any(|p| p.contains(w.as_str())), "{w}\n{got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn a_duplicate_key_or_table_is_named() {
        let got = problems("version = 1\n[model]\npath = \"Cargo.toml\"\npath = \"x\"\n");
        assert_eq!(got, ["4:1: model.path: duplicate key \"path\": each key may appear once in a table; remove one"]);
        let got = problems("version = 1\n[model]\npath = \"Cargo.toml\"\n[model]\ntop_k = 1\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("duplicate table [model]"), "{got:?}");
    }

    #[test]
    fn keys_are_located_after_validation() {
        let text = "version = 1\n[model]\npath = \"m.onnx\"\n[mqtt]\nhost = \"h\"\n[mqtt.tls]\nca_file = \"x\"\n";
        assert_eq!(key_position(text, "model.path"), Some((3, 1)));
        assert_eq!(key_position(text, "mqtt.tls.ca_file"), Some((7, 1)));
        assert_eq!(key_position(text, "mqtt.password_file"), None);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
