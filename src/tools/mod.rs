//! User-facing commands built on the pipeline; each returns data, and the binary prints it.

pub mod bench;
pub mod check_config;
pub mod classify;
pub mod compare;
pub mod inspect;
pub use crate::model::onnx_proto;
