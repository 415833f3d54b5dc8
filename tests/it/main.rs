//! Integration tests: the real `camclassd` binary, the real ONNX Runtime library and the real models.
//!
//! One test binary with modules keeps link time down. The models, fixtures and ONNX Runtime come from
//! `scripts/setup`; a test that finds them missing fails with that instruction rather than skipping.

mod bench;
mod broker;
mod check;
mod classify;
mod compare;
mod daemon;
mod errors;
mod gpu;
#[cfg(feature = "gstreamer")]
mod gstreamer;
mod ha;
mod hostile;
mod http;
mod inspect;
mod layout;
mod models;
mod mqtt;
mod pipeline;
mod reference;
mod regions;
mod teach;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn generated(name: &str) -> PathBuf {
    let p = root().join("tests/data/generated").join(name);
    assert!(p.exists(), "{} is missing: run scripts/setup first", p.display());
    p
}

pub fn model(precision: &str) -> PathBuf {
    let p = root().join(format!("models/efficientnet-lite0-{precision}.onnx"));
    assert!(p.exists(), "{} is missing: run scripts/setup first", p.display());
    p
}

pub fn camclassd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_camclassd"));
    c.env_remove("ORT_DYLIB_PATH").env_remove("RUST_LOG").current_dir(root());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("camclassd runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One `classify --json` line.
#[derive(Debug, serde::Deserialize)]
pub struct Report {
    pub image: String,
    pub top: Vec<Class>,
    /// Absent in the Python reference's lines.
    #[serde(default)]
    pub timing_ms: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Class {
    pub class_id: usize,
    pub label: String,
    pub score: f64,
}

/// Runs `classify --json` and parses its lines; panics with stderr when the exit code is not `expect`.
pub fn classify_json(model: &Path, images: &[PathBuf], extra: &[&str], expect: i32) -> Vec<Report> {
    let out = run(camclassd().arg("classify").arg("--model").arg(model).arg("--json").args(extra).args(images));
    assert_eq!(out.status.code(), Some(expect), "stderr: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON report per line")).collect()
}

/// The real photographs among the fixtures (all decodable, each a different scene).
pub const PHOTOS: &[&str] = &[
    "chelsea.jpg",
    "chelsea.png",
    "coffee.jpg",
    "coffee.png",
    "astronaut.jpg",
    "astronaut.png",
    "rocket.jpg",
    "rocket.png",
    "motorcycle.jpg",
    "motorcycle.png",
    "camera.jpg",
    "camera.png",
    "hubble.jpg",
    "hubble.png",
    "frame640x480.jpg",
];

/// Pixel-format edge cases that must classify like the photo they were made from.
pub const EDGE_IMAGES: &[&str] = &["grey.png", "rgba.png", "cmyk.jpg", "rgb16.png", "exif_rotated.jpg", "tiny.png"];
