//! camclassd: an edge-device camera classification daemon.
//!
//! # Layout
//!
//! A frame travels one path, and each stage is one module with one job:
//!
//! ```text
//! capture ──Frame──▶ preprocess ──tensor──▶ model (infer) ──scores──▶ postprocess ──Classification──▶
//!     events (policy) ──Event──▶ publish ──▶ MQTT
//! ```
//!
//! - [`capture`]: camera threads (V4L2 through nokhwa, replay of image files, and with the `gstreamer`
//!   feature RTSP/HTTP cameras, video files and custom pipelines), fps pacing, reconnect backoff, and the hub
//!   where each camera's newest frame waits (older ones are dropped and counted).
//! - [`backoff`]: capped exponential backoff with jitter, for cameras and MQTT alike.
//! - [`config`]: parse and validate the TOML configuration; every error names file, line, column and key.
//! - [`preprocess`]: the `Decoder` (JPEG, PNG, raw RGB/YUYV camera frames; JPEG through libjpeg-turbo,
//!   reduced in the DCT domain when the models need fewer pixels), once per frame, and a model's
//!   `TensorWriter` (crop, resize, normalise into its input tensor), reusing every buffer between frames.
//! - [`model`]: find and load ONNX Runtime, open a session with the configured execution providers, read the
//!   preprocessing recipe ([`model::ModelSpec`]) from the model's metadata, run inference.
//! - [`postprocess`]: softmax, top-k, labels and score thresholds (pure functions).
//! - [`region`]: the regions of each camera (crop, model, policy, per-class thresholds), planned from the
//!   config and the loaded models, and the gate that decides whether a region of a frame is classified.
//! - [`events`]: the publish policy (every frame, or on change with debounce and heartbeat) and the
//!   versioned event schema (pure).
//! - [`publish`]: the MQTT side: the durable event queue ([`publish::queue`]), delivery until PUBACK,
//!   reconnection with backoff and jitter, retained status (Last Will) / state / health, TLS, Home
//!   Assistant discovery ([`publish::discovery`]) and the command topic ([`publish::command`]).
//! - [`check`]: the model's own check: golden inputs stamped into the model and verified at load on this
//!   CPU (`camclassd stamp`, `camclassd verify`).
//! - [`load`]: the one model-loading policy (load → check on this CPU → fallback → region plan) that
//!   `run`, reload, `check-config`, `classify` and the HTTP classify pool share.
//! - [`health`]: per-frame counters (atomics) and the periodic health report, systemd STATUS and watchdog.
//! - [`daemon`]: wires the stages with bounded hand-offs, reloads the config on SIGHUP, feeds the
//!   watchdog, and shuts the stages down in order.
//! - [`live`]: what the daemon is doing right now (newest frame per camera, newest classification and box
//!   per region, broker and queue counters), written by the pipeline and the publisher, read by the HTTP
//!   server.
//! - [`http`]: the status page, Prometheus `/metrics` and the JSON API (`[http]`), on the daemon's runtime.
//! - [`pipeline`]: the same stage functions chained for the tools, so a tool's answer is the daemon's.
//! - [`teach`]: teaching a question from labelled pictures: a base model's frozen trunk embeds them, a
//!   cross-validated logistic regression learns the classes, one ONNX file (trunk + head) is written,
//!   stamped with its check, with a report a user can trust.
//! - [`tools`]: the user-facing commands built on the pipeline (`classify`).
#![warn(clippy::unwrap_used, missing_debug_implementations)]

pub mod backoff;
pub mod capture;
pub mod check;
pub mod config;
pub mod daemon;
pub mod events;
pub mod health;
pub mod http;
pub mod live;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod region;
pub mod teach;
pub mod tools;
