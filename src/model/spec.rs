//! `ModelSpec`: how to turn a picture into this model's input tensor, and how to read its output.
//!
//! The recipe travels inside the model as ONNX `metadata_props` (`camclassd.*` keys, written by
//! `models/build_models.py`), and any field can be overridden from the config. A model without the keys
//! needs at least `mean` and `std` in the config: guessing a normalisation gives confident wrong answers.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

/// Metadata key prefix for camclassd's preprocessing recipe.
pub const KEY_PREFIX: &str = "camclassd.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// Resize the shorter side to `resize`, then cut the input size out of the centre.
    Center,
    /// Stretch the whole picture to the input size.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Raw scores: camclassd applies softmax.
    Logits,
    /// Already probabilities.
    Probabilities,
    /// Decided once, when the model is loaded ([`OutputKind::resolve`]): never per frame.
    Auto,
}

impl ModelSpec {
    /// A recipe for decoding alone (checking that pictures decode, whatever model will take them): decoding
    /// does not depend on the recipe, so any valid one will do.
    pub fn for_decoding() -> ModelSpec {
        ModelSpec {
            name: String::new(),
            layout: Layout::Nchw,
            channel_order: ChannelOrder::Rgb,
            input_size: (1, 1),
            resize: 1,
            crop: Crop::Center,
            interpolation: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0; 3],
            output: OutputKind::Logits,
            labels: Vec::new(),
        }
    }
}

impl OutputKind {
    /// `Auto` decided from the model's warm-up output: a vector in [0, 1] summing to 1 is probabilities,
    /// anything else logits. Once per model, so a logits model whose scores for one frame happen to look
    /// like probabilities still gets its softmax on that frame.
    pub fn resolve(self, warm_up: &[f32]) -> OutputKind {
        match self {
            OutputKind::Auto if crate::postprocess::looks_like_probabilities(warm_up) => OutputKind::Probabilities,
            OutputKind::Auto => OutputKind::Logits,
            decided => decided,
        }
    }
}

/// The preprocessing and output recipe of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub layout: Layout,
    pub channel_order: ChannelOrder,
    /// (height, width) of the input tensor.
    pub input_size: (u32, u32),
    /// Shorter side after resizing, before the centre crop.
    pub resize: u32,
    pub crop: Crop,
    pub interpolation: Interpolation,
    /// Per-channel mean and standard deviation in pixel units (0..255), in the tensor's channel order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub output: OutputKind,
    /// Class names, index = class id; empty when the model and config have none.
    pub labels: Vec<String>,
}

/// Config overrides (`[model.preprocess]`); every field wins over the model's metadata.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub layout: Option<Layout>,
    pub channel_order: Option<ChannelOrder>,
    #[serde(default, deserialize_with = "exact_array")]
    pub input_size: Option<[u32; 2]>,
    pub resize: Option<u32>,
    pub crop: Option<Crop>,
    pub interpolation: Option<Interpolation>,
    #[serde(default, deserialize_with = "exact_array")]
    pub mean: Option<[f32; 3]>,
    #[serde(default, deserialize_with = "exact_array")]
    pub std: Option<[f32; 3]>,
    pub output: Option<OutputKind>,
}

/// A fixed-length list from a config file, refusing a longer one as a shorter one is refused: serde's
/// arrays silently ignore extra values (`mean = [1, 2, 3, 4]` would lose the 4).
pub fn exact_array<'de, D, T, const N: usize>(d: D) -> Result<Option<[T; N]>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::Error;
    let Some(values) = Option::<Vec<T>>::deserialize(d)? else { return Ok(None) };
    let n = values.len();
    values.try_into().map(Some).map_err(|_| D::Error::custom(format!("expected {N} values, got {n}")))
}

/// Why a recipe could not be assembled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("metadata {key}: {message} (got {value:?})")]
    BadMetadata { key: String, value: String, message: &'static str },
    #[error(
        "the model carries no preprocessing metadata for {missing}; set them under [model.preprocess] in the \
         config (for example mean = [123.675, 116.28, 103.53] and std = [58.395, 57.12, 57.375] for \
         torchvision-style models, or mean = [127.5, 127.5, 127.5] and std = [127.5, 127.5, 127.5] for [-1, 1] inputs)"
    )]
    Missing { missing: MissingKeys },
    #[error("{0}")]
    Invalid(String),
}

/// The largest input side, from the model or `[model.preprocess] input_size`: a 4096×4096 float tensor is already 192 MiB, and the
/// image classifiers camclassd runs take 224 to 600 pixels. `[20000, 20000]` took 18 s and 5.9 GB per image.
pub const MAX_INPUT_SIDE: u32 = 4096;
/// The largest `resize` (the shorter side before the crop): twice the largest input.
pub const MAX_RESIZE: u32 = 2 * MAX_INPUT_SIDE;

/// The message for an input size over [`MAX_INPUT_SIDE`] (config and `bench --input-size`).
pub fn input_size_too_large(h: u32, w: u32) -> String {
    format!(
        "{h}x{w} is larger than {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}: each side must be at most {MAX_INPUT_SIDE} pixels \
         (a {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} input is already a 192 MiB tensor; image classifiers take 224 to 600)"
    )
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
    ) -> Result<ModelSpec, SpecError> {
        let meta = |key: &str| metadata.get(&format!("{KEY_PREFIX}{key}")).map(String::as_str);

        let layout = match overrides.layout {
            Some(l) => l,
            None => match meta("layout") {
                Some(v) => parse_enum(v, "layout", &[("nchw", Layout::Nchw), ("nhwc", Layout::Nhwc)])?,
                None => shape.implied_layout().ok_or_else(|| {
                    SpecError::Invalid(
                        "cannot tell whether the input is NCHW or NHWC; set [model.preprocess] layout".into(),
                    )
                })?,
            },
        };
        let channels = match layout {
            Layout::Nchw => shape.0[1],
            Layout::Nhwc => shape.0[3],
        };
        if let Some(c) = channels.filter(|&c| c != 3) {
            return Err(SpecError::Invalid(format!(
                "the input has {c} channels in {layout:?} layout; camclassd feeds 3-channel colour images"
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

        let mut missing = Vec::new();
        let mean = match overrides.mean {
            Some(m) => Some(m),
            None => meta("mean").map(|v| parse_numbers::<f32, 3>(v, "mean")).transpose()?,
        };
        let std = match overrides.std {
            Some(s) => Some(s),
            None => meta("std").map(|v| parse_numbers::<f32, 3>(v, "std")).transpose()?,
        };
        if mean.is_none() {
            missing.push("mean");
        }
        if std.is_none() {
            missing.push("std");
        }
        let (Some(mean), Some(std)) = (mean, std) else {
            return Err(SpecError::Missing { missing: MissingKeys(missing) });
        };
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) || mean.iter().any(|m| !m.is_finite()) {
            return Err(SpecError::Invalid(format!(
                "mean {mean:?} / std {std:?}: std must be positive and both finite"
            )));
        }

        let output = match overrides.output {
            Some(o) => o,
            None => meta("output")
                .map(|v| {
                    parse_enum(
                        v,
                        "output",
                        &[
                            ("logits", OutputKind::Logits),
                            ("probabilities", OutputKind::Probabilities),
                            ("auto", OutputKind::Auto),
                        ],
                    )
                })
                .transpose()?
                .unwrap_or(OutputKind::Auto),
        };
        let labels = meta("labels").map(parse_labels).unwrap_or_default();
        let name = meta("model_name").unwrap_or(name).to_string();

        Ok(ModelSpec {
            name,
            layout,
            channel_order,
            input_size,
            resize,
            crop,
            interpolation,
            mean,
            std,
            output,
            labels,
        })
    }
}

/// Labels are stored one per line; blank trailing lines are ignored.
pub fn parse_labels(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    labels
}

fn parse_enum<T: Copy>(value: &str, key: &str, options: &[(&str, T)]) -> Result<T, SpecError> {
    let lower = value.trim().to_ascii_lowercase();
    options.iter().find(|(n, _)| *n == lower).map(|(_, v)| *v).ok_or_else(|| SpecError::BadMetadata {
        key: format!("{KEY_PREFIX}{key}"),
        value: value.to_string(),
        message: "unknown value",
    })
}

fn parse_numbers<T: std::str::FromStr + Copy + Default, const N: usize>(
    value: &str,
    key: &str,
) -> Result<[T; N], SpecError> {
    let bad = || SpecError::BadMetadata {
        key: format!("{KEY_PREFIX}{key}"),
        value: value.to_string(),
        message: if N == 1 { "expected a number" } else { "expected comma-separated numbers" },
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
        let s = ModelSpec::resolve("file", &m, &Overrides::default(), NCHW_224).expect("resolves");
        assert_eq!(s.name, "efficientnet-lite0");
        assert_eq!(s.input_size, (224, 224));
        assert_eq!(s.resize, 256);
        assert_eq!(s.mean, [127.5; 3]);
        assert_eq!(s.output, OutputKind::Logits);
        assert_eq!(s.labels, vec!["tench", "goldfish"]);
    }

    #[test]
    fn missing_normalisation_names_the_keys_and_the_fix() {
        let e = ModelSpec::resolve("m", &HashMap::new(), &Overrides::default(), NCHW_224).expect_err("no mean/std");
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
        let e = ModelSpec::resolve("m", &m, &Overrides::default(), dynamic).expect_err("too large");
        assert!(e.to_string().contains("20000x20000 is larger than 4096x4096"), "{e}");
        let m = md(&[("resize", "100000"), ("mean", "0,0,0"), ("std", "1,1,1")]);
        let e = ModelSpec::resolve("m", &m, &Overrides::default(), NCHW_224).expect_err("resize");
        assert!(e.to_string().contains("resize 100000 is more than 8192"), "{e}");
    }

    #[test]
    fn bad_metadata_is_reported_with_key_and_value() {
        let e = ModelSpec::resolve("m", &md(&[("mean", "1,2"), ("std", "1,1,1")]), &Overrides::default(), NCHW_224)
            .expect_err("two numbers");
        assert_eq!(e.to_string(), "metadata camclassd.mean: expected comma-separated numbers (got \"1,2\")");
    }

    #[test]
    fn non_image_inputs_are_rejected() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), ..Overrides::default() };
        let e = ModelSpec::resolve("m", &HashMap::new(), &o, InputShape([Some(1), Some(1), Some(28), Some(28)]))
            .expect_err("1 channel");
        assert!(e.to_string().contains("NCHW or NHWC"), "{e}");
        let e =
            ModelSpec::resolve("m", &HashMap::new(), &o, InputShape([None, None, None, None])).expect_err("dynamic");
        assert!(e.to_string().contains("layout"), "{e}");
    }

    #[test]
    fn dynamic_spatial_dims_need_an_input_size() {
        let o = Overrides { mean: Some([0.0; 3]), std: Some([1.0; 3]), ..Overrides::default() };
        let e =
            ModelSpec::resolve("m", &HashMap::new(), &o, InputShape([None, Some(3), None, None])).expect_err("size");
        assert_eq!(e, SpecError::Missing { missing: MissingKeys(vec!["input_size"]) });
    }
}
