//! Editing ONNX files at the protobuf wire level: a graph cut at an inner tensor (a base model's trunk, up to
//! its `features`), a linear head appended on it, metadata set. Fields are copied as the bytes they are (only
//! the messages an edit touches are taken apart), so nothing this crate does not model is lost or re-encoded:
//! the quantization parameters, the opset imports, the producer, every attribute stay as the file had them.
//!
//! An ONNX file is a `ModelProto`: `graph` is field 7, `metadata_props` field 14 (`key` 1, `value` 2). A
//! `GraphProto` holds `node` (1), `initializer` (5), `input` (11), `output` (12), `value_info` (13),
//! `quantization_annotation` (14); a `NodeProto` its `input` (1) and `output` (2) tensor names; a
//! `TensorProto` and a `ValueInfoProto` their `name` (8 and 1).

use std::collections::{HashMap, HashSet, VecDeque};

/// Why an ONNX file could not be edited.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    #[error("not an ONNX model: {0}")]
    Malformed(&'static str),
    #[error("the model has no graph")]
    NoGraph,
    #[error("no node of the model computes the tensor {0:?}")]
    NoTensor(String),
}

/// One field of a protobuf message: its number, wire type, its whole bytes (tag included) and, for a
/// length-delimited field, its payload.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u64,
    wire: u64,
    raw: &'a [u8],
    payload: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, EditError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or(EditError::Malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(EditError::Malformed("varint too long"))
}

/// The fields of a message, in order.
fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, EditError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = read_varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let payload_start = pos;
        let end = match wire {
            0 => {
                read_varint(buf, &mut pos)?;
                pos
            }
            1 => pos + 8,
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).map_err(|_| EditError::Malformed("length"))?;
                pos.checked_add(len).ok_or(EditError::Malformed("length"))?
            }
            5 => pos + 4,
            _ => return Err(EditError::Malformed("unknown wire type")),
        };
        if end > buf.len() || number == 0 {
            return Err(EditError::Malformed("a field runs past the end"));
        }
        let payload = if wire == 2 { &buf[pos..end] } else { &buf[payload_start..end] };
        out.push(Field { number, wire, raw: &buf[start..end], payload });
        pos = end;
    }
    Ok(out)
}

/// The UTF-8 strings in field `number` of a message (lossy: names are ASCII in practice).
fn strings(message: &[u8], number: u64) -> Result<Vec<String>, EditError> {
    Ok(fields(message)?
        .into_iter()
        .filter(|f| f.number == number && f.wire == 2)
        .map(|f| String::from_utf8_lossy(f.payload).into_owned())
        .collect())
}

fn string(message: &[u8], number: u64) -> Result<Option<String>, EditError> {
    Ok(strings(message, number)?.into_iter().next())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field (tag, length, bytes).
pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, (number << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_int(out: &mut Vec<u8>, number: u64, v: u64) {
    put_varint(out, number << 3);
    put_varint(out, v);
}

/// `ModelProto` with its graph replaced by `graph` (the other fields as they were).
fn replace_graph(model: &[u8], graph: &[u8]) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(model.len());
    let mut replaced = false;
    for f in fields(model)? {
        if f.number == 7 && f.wire == 2 {
            if !replaced {
                put_bytes(&mut out, 7, graph);
                replaced = true;
            }
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    if replaced { Ok(out) } else { Err(EditError::NoGraph) }
}

fn graph_of(model: &[u8]) -> Result<&[u8], EditError> {
    fields(model)?.into_iter().find(|f| f.number == 7 && f.wire == 2).map(|f| f.payload).ok_or(EditError::NoGraph)
}

/// A float tensor's `ValueInfoProto`: `name`, element type FLOAT, shape `[batch, width]` (`width` symbolic
/// when `None`).
fn float_value_info(name: &str, width: Option<usize>) -> Vec<u8> {
    let mut batch = Vec::new();
    put_bytes(&mut batch, 2, b"batch"); // dim_param
    let mut second = Vec::new();
    match width {
        Some(w) => put_int(&mut second, 1, w as u64), // dim_value
        None => put_bytes(&mut second, 2, format!("{name}_width").as_bytes()),
    }
    let mut shape = Vec::new();
    put_bytes(&mut shape, 1, &batch);
    put_bytes(&mut shape, 1, &second);
    let mut tensor = Vec::new();
    put_int(&mut tensor, 1, 1); // elem_type FLOAT
    put_bytes(&mut tensor, 2, &shape);
    let mut typ = Vec::new();
    put_bytes(&mut typ, 1, &tensor); // tensor_type
    let mut info = Vec::new();
    put_bytes(&mut info, 1, name.as_bytes());
    put_bytes(&mut info, 2, &typ);
    info
}

/// A FLOAT initializer (`TensorProto`: dims 1, data_type 2, name 8, raw_data 9, little-endian).
fn float_initializer(name: &str, dims: &[usize], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(values.len() * 4 + 64);
    for &d in dims {
        put_int(&mut t, 1, d as u64);
    }
    put_int(&mut t, 2, 1);
    put_bytes(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut t, 9, &raw);
    t
}

/// A `NodeProto`: inputs, outputs, name, op type, and integer attributes (`AttributeProto`: name 1, i 3,
/// type 20 = INT 2).
fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], ints: &[(&str, i64)]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        put_bytes(&mut n, 1, i.as_bytes());
    }
    for o in outputs {
        put_bytes(&mut n, 2, o.as_bytes());
    }
    put_bytes(&mut n, 3, name.as_bytes());
    put_bytes(&mut n, 4, op.as_bytes());
    for (attr, v) in ints {
        let mut a = Vec::new();
        put_bytes(&mut a, 1, attr.as_bytes());
        put_int(&mut a, 3, *v as u64);
        put_int(&mut a, 20, 2);
        put_bytes(&mut n, 5, &a);
    }
    n
}

/// The graph's fields kept to compute `tensor`, and `tensor`'s width where the graph declares it.
fn cut_graph(graph: &[u8], tensor: &str) -> Result<(Vec<u8>, Option<usize>), EditError> {
    let all = fields(graph)?;
    // Which node computes each tensor, and each node's inputs.
    let nodes: Vec<(usize, Vec<String>, Vec<String>)> = all
        .iter()
        .enumerate()
        .filter(|(_, f)| f.number == 1 && f.wire == 2)
        .map(|(i, f)| Ok((i, strings(f.payload, 1)?, strings(f.payload, 2)?)))
        .collect::<Result<_, EditError>>()?;
    // A node with a subgraph (If, Loop, Scan: an attribute `g` (6) or `graphs` (11)) may read outer tensors
    // its inputs do not name: such a graph is not cut, rather than cut wrong.
    for f in all.iter().filter(|f| f.number == 1 && f.wire == 2) {
        for attribute in fields(f.payload)?.iter().filter(|a| a.number == 5 && a.wire == 2) {
            if fields(attribute.payload)?.iter().any(|x| matches!(x.number, 6 | 11)) {
                return Err(EditError::Malformed("a node with a subgraph (If, Loop, Scan) cannot be cut around"));
            }
        }
    }
    let producer: HashMap<&str, usize> =
        nodes.iter().enumerate().flat_map(|(n, (_, _, outs))| outs.iter().map(move |o| (o.as_str(), n))).collect();
    if !producer.contains_key(tensor) {
        return Err(EditError::NoTensor(tensor.to_string()));
    }
    let mut keep_nodes = HashSet::new();
    let mut needed: HashSet<String> = HashSet::from([tensor.to_string()]);
    let mut queue = VecDeque::from([tensor.to_string()]);
    while let Some(t) = queue.pop_front() {
        if let Some(&n) = producer.get(t.as_str())
            && keep_nodes.insert(n)
        {
            for input in nodes[n].1.iter().filter(|i| !i.is_empty()) {
                if needed.insert(input.clone()) {
                    queue.push_back(input.clone());
                }
            }
        }
    }
    // Every tensor the kept nodes make, for value_info and annotations.
    let made: HashSet<&str> =
        keep_nodes.iter().flat_map(|&n| nodes[n].2.iter().map(String::as_str)).chain([tensor]).collect();
    let kept_fields: HashSet<usize> = keep_nodes.iter().map(|&n| nodes[n].0).collect();
    let mut width = None;
    let mut out = Vec::with_capacity(graph.len());
    for (i, f) in all.iter().enumerate() {
        let keep = match f.number {
            1 => kept_fields.contains(&i),
            5 => string(f.payload, 8)?.is_some_and(|n| needed.contains(&n)),
            11 => string(f.payload, 1)?.is_some_and(|n| needed.contains(&n)),
            12 => false,
            13 | 14 => {
                let name = string(f.payload, 1)?.unwrap_or_default();
                if f.number == 13 && name == tensor {
                    width = declared_width(f.payload);
                }
                made.contains(name.as_str())
            }
            _ => true,
        };
        if keep {
            out.extend_from_slice(f.raw);
        }
    }
    Ok((out, width))
}

/// The second dimension of a `ValueInfoProto`'s tensor shape, when it is a number.
fn declared_width(info: &[u8]) -> Option<usize> {
    let typ = fields(info).ok()?.into_iter().find(|f| f.number == 2)?.payload;
    let tensor = fields(typ).ok()?.into_iter().find(|f| f.number == 1)?.payload;
    let shape = fields(tensor).ok()?.into_iter().find(|f| f.number == 2)?.payload;
    let dims: Vec<Field<'_>> = fields(shape).ok()?.into_iter().filter(|f| f.number == 1).collect();
    let second = fields(dims.get(1)?.payload).ok()?.into_iter().find(|f| f.number == 1 && f.wire == 0)?;
    let mut pos = 0;
    usize::try_from(read_varint(second.payload, &mut pos).ok()?).ok()
}

/// `model` cut at the inner tensor `tensor`: only the nodes and initializers that compute it, and it as the
/// one output (a base model's trunk, giving its features).
pub fn cut_at(model: &[u8], tensor: &str) -> Result<Vec<u8>, EditError> {
    let (mut graph, width) = cut_graph(graph_of(model)?, tensor)?;
    put_bytes(&mut graph, 12, &float_value_info(tensor, width));
    replace_graph(model, &graph)
}

/// A linear head on a model's feature tensor: `probabilities = softmax(f · weightsᵀ + bias)`, `f` the
/// features, or with a `centre` the features minus it, scaled to length 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Head<'a> {
    /// The feature tensor's name (`[batch, width]`).
    pub features: &'a str,
    /// `width` values subtracted from the features before they are scaled to length 1 (`None`: the
    /// features as they are).
    pub centre: Option<&'a [f32]>,
    /// `classes × width`, row-major.
    pub weights: &'a [f32],
    pub bias: &'a [f32],
}

/// The name of the taught model's output.
pub const HEAD_OUTPUT: &str = "probabilities";

/// `model` cut at `head.features`, followed by the head (Sub, LpNormalization, Gemm, Softmax: plain ONNX
/// operators): one output, [`HEAD_OUTPUT`], `[batch, classes]`.
pub fn with_head(model: &[u8], head: &Head<'_>) -> Result<Vec<u8>, EditError> {
    let classes = head.bias.len();
    let width = head.weights.len().checked_div(classes).unwrap_or(0);
    if classes == 0 || width * classes != head.weights.len() || head.centre.is_some_and(|c| c.len() != width) {
        return Err(EditError::Malformed("head weights do not match its classes"));
    }
    let (mut graph, _) = cut_graph(graph_of(model)?, head.features)?;
    let (centre, centred, unit) = ("camclassd.head.centre", "camclassd.head.centred", "camclassd.head.unit");
    let (w, b, logits) = ("camclassd.head.w", "camclassd.head.b", "camclassd.head.logits");
    let input = match head.centre {
        Some(values) => {
            put_bytes(
                &mut graph,
                1,
                &node("Sub", "camclassd.head.centring", &[head.features, centre], &[centred], &[]),
            );
            let l2 = node("LpNormalization", "camclassd.head.l2", &[centred], &[unit], &[("axis", 1), ("p", 2)]);
            put_bytes(&mut graph, 1, &l2);
            put_bytes(&mut graph, 5, &float_initializer(centre, &[width], values));
            unit
        }
        None => head.features,
    };
    put_bytes(&mut graph, 1, &node("Gemm", "camclassd.head", &[input, w, b], &[logits], &[("transB", 1)]));
    put_bytes(&mut graph, 1, &node("Softmax", "camclassd.head.softmax", &[logits], &[HEAD_OUTPUT], &[("axis", 1)]));
    put_bytes(&mut graph, 5, &float_initializer(w, &[classes, width], head.weights));
    put_bytes(&mut graph, 5, &float_initializer(b, &[classes], head.bias));
    put_bytes(&mut graph, 12, &float_value_info(HEAD_OUTPUT, Some(classes)));
    replace_graph(model, &graph)
}

/// `model` with its `producer_name` (field 2) and `doc_string` (field 6) replaced: what made the file and
/// what it is, as `inspect` and Netron show them.
pub fn set_description(model: &[u8], producer: &str, doc: &str) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(model.len() + doc.len());
    for f in fields(model)? {
        if !matches!(f.number, 2 | 6) || f.wire != 2 {
            out.extend_from_slice(f.raw);
        }
    }
    put_bytes(&mut out, 2, producer.as_bytes());
    put_bytes(&mut out, 6, doc.as_bytes());
    Ok(out)
}

/// `model`'s metadata entries (`metadata_props`), in order.
pub fn metadata(model: &[u8]) -> Result<Vec<(String, String)>, EditError> {
    fields(model)?
        .into_iter()
        .filter(|f| f.number == 14 && f.wire == 2)
        .map(|f| Ok((string(f.payload, 1)?.unwrap_or_default(), string(f.payload, 2)?.unwrap_or_default())))
        .collect()
}

/// `model` with the metadata entries whose key `drop` accepts left out, and `entries` appended.
pub fn set_metadata(model: &[u8], drop: impl Fn(&str) -> bool, entries: &[(&str, &str)]) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(model.len() + entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>());
    for f in fields(model)? {
        if f.number == 14 && f.wire == 2 && drop(&string(f.payload, 1)?.unwrap_or_default()) {
            continue;
        }
        out.extend_from_slice(f.raw);
    }
    for (key, value) in entries {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
        put_bytes(&mut entry, 1, key.as_bytes());
        put_bytes(&mut entry, 2, value.as_bytes());
        put_bytes(&mut out, 14, &entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny model: input → A → x → B → y (output), with an initializer only B uses.
    fn model() -> Vec<u8> {
        let mut graph = Vec::new();
        put_bytes(&mut graph, 1, &node("Relu", "a", &["input"], &["x"], &[]));
        put_bytes(&mut graph, 1, &node("Add", "b", &["x", "k"], &["y"], &[]));
        put_bytes(&mut graph, 5, &float_initializer("k", &[1], &[1.0]));
        put_bytes(&mut graph, 11, &float_value_info("input", Some(3)));
        put_bytes(&mut graph, 12, &float_value_info("y", Some(3)));
        put_bytes(&mut graph, 13, &float_value_info("x", Some(3)));
        let mut m = Vec::new();
        put_int(&mut m, 1, 7);
        put_bytes(&mut m, 7, &graph);
        put_bytes(&mut m, 14, &{
            let mut e = Vec::new();
            put_bytes(&mut e, 1, b"camclassd.labels");
            put_bytes(&mut e, 2, b"a\nb");
            e
        });
        m
    }

    #[test]
    fn a_cut_keeps_what_computes_the_tensor_and_makes_it_the_output() {
        let cut = cut_at(&model(), "x").expect("cut");
        let graph = graph_of(&cut).expect("graph");
        let nodes: Vec<String> = fields(graph)
            .unwrap()
            .iter()
            .filter(|f| f.number == 1)
            .map(|f| string(f.payload, 3).unwrap().unwrap())
            .collect();
        assert_eq!(nodes, ["a"]);
        let inits = fields(graph).unwrap().iter().filter(|f| f.number == 5).count();
        assert_eq!(inits, 0, "the initializer only B used is gone");
        let outputs: Vec<String> = fields(graph)
            .unwrap()
            .iter()
            .filter(|f| f.number == 12)
            .map(|f| string(f.payload, 1).unwrap().unwrap())
            .collect();
        assert_eq!(outputs, ["x"]);
        let out = fields(graph).unwrap().into_iter().find(|f| f.number == 12).unwrap();
        assert_eq!(declared_width(out.payload), Some(3), "the width the graph declared is kept");
        assert_eq!(metadata(&cut).unwrap(), [("camclassd.labels".to_string(), "a\nb".to_string())]);
        assert_eq!(cut_at(&model(), "nope"), Err(EditError::NoTensor("nope".into())));
    }

    #[test]
    fn a_head_is_a_gemm_and_a_softmax_on_the_features() {
        let head = Head {
            features: "x",
            centre: Some(&[0.0; 3]),
            weights: &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            bias: &[0.5, -0.5],
        };
        let m = with_head(&model(), &head).expect("head");
        let graph = graph_of(&m).unwrap();
        let ops: Vec<String> = fields(graph)
            .unwrap()
            .iter()
            .filter(|f| f.number == 1)
            .map(|f| string(f.payload, 4).unwrap().unwrap())
            .collect();
        assert_eq!(ops, ["Relu", "Sub", "LpNormalization", "Gemm", "Softmax"]);
        let out = fields(graph).unwrap().into_iter().find(|f| f.number == 12).unwrap();
        assert_eq!(string(out.payload, 1).unwrap().as_deref(), Some(HEAD_OUTPUT));
        assert_eq!(declared_width(out.payload), Some(2));
        let bad = Head { features: "x", centre: None, weights: &[1.0; 5], bias: &[0.0, 0.0] };
        assert!(with_head(&model(), &bad).is_err());
        let plain = Head { features: "x", centre: None, weights: &[1.0; 6], bias: &[0.0, 0.0] };
        let m = with_head(&model(), &plain).expect("head");
        let ops: Vec<String> = fields(graph_of(&m).unwrap())
            .unwrap()
            .iter()
            .filter(|f| f.number == 1)
            .map(|f| string(f.payload, 4).unwrap().unwrap())
            .collect();
        assert_eq!(ops, ["Relu", "Gemm", "Softmax"], "no scaling step: the standardisation is in the weights");
        assert!(with_head(&model(), &bad).is_err());
    }

    #[test]
    fn metadata_is_replaced_and_appended_without_touching_the_rest() {
        let m = set_metadata(&model(), |k| k == "camclassd.labels", &[("camclassd.labels", "open\nclosed")]).unwrap();
        assert_eq!(metadata(&m).unwrap(), [("camclassd.labels".to_string(), "open\nclosed".to_string())]);
        assert_eq!(graph_of(&m).unwrap(), graph_of(&model()).unwrap(), "the graph's bytes as they were");
        assert!(fields(&[0x0f]).is_err(), "wire type 7");
    }
}
