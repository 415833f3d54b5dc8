//! The config file's schema: every section and key, with its default (serde, unknown keys refused).

use std::path::PathBuf;

use serde::Deserialize;

use super::model::OnCheckFailure;
use crate::config::model::Overrides;
use crate::config::model::{CudaOptions, ModelOptions, Optimization, Provider, TensorRtOptions};

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
    /// `[[models]]`: more models, by name, for the cameras' regions; `[model]` is the one named `default`.
    #[serde(default)]
    pub models: Vec<NamedModelConfig>,
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
    /// The HTTP server (status page, `/metrics`, JSON API); off unless the section is present.
    pub http: Option<HttpConfig>,
    /// `[teach]`: where taught models keep their samples, labels and files, and the sample store's bounds.
    #[serde(default)]
    pub teach: TeachConfig,
}

/// `[teach]`: the models taught on this board (`[[models]]` entries with `teach = [classes]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeachConfig {
    /// Default: `$STATE_DIRECTORY/teach` under systemd, else `/var/lib/camclassd/teach`. Each taught model
    /// has a folder there: `samples/` (crops not labelled yet), `labels/<class>/` (an ImageFolder tree that
    /// `camclassd train` reads), `model.onnx` (in service), `previous.onnx` (for Roll back).
    #[serde(default = "default_teach_dir")]
    pub dir: PathBuf,
    /// Samples not labelled yet, per taught model, at most (the oldest are dropped first).
    #[serde(default = "default_teach_samples")]
    pub max_samples: usize,
    /// MiB of pictures per taught model (labelled ones included), at most: beyond it nothing new is kept.
    #[serde(default = "default_teach_mb")]
    pub max_mb: u64,
    /// A region of a taught model offers a crop to its samples at most this often (seconds).
    #[serde(default = "default_sample_every")]
    pub sample_every: f64,
    /// A crop is kept when it differs from every kept one by more than this (mean absolute difference of
    /// their 8x8 colour thumbnails, a fraction of full scale): a scene that stands still keeps one.
    #[serde(default = "default_diversity")]
    pub diversity: f64,
    /// Threads of a training (0: every core). A training runs at a low CPU priority (nice 10): the
    /// cameras keep their frames.
    #[serde(default)]
    pub train_threads: usize,
}

impl Default for TeachConfig {
    fn default() -> Self {
        TeachConfig {
            dir: default_teach_dir(),
            max_samples: default_teach_samples(),
            max_mb: default_teach_mb(),
            sample_every: default_sample_every(),
            diversity: default_diversity(),
            train_threads: 0,
        }
    }
}

fn state_directory() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|d| std::env::split_paths(&d).next())
        .unwrap_or_else(|| PathBuf::from("/var/lib/camclassd"))
}
fn default_teach_dir() -> PathBuf {
    state_directory().join("teach")
}
const fn default_teach_samples() -> usize {
    500
}
const fn default_teach_mb() -> u64 {
    200
}
const fn default_sample_every() -> f64 {
    2.0
}
const fn default_diversity() -> f64 {
    0.04
}

/// `[http]`: the status page, Prometheus metrics and the JSON API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `address:port` to listen on; a non-loopback address needs `token_file`.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// A file holding the bearer token (first line) every request must carry.
    pub token_file: Option<PathBuf>,
    /// TLS: the server's certificate chain (PEM); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Largest request body (a picture to classify), MiB; larger ones get 413.
    #[serde(default = "default_http_max_body_mb")]
    pub max_body_mb: u64,
    /// `POST /api/v1/classify` requests classified at once, each on its own one-thread ONNX Runtime session
    /// running at a lower CPU priority than the cameras.
    #[serde(default = "default_http_classify_workers")]
    pub classify_workers: usize,
    /// Classify requests that may wait for a worker; beyond them the answer is 429 with `Retry-After`.
    #[serde(default = "default_http_classify_queue")]
    pub classify_queue: usize,
    /// The page's address as others reach it (Home Assistant's `configuration_url`); default: from `listen`
    /// and the hostname.
    pub url: Option<String>,
    /// Seconds a client has to send a whole request head (and a TLS handshake), counted from the connection's
    /// opening or the end of the previous answer; then the connection is closed.
    #[serde(default = "default_http_header_timeout_s")]
    pub header_timeout_s: u64,
    /// Seconds a kept-alive connection may wait for its next request (at most `header_timeout_s`).
    #[serde(default = "default_http_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Seconds a client has to send a whole request body (a picture to classify); then 408.
    #[serde(default = "default_http_body_timeout_s")]
    pub body_timeout_s: u64,
    /// Connections open at once; more are closed as they come. Lowered at start to what the open-file limit
    /// leaves after the cameras' share (see `http::conn`).
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            token_file: None,
            cert_file: None,
            key_file: None,
            max_body_mb: default_http_max_body_mb(),
            classify_workers: default_http_classify_workers(),
            classify_queue: default_http_classify_queue(),
            url: None,
            header_timeout_s: default_http_header_timeout_s(),
            idle_timeout_s: default_http_idle_timeout_s(),
            body_timeout_s: default_http_body_timeout_s(),
            max_connections: default_http_max_connections(),
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
const fn default_http_max_body_mb() -> u64 {
    10
}
const fn default_http_classify_workers() -> usize {
    1
}
const fn default_http_classify_queue() -> usize {
    16
}
const fn default_http_header_timeout_s() -> u64 {
    10
}
const fn default_http_idle_timeout_s() -> u64 {
    5
}
const fn default_http_body_timeout_s() -> u64 {
    30
}
/// With `LimitNOFILE=4096` in the unit this leaves about 3800 descriptors to the rest of the daemon.
const fn default_http_max_connections() -> usize {
    256
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
    state_directory().join("queue.redb")
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
    /// A V4L2 device (`/dev/video0`, or its index `"0"`), an image file, a folder of images, a glob, an
    /// `rtsp://` or `http://` URL or a video file (GStreamer). Empty when `pipeline` is given.
    #[serde(default)]
    pub source: String,
    /// GStreamer: a pipeline ending in `appsink name=camclassd`, instead of `source`.
    pub pipeline: Option<String>,
    /// RTSP / HTTP: the camera's password (first line of this file); the user name goes in the URL.
    pub password_file: Option<PathBuf>,
    /// RTSP: `"auto"` (UDP, then TCP), `"tcp"` or `"udp"`.
    #[serde(default)]
    pub transport: RtspTransport,
    /// RTSP: the jitter buffer, in milliseconds.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u32,
    /// GStreamer: `"auto"` (by plugin rank, hardware first), `"software"`, or a decoder element's name.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// GStreamer: `[width, height]` the decoded frames are scaled to inside the pipeline.
    #[serde(default, deserialize_with = "crate::config::model::exact_array")]
    pub decode_size: Option<[u32; 2]>,
    /// GStreamer: seconds without a frame before the stream is torn down and rebuilt.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: f64,
    /// Frames per second to classify; frames beyond it are skipped before decoding.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Replay sources: start again after the last image (`false`: play once).
    #[serde(default = "default_true", rename = "loop")]
    pub looping: bool,
    /// V4L2: `[width, height]` to ask for; default: the camera's choice.
    #[serde(default, deserialize_with = "crate::config::model::exact_array")]
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
    /// A camera without regions: publish a JPEG of the whole frame on `<camera>/snapshot` (retained) with
    /// each change event and each `snapshot` command (a camera with regions sets it per region).
    #[serde(default)]
    pub snapshot: bool,
    /// The snapshot's longest side at most, in pixels (never enlarged).
    #[serde(default = "default_snapshot_size")]
    pub snapshot_size: u32,
    /// `[[cameras.regions]]`: the parts of the frame to classify, each with its model and policy; none:
    /// the whole frame with the default model (topics without a region level).
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
}

impl CameraConfig {
    /// Whether `other` captures the same way (its regions and publishing aside): a reload keeps such a
    /// camera's source open. Never kept: a camera with a `password_file` (the file may hold a new password),
    /// a replay that does not loop (it may have ended; a reload plays it again).
    pub fn same_capture(&self, other: &CameraConfig) -> bool {
        self.password_file.is_none()
            && self.looping
            && other.password_file.is_none()
            && (&self.name, &self.source, &self.pipeline, self.transport, self.latency_ms, &self.decoder)
                == (&other.name, &other.source, &other.pipeline, other.transport, other.latency_ms, &other.decoder)
            && (self.decode_size, self.stall_timeout, self.fps, self.looping, self.resolution, self.format)
                == (other.decode_size, other.stall_timeout, other.fps, other.looping, other.resolution, other.format)
    }
}

/// The name of the model `[model]` configures.
pub const DEFAULT_MODEL: &str = "default";

/// `[[models]]`: a model by name. What it does not set comes from `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedModelConfig {
    pub name: String,
    /// The model file; a taught model has none: it lives in `[teach] dir`.
    pub path: Option<PathBuf>,
    /// A model taught on this board: its classes (2 to 16; folder names of its labels). Its regions keep
    /// samples; before its first training they publish nothing.
    pub teach: Option<Vec<String>>,
    /// A taught model's base, whose frozen trunk it is trained on; default: `[model] path`.
    pub base: Option<PathBuf>,
    /// A labels file (one per line) replacing the model's own labels.
    pub labels: Option<PathBuf>,
    /// Default: `[model] execution_providers`.
    pub execution_providers: Option<Vec<Provider>>,
    /// Intra-op threads; default: `[model] threads`.
    pub threads: Option<usize>,
    #[serde(default)]
    pub preprocess: Overrides,
    /// The output holding the class scores, for a model with several; default: the first.
    pub output_name: Option<String>,
}

/// `[[cameras.regions]]`: one question asked of a part of a camera's frame.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// A topic level: `<prefix>/<node>/<camera>/<region>/…`.
    pub name: String,
    /// `[x, y, width, height]` in pixels, or fractions of the frame when all four are at most 1; default:
    /// the whole frame.
    #[serde(default, deserialize_with = "crate::config::model::exact_array")]
    pub crop: Option<[f64; 4]>,
    /// A `[[models]]` name; default: `"default"` (`[model]`).
    #[serde(default = "default_model_name")]
    pub model: String,
    /// Default: the camera's.
    pub publish: Option<PublishMode>,
    /// Default: the camera's.
    pub debounce: Option<u32>,
    /// Heartbeat seconds (0: none); default: the camera's.
    pub interval: Option<f64>,
    /// Default: the camera's.
    pub min_score: Option<f32>,
    /// Per-class score a class needs to be reported (`{ open = 0.8, "*" = 0.5 }`, `"*"`: every other class).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<String, f32>,
    /// Only these classes are reported (labels); default: all.
    pub classes: Option<Vec<String>>,
    /// Classify at most once per this many seconds (0: every frame).
    #[serde(default)]
    pub classify_every: f64,
    /// Home Assistant: the class that turns the region's `binary_sensor` on (two-class models).
    pub on_class: Option<String>,
    /// Home Assistant: the `binary_sensor`'s device class (`door`, `garage_door`, `occupancy`, …).
    pub device_class: Option<String>,
    /// Publish a JPEG of the region on `…/<region>/snapshot` (retained) with each change event and each
    /// `snapshot` command.
    #[serde(default)]
    pub snapshot: bool,
    /// The snapshot's longest side at most, in pixels (never enlarged).
    #[serde(default = "default_snapshot_size")]
    pub snapshot_size: u32,
    /// The snapshot shows the whole frame with the region's box drawn, instead of the region alone.
    #[serde(default)]
    pub snapshot_frame: bool,
    /// Motion gate: skip inference while the region's small grey thumbnail differs from the one last
    /// classified by less than this (mean absolute difference, a fraction of full scale: 0.02 = 2 %).
    pub motion_threshold: Option<f64>,
    /// Motion gate: classify anyway after this many seconds without.
    #[serde(default = "default_max_skip")]
    pub max_skip: f64,
}

const fn default_max_skip() -> f64 {
    60.0
}

const fn default_snapshot_size() -> u32 {
    640
}

fn default_model_name() -> String {
    DEFAULT_MODEL.into()
}

/// How RTSP carries the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// UDP, falling back to TCP (RTP interleaved in the RTSP connection).
    #[default]
    Auto,
    Tcp,
    Udp,
}

const fn default_latency_ms() -> u32 {
    200
}
fn default_decoder() -> String {
    "auto".into()
}
const fn default_stall_timeout() -> f64 {
    10.0
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
    /// A labels file replacing the model's own labels: one per line, or JSON (`{"0": "tench", …}` or a list).
    pub labels: Option<PathBuf>,
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<Provider>,
    /// Intra-op threads; 0 = all cores.
    #[serde(default)]
    pub threads: usize,
    /// Inference sessions (each with its own decode thread) that share the cameras; 0 (the default) lets
    /// camclassd choose from the load it sees: one at a camera's pace, more (up to the cores it may use)
    /// while frames wait.
    #[serde(default)]
    pub workers: usize,
    /// The most images one inference run takes: frames of several cameras (and several regions on one model)
    /// that are ready together run as one batch, for a model with a dynamic batch dimension. 1: no batching.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first frame of a batch may wait for more to fill it (0: only what is ready now).
    #[serde(default)]
    pub max_batch_delay_ms: u64,
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
    /// Keep ONNX Runtime's optimised graph of the model (CPU sessions) and load it at the next start.
    #[serde(default = "default_true")]
    pub optimized_cache: bool,
    /// Where; default: `onnxruntime/` under the cache folder (`/var/cache/camclassd` under systemd).
    pub optimized_cache_dir: Option<PathBuf>,
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}
const fn default_top_k() -> usize {
    5
}
/// Off by default: on a CPU a batch saves ~4 % of CPU per frame but grows ONNX Runtime's arena by the
/// batch's activations (+45 MiB for the INT8 EfficientNet at 4; README, "Batching").
const fn default_max_batch() -> usize {
    1
}

impl ModelConfig {
    /// The options the model loader takes.
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
            optimized_cache: self
                .optimized_cache
                .then(|| self.optimized_cache_dir.clone().unwrap_or_else(super::model::default_optimized_cache_dir)),
            ..ModelOptions::default()
        }
    }
}

/// A model by name, with the options to open it: `default` (`[model]`) or a `[[models]]` entry.
#[derive(Debug, Clone)]
pub struct NamedModel {
    pub name: String,
    pub path: PathBuf,
    pub options: ModelOptions,
    /// Its config key, for errors: `model` or `models[<i>]`.
    pub key: String,
    /// A model taught on this board.
    pub taught: Option<Taught>,
}

/// A model taught on this board: its classes, its base and its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Taught {
    pub classes: Vec<String>,
    pub base: PathBuf,
    /// `<[teach] dir>/<name>`.
    pub dir: PathBuf,
}

impl Taught {
    /// The model in service (absent before the first training).
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }
}

impl Config {
    /// Every model by name: `default` (`[model]`) first, then `[[models]]` in file order. Unset options of a
    /// `[[models]]` entry come from `[model]`.
    pub fn named_models(&self) -> Vec<NamedModel> {
        let base = self.model.model_options();
        let mut out = vec![NamedModel {
            name: DEFAULT_MODEL.into(),
            path: self.model.path.clone(),
            options: base.clone(),
            key: "model".into(),
            taught: None,
        }];
        for (i, m) in self.models.iter().enumerate() {
            let mut options = base.clone();
            if let Some(p) = &m.execution_providers {
                options.providers = p.clone();
            }
            if let Some(t) = m.threads {
                options.threads = (t > 0).then_some(t);
            }
            options.overrides = m.preprocess.clone();
            options.labels = m.labels.clone();
            options.output_name = m.output_name.clone();
            let taught = m.teach.as_ref().map(|classes| Taught {
                classes: classes.clone(),
                base: m.base.clone().unwrap_or_else(|| self.model.path.clone()),
                dir: self.teach.dir.join(&m.name),
            });
            let path = match (&m.path, &taught) {
                (_, Some(t)) => t.model(),
                (Some(p), None) => p.clone(),
                (None, None) => PathBuf::new(),
            };
            out.push(NamedModel { name: m.name.clone(), path, options, key: format!("models[{i}]"), taught });
        }
        out
    }

    /// The names of the models some camera uses (`default` for a camera without regions), in
    /// [`Config::named_models`] order.
    pub fn used_models(&self) -> Vec<String> {
        self.named_models()
            .into_iter()
            .map(|m| m.name)
            .filter(|name| {
                self.cameras.iter().any(|c| {
                    (c.regions.is_empty() && name == DEFAULT_MODEL) || c.regions.iter().any(|r| &r.model == name)
                })
            })
            .collect()
    }
}

/// The most intra-op threads accepted: 4 per core. More only thrashes, and a typo must not spawn thousands.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Home Assistant's `binary_sensor` device classes (`BinarySensorDeviceClass`, the same from 2024.3 on): a
/// region's `device_class` must be one of them, or Home Assistant refuses the whole config.
pub const BINARY_SENSOR_DEVICE_CLASSES: [&str; 28] = [
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
];
