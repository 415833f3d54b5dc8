//! Preprocessing: a frame (encoded file, MJPEG, raw RGB or YUYV) → the model's input tensor.
//!
//! Two steps, timed separately by the callers: [`Preprocessor::decode`] turns the frame into packed RGB8
//! (applying EXIF orientation, dropping alpha, reducing 16-bit and grey images), and
//! [`Preprocessor::write_tensor`] resizes the shorter side, centre-crops and normalises straight into the
//! model's input buffer (floats for a float model; the resized RGB bytes themselves, in the model's layout
//! and channel order, for a uint8 model). Resize and crop are one step ([`resample`]): only the cropped pixels of the resized
//! picture are computed, with Pillow's own algorithm, so the tensor equals the Python reference's (PIL
//! bilinear resize, then centre crop) bit for bit. Every buffer and the filter coefficients are kept and
//! reused, so a stream of same-sized frames allocates nothing after the first.
//!
//! JPEG is decoded by libjpeg-turbo ([`turbo`]), and [`Preprocessor::decode_for`] decodes it reduced by
//! 1/2, 1/4 or 1/8 in the DCT domain when every consumer of the frame ([`Need`]) still gets at least the
//! pixels its recipe resizes to ([`choose_scale`], the rule of Pillow's `Image.draft()`): a 1080p frame then
//! costs about what a VGA one does. A decoded [`Picture`] keeps the frame's own size, so crops stay in the
//! frame's pixels whatever the reduction.

mod decode;
mod isa;
mod mjpeg;
pub mod motion;
pub mod resample;
pub mod snapshot;
mod tensor;
pub mod turbo;

pub use decode::Decoder;
pub use tensor::TensorWriter;

use image::ColorType;

use resample::Geometry;

use crate::model::spec::{Crop, InputType, Layout, ModelSpec, TensorSlot};

/// The largest picture side accepted (a 16K frame).
pub const MAX_SIDE: u32 = 16384;
/// The most pixels decoded: 32 Mi (8K UHD, 7680×4320, fits). Decoding needs one buffer (the decoder's output,
/// converted to RGB8 in place), so an accepted picture takes at most 128 MiB (96 MiB in RGB8), not the
/// 1.15 GB a 16384×16384 PNG took: a board with 1 GB survives a hostile or mistaken file.
pub const MAX_PIXELS: u64 = 32 << 20;
/// The largest decoder output (16-bit or alpha pictures are larger than RGB8 per pixel).
pub const MAX_DECODED_BYTES: u64 = 128 << 20;
/// A decode buffer larger than this (and than twice the current picture's need) is given back after an
/// outsized picture: a 4K RGB frame takes 24 MiB.
const RETAINED_DECODE_BYTES: usize = 32 << 20;

/// The largest reduction of a JPEG decode: libjpeg's smallest DCT scaling, 1/8.
pub const MAX_REDUCTION: u32 = 8;

/// A decoded frame.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    /// The frame's size (upright, after EXIF orientation): crops and rectangles are in these pixels.
    pub width: u32,
    pub height: u32,
    /// The decoded pixels, packed RGB8: the frame reduced `scale` times, sides rounded up as libjpeg does
    /// ([`Picture::decoded_size`]).
    pub rgb: &'a [u8],
    /// 1, 2, 4 or 8: the frame was decoded at 1/`scale` of its size.
    pub scale: u32,
}

impl<'a> Picture<'a> {
    /// A picture decoded at full size: packed RGB8, `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, rgb: &'a [u8]) -> Picture<'a> {
        Picture { width, height, rgb, scale: 1 }
    }

    /// The size of [`Picture::rgb`]: the frame's divided by the scale, rounded up (libjpeg's `TJSCALED`).
    pub fn decoded_size(&self) -> (u32, u32) {
        (self.width.div_ceil(self.scale), self.height.div_ceil(self.scale))
    }

    /// `rect` of the frame in decoded pixels, its edges rounded outwards (the crop loses nothing, and keeps
    /// at least 1/`scale` of its size on each side).
    pub fn decoded_rect(&self, rect: Rect) -> Rect {
        if self.scale == 1 {
            return rect;
        }
        let (dw, dh) = self.decoded_size();
        let s = u64::from(self.scale);
        let x0 = (u64::from(rect.x) / s) as u32;
        let y0 = (u64::from(rect.y) / s) as u32;
        let x1 = (u64::from(rect.x) + u64::from(rect.width)).div_ceil(s).min(u64::from(dw)) as u32;
        let y1 = (u64::from(rect.y) + u64::from(rect.height)).div_ceil(s).min(u64::from(dh)) as u32;
        Rect { x: x0, y: y0, width: x1.saturating_sub(x0), height: y1.saturating_sub(y0) }
    }
}

/// What one consumer of a decoded frame (a model's recipe, over a crop of the frame) needs from it: its
/// crop must keep at least the size the recipe resizes it to, so that a reduced decode never makes the
/// resize enlarge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// The crop of the frame (`None`: all of it).
    pub crop: Option<CropSpec>,
    target: Target,
}

/// What a [`Need`]'s crop is turned into.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// A model's input: its size (height, width), the resize and the crop mode.
    Recipe { input_size: (u32, u32), resize: u32, mode: Crop },
    /// A snapshot: the crop shrunk to this longest side, never enlarged ([`snapshot::fit`]).
    Longest(u32),
}

impl Need {
    /// `crop` of the frame (all of it when `None`), read with `spec`'s recipe.
    pub fn new(spec: &ModelSpec, crop: Option<CropSpec>) -> Need {
        Need { crop, target: Target::Recipe { input_size: spec.input_size, resize: spec.resize, mode: spec.crop } }
    }

    /// A snapshot of `crop` (all of the frame when `None`) with its longest side at most `longest`: a
    /// reduced decode must not make it blurrier than a full one would.
    pub fn snapshot(crop: Option<CropSpec>, longest: u32) -> Need {
        Need { crop, target: Target::Longest(longest) }
    }

    /// Whether a `width` × `height` frame reduced `scale` times leaves this crop at least its target: the
    /// size [`geometry`] resizes it to, or the snapshot's size, on both sides (Pillow's draft rule:
    /// `scale * target <= size`). A crop outside the frame asks for nothing (its region is disabled).
    fn allows(&self, width: u32, height: u32, scale: u32) -> bool {
        let rect = self.crop.map_or(Rect { x: 0, y: 0, width, height }, |c| c.resolve(width, height));
        if !rect.fits(width, height) {
            return true;
        }
        let target = match self.target {
            Target::Recipe { input_size: (h, w), resize, mode } => {
                geometry((rect.width, rect.height), (w, h), resize, mode).full
            }
            Target::Longest(longest) => snapshot::fit(rect.width, rect.height, longest),
        };
        let s = u64::from(scale);
        u64::from(rect.width) >= s * u64::from(target.0) && u64::from(rect.height) >= s * u64::from(target.1)
    }
}

/// The largest reduction 1/2^k (k ≤ 3) of a `width` × `height` frame that every need allows
/// ([`Need::allows`]); 1 without needs. Pillow's `Image.draft(mode, target)` picks the same reduction for
/// the whole frame.
pub fn choose_scale(width: u32, height: u32, needs: &[Need]) -> u32 {
    if needs.is_empty() {
        return 1;
    }
    let mut scale = MAX_REDUCTION;
    while scale > 1 && !needs.iter().all(|n| n.allows(width, height, scale)) {
        scale /= 2;
    }
    scale
}

/// A rectangle of a picture, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// Non-empty and inside a `width` × `height` picture.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height)
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} at ({}, {})", self.width, self.height, self.x, self.y)
    }
}

/// A region's crop as configured: `[x, y, width, height]` in pixels, or in fractions of the frame when all
/// four values are at most 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropSpec(pub [f64; 4]);

impl CropSpec {
    /// The pixels of a `width` × `height` frame it covers (fractions: edges rounded to the nearest pixel). It
    /// may lie outside the frame: see [`Rect::fits`].
    pub fn resolve(&self, width: u32, height: u32) -> Rect {
        let [x, y, w, h] = self.0;
        let px = |v: f64| v.round().clamp(0.0, f64::from(u32::MAX)) as u32;
        if self.0.iter().all(|v| *v <= 1.0) {
            let (fw, fh) = (f64::from(width), f64::from(height));
            let (x0, y0) = (px(x * fw), px(y * fh));
            let (x1, y1) = (px((x + w) * fw), px((y + h) * fh));
            Rect { x: x0, y: y0, width: x1.saturating_sub(x0), height: y1.saturating_sub(y0) }
        } else {
            Rect { x: px(x), y: px(y), width: px(w), height: px(h) }
        }
    }
}

impl std::str::FromStr for CropSpec {
    type Err = String;
    /// `x,y,w,h`: four numbers, pixels or fractions of the frame (all four at most 1).
    fn from_str(s: &str) -> Result<CropSpec, String> {
        let values: Vec<f64> =
            s.split(',').map(|v| v.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| {
                format!("{s:?}: expected x,y,width,height (pixels, or fractions of the frame when all are at most 1)")
            })?;
        let crop: [f64; 4] =
            values.try_into().map_err(|_| format!("{s:?}: expected four numbers: x,y,width,height"))?;
        match crate::config::crop_problem(crop) {
            Some(why) => Err(why),
            None => Ok(CropSpec(crop)),
        }
    }
}

/// A frame as it arrives from a source.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// An encoded picture: JPEG (also a camera's MJPEG frame) or PNG.
    Encoded(&'a [u8]),
    /// Packed 8-bit RGB, `width * height * 3` bytes.
    Rgb8 { width: u32, height: u32, data: &'a [u8] },
    /// Packed YUYV 4:2:2 (`Y0 U Y1 V`), `width * height * 2` bytes, BT.601 limited range as webcams send it.
    Yuyv { width: u32, height: u32, data: &'a [u8] },
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("empty file")]
    Empty,
    #[error("not an image (unrecognised format; JPEG and PNG are supported)")]
    UnknownFormat,
    #[error("truncated JPEG (no end-of-image marker)")]
    TruncatedJpeg,
    #[error("cannot decode: corrupt JPEG: {0}")]
    Jpeg(String),
    #[error("cannot decode: {}", describe_decode_error(.0))]
    Decode(#[from] image::ImageError),
    #[error("unsupported pixel format {0:?}")]
    UnsupportedColor(ColorType),
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error(
        "image of {width}x{height} pixels ({:.1} megapixels) is larger than camclassd decodes: at most {} \
         megapixels (8K UHD), {MAX_SIDE} pixels a side and {} MiB decoded, so that decoding stays within 128 MiB \
         of memory; scale the picture down first",
        f64::from(*width) * f64::from(*height) / 1e6,
        MAX_PIXELS >> 20,
        MAX_DECODED_BYTES >> 20
    )]
    TooLarge { width: u32, height: u32 },
    #[error("the crop {rect} is outside the {width}x{height} picture")]
    CropOutside { rect: Rect, width: u32, height: u32 },
    #[error("nothing decoded yet")]
    NoImage,
    #[error("tensor buffer holds {got} values, the model needs {need}")]
    TensorSize { got: usize, need: usize },
    #[error("tensor buffer holds {} values, the model takes {}", got.name(), need.name())]
    TensorType { got: InputType, need: InputType },
}

/// The decoder's error in words: "corrupt PNG: …" rather than "Format error decoding Png: …", and a PNG
/// chunk named by its type rather than dumped as `ChunkType { type: IDAX, critical: true, … }`.
fn describe_decode_error(e: &image::ImageError) -> String {
    let mut text = e.to_string();
    for format in ["Png", "Jpeg"] {
        text =
            text.replace(&format!("Format error decoding {format}: "), &format!("corrupt {}: ", format.to_uppercase()));
    }
    while let Some(start) = text.find("ChunkType {") {
        let Some(len) = text[start..].find('}') else { break };
        let dump = &text[start..start + len + 1];
        let kind = dump.split("type: ").nth(1).and_then(|t| t.split(',').next()).unwrap_or("?").trim().to_string();
        text.replace_range(start..start + len + 1, &format!("{kind:?}"));
    }
    text
}

/// A [`Decoder`] and one model's [`TensorWriter`] together: a frame into that model's tensor, for the tools,
/// the benchmarks and the fuzzers that take one frame to one model.
#[derive(Debug)]
pub struct Preprocessor {
    decoder: Decoder,
    writer: TensorWriter,
}

impl Preprocessor {
    pub fn new(spec: &ModelSpec) -> Preprocessor {
        Preprocessor { decoder: Decoder::new(), writer: TensorWriter::new(spec) }
    }

    /// Number of values (floats or bytes) one image occupies in the tensor.
    pub fn tensor_len(&self) -> usize {
        self.writer.tensor_len()
    }

    /// [`Decoder::decode`].
    pub fn decode(&mut self, frame: Frame<'_>) -> Result<(u32, u32), PreprocessError> {
        self.decoder.decode(frame)
    }

    /// [`TensorWriter::need`].
    pub fn need(&self, crop: Option<CropSpec>) -> Need {
        self.writer.need(crop)
    }

    /// [`Decoder::decode_for`].
    pub fn decode_for(&mut self, frame: Frame<'_>, needs: &[Need]) -> Result<(u32, u32), PreprocessError> {
        self.decoder.decode_for(frame, needs)
    }

    /// Resizes, crops and normalises the decoded image into `out` (one image, in the model's layout and
    /// element type).
    pub fn write_tensor(&mut self, out: TensorSlot<'_>) -> Result<(), PreprocessError> {
        self.write_tensor_crop(None, out)
    }

    /// As [`Preprocessor::write_tensor`], from `rect` of the decoded image (default: all of it), in the
    /// frame's pixels whatever the reduction it was decoded at.
    pub fn write_tensor_crop(&mut self, rect: Option<Rect>, out: TensorSlot<'_>) -> Result<(), PreprocessError> {
        let picture = self.decoder.picture().ok_or(PreprocessError::NoImage)?;
        self.writer.write_region(picture, rect, out)
    }

    /// The decoded picture.
    pub fn picture(&self) -> Option<Picture<'_>> {
        self.decoder.picture()
    }

    /// [`Decoder::rgb`].
    pub fn rgb(&self) -> Option<(u32, u32, &[u8])> {
        self.decoder.rgb()
    }
}

fn check_frame(width: u32, height: u32, got: usize, need: usize, what: &str) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::BadFrame(format!("{what} frame of size {width}x{height}")));
    }
    if got < need {
        return Err(PreprocessError::BadFrame(format!("{what} {width}x{height} frame needs {need} bytes, got {got}")));
    }
    Ok(())
}

/// A JPEG's (width, height) from its header (`None`: not a JPEG, or cut before its start of frame).
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    mjpeg::frame_size(jpeg)
}

/// True when an end-of-image marker follows the start of scan. Inside entropy-coded data 0xFF is always
/// stuffed or a restart marker, so FF D9 after the scan starts is the image's end; data may follow it
/// (phone trailers, MPF images), and an EXIF thumbnail's own EOI sits before the scan and does not count.
/// Searched from the end, where it normally is: a 1080p frame's half megabyte is not read twice.
fn has_jpeg_eoi(bytes: &[u8]) -> bool {
    let scan = mjpeg::start_of_scan(bytes).unwrap_or(2);
    bytes[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// Where the tensor's pixels come from: the size the picture is scaled to and the window cut from it.
///
/// With a centre crop, the shorter side is scaled to `resize` and the longer one with halves rounded up,
/// and the crop offsets are floored: the Python reference's recipe (`tests/reference/reference.py`).
/// Without a crop, the whole picture is stretched to the input size.
pub fn geometry(src: (u32, u32), out: (u32, u32), resize: u32, crop: Crop) -> Geometry {
    if crop == Crop::None {
        return Geometry { src, full: out, offset: (0, 0), out };
    }
    let scaled_long = |long: u32, short: u32| {
        let v = (2 * u64::from(long) * u64::from(resize) + u64::from(short)) / (2 * u64::from(short));
        u32::try_from(v).unwrap_or(u32::MAX)
    };
    let full = if src.0 <= src.1 { (resize, scaled_long(src.1, src.0)) } else { (scaled_long(src.0, src.1), resize) };
    // `resize >= max(input)` (checked by the spec) keeps the window inside the scaled picture.
    let offset = (full.0.saturating_sub(out.0) / 2, full.1.saturating_sub(out.1) / 2);
    Geometry { src, full, offset, out }
}

/// Normalises packed RGB8 into the tensor layout with the per-channel lookup table.
pub fn normalize(rgb: &[u8], lut: &[[f32; 256]; 3], source_channel: [usize; 3], layout: Layout, out: &mut [f32]) {
    place(rgb, source_channel, layout, out, |c, v| lut[c][v as usize]);
}

/// Copies packed RGB8 into a uint8 tensor in its layout and channel order: no normalisation (the model
/// takes raw pixels 0..255).
pub fn arrange(rgb: &[u8], source_channel: [usize; 3], layout: Layout, out: &mut [u8]) {
    place(rgb, source_channel, layout, out, |_, v| v);
}

/// Writes each pixel's channels, taken in `source_channel` order and mapped by `value(channel, byte)`, into
/// `out` in `layout` (planes for NCHW, interleaved for NHWC).
#[inline(always)]
fn place<T>(rgb: &[u8], source_channel: [usize; 3], layout: Layout, out: &mut [T], value: impl Fn(usize, u8) -> T) {
    let pixels = rgb.len() / 3;
    match layout {
        Layout::Nchw => {
            let (c0, rest) = out.split_at_mut(pixels);
            let (c1, c2) = rest.split_at_mut(pixels);
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                c0[i] = value(0, px[source_channel[0]]);
                c1[i] = value(1, px[source_channel[1]]);
                c2[i] = value(2, px[source_channel[2]]);
            }
        }
        Layout::Nhwc => {
            for (px, o) in rgb.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                o[0] = value(0, px[source_channel[0]]);
                o[1] = value(1, px[source_channel[1]]);
                o[2] = value(2, px[source_channel[2]]);
            }
        }
    }
}

/// Refuses, before decoding, the colour types [`to_rgb8_in_place`] cannot convert.
fn check_color(color: ColorType) -> Result<(), PreprocessError> {
    use ColorType::*;
    match color {
        Rgb8 | Rgba8 | L8 | La8 | Rgb16 | Rgba16 | L16 | La16 => Ok(()),
        other => Err(PreprocessError::UnsupportedColor(other)),
    }
}

/// Converts `pixels` pixels of `color` at the start of `buf` to packed RGB8 in the same buffer, which ends
/// `3 * pixels` long. Pixels that shrink are converted front to back, those that grow (grey) back to front,
/// so no pixel is overwritten before it is read.
fn to_rgb8_in_place(color: ColorType, buf: &mut Vec<u8>, pixels: usize) -> Result<(), PreprocessError> {
    // 16-bit samples are native-endian u16; scale to 8 bits with rounding.
    fn s16(p: &[u8], i: usize) -> u8 {
        let v = u16::from_ne_bytes([p[2 * i], p[2 * i + 1]]);
        ((u32::from(v) * 255 + 32767) / 65535) as u8
    }
    fn convert<const B: usize>(buf: &mut Vec<u8>, pixels: usize, f: impl Fn(&[u8]) -> [u8; 3]) {
        let need = 3 * pixels;
        if B >= 3 {
            for i in 0..pixels {
                let rgb = f(&buf[B * i..B * i + B]);
                buf[3 * i..3 * i + 3].copy_from_slice(&rgb);
            }
            buf.truncate(need);
        } else {
            buf.resize(need.max(buf.len()), 0);
            for i in (0..pixels).rev() {
                let rgb = f(&buf[B * i..B * i + B]);
                buf[3 * i..3 * i + 3].copy_from_slice(&rgb);
            }
            buf.truncate(need);
        }
    }
    match color {
        ColorType::Rgb8 => buf.truncate(3 * pixels),
        ColorType::Rgba8 => convert::<4>(buf, pixels, |p| [p[0], p[1], p[2]]),
        ColorType::L8 => convert::<1>(buf, pixels, |p| [p[0]; 3]),
        ColorType::La8 => convert::<2>(buf, pixels, |p| [p[0]; 3]),
        ColorType::Rgb16 => convert::<6>(buf, pixels, |p| [s16(p, 0), s16(p, 1), s16(p, 2)]),
        ColorType::Rgba16 => convert::<8>(buf, pixels, |p| [s16(p, 0), s16(p, 1), s16(p, 2)]),
        ColorType::L16 => convert::<2>(buf, pixels, |p| [s16(p, 0); 3]),
        ColorType::La16 => convert::<4>(buf, pixels, |p| [s16(p, 0); 3]),
        other => return Err(PreprocessError::UnsupportedColor(other)),
    }
    Ok(())
}

/// YUYV 4:2:2 → RGB8, BT.601 limited range (integer form of the standard coefficients).
pub fn yuyv_to_rgb(yuyv: &[u8], rgb: &mut [u8]) {
    yuyv_to_rgb_with(isa::Isa::detect(), yuyv, rgb);
}

/// [`yuyv_to_rgb`] compiled for `isa`: the same integer arithmetic, vectorised by the compiler where the
/// instructions allow (0.68 ms for a 640×480 frame as x86-64's baseline, 0.22 ms with SSE4.1, 0.10 ms with
/// AVX2, on the development machine).
fn yuyv_to_rgb_with(isa: isa::Isa, yuyv: &[u8], rgb: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(yuyv: &[u8], rgb: &mut [u8]) {
            yuyv_body(yuyv, rgb)
        }
        /// # Safety
        /// The CPU must have SSE4.1.
        #[target_feature(enable = "sse4.1")]
        unsafe fn sse41(yuyv: &[u8], rgb: &mut [u8]) {
            yuyv_body(yuyv, rgb)
        }
        match isa {
            // SAFETY: `Isa::Avx2` and `Isa::Sse41` are only made where the CPU has them.
            isa::Isa::Avx2 => return unsafe { avx2(yuyv, rgb) },
            isa::Isa::Sse41 => return unsafe { sse41(yuyv, rgb) },
            isa::Isa::Portable => {}
        }
    }
    let _ = isa;
    yuyv_body(yuyv, rgb)
}

#[inline(always)]
fn yuyv_body(yuyv: &[u8], rgb: &mut [u8]) {
    #[inline(always)]
    fn px(y: u8, u: u8, v: u8, out: &mut [u8]) {
        let c = 298 * (i32::from(y) - 16);
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        out[0] = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
        out[1] = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
        out[2] = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
    }
    for (src, dst) in yuyv.chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (src[0], src[1], src[2], src[3]);
        px(y0, u, v, &mut dst[..3]);
        px(y1, u, v, &mut dst[3..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::ChannelOrder;
    use std::io::Cursor;

    fn spec(layout: Layout, order: ChannelOrder) -> ModelSpec {
        ModelSpec {
            layout,
            channel_order: order,
            input_size: (4, 6),
            resize: 6,
            mean: [127.5; 3],
            std: [127.5; 3],
            ..ModelSpec::plain()
        }
    }

    #[test]
    fn yuyv_gives_the_same_bytes_on_every_isa() {
        // Y and U over their whole range (steps of 3 and 5 reach both ends), V and the second Y varied with them.
        let yuyv: Vec<u8> = (0..=255u32)
            .step_by(3)
            .flat_map(|y| (0..=255u32).step_by(5).flat_map(move |u| [y, u, 255 - y, (u * 7 + y) % 256]))
            .map(|b| b as u8)
            .collect();
        let mut want = vec![0u8; yuyv.len() / 4 * 6];
        for (src, dst) in yuyv.chunks_exact(4).zip(want.chunks_exact_mut(6)) {
            yuyv_body(src, dst);
        }
        for isa in isa::Isa::all() {
            let mut got = vec![0u8; want.len()];
            yuyv_to_rgb_with(isa, &yuyv, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn yuyv_converts_known_colours() {
        let mut rgb = [0u8; 6];
        // Studio white and black.
        yuyv_to_rgb(&[235, 128, 16, 128], &mut rgb);
        assert_eq!(rgb, [255, 255, 255, 0, 0, 0]);
        // BT.601 red is Y=81 U=90 V=240.
        yuyv_to_rgb(&[81, 90, 81, 240], &mut rgb);
        assert!(rgb[0] > 250 && rgb[1] < 5 && rgb[2] < 5, "{rgb:?}");
    }

    #[test]
    fn geometry_scales_the_shorter_side_and_centres_the_crop() {
        // 640x480 → 341x256 (341.33 rounded) → 224x224 window at (58, 16), offsets floored.
        let g = geometry((640, 480), (224, 224), 256, Crop::Center);
        assert_eq!((g.full, g.offset, g.out), ((341, 256), (58, 16), (224, 224)));
        // Portrait, and halves round up: 2x3 → 256x384.
        let g = geometry((2, 3), (224, 224), 256, Crop::Center);
        assert_eq!((g.full, g.offset), ((256, 384), (16, 80)));
        let g = geometry((10, 20), (4, 4), 4, Crop::None);
        assert_eq!((g.full, g.offset), ((4, 4), (0, 0)));
    }

    #[test]
    fn uniform_frame_normalises_per_layout_and_channel_order() {
        let (w, h) = (10, 8);
        let data: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 127, 0]).collect();
        for (layout, order) in [(Layout::Nchw, ChannelOrder::Rgb), (Layout::Nhwc, ChannelOrder::Bgr)] {
            let mut p = Preprocessor::new(&spec(layout, order));
            p.decode(Frame::Rgb8 { width: w, height: h, data: &data }).expect("decodes");
            let mut out = vec![9.0; p.tensor_len()];
            p.write_tensor(TensorSlot::F32(&mut out)).expect("writes");
            let first = |c: usize| match layout {
                Layout::Nchw => out[c * 24],
                Layout::Nhwc => out[c],
            };
            let (r, g, b) = (1.0, (127.0 - 127.5) / 127.5, -1.0);
            let expect = if order == ChannelOrder::Rgb { [r, g, b] } else { [b, g, r] };
            for (c, e) in expect.iter().enumerate() {
                assert!((first(c) - e).abs() < 1e-6, "{layout:?} {order:?} channel {c}: {}", first(c));
            }
            assert!(out.iter().all(|v| v.abs() <= 1.0), "all values normalised");
        }
    }

    #[test]
    fn a_uint8_tensor_gets_the_resized_bytes_in_its_layout_and_channel_order() {
        let (w, h) = (12, 8);
        let data: Vec<u8> = (0..w * h).flat_map(|i| [(i % 251) as u8, 100, 200]).collect();
        let float_spec = spec(Layout::Nchw, ChannelOrder::Rgb);
        let mut reference = Preprocessor::new(&float_spec);
        reference.decode(Frame::Rgb8 { width: w, height: h, data: &data }).expect("decodes");
        let mut floats = vec![0.0; reference.tensor_len()];
        reference.write_tensor(TensorSlot::F32(&mut floats)).expect("writes");
        // The float tensor is (v - 127.5) / 127.5 of the resized bytes: the uint8 tensor must hold those bytes.
        let resized: Vec<u8> = floats.iter().map(|v| (v * 127.5 + 127.5).round() as u8).collect();
        let pixels = resized.len() / 3;
        for (layout, order) in [
            (Layout::Nchw, ChannelOrder::Rgb),
            (Layout::Nhwc, ChannelOrder::Rgb),
            (Layout::Nhwc, ChannelOrder::Bgr),
            (Layout::Nchw, ChannelOrder::Bgr),
        ] {
            let u8_spec =
                ModelSpec { input_type: InputType::Uint8, mean: [0.0; 3], std: [1.0; 3], ..spec(layout, order) };
            let mut p = Preprocessor::new(&u8_spec);
            p.decode(Frame::Rgb8 { width: w, height: h, data: &data }).expect("decodes");
            let mut bytes = vec![0u8; p.tensor_len()];
            p.write_tensor(TensorSlot::U8(&mut bytes)).expect("writes");
            for i in 0..pixels {
                for c in 0..3 {
                    let source = if order == ChannelOrder::Rgb { c } else { 2 - c };
                    let at = match layout {
                        Layout::Nchw => c * pixels + i,
                        Layout::Nhwc => i * 3 + c,
                    };
                    assert_eq!(bytes[at], resized[source * pixels + i], "{layout:?} {order:?} pixel {i} channel {c}");
                }
            }
            // A float slot for a uint8 model (or the reverse) is an error, not a silent mix-up.
            let e = p.write_tensor(TensorSlot::F32(&mut floats)).expect_err("wrong type");
            assert!(matches!(e, PreprocessError::TensorType { .. }), "{e}");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        assert!(matches!(p.decode(Frame::Encoded(b"")), Err(PreprocessError::Empty)));
        assert!(matches!(p.decode(Frame::Encoded(b"hello, not an image")), Err(PreprocessError::UnknownFormat)));
        assert!(matches!(
            p.decode(Frame::Encoded(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])),
            Err(PreprocessError::TruncatedJpeg)
        ));
        assert!(matches!(
            p.decode(Frame::Rgb8 { width: 4, height: 4, data: &[0; 10] }),
            Err(PreprocessError::BadFrame(_))
        ));
        assert!(matches!(
            p.decode(Frame::Yuyv { width: 3, height: 1, data: &[0; 6] }),
            Err(PreprocessError::BadFrame(_))
        ));
        assert!(matches!(p.write_tensor(TensorSlot::F32(&mut [0.0; 72])), Err(PreprocessError::NoImage)));
    }

    #[test]
    fn png_round_trip_and_grey_expands_to_rgb() {
        let mut png = Vec::new();
        let img = image::GrayImage::from_pixel(7, 5, image::Luma([200]));
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("encodes");
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        assert_eq!(p.decode(Frame::Encoded(&png)).expect("decodes"), (7, 5));
        let (_, _, rgb) = p.rgb().expect("decoded");
        assert!(rgb.iter().all(|&v| v == 200));
    }

    /// A JPEG with an EXIF APP1 segment carrying `orientation`, inserted right after SOI.
    fn jpeg_with_orientation(img: &image::RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).expect("encodes");
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec(); // little-endian, IFD at 8, one entry
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]); // tag 0x0112 SHORT x1
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding + no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_picture_upright() {
        // 32x16: left half red, right half blue. Orientation 6 means "rotate 90° clockwise to view".
        let img =
            image::RgbImage::from_fn(
                32,
                16,
                |x, _| if x < 16 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) },
            );
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        assert_eq!(p.decode(Frame::Encoded(&jpeg_with_orientation(&img, 1))).expect("decodes"), (32, 16));
        assert_eq!(p.decode(Frame::Encoded(&jpeg_with_orientation(&img, 6))).expect("decodes"), (16, 32));
        let (w, _, rgb) = p.rgb().expect("decoded");
        let at = |x: usize, y: usize| &rgb[(y * w as usize + x) * 3..][..3];
        // Rotated clockwise, the left (red) half ends up on top.
        assert!(at(8, 4)[0] > 200 && at(8, 4)[2] < 60, "top is red: {:?}", at(8, 4));
        assert!(at(8, 28)[2] > 200 && at(8, 28)[0] < 60, "bottom is blue: {:?}", at(8, 28));
    }

    /// Removes every DHT (Huffman table) segment, as many webcams do in their MJPEG frames.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
            let marker = jpeg[i + 1];
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if marker == 0xDA {
                break; // start of scan: the entropy-coded data follows
            }
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[i..]);
        out
    }

    #[test]
    fn mjpeg_frames_without_huffman_tables_decode_with_the_standard_ones() {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).expect("encodes");
        let mjpeg = strip_huffman_tables(&jpeg);
        assert!(mjpeg.len() < jpeg.len(), "the encoder wrote DHT segments to strip");
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        p.decode(Frame::Encoded(&jpeg)).expect("with tables");
        let with_tables = p.rgb().expect("decoded").2.to_vec();
        p.decode(Frame::Encoded(&mjpeg)).expect("MJPEG without DHT decodes");
        assert_eq!(p.rgb().expect("decoded").2, &with_tables[..]);
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn a_header_claiming_a_huge_picture_is_refused_before_allocating() {
        let mut png = Vec::new();
        image::RgbImage::new(1, 1).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("encodes");
        // IHDR data starts at byte 16 (8 signature + 4 length + 4 type); its CRC follows the 13 data bytes.
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        match p.decode(Frame::Encoded(&png)) {
            Err(PreprocessError::TooLarge { width: 100_000, height: 100_000 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_corrupt_png_is_described_not_dumped() {
        let mut png = Vec::new();
        image::RgbImage::new(4, 4).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("encodes");
        let at = png.windows(4).position(|w| w == b"IDAT").expect("IDAT");
        png[at..at + 4].copy_from_slice(b"IDAX");
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        let e = p.decode(Frame::Encoded(&png)).expect_err("corrupt").to_string();
        assert!(!e.contains("ChunkType") && !e.contains("critical: true"), "{e}");
        assert!(
            e.starts_with("cannot decode: corrupt PNG: ") && e.contains("Unrecognized critical chunk: \"IDAX\""),
            "{e}"
        );
    }

    #[test]
    fn every_colour_type_converts_in_place() {
        let px = 5;
        let cases: Vec<(ColorType, Vec<u8>)> = vec![
            (ColorType::Rgb8, (0..px).flat_map(|i| [i as u8, 10, 20]).collect()),
            (ColorType::Rgba8, (0..px).flat_map(|i| [i as u8, 10, 20, 255]).collect()),
            (ColorType::L8, (0..px).map(|i| i as u8).collect()),
            (ColorType::La8, (0..px).flat_map(|i| [i as u8, 7]).collect()),
            (
                ColorType::Rgb16,
                (0..px).flat_map(|i| [i * 257, 2570, 5140].map(|v| v as u16).map(u16::to_ne_bytes)).flatten().collect(),
            ),
            (
                ColorType::Rgba16,
                (0..px)
                    .flat_map(|i| [i * 257, 2570, 5140, 65535].map(|v| v as u16).map(u16::to_ne_bytes))
                    .flatten()
                    .collect(),
            ),
            (ColorType::L16, (0..px).flat_map(|i| ((i * 257) as u16).to_ne_bytes()).collect()),
            (ColorType::La16, (0..px).flat_map(|i| [(i * 257) as u16, 9].map(u16::to_ne_bytes)).flatten().collect()),
        ];
        for (color, mut buf) in cases {
            let grey = matches!(color, ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16);
            let want: Vec<u8> = (0..px).flat_map(|i| if grey { [i as u8; 3] } else { [i as u8, 10, 20] }).collect();
            to_rgb8_in_place(color, &mut buf, px).expect("converts");
            assert_eq!(buf, want, "{color:?}");
        }
    }

    #[test]
    fn an_outsized_picture_does_not_pin_its_buffer_for_the_next_frames() {
        let png = |side: u32| {
            let mut out = Vec::new();
            image::GrayImage::new(side, side)
                .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
                .expect("png");
            out
        };
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        p.decode(Frame::Encoded(&png(4000))).expect("16 megapixels decode");
        assert!(p.decoder.buffer().capacity() >= 48_000_000);
        p.decode(Frame::Encoded(&png(64))).expect("decodes");
        assert!(p.decoder.buffer().capacity() < 1 << 20, "{} bytes kept", p.decoder.buffer().capacity());
        // Steady same-sized frames keep their buffer (no per-frame allocation).
        let kept = p.decoder.buffer().as_ptr();
        p.decode(Frame::Encoded(&png(64))).expect("decodes");
        assert_eq!(p.decoder.buffer().as_ptr(), kept);
    }

    #[test]
    fn more_than_32_megapixels_is_refused_before_decoding() {
        // A grey PNG whose header says 8192x8192 (inside MAX_SIDE): 64 Mi pixels.
        let mut png = Vec::new();
        image::GrayImage::new(1, 1).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("encodes");
        png[16..20].copy_from_slice(&8192u32.to_be_bytes());
        png[20..24].copy_from_slice(&8192u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        let e = p.decode(Frame::Encoded(&png)).expect_err("too many pixels");
        assert!(matches!(e, PreprocessError::TooLarge { width: 8192, height: 8192 }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("8192x8192 pixels (67.1 megapixels)") && text.contains("at most 32 megapixels"),
            "{text}"
        );
    }

    #[test]
    fn data_after_the_end_of_image_is_allowed_but_a_cut_scan_is_not() {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).expect("encodes");
        let mut p = Preprocessor::new(&spec(Layout::Nchw, ChannelOrder::Rgb));
        let mut with_trailer = jpeg.clone();
        with_trailer.extend_from_slice(b"SEFH\x01\x02 phone trailer \xff\x00");
        p.decode(Frame::Encoded(&with_trailer)).expect("trailer after EOI is fine");
        let cut = &jpeg[..jpeg.len() - 40];
        assert!(matches!(p.decode(Frame::Encoded(cut)), Err(PreprocessError::TruncatedJpeg)));
    }

    /// EfficientNet-Lite0's recipe: 224×224 from the shorter side resized to 256.
    fn lite0() -> ModelSpec {
        ModelSpec { input_size: (224, 224), resize: 256, ..spec(Layout::Nchw, ChannelOrder::Rgb) }
    }

    /// A smooth colour picture as a JPEG (quality 90: what a camera sends).
    fn smooth_jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
            let wave = ((fx * 9.0).sin() * (fy * 7.0).cos() * 60.0) as i32;
            image::Rgb([(40.0 + 180.0 * fx) as u8, (200.0 - 150.0 * fy) as u8, (128 + wave).clamp(0, 255) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).expect("encodes");
        jpeg
    }

    #[test]
    fn the_reduction_is_the_largest_that_keeps_every_crop_at_its_resize_target() {
        let need = |crop: Option<[f64; 4]>| Need::new(&lite0(), crop.map(CropSpec));
        let whole = [need(None)];
        // 1080p → 455x256 wanted: 1/4 (480x270) keeps it, 1/8 (240x135) does not.
        assert_eq!(choose_scale(1920, 1080, &whole), 4);
        // VGA: 480 < 2 * 256, no reduction. 4K: 1/8. 8K: still 1/8, the most libjpeg reduces.
        assert_eq!(choose_scale(640, 480, &whole), 1);
        assert_eq!(choose_scale(3840, 2160, &whole), 8);
        assert_eq!(choose_scale(7680, 4320, &whole), MAX_REDUCTION);
        // Pillow's draft rule is exact: 512 = 2 * 256 is enough for 1/2, 511 is not.
        assert_eq!(choose_scale(512, 512, &whole), 2);
        assert_eq!(choose_scale(511, 512, &whole), 1);
        // A small crop of the 1080p frame forces a smaller reduction, for the whole camera.
        let door = need(Some([100.0, 100.0, 600.0, 700.0]));
        assert_eq!(choose_scale(1920, 1080, &[door]), 2);
        assert_eq!(choose_scale(1920, 1080, &[whole[0], door]), 2);
        let small = need(Some([0.0, 0.0, 300.0, 300.0]));
        assert_eq!(choose_scale(1920, 1080, &[whole[0], door, small]), 1);
        // Fractions resolve against the frame: the right half of 4K is 1920x2160.
        assert_eq!(choose_scale(3840, 2160, &[need(Some([0.5, 0.0, 0.5, 1.0]))]), 4);
        // A crop outside the frame disables its region and asks for nothing; no needs: full size.
        assert_eq!(choose_scale(1920, 1080, &[whole[0], need(Some([1900.0, 0.0, 300.0, 300.0]))]), 4);
        assert_eq!(choose_scale(1920, 1080, &[]), 1);
        // Without a centre crop the picture is stretched to the input size: both sides must keep it.
        let stretch = ModelSpec { crop: Crop::None, ..lite0() };
        assert_eq!(choose_scale(1920, 1080, &[Need::new(&stretch, None)]), 4);
        assert_eq!(choose_scale(1920, 400, &[Need::new(&stretch, None)]), 1);
    }

    #[test]
    fn a_snapshot_keeps_the_decode_large_enough_for_its_size() {
        let whole = Need::new(&lite0(), None);
        // The model alone: 1080p at 1/4. A 640-px snapshot of the whole frame needs 640x360: 1/2 (960x540)
        // keeps it, 1/4 (480x270) would upscale it.
        assert_eq!(choose_scale(1920, 1080, &[whole]), 4);
        assert_eq!(choose_scale(1920, 1080, &[whole, Need::snapshot(None, 640)]), 2);
        // A small snapshot asks for nothing more than the model does.
        assert_eq!(choose_scale(1920, 1080, &[whole, Need::snapshot(None, 240)]), 4);
        // A snapshot of a crop smaller than its size is taken at the crop's own size: no reduction.
        let door = Some(CropSpec([100.0, 100.0, 500.0, 400.0]));
        assert_eq!(choose_scale(1920, 1080, &[Need::snapshot(door, 640)]), 1);
        // A crop outside the frame asks for nothing.
        assert_eq!(
            choose_scale(1920, 1080, &[whole, Need::snapshot(Some(CropSpec([1900.0, 0.0, 300.0, 300.0])), 640)]),
            4
        );
    }

    #[test]
    fn a_reduced_frame_keeps_its_own_size_and_rounds_up_like_libjpeg() {
        let jpeg = smooth_jpeg(1921, 1081);
        let mut p = Preprocessor::new(&lite0());
        let need = p.need(None);
        assert_eq!(p.decode_for(Frame::Encoded(&jpeg), &[need]).expect("decodes"), (1921, 1081));
        let picture = p.picture().expect("decoded");
        assert_eq!((picture.scale, picture.decoded_size()), (4, (481, 271)));
        let (w, h, rgb) = p.rgb().expect("decoded");
        assert_eq!((w, h, rgb.len()), (481, 271, 481 * 271 * 3));
        // Rectangles are the frame's; in decoded pixels their edges round outwards.
        let r = picture.decoded_rect(Rect { x: 5, y: 4, width: 10, height: 4 });
        assert_eq!(r, Rect { x: 1, y: 1, width: 3, height: 1 });
        let whole = picture.decoded_rect(Rect { x: 0, y: 0, width: 1921, height: 1081 });
        assert_eq!(whole, Rect { x: 0, y: 0, width: 481, height: 271 });
        // The plain decode is full size.
        p.decode(Frame::Encoded(&jpeg)).expect("decodes");
        assert_eq!(p.picture().map(|p| (p.scale, p.decoded_size())), Some((1, (1921, 1081))));
    }

    #[test]
    fn a_reduced_decode_gives_nearly_the_full_decodes_tensor() {
        let jpeg = smooth_jpeg(1920, 1080);
        let mut p = Preprocessor::new(&lite0());
        let mut full = vec![0.0; p.tensor_len()];
        let mut reduced = vec![0.0; p.tensor_len()];
        for (crop, scale) in [(None, 4), (Some(Rect { x: 700, y: 200, width: 1100, height: 600 }), 2)] {
            p.decode(Frame::Encoded(&jpeg)).expect("decodes");
            p.write_tensor_crop(crop, TensorSlot::F32(&mut full)).expect("writes");
            let need = p.need(crop.map(|r| CropSpec([r.x, r.y, r.width, r.height].map(f64::from))));
            p.decode_for(Frame::Encoded(&jpeg), &[need]).expect("decodes");
            assert_eq!(p.picture().map(|p| p.scale), Some(scale));
            p.write_tensor_crop(crop, TensorSlot::F32(&mut reduced)).expect("writes");
            // Values are (v - 127.5) / 127.5: 2/255 is one level.
            let levels: Vec<f32> = full.iter().zip(&reduced).map(|(a, b)| (a - b).abs() * 127.5).collect();
            let mean = levels.iter().sum::<f32>() / levels.len() as f32;
            let worst = levels.iter().fold(0.0f32, |m, v| m.max(*v));
            assert!(mean < 1.5 && worst < 12.0, "1/{scale} {crop:?}: mean {mean:.2} levels, worst {worst:.1}");
        }
    }

    #[test]
    fn exif_orientation_applies_to_a_reduced_decode() {
        let img = image::RgbImage::from_fn(1024, 512, |x, _| {
            if x < 512 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }
        });
        let jpeg = jpeg_with_orientation(&img, 6);
        let mut p = Preprocessor::new(&lite0());
        let need = p.need(None);
        assert_eq!(p.decode_for(Frame::Encoded(&jpeg), &[need]).expect("decodes"), (512, 1024));
        let (w, h, rgb) = p.rgb().expect("decoded");
        assert_eq!((w, h), (256, 512), "upright and halved");
        let at = |x: usize, y: usize| &rgb[(y * w as usize + x) * 3..][..3];
        assert!(at(128, 60)[0] > 200 && at(128, 60)[2] < 60, "top is red: {:?}", at(128, 60));
        assert!(at(128, 450)[2] > 200 && at(128, 450)[0] < 60, "bottom is blue: {:?}", at(128, 450));
    }

    #[test]
    fn a_huge_jpeg_header_is_refused_before_allocating() {
        let mut jpeg = smooth_jpeg(16, 16);
        // SOF0: FF C0, length, precision, then height and width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&9000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&9000u16.to_be_bytes());
        let mut p = Preprocessor::new(&lite0());
        let need = p.need(None);
        // 81 megapixels: refused even though 1/8 of it would be small.
        let e = p.decode_for(Frame::Encoded(&jpeg), &[need]).expect_err("too large");
        assert!(matches!(e, PreprocessError::TooLarge { width: 9000, height: 9000 }), "{e:?}");
        assert!(p.decoder.buffer().capacity() < 1 << 20);
    }
}
