//! [`TensorWriter`]: one model's recipe applied to a region of a decoded [`Picture`]: crop, resize (Pillow's
//! algorithm, [`super::resample`]), normalise into one slot of the model's input tensor (floats for a float
//! model; the resized RGB bytes themselves, in the model's layout and channel order, for a uint8 model). It
//! owns the recipe state: the normalisation table, the filter and its coefficients, the resized buffer.

use super::resample::{Filter, Resampler};
use super::{CropSpec, Need, Picture, PreprocessError, Rect, Target, arrange, geometry, normalize};
use crate::model::spec::{ChannelOrder, Crop, InputType, Interpolation, Layout, ModelSpec, TensorSlot};

/// Reusable recipe state for one model: a region's geometry is fixed, so it allocates nothing after its first
/// frame.
pub struct TensorWriter {
    input_size: (u32, u32),
    resize: u32,
    crop: Crop,
    layout: Layout,
    input_type: InputType,
    /// For each tensor channel, the source RGB channel that feeds it.
    source_channel: [usize; 3],
    /// Per tensor channel, `(v - mean) / std` for every byte value: normalisation is one lookup.
    lut: Box<[[f32; 256]; 3]>,
    filter: Filter,
    resampler: Resampler,
    resized: Vec<u8>,
}

impl std::fmt::Debug for TensorWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorWriter")
            .field("input_size", &self.input_size)
            .field("resize", &self.resize)
            .field("crop", &self.crop)
            .field("layout", &self.layout)
            .field("input_type", &self.input_type)
            .finish_non_exhaustive()
    }
}

impl TensorWriter {
    pub fn new(spec: &ModelSpec) -> TensorWriter {
        let source_channel = match spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 - spec.mean[c]) / spec.std[c];
            }
        }
        let filter = match spec.interpolation {
            Interpolation::Nearest => Filter::Nearest,
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Bicubic => Filter::Bicubic,
            Interpolation::Lanczos3 => Filter::Lanczos3,
        };
        let (h, w) = spec.input_size;
        TensorWriter {
            input_size: spec.input_size,
            resize: spec.resize,
            crop: spec.crop,
            layout: spec.layout,
            input_type: spec.input_type,
            source_channel,
            lut,
            filter,
            resampler: Resampler::default(),
            resized: vec![0; w as usize * h as usize * 3],
        }
    }

    /// Number of values (floats or bytes) one image occupies in the tensor.
    pub fn tensor_len(&self) -> usize {
        self.resized.len()
    }

    /// What this recipe needs of a frame to read `crop` of it (all of it when `None`): a [`super::Decoder`]
    /// decodes a JPEG as reduced as every need of the frame allows.
    pub fn need(&self, crop: Option<CropSpec>) -> Need {
        Need { crop, target: Target::Recipe { input_size: self.input_size, resize: self.resize, mode: self.crop } }
    }

    /// Resizes, crops and normalises `rect` of `picture` (default: all of it) into `out` with this
    /// recipe: a region's tensor from a frame the [`super::Decoder`] decoded. `rect` is in the
    /// frame's pixels; a reduced picture is read at the matching decoded pixels ([`Picture::decoded_rect`]).
    /// The region is read where it lies in the picture (no copy); same-sized regions allocate nothing after
    /// the first.
    pub fn write_region(
        &mut self,
        picture: Picture<'_>,
        rect: Option<Rect>,
        out: TensorSlot<'_>,
    ) -> Result<(), PreprocessError> {
        if out.input_type() != self.input_type {
            return Err(PreprocessError::TensorType { got: out.input_type(), need: self.input_type });
        }
        if out.len() != self.resized.len() {
            return Err(PreprocessError::TensorSize { got: out.len(), need: self.resized.len() });
        }
        let rect = rect.unwrap_or(Rect { x: 0, y: 0, width: picture.width, height: picture.height });
        if !rect.fits(picture.width, picture.height) {
            return Err(PreprocessError::CropOutside { rect, width: picture.width, height: picture.height });
        }
        let rect = picture.decoded_rect(rect);
        let (out_h, out_w) = self.input_size;
        let geometry = geometry((rect.width, rect.height), (out_w, out_h), self.resize, self.crop);
        self.resampler.resample_view(
            picture.rgb,
            picture.decoded_size().0,
            (rect.x, rect.y),
            &mut self.resized,
            geometry,
            self.filter,
        );
        match out {
            TensorSlot::F32(out) => normalize(&self.resized, &self.lut, self.source_channel, self.layout, out),
            TensorSlot::U8(out) => arrange(&self.resized, self.source_channel, self.layout, out),
        }
        Ok(())
    }
}
