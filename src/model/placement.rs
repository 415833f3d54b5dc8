//! Where ONNX Runtime actually ran the graph's nodes. It gives a GPU provider only the nodes it supports and
//! runs the rest on the CPU without saying so; before ONNX Runtime 1.24 the C API tells which provider ran
//! each node only through a profile, so the warm-up inference is profiled into a private folder and the
//! placement read back from it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::Session;
use serde::Serialize;

/// How many of the (optimised) graph's nodes one provider ran. A TensorRT engine counts as one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderNodes {
    /// `cpu`, `cuda`, `tensorrt`, or ONNX Runtime's own name for any other provider.
    pub provider: String,
    pub nodes: usize,
    /// Operator → count.
    pub ops: BTreeMap<String, usize>,
}

/// Profile folders are named per session: workers load in parallel.
static PROFILE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A private folder for one session's profile, removed with everything in it when dropped, so that no
/// profile is left in the temporary folder whatever path the load takes.
#[derive(Debug, Default)]
pub(crate) struct ProfileDir(Option<PathBuf>);

impl ProfileDir {
    pub(crate) fn create() -> Result<ProfileDir, String> {
        let seq = PROFILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("camclassd-placement-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(ProfileDir(Some(dir)))
    }

    /// The prefix ORT completes with a time stamp and `.json`.
    pub(crate) fn prefix(&self) -> Option<PathBuf> {
        self.0.as_ref().map(|d| d.join("profile"))
    }

    pub(crate) fn remove(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for ProfileDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Ends the session's profiling (started by [`ModelOptions::record_placement`]) and reads the node placement
/// from the profile; the profile's folder is then removed.
pub(crate) fn finish_placement(session: &mut Session, profile: &mut ProfileDir) -> Result<Vec<ProviderNodes>, String> {
    if profile.prefix().is_none() {
        return Err("the session was opened without profiling".into());
    }
    let ended = session.end_profiling().map_err(|e| format!("ending the profile: {e}"));
    let text = ended.and_then(|file| std::fs::read_to_string(&file).map_err(|e| format!("reading {file}: {e}")));
    profile.remove();
    placement_from_profile(&text?)
}

/// Counts, per provider, the nodes that ran in an ONNX Runtime profile (`cat: "Node"` events, whose
/// `args.provider` names the provider that executed the kernel).
pub fn placement_from_profile(json: &str) -> Result<Vec<ProviderNodes>, String> {
    let events: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("the profile is not a JSON array of events: {e}"))?;
    let mut seen = HashSet::new();
    let mut by_provider: BTreeMap<String, ProviderNodes> = BTreeMap::new();
    for e in &events {
        let (Some("Node"), Some(name)) = (e["cat"].as_str(), e["name"].as_str()) else { continue };
        // Each node has fence and kernel events; the kernel event is the one that says who ran it.
        let Some(node) = name.strip_suffix("_kernel_time") else { continue };
        let Some(ort_name) = e["args"]["provider"].as_str() else { continue };
        if !seen.insert(node.to_string()) {
            continue;
        }
        let provider = short_provider_name(ort_name);
        let entry = by_provider.entry(provider.clone()).or_insert_with(|| ProviderNodes {
            provider,
            nodes: 0,
            ops: BTreeMap::new(),
        });
        entry.nodes += 1;
        let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
        *entry.ops.entry(op).or_default() += 1;
    }
    if by_provider.is_empty() {
        return Err("the profile holds no node events".into());
    }
    let mut list: Vec<ProviderNodes> = by_provider.into_values().collect();
    list.sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.provider.cmp(&b.provider)));
    Ok(list)
}

fn short_provider_name(ort_name: &str) -> String {
    match ort_name {
        "CPUExecutionProvider" => "cpu".into(),
        "CUDAExecutionProvider" => "cuda".into(),
        "TensorrtExecutionProvider" => "tensorrt".into(),
        other => other.into(),
    }
}

/// `tensorrt 1 node, cuda 4 nodes, cpu 2 nodes`.
pub fn placement_text(placement: &[ProviderNodes]) -> String {
    placement
        .iter()
        .map(|p| format!("{} {} node{}", p.provider, p.nodes, if p.nodes == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_counts_kernel_events_per_provider() {
        let json = r#"[
            {"cat":"Session","name":"session_initialization","args":{}},
            {"cat":"Node","name":"a_fence_before","args":{"op_name":"Conv"}},
            {"cat":"Node","name":"TRTKernel_graph_main_0_kernel_time","args":{"op_name":"TRTKernel_graph_main_0","provider":"TensorrtExecutionProvider"}},
            {"cat":"Node","name":"q_kernel_time","args":{"op_name":"QuantizeLinear","provider":"CPUExecutionProvider"}},
            {"cat":"Node","name":"dq_kernel_time","args":{"op_name":"DequantizeLinear","provider":"CPUExecutionProvider"}},
            {"cat":"Node","name":"q_kernel_time","args":{"op_name":"QuantizeLinear","provider":"CPUExecutionProvider"}},
            {"cat":"Node","name":"copy_kernel_time","args":{"op_name":"MemcpyToHost","provider":"CUDAExecutionProvider"}}
        ]"#;
        let p = placement_from_profile(json).expect("parses");
        assert_eq!(
            p.iter().map(|p| (p.provider.as_str(), p.nodes)).collect::<Vec<_>>(),
            [("cpu", 2), ("cuda", 1), ("tensorrt", 1)]
        );
        assert_eq!(p[0].ops.get("QuantizeLinear"), Some(&1));
        assert_eq!(placement_text(&p), "cpu 2 nodes, cuda 1 node, tensorrt 1 node");
        assert!(placement_from_profile("[]").is_err());
        assert!(placement_from_profile("{").is_err());
    }
}
