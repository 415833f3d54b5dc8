//! `ModelSpec`: how to turn a picture into this model's input tensor, and how to read its output.
//!
//! The recipe travels inside the model as ONNX `metadata_props` (`camclassd.*` keys, written by
//! `models/build_models.py`), and any field can be overridden from the config. A float-input model without
//! the keys needs at least `mean` and `std` in the config: guessing a normalisation gives confident wrong
//! answers. A uint8-input model (a TFLite conversion, a Teachable Machine export) takes the resized RGB
//! bytes as they are and normalises them itself, so it needs no recipe at all: the layout and size come
//! from its input shape.

use std::collections::HashMap;
use std::fmt;

pub use crate::config::model::{
    ChannelOrder, Crop, Interpolation, Layout, MAX_INPUT_SIDE, MAX_RESIZE, OutputKind, Overrides, exact_array,
    input_size_too_large,
};

/// Metadata key prefix for camclassd's preprocessing recipe.
pub const KEY_PREFIX: &str = "camclassd.";

/// The element type of the model's image input, read from the session (never configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputType {
    /// Normalised floats: `(pixel - mean) / std` per channel.
    #[default]
    Float32,
    /// Raw pixels 0..255, as TFLite conversions and Teachable Machine exports take them: the model
    /// normalises them itself, so `mean` and `std` do not apply.
    Uint8,
}

impl InputType {
    /// From ONNX's element type name (`float32`, `uint8`; numpy's names, as `inspect` prints them).
    pub fn from_name(name: &str) -> Option<InputType> {
        match name {
            "float32" | "float" | "f32" => Some(InputType::Float32),
            "uint8" | "u8" => Some(InputType::Uint8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::Float32 => "float32",
            InputType::Uint8 => "uint8",
        }
    }

    /// What the model is fed, in words.
    pub fn feeds(self) -> &'static str {
        match self {
            InputType::Float32 => "normalised pixels, (v - mean) / std",
            InputType::Uint8 => "raw pixels 0..255",
        }
    }
}

/// The element types camclassd feeds, for errors about the others.
pub const SUPPORTED_INPUT_TYPES: &str = "float32 (normalised pixels) or uint8 (raw pixels 0..255, as TFLite conversions and Teachable Machine exports take)";

/// One image's part of an input tensor, for the preprocessor to fill: floats or bytes, as the model takes.
#[derive(Debug)]
pub enum TensorSlot<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

impl TensorSlot<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorSlot::F32(s) => s.len(),
            TensorSlot::U8(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn input_type(&self) -> InputType {
        match self {
            TensorSlot::F32(_) => InputType::Float32,
            TensorSlot::U8(_) => InputType::Uint8,
        }
    }
}

impl ModelSpec {
    /// A plain recipe (NCHW float RGB, a 1x1 input, no normalisation, logits, no labels): the base that tests
    /// and tools build their own recipes on (`ModelSpec { input_size, ..ModelSpec::plain() }`). Nothing
    /// decodes with it: a [`crate::preprocess::Decoder`] needs no recipe.
    pub fn plain() -> ModelSpec {
        ModelSpec {
            name: String::new(),
            layout: Layout::Nchw,
            input_type: InputType::Float32,
            channel_order: ChannelOrder::Rgb,
            input_size: (1, 1),
            resize: 1,
            crop: Crop::Center,
            interpolation: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0; 3],
            output: OutputKind::Logits,
            labels: Vec::new(),
            threshold: None,
        }
    }
}

/// The preprocessing and output recipe of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub layout: Layout,
    /// Floats normalised with `mean`/`std`, or raw bytes (then `mean` is 0 and `std` 1: the identity).
    pub input_type: InputType,
    pub channel_order: ChannelOrder,
    /// (height, width) of the input tensor.
    pub input_size: (u32, u32),
    /// Shorter side after resizing, before the centre crop.
    pub resize: u32,
    pub crop: Crop,
    pub interpolation: Interpolation,
    /// Per-channel mean and standard deviation in pixel units (0..255), in the tensor's channel order;
    /// 0 and 1 (unused) for a uint8 input.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub output: OutputKind,
    /// Class names, index = class id; empty when the model and config have none.
    pub labels: Vec<String>,
    /// The score its answers need to be trusted (`camclassd.threshold`, proposed by `camclassd train` from
    /// its cross-validation): the default class threshold of the regions that ask it; under it, the state is
    /// unknown. `None`: `[model] min_score`.
    pub threshold: Option<f32>,
}

/// Why a recipe could not be assembled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("metadata {key}: {message} (got {value:?})")]
    BadMetadata { key: String, value: String, message: String },
    #[error(
        "the model carries no preprocessing metadata for {missing}; set them under [model.preprocess] in the \
         config (for example mean = [123.675, 116.28, 103.53] and std = [58.395, 57.12, 57.375] for \
         torchvision-style models, or mean = [127.5, 127.5, 127.5] and std = [127.5, 127.5, 127.5] for [-1, 1] inputs)"
    )]
    Missing { missing: MissingKeys },
    #[error("{0}")]
    Invalid(String),
}

/// The list of required keys that neither the model nor the config provided.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingKeys(pub Vec<&'static str>);

impl fmt::Display for MissingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

/// What the session says about the input tensor: its four dimensions, `None` where symbolic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape(pub [Option<u32>; 4]);

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(v) => write!(f, "{v}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

/// Where a model's layout came from, for the error when it does not fit the input.
fn layout_origin(from_config: bool) -> &'static str {
    if from_config { "[model.preprocess] layout" } else { "the model's metadata (camclassd.layout)" }
}

impl InputShape {
    /// The layout the dimensions imply: 3 channels in position 1 (NCHW) or 3 (NHWC).
    pub fn implied_layout(&self) -> Option<Layout> {
        match (self.0[1], self.0[3]) {
            (Some(3), Some(3)) => None,
            (Some(3), _) => Some(Layout::Nchw),
            (_, Some(3)) => Some(Layout::Nhwc),
            _ => None,
        }
    }

    fn spatial(&self, layout: Layout) -> (Option<u32>, Option<u32>) {
        match layout {
            Layout::Nchw => (self.0[2], self.0[3]),
            Layout::Nhwc => (self.0[1], self.0[2]),
        }
    }
}

impl ModelSpec {
    /// Builds the recipe from metadata, config overrides and the session's input shape.
    pub fn resolve(
        name: &str,
        metadata: &HashMap<String, String>,
        overrides: &Overrides,
        shape: InputShape,
        input_type: InputType,
    ) -> Result<ModelSpec, SpecError> {
        let meta = |key: &str| metadata.get(&format!("{KEY_PREFIX}{key}")).map(String::as_str);

        let (layout, from_config) = match overrides.layout {
            Some(l) => (l, true),
            None => match meta("layout") {
                Some(v) => (parse_enum(v, "layout", &[("nchw", Layout::Nchw), ("nhwc", Layout::Nhwc)])?, false),
                None => match shape.implied_layout() {
                    Some(l) => (l, false),
                    None if shape.0[1] == Some(3) && shape.0[3] == Some(3) => {
                        return Err(SpecError::Invalid(format!(
                            "its input {shape} has 3 in both the NCHW and the NHWC channel place, so the layout is \
                             ambiguous; set [model.preprocess] layout = \"nchw\" or \"nhwc\" (classify: --layout)"
                        )));
                    }
                    None if shape.0[1].is_none() || shape.0[3].is_none() => {
                        return Err(SpecError::Invalid(format!(
                            "its input {shape} does not say where the 3 colour channels are (NCHW or NHWC); set \
                             [model.preprocess] layout = \"nchw\" or \"nhwc\" (classify: --layout)"
                        )));
                    }
                    None => {
                        return Err(SpecError::Invalid(format!(
                            "its input {shape} has no dimension of 3 colour channels (NCHW or NHWC); camclassd \
                             feeds 3-channel colour images"
                        )));
                    }
                },
            },
        };
        let channels = match layout {
            Layout::Nchw => shape.0[1],
            Layout::Nhwc => shape.0[3],
        };
        if let Some(c) = channels.filter(|&c| c != 3) {
            let other = match layout {
                Layout::Nchw => "nhwc",
                Layout::Nhwc => "nchw",
            };
            let fix = match shape.implied_layout() {
                Some(_) => format!(
                    "; {} says {layout}: set [model.preprocess] layout = \"{other}\"",
                    layout_origin(from_config)
                ),
                None => String::new(),
            };
            return Err(SpecError::Invalid(format!(
                "its input {shape} has {c} channels in {layout} layout; camclassd feeds 3-channel colour images{fix}"
            )));
        }

        let (fixed_h, fixed_w) = shape.spatial(layout);
        let input_size = match overrides.input_size {
            Some([h, w]) => (h, w),
            None => match meta("input_size") {
                Some(v) => {
                    let [h, w] = parse_numbers::<u32, 2>(v, "input_size")?;
                    (h, w)
                }
                None => match (fixed_h, fixed_w) {
                    (Some(h), Some(w)) => (h, w),
                    _ => return Err(SpecError::Missing { missing: MissingKeys(vec!["input_size"]) }),
                },
            },
        };
        if input_size.0 == 0 || input_size.1 == 0 {
            return Err(SpecError::Invalid(format!("input_size {input_size:?} must be positive")));
        }
        if fixed_h.is_some_and(|h| h != input_size.0) || fixed_w.is_some_and(|w| w != input_size.1) {
            return Err(SpecError::Invalid(format!(
                "input_size {}x{} does not match the model's fixed input {}x{}",
                input_size.0,
                input_size.1,
                fixed_h.map_or("?".into(), |v| v.to_string()),
                fixed_w.map_or("?".into(), |v| v.to_string()),
            )));
        }

        let channel_order = match overrides.channel_order {
            Some(c) => c,
            None => meta("channel_order")
                .map(|v| parse_enum(v, "channel_order", &[("rgb", ChannelOrder::Rgb), ("bgr", ChannelOrder::Bgr)]))
                .transpose()?
                .unwrap_or(ChannelOrder::Rgb),
        };
        let crop = match overrides.crop {
            Some(c) => c,
            None => meta("crop")
                .map(|v| {
                    parse_enum(v, "crop", &[("center", Crop::Center), ("centre", Crop::Center), ("none", Crop::None)])
                })
                .transpose()?
                .unwrap_or(Crop::Center),
        };
        let interpolation = match overrides.interpolation {
            Some(i) => i,
            None => meta("interpolation")
                .map(|v| {
                    parse_enum(
                        v,
                        "interpolation",
                        &[
                            ("nearest", Interpolation::Nearest),
                            ("bilinear", Interpolation::Bilinear),
                            ("bicubic", Interpolation::Bicubic),
                            ("lanczos3", Interpolation::Lanczos3),
                        ],
                    )
                })
                .transpose()?
                .unwrap_or(Interpolation::Bilinear),
        };
        // The common ImageNet recipe resizes to 256 before a 224 crop: keep that 0.875 ratio by default.
        let default_resize = (input_size.0.min(input_size.1) as f32 / 0.875).round() as u32;
        let resize = match overrides.resize {
            Some(r) => r,
            None => meta("resize")
                .map(|v| parse_numbers::<u32, 1>(v, "resize").map(|[r]| r))
                .transpose()?
                .unwrap_or(default_resize),
        };
        // Wherever they come from (metadata, a fixed input shape, the config): bounded before any tensor exists.
        if input_size.0.max(input_size.1) > MAX_INPUT_SIDE {
            return Err(SpecError::Invalid(input_size_too_large(input_size.0, input_size.1)));
        }
        if resize > MAX_RESIZE {
            return Err(SpecError::Invalid(format!(
                "resize {resize} is more than {MAX_RESIZE}; it is the shorter side before the centre crop"
            )));
        }
        if crop == Crop::Center && resize < input_size.0.max(input_size.1) {
            return Err(SpecError::Invalid(format!(
                "resize {resize} is smaller than the input size {}x{}; a centre crop needs resize >= {}",
                input_size.0,
                input_size.1,
                input_size.0.max(input_size.1)
            )));
        }

        let (mean, std) = match input_type {
            InputType::Uint8 => {
                if overrides.mean.is_some() || overrides.std.is_some() {
                    return Err(SpecError::Invalid(
                        "[model.preprocess] mean/std do not apply: the model takes uint8 pixels (0..255) and \
                         normalises them itself; remove mean and std"
                            .into(),
                    ));
                }
                ([0.0; 3], [1.0; 3])
            }
            InputType::Float32 => normalisation(overrides, &meta)?,
        };

        let output = match overrides.output {
            Some(o) => o,
            None => meta("output")
                .map(|v| parse_enum(v, "output", &OutputKind::NAMES))
                .transpose()?
                .unwrap_or(OutputKind::Auto),
        };
        let labels = match meta("labels") {
            Some(text) => parse_labels(text).map_err(|message| SpecError::BadMetadata {
                key: format!("{KEY_PREFIX}labels"),
                value: text.chars().take(40).collect(),
                message,
            })?,
            None => Vec::new(),
        };
        let name = meta("model_name").unwrap_or(name).to_string();
        let threshold = match meta("threshold") {
            Some(v) => Some(v.trim().parse::<f32>().ok().filter(|t| (0.0..=1.0).contains(t)).ok_or_else(|| {
                SpecError::BadMetadata {
                    key: format!("{KEY_PREFIX}threshold"),
                    value: v.chars().take(40).collect(),
                    message: "expected a score from 0 to 1".into(),
                }
            })?),
            None => None,
        };

        Ok(ModelSpec {
            name,
            layout,
            input_type,
            channel_order,
            input_size,
            resize,
            crop,
            interpolation,
            mean,
            std,
            output,
            labels,
            threshold,
        })
    }
}

/// `mean` and `std` of a float-input model, from the config or the metadata; both are required.
fn normalisation<'m>(
    overrides: &Overrides,
    meta: &impl Fn(&str) -> Option<&'m str>,
) -> Result<([f32; 3], [f32; 3]), SpecError> {
    let mean = match overrides.mean {
        Some(m) => Some(m),
        None => meta("mean").map(|v| parse_numbers::<f32, 3>(v, "mean")).transpose()?,
    };
    let std = match overrides.std {
        Some(s) => Some(s),
        None => meta("std").map(|v| parse_numbers::<f32, 3>(v, "std")).transpose()?,
    };
    let (Some(mean), Some(std)) = (mean, std) else {
        let missing = [("mean", mean.is_none()), ("std", std.is_none())];
        let missing = missing.iter().filter(|(_, absent)| *absent).map(|(key, _)| *key).collect();
        return Err(SpecError::Missing { missing: MissingKeys(missing) });
    };
    if std.iter().any(|s| !s.is_finite() || *s <= 0.0) || mean.iter().any(|m| !m.is_finite()) {
        return Err(SpecError::Invalid(format!("mean {mean:?} / std {std:?}: std must be positive and both finite")));
    }
    Ok((mean, std))
}

/// Class names from a labels file or the model's metadata, told apart by content:
///
/// - a JSON object mapping class ids to names, as the ONNX Model Zoo ships `labels_map.txt`
///   (`{"0": "tench", "1": "goldfish", …}`); a value may also be a list whose last item is the name
///   (Keras' `imagenet_class_index.json`: `{"0": ["n01440764", "tench"], …}`). Every id from 0 to the
///   largest must be there, once;
/// - a JSON list of names (`["tench", "goldfish", …]`);
/// - otherwise plain text, one name per line (blank trailing lines ignored).
///
/// Text that starts like JSON (`{` or `[`) but is not valid JSON is an error, not a list of odd names.
pub fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return parse_json_labels(trimmed);
    }
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    Ok(labels)
}

fn parse_json_labels(text: &str) -> Result<Vec<String>, String> {
    use serde_json::Value;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("starts like JSON but is not valid JSON: {e}"))?;
    let name = |v: &Value, at: &str| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.trim().to_string()),
            Value::Array(items) => match items.last() {
                Some(Value::String(s)) => Ok(s.trim().to_string()),
                _ => Err(format!("the label of {at} is a list without a name (a string) at its end")),
            },
            other => Err(format!("the label of {at} is {other}, not a string")),
        }
    };
    match value {
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| name(v, &format!("class {i}"))).collect(),
        Value::Object(map) => {
            let mut labels: Vec<Option<String>> = vec![None; map.len()];
            for (key, v) in &map {
                let id: usize =
                    key.trim().parse().map_err(|_| format!("key {key:?} is not a class id (0, 1, 2, …)"))?;
                let slot = labels.get_mut(id).ok_or_else(|| {
                    format!("class id {id} is out of range: {} entries must be ids 0 to {}", map.len(), map.len() - 1)
                })?;
                if slot.is_some() {
                    return Err(format!("class id {id} appears twice"));
                }
                *slot = Some(name(v, &format!("class {key:?}"))?);
            }
            // `map.len()` slots, each id in range and none twice: every one is filled.
            Ok(labels.into_iter().map(Option::unwrap_or_default).collect())
        }
        _ => Err("JSON labels must be an object {\"0\": \"name\", …} or a list [\"name\", …]".into()),
    }
}

fn parse_enum<T: Copy>(value: &str, key: &str, options: &[(&str, T)]) -> Result<T, SpecError> {
    let lower = value.trim().to_ascii_lowercase();
    options.iter().find(|(n, _)| *n == lower).map(|(_, v)| *v).ok_or_else(|| SpecError::BadMetadata {
        key: format!("{KEY_PREFIX}{key}"),
        value: value.to_string(),
        message: format!("unknown value; expected {}", options.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
    })
}

fn parse_numbers<T: std::str::FromStr + Copy + Default, const N: usize>(
    value: &str,
    key: &str,
) -> Result<[T; N], SpecError> {
    let bad = || SpecError::BadMetadata {
        key: format!("{KEY_PREFIX}{key}"),
        value: value.to_string(),
        message: if N == 1 { "expected a number" } else { "expected comma-separated numbers" }.to_string(),
    };
    let mut out = [T::default(); N];
    let mut parts = value.split(',').map(str::trim);
    for slot in &mut out {
        *slot = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{KEY_PREFIX}{k}"), v.to_string())).collect()
    }

    const NCHW_224: InputShape = InputShape([None, Some(3), Some(224), Some(224)]);

    #[test]
    fn full_metadata_resolves() {
        let m = md(&[
            ("layout", "NCHW"),
            ("channel_order", "RGB"),
            ("input_size", "224,224"),
            ("resize", "256"),
            ("crop", "center"),
            ("interpolation", "bilinear"),
            ("mean", "127.5,127.5,127.5"),
            ("std", "127.5, 127.5, 127.5"),
            ("output", "logits"),
            ("labels", "tench\ngoldfish\n"),
            ("model_name", "efficientnet-lite0"),
        ]);
        let s = ModelSpec::resolve("file", &m, &Overrides::default(), NCHW_224, InputType::Float32).expect("resolves");
        assert_eq!(s.name, "efficientnet-lite0");
        assert_eq!(s.input_size, (224, 224));
        assert_eq!(s.resize, 256);
        assert_eq!(s.mean, [127.5; 3]);
        assert_eq!(s.output, OutputKind::Logits);
        assert_eq!(s.labels, vec!["tench", "goldfish"]);
    }

    #[test]
    fn missing_normalisation_names_the_keys_and_the_fix() {
        let e = ModelSpec::resolve("m", &HashMap::new(), &Overrides::default(), NCHW_224, InputType::Float32)
            .expect_err("no mean/std");
        assert_eq!(e, SpecError::Missing { missing: MissingKeys(vec!["mean", "std"]) });
        assert!(e.to_string().contains("[model.preprocess]"), "{e}");
    }

    #[test]
    fn overrides_win_and_defaults_follow_the_shape() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([255.0; 3]), ..Overrides::default() };
        let s = ModelSpec::resolve(
            "m",
            &md(&[("mean", "1,2,3")]),
            &o,
            InputShape([Some(1), Some(160), Some(160), Some(3)]),
            InputType::Float32,
        )
        .expect("resolves");
        assert_eq!(s.layout, Layout::Nhwc);
        assert_eq!(s.input_size, (160, 160));
        assert_eq!(s.resize, 183);
        assert_eq!(s.mean, [0.0; 3]);
        assert_eq!(s.output, OutputKind::Auto);
    }

    #[test]
    fn an_input_size_from_the_model_itself_is_bounded_too() {
        // A model's metadata (not the config) asks for 20000x20000: 18 s and 5.9 GB per image before.
        let m = md(&[("input_size", "20000,20000"), ("mean", "0,0,0"), ("std", "1,1,1")]);
        let dynamic = InputShape([None, Some(3), None, None]);
        let e = ModelSpec::resolve("m", &m, &Overrides::default(), dynamic, InputType::Float32).expect_err("too large");
        assert!(e.to_string().contains("20000x20000 is larger than 4096x4096"), "{e}");
        let m = md(&[("resize", "100000"), ("mean", "0,0,0"), ("std", "1,1,1")]);
        let e = ModelSpec::resolve("m", &m, &Overrides::default(), NCHW_224, InputType::Float32).expect_err("resize");
        assert!(e.to_string().contains("resize 100000 is more than 8192"), "{e}");
    }

    #[test]
    fn bad_metadata_is_reported_with_key_and_value() {
        let e = ModelSpec::resolve(
            "m",
            &md(&[("mean", "1,2"), ("std", "1,1,1")]),
            &Overrides::default(),
            NCHW_224,
            InputType::Float32,
        )
        .expect_err("two numbers");
        assert_eq!(e.to_string(), "metadata camclassd.mean: expected comma-separated numbers (got \"1,2\")");
    }

    #[test]
    fn non_image_inputs_are_rejected() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), ..Overrides::default() };
        let e = ModelSpec::resolve(
            "m",
            &HashMap::new(),
            &o,
            InputShape([Some(1), Some(1), Some(28), Some(28)]),
            InputType::Float32,
        )
        .expect_err("1 channel");
        assert!(e.to_string().contains("NCHW or NHWC"), "{e}");
        let e = ModelSpec::resolve("m", &HashMap::new(), &o, InputShape([None, None, None, None]), InputType::Float32)
            .expect_err("dynamic");
        assert!(e.to_string().contains("layout"), "{e}");
    }

    #[test]
    fn an_ambiguous_or_contradicted_layout_says_what_to_set() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), crop: Some(Crop::None), ..Overrides::default() };
        let both = InputShape([Some(1), Some(3), Some(32), Some(3)]);
        let e = ModelSpec::resolve("m", &HashMap::new(), &o, both, InputType::Float32).expect_err("ambiguous");
        let text = e.to_string();
        assert!(text.contains("[1, 3, 32, 3]") && text.contains("ambiguous"), "{text}");
        assert!(text.contains("[model.preprocess] layout = \"nchw\" or \"nhwc\""), "{text}");
        let nhwc = Overrides { layout: Some(Layout::Nhwc), ..o.clone() };
        let s = ModelSpec::resolve("m", &HashMap::new(), &nhwc, both, InputType::Float32).expect("layout set");
        assert_eq!((s.layout, s.input_size), (Layout::Nhwc, (3, 32)));
        let s = ModelSpec::resolve("m", &md(&[("layout", "nchw")]), &o, both, InputType::Float32).expect("metadata");
        assert_eq!((s.layout, s.input_size), (Layout::Nchw, (32, 3)));
        // A layout that does not fit the shape names where it came from and the fix.
        let e = ModelSpec::resolve("m", &HashMap::new(), &nhwc, NCHW_224, InputType::Float32).expect_err("wrong");
        let text = e.to_string();
        assert!(text.contains("224 channels in NHWC layout"), "{text}");
        assert!(
            text.contains("[model.preprocess] layout says NHWC: set [model.preprocess] layout = \"nchw\""),
            "{text}"
        );
    }

    #[test]
    fn a_uint8_model_needs_no_recipe_and_refuses_a_normalisation() {
        let nhwc = InputShape([None, Some(224), Some(224), Some(3)]);
        let s = ModelSpec::resolve("tm", &HashMap::new(), &Overrides::default(), nhwc, InputType::Uint8)
            .expect("no metadata needed");
        assert_eq!((s.layout, s.input_type, s.input_size, s.resize), (Layout::Nhwc, InputType::Uint8, (224, 224), 256));
        assert_eq!((s.mean, s.std), ([0.0; 3], [1.0; 3]));
        let o = Overrides { mean: Some([127.5; 3]), ..Overrides::default() };
        let e = ModelSpec::resolve("tm", &HashMap::new(), &o, nhwc, InputType::Uint8).expect_err("mean");
        assert!(e.to_string().contains("uint8 pixels") && e.to_string().contains("remove mean and std"), "{e}");
        // The same shape in float needs mean and std.
        let e = ModelSpec::resolve("tm", &HashMap::new(), &Overrides::default(), nhwc, InputType::Float32)
            .expect_err("float");
        assert_eq!(e, SpecError::Missing { missing: MissingKeys(vec!["mean", "std"]) });
    }

    #[test]
    fn output_kinds_parse_from_metadata_and_config() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), ..Overrides::default() };
        for (text, kind) in OutputKind::NAMES {
            let s = ModelSpec::resolve("m", &md(&[("output", text)]), &o, NCHW_224, InputType::Float32).expect(text);
            assert_eq!(s.output, kind);
            assert_eq!(kind.name(), text);
        }
        let e = ModelSpec::resolve("m", &md(&[("output", "softmax")]), &o, NCHW_224, InputType::Float32)
            .expect_err("unknown");
        assert!(e.to_string().contains("expected logits, probabilities, sigmoid, sigmoid_logits, auto"), "{e}");
        let parsed: Overrides = toml::from_str("output = \"sigmoid_logits\"\nlayout = \"nhwc\"").expect("toml");
        assert_eq!((parsed.output, parsed.layout), (Some(OutputKind::SigmoidLogits), Some(Layout::Nhwc)));
        assert!(OutputKind::Sigmoid.is_multi_label() && !OutputKind::Logits.is_multi_label());
    }

    #[test]
    fn labels_are_text_lines_a_json_map_or_a_json_list() {
        let lines = parse_labels("tench\ngoldfish\n\n").expect("text");
        assert_eq!(lines, ["tench", "goldfish"]);
        assert_eq!(parse_labels(r#"{"1": "goldfish", "0": "tench"}"#).expect("map"), lines);
        assert_eq!(parse_labels(" [\"tench\", \"goldfish\"]\n").expect("list"), lines);
        assert_eq!(
            parse_labels(r#"{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}"#).expect("keras"),
            lines
        );
        for (bad, why) in [
            (r#"{"0": "tench", "2": "goldfish"}"#, "class id 2 is out of range"),
            (r#"{"0": "tench", "x": "goldfish"}"#, "key \"x\" is not a class id"),
            (r#"{"0": "tench", " 0": "goldfish"}"#, "class id 0 appears twice"),
            (r#"{"0": 5}"#, "is 5, not a string"),
            ("[\"tench\", ", "not valid JSON"),
            ("7", ""),
        ] {
            match parse_labels(bad) {
                Err(e) => assert!(e.contains(why), "{bad}: {e}"),
                Ok(l) => assert!(why.is_empty(), "{bad} gave {l:?}"),
            }
        }
    }

    #[test]
    fn dynamic_spatial_dims_need_an_input_size() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), ..Overrides::default() };
        let e =
            ModelSpec::resolve("m", &HashMap::new(), &o, InputShape([None, Some(3), None, None]), InputType::Float32)
                .expect_err("size");
        assert_eq!(e, SpecError::Missing { missing: MissingKeys(vec!["input_size"]) });
    }
}
