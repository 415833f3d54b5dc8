//! `camclassd inspect`: what a person opens Netron for, as text or JSON — read from the ONNX protobuf.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::ep::SessionProbe;
use crate::model::onnx_proto::{self as pb, data_type};
use crate::model::placement::placement_text;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not an ONNX model ({reason})", path.display())]
    NotOnnx { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

/// One dimension: a number, a symbolic name, or unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Dim {
    Value(i64),
    Param(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Io {
    pub name: String,
    pub element_type: String,
    /// `None` when the shape is not declared.
    pub shape: Option<Vec<Dim>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TypeTotals {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantization {
    /// `none`, `qdq_static`, `qoperator` or `dynamic`.
    pub kind: &'static str,
    /// `per_tensor`, `per_channel`, `mixed`, or absent when not quantized.
    pub granularity: Option<&'static str>,
    pub weight_type: Option<String>,
    pub activation_type: Option<String>,
}

/// What `camclassd verify` will check, read from the model's `camclassd.check` metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    pub inputs: usize,
    pub reference_file: String,
    pub reference_sha256: String,
    pub min_cosine: f32,
    pub bytes: usize,
    /// Set when the golden set cannot be read (then `verify` refuses the model).
    pub error: Option<String>,
}

fn check_summary(text: &str) -> CheckSummary {
    match serde_json::from_str::<crate::check::GoldenSet>(text) {
        Ok(set) => CheckSummary {
            inputs: set.inputs.len(),
            reference_file: set.reference.file,
            reference_sha256: set.reference.sha256,
            min_cosine: set.min_cosine,
            bytes: text.len(),
            error: None,
        },
        Err(e) => CheckSummary {
            inputs: 0,
            reference_file: String::new(),
            reference_sha256: String::new(),
            min_cosine: 0.0,
            bytes: text.len(),
            error: Some(e.to_string()),
        },
    }
}

/// How camclassd will feed the model and read its scores, as far as the file tells (a session decides the
/// rest at load: `output = "auto"`, symbolic dimensions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    /// The image input's element type (numpy's name).
    pub input_type: String,
    /// What camclassd feeds it (`None`: an element type camclassd does not feed).
    pub feeds: Option<&'static str>,
    /// `NCHW`, `NHWC`, `ambiguous` or `unknown`.
    pub layout: String,
    /// Where the layout comes from: `metadata`, `input shape`, or what to set.
    pub layout_from: &'static str,
    /// The output kind (`camclassd.output`, else `auto`).
    pub output: String,
    /// How camclassd reads the scores, in words.
    pub output_meaning: &'static str,
    /// Each class an independent probability (sigmoid), on at its own threshold.
    pub multi_label: bool,
}

/// The interface of a model with one 4-dimensional input; `None` for anything else (the session says why).
fn interface(inputs: &[Io], metadata: &BTreeMap<String, String>) -> Option<Interface> {
    use crate::model::spec::{InputShape, InputType, KEY_PREFIX, OutputKind};
    let [input] = inputs else { return None };
    let dims = input.shape.as_ref().filter(|d| d.len() == 4)?;
    let dim = |d: &Dim| match d {
        Dim::Value(v) => u32::try_from(*v).ok().filter(|&v| v > 0),
        _ => None,
    };
    let shape = InputShape([dim(&dims[0]), dim(&dims[1]), dim(&dims[2]), dim(&dims[3])]);
    let meta = |key: &str| metadata.get(&format!("{KEY_PREFIX}{key}"));
    let (layout, layout_from) = match (meta("layout"), shape.implied_layout()) {
        (Some(l), _) => (l.to_ascii_uppercase(), "metadata"),
        (None, Some(l)) => (l.name().to_string(), "input shape"),
        (None, None) if shape.0[1] == Some(3) && shape.0[3] == Some(3) => {
            ("ambiguous".into(), "set [model.preprocess] layout")
        }
        (None, None) => ("unknown".into(), "set [model.preprocess] layout"),
    };
    let input_type = InputType::from_name(&input.element_type);
    let (output, output_meaning) = match meta("output").map(|v| v.parse::<OutputKind>()) {
        None => (OutputKind::Auto.name().to_string(), OutputKind::Auto.describe()),
        Some(Ok(kind)) => (kind.name().to_string(), kind.describe()),
        Some(Err(_)) => (meta("output").cloned().unwrap_or_default(), "not a kind camclassd knows"),
    };
    Some(Interface {
        input_type: input.element_type.clone(),
        feeds: input_type.map(InputType::feeds),
        layout,
        layout_from,
        multi_label: output.parse::<OutputKind>().is_ok_and(OutputKind::is_multi_label),
        output,
        output_meaning,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub path: String,
    pub file_size: u64,
    pub sha256: String,
    pub ir_version: i64,
    pub opsets: Vec<Opset>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    /// `metadata_props`; the model check's golden set (`camclassd.check`, ~100 kB per input) is
    /// summarised in `check` and shown here by its size only.
    pub metadata: BTreeMap<String, String>,
    /// The stamped model check, if any.
    pub check: Option<CheckSummary>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    /// How camclassd feeds the image input and reads the scores (one 4-dimensional input only).
    pub interface: Option<Interface>,
    pub nodes: usize,
    /// Operator → count, most frequent first (ties by name).
    pub operators: Vec<(String, usize)>,
    pub parameters: u64,
    pub initializers: BTreeMap<String, TypeTotals>,
    pub quantization: Quantization,
    /// With `--ep`: the session ONNX Runtime opened for the model and where it ran the nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionProbe>,
}

/// Reads and summarises an ONNX file.
pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read { path: path.to_path_buf(), source })?;
    let not_onnx = |reason: String| InspectError::NotOnnx { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty".into()));
    }
    let model = pb::ModelProto::decode(&bytes[..]).map_err(|e| not_onnx(format!("protobuf: {e}")))?;
    // Protobuf decodes many byte strings without complaint: an ONNX model has an IR version and a graph.
    let graph = match (&model.graph, model.ir_version) {
        (Some(g), v) if v > 0 => g,
        _ => return Err(not_onnx("no IR version or graph; truncated or not ONNX".into())),
    };

    let initializer_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let io = |v: &pb::ValueInfoProto| describe_io(v);
    let inputs: Vec<Io> = graph.input.iter().filter(|i| !initializer_names.contains(i.name.as_str())).map(io).collect();
    let outputs = graph.output.iter().map(io).collect();

    let mut histogram: HashMap<String, usize> = HashMap::new();
    let mut nodes = 0;
    count_nodes(graph, &mut histogram, &mut nodes);
    let mut operators: Vec<(String, usize)> = histogram.into_iter().collect();
    operators.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let mut initializers: BTreeMap<String, TypeTotals> = BTreeMap::new();
    let mut parameters = 0u64;
    for t in &graph.initializer {
        let elements = elements(t);
        parameters += elements;
        let (name, size) = data_type(t.data_type);
        let totals = initializers.entry(name.to_string()).or_default();
        totals.tensors += 1;
        totals.elements += elements;
        totals.bytes += tensor_bytes(t, size, elements);
    }

    let metadata: BTreeMap<String, String> = model
        .metadata_props
        .iter()
        .map(|p| {
            let value = if p.key == crate::check::METADATA_KEY {
                format!("({} bytes: the model check, see `check`)", p.value.len())
            } else {
                p.value.clone()
            };
            (p.key.clone(), value)
        })
        .collect();
    Ok(Inspection {
        interface: interface(&inputs, &metadata),
        path: path.display().to_string(),
        file_size: bytes.len() as u64,
        sha256: crate::model::hex(&Sha256::digest(&bytes)),
        ir_version: model.ir_version,
        opsets: model
            .opset_import
            .iter()
            .map(|o| Opset {
                domain: if o.domain.is_empty() { "ai.onnx".into() } else { o.domain.clone() },
                version: o.version,
            })
            .collect(),
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        metadata,
        check: model
            .metadata_props
            .iter()
            .find(|p| p.key == crate::check::METADATA_KEY)
            .map(|p| check_summary(&p.value)),
        inputs,
        outputs,
        nodes,
        quantization: quantization(graph, &operators),
        operators,
        parameters,
        initializers,
        session: None,
    })
}

fn describe_io(v: &pb::ValueInfoProto) -> Io {
    let tensor = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    let element_type = match (tensor, v.r#type.as_ref()) {
        (Some(t), _) => data_type(t.elem_type).0.to_string(),
        (None, Some(t)) if t.sequence_type.is_some() => "sequence".into(),
        (None, Some(t)) if t.map_type.is_some() => "map".into(),
        _ => "unknown".into(),
    };
    let shape = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
        s.dim
            .iter()
            .map(|d| match (&d.dim_value, &d.dim_param) {
                (Some(v), _) => Dim::Value(*v),
                (None, Some(p)) if !p.is_empty() => Dim::Param(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    Io { name: v.name.clone(), element_type, shape }
}

fn count_nodes(graph: &pb::GraphProto, histogram: &mut HashMap<String, usize>, nodes: &mut usize) {
    for node in &graph.node {
        *nodes += 1;
        let op = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        *histogram.entry(op).or_default() += 1;
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(&attr.graphs) {
                count_nodes(sub, histogram, nodes);
            }
        }
    }
}

fn elements(t: &pb::TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

fn tensor_bytes(t: &pb::TensorProto, size: usize, elements: u64) -> u64 {
    if !t.raw_data.is_empty() {
        return t.raw_data.len() as u64;
    }
    if t.data_location == 1 {
        // External data: the bytes live in another file; count what the shape says.
        return elements * size as u64;
    }
    let typed = t.float_data.len() * 4
        + t.int32_data.len() * size.min(4)
        + t.int64_data.len() * 8
        + t.double_data.len() * 8
        + t.uint64_data.len() * 8
        + t.string_data.iter().map(Vec::len).sum::<usize>();
    typed as u64
}

fn quantization(graph: &pb::GraphProto, operators: &[(String, usize)]) -> Quantization {
    let has = |op: &str| operators.iter().any(|(o, _)| o == op);
    let qoperator = operators.iter().any(|(o, _)| o.starts_with("QLinear") || o.ends_with("Integer"));
    let kind = if has("DynamicQuantizeLinear") {
        "dynamic"
    } else if qoperator {
        "qoperator"
    } else if has("DequantizeLinear") {
        "qdq_static"
    } else {
        return Quantization { kind: "none", granularity: None, weight_type: None, activation_type: None };
    };
    let init: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let type_of = |name: &str| init.get(name).map(|t| data_type(t.data_type).0.to_string());
    let count_of = |name: &str| init.get(name).map_or(1, |t| elements(t));

    let (mut weight_types, mut activation_types) = (BTreeMap::new(), BTreeMap::new());
    let (mut per_channel, mut per_tensor) = (0, 0);
    let mut weight_scale = |scale: &str| {
        if count_of(scale) > 1 { per_channel += 1 } else { per_tensor += 1 }
    };
    for node in &graph.node {
        let input = |i: usize| node.input.get(i).map(String::as_str).unwrap_or_default();
        match node.op_type.as_str() {
            // QDQ: a DequantizeLinear of an initializer is a weight; QuantizeLinear's zero point types activations.
            "DequantizeLinear" if init.contains_key(input(0)) => {
                if let Some(t) = type_of(input(0)) {
                    if t != "int32" {
                        *weight_types.entry(t).or_insert(0) += 1;
                        weight_scale(input(1));
                    }
                }
            }
            "QuantizeLinear" => {
                if let Some(t) = type_of(input(2)) {
                    *activation_types.entry(t).or_insert(0) += 1;
                }
            }
            // QOperator: x, x_scale, x_zero_point, w, w_scale, w_zero_point, …
            "QLinearConv" | "QLinearMatMul" => {
                if let Some(t) = type_of(input(2)) {
                    *activation_types.entry(t).or_insert(0) += 1;
                }
                if let Some(t) = type_of(input(3)) {
                    *weight_types.entry(t).or_insert(0) += 1;
                }
                weight_scale(input(4));
            }
            "ConvInteger" | "MatMulInteger" => {
                if let Some(t) = type_of(input(1)) {
                    *weight_types.entry(t).or_insert(0) += 1;
                }
            }
            "DynamicQuantizeLinear" => {
                *activation_types.entry("uint8".to_string()).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    let most = |m: BTreeMap<String, usize>| m.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t);
    let granularity = match (per_channel, per_tensor) {
        (0, 0) => None,
        (_, 0) => Some("per_channel"),
        (0, _) => Some("per_tensor"),
        _ => Some("mixed"),
    };
    Quantization { kind, granularity, weight_type: most(weight_types), activation_type: most(activation_types) }
}

fn dims_text(shape: &Option<Vec<Dim>>) -> String {
    match shape {
        None => "(shape not declared)".into(),
        Some(dims) => {
            let parts: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Value(v) => v.to_string(),
                    Dim::Param(p) => p.clone(),
                    Dim::Unknown => "?".into(),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// The human-readable report.
pub fn render_text(m: &Inspection) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", m.path);
    let _ = writeln!(o, "  size          {} bytes ({:.2} MB)", m.file_size, m.file_size as f64 / 1e6);
    let _ = writeln!(o, "  sha256        {}", m.sha256);
    let _ = writeln!(o, "  IR version    {}", m.ir_version);
    let opsets: Vec<String> = m.opsets.iter().map(|o| format!("{} {}", o.domain, o.version)).collect();
    let _ = writeln!(o, "  opsets        {}", opsets.join(", "));
    let _ = writeln!(o, "  producer      {} {}", m.producer_name, m.producer_version);
    if !m.domain.is_empty() || m.model_version != 0 {
        let _ = writeln!(o, "  domain        {} (model version {})", m.domain, m.model_version);
    }
    if !m.doc_string.is_empty() {
        let _ = writeln!(o, "  doc           {}", m.doc_string.lines().next().unwrap_or_default());
    }
    for (label, list) in [("inputs", &m.inputs), ("outputs", &m.outputs)] {
        let _ = writeln!(o, "  {label}");
        for io in list {
            let _ = writeln!(o, "    {}  {}  {}", io.name, io.element_type, dims_text(&io.shape));
        }
    }
    if let Some(i) = &m.interface {
        let feeds = i.feeds.unwrap_or("not an element type camclassd feeds (float32 or uint8)");
        let layout = match i.layout_from {
            "metadata" | "input shape" => format!("{} (layout from the {})", i.layout, i.layout_from),
            fix => format!("layout {}: {fix}", i.layout),
        };
        let _ = writeln!(o, "  interface     input {} {layout}: {feeds}", i.input_type);
        let _ = writeln!(o, "                output {}: {}", i.output, i.output_meaning);
    }
    let _ = writeln!(o, "  nodes         {}", m.nodes);
    let ops: Vec<String> = m.operators.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(o, "  operators     {}", ops.join(", "));
    let _ = writeln!(o, "  parameters    {}", m.parameters);
    for (ty, t) in &m.initializers {
        let _ = writeln!(o, "    {ty:<10} {} tensors, {} elements, {} bytes", t.tensors, t.elements, t.bytes);
    }
    let q = &m.quantization;
    let _ = writeln!(
        o,
        "  quantization  {}{}{}{}",
        q.kind,
        q.granularity.map(|g| format!(", {g}")).unwrap_or_default(),
        q.weight_type.as_ref().map(|t| format!(", weights {t}")).unwrap_or_default(),
        q.activation_type.as_ref().map(|t| format!(", activations {t}")).unwrap_or_default(),
    );
    if !m.metadata.is_empty() {
        let _ = writeln!(o, "  metadata");
        for (k, v) in &m.metadata {
            let lines = v.lines().count();
            let shown = if lines > 1 {
                format!("{} … ({lines} lines)", v.lines().next().unwrap_or_default())
            } else {
                v.clone()
            };
            let _ = writeln!(o, "    {k} = {shown}");
        }
    }
    match &m.check {
        Some(CheckSummary { error: Some(e), .. }) => {
            let _ = writeln!(o, "  check         unreadable ({e})");
        }
        Some(c) => {
            let sha = c.reference_sha256.get(..12).unwrap_or(&c.reference_sha256);
            let _ = writeln!(
                o,
                "  check         {} golden inputs, answers of {} (sha256 {sha}…), pass: every top-1 and mean \
                 cosine >= {:.2} (camclassd verify)",
                c.inputs, c.reference_file, c.min_cosine
            );
        }
        None => {
            let _ = writeln!(o, "  check         none (camclassd stamp adds one)");
        }
    }
    if let Some(p) = &m.session {
        render_session(&mut o, p);
    }
    o
}

fn render_session(o: &mut String, p: &SessionProbe) {
    let requested: Vec<String> = p.requested.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        o,
        "  session       {} (requested {}; opened in {:.1} ms)",
        p.provider,
        requested.join(", "),
        p.session_ms
    );
    for s in &p.skipped {
        let _ = writeln!(o, "    skipped     {}: {}", s.provider, s.reason);
    }
    match (&p.placement, &p.placement_error) {
        (Some(placement), _) => {
            let _ = writeln!(o, "    nodes ran   {}", placement_text(placement));
            for n in placement {
                let mut ops: Vec<(&String, &usize)> = n.ops.iter().collect();
                ops.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                let ops: Vec<String> = ops.iter().map(|(op, c)| format!("{op} {c}")).collect();
                let _ = writeln!(o, "      {:<9} {}", n.provider, ops.join(", "));
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(o, "    nodes ran   unknown: {e}");
        }
        (None, None) => {}
    }
}
