//! [`Decoder`]: a frame (encoded file, MJPEG, raw RGB or YUYV) → one packed RGB8 [`Picture`], decoded once
//! for every region and model of the frame. It owns the decode state: libjpeg-turbo's handle (remade after
//! any error, [`turbo`]), the RGB buffer and the reduction the frame was decoded at. It knows no recipe:
//! what it must keep of a frame comes from the [`Need`]s of the frame's consumers.

use std::io::Cursor;

use image::{ImageDecoder, ImageReader};

use super::{
    Frame, MAX_DECODED_BYTES, MAX_PIXELS, MAX_SIDE, Need, Picture, PreprocessError, RETAINED_DECODE_BYTES, check_color,
    check_frame, choose_scale, has_jpeg_eoi, mjpeg, to_rgb8_in_place, turbo, yuyv_to_rgb,
};

/// Reusable decode state: same-sized frames allocate nothing after the first.
#[derive(Default)]
pub struct Decoder {
    /// An MJPEG frame with the standard Huffman tables spliced in (for the `image` crate's decoder).
    patched: Vec<u8>,
    /// libjpeg-turbo, made at the first JPEG.
    turbo: Option<turbo::Decompressor>,
    rgb: Vec<u8>,
    /// The decoded frame's size (upright), and its reduction: `rgb` is that size divided by `scale`.
    rgb_size: Option<(u32, u32)>,
    scale: u32,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("size", &self.rgb_size).field("scale", &self.scale).finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { scale: 1, ..Decoder::default() }
    }

    /// Decodes a frame at full size; returns its (width, height) after EXIF orientation.
    pub fn decode(&mut self, frame: Frame<'_>) -> Result<(u32, u32), PreprocessError> {
        self.decode_for(frame, &[])
    }

    /// As [`Decoder::decode`], but a JPEG is decoded reduced in the DCT domain, by the largest
    /// reduction every one of `needs` allows ([`choose_scale`]; none: full size). Returns the frame's own
    /// (width, height), after EXIF orientation, whatever the reduction ([`Picture::scale`]).
    pub fn decode_for(&mut self, frame: Frame<'_>, needs: &[Need]) -> Result<(u32, u32), PreprocessError> {
        self.rgb_size = None;
        self.scale = 1;
        let size = match frame {
            Frame::Encoded(bytes) => self.decode_encoded(bytes, needs)?,
            Frame::Rgb8 { width, height, data } => {
                let need = width as usize * height as usize * 3;
                check_frame(width, height, data.len(), need, "RGB8")?;
                self.rgb.clear();
                self.rgb.extend_from_slice(&data[..need]);
                (width, height)
            }
            Frame::Yuyv { width, height, data } => {
                if width % 2 != 0 {
                    return Err(PreprocessError::BadFrame(format!("YUYV width {width} is odd")));
                }
                let need = width as usize * height as usize * 2;
                check_frame(width, height, data.len(), need, "YUYV")?;
                self.rgb.resize(width as usize * height as usize * 3, 0);
                yuyv_to_rgb(&data[..need], &mut self.rgb);
                (width, height)
            }
        };
        self.rgb_size = Some(size);
        Ok(size)
    }

    fn decode_encoded(&mut self, bytes: &[u8], needs: &[Need]) -> Result<(u32, u32), PreprocessError> {
        if bytes.is_empty() {
            return Err(PreprocessError::Empty);
        }
        let format = image::guess_format(bytes).map_err(|_| PreprocessError::UnknownFormat)?;
        let mut source = bytes;
        if format == image::ImageFormat::Jpeg {
            // JPEG decoders fill a cut-off file with grey instead of failing; a missing EOI marker
            // catches the truncation (cameras may pad after EOI, so trailing zeros are skipped).
            if !has_jpeg_eoi(bytes) {
                return Err(PreprocessError::TruncatedJpeg);
            }
            if let Some(size) = self.decode_jpeg(bytes, needs)? {
                return Ok(size);
            }
            // CMYK: the `image` crate's decoder converts it, at full size.
            if let Some(sos) = mjpeg::missing_huffman_tables(bytes) {
                mjpeg::with_standard_tables(bytes, sos, &mut self.patched);
                source = &self.patched;
            }
        }
        let reader = ImageReader::with_format(Cursor::new(source), format);
        let mut decoder = reader.into_decoder()?;
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        let (width, height) = decoder.dimensions();
        let color = decoder.color_type();
        // A header can claim any size: refuse before allocating, so a hostile file cannot exhaust memory.
        let total = decoder.total_bytes();
        let pixels = u64::from(width) * u64::from(height);
        if width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS || total > MAX_DECODED_BYTES {
            return Err(PreprocessError::TooLarge { width, height });
        }
        // One buffer: the decoder writes its pixels, which are then turned into RGB8 where they are.
        let (total, pixels) = (total as usize, pixels as usize);
        check_color(color)?;
        // Kept from the last frame (the decoder overwrites what it uses): no per-frame allocation or zeroing.
        // But one outsized picture must not pin up to 128 MiB per worker for the rest of the run.
        let need = total.max(3 * pixels);
        if self.rgb.capacity() > (2 * need).max(RETAINED_DECODE_BYTES) {
            self.rgb = Vec::new();
        }
        self.rgb.resize(need, 0);
        decoder.read_image(&mut self.rgb[..total])?;
        to_rgb8_in_place(color, &mut self.rgb, pixels)?;

        if orientation == image::metadata::Orientation::NoTransforms {
            return Ok((width, height));
        }
        // Rare (phone pictures): the rotation allocates, camera frames never come here.
        let buffer = std::mem::take(&mut self.rgb);
        let img = image::RgbImage::from_raw(width, height, buffer)
            .ok_or_else(|| PreprocessError::BadFrame("decoded buffer does not match its size".into()))?;
        let mut img = image::DynamicImage::ImageRgb8(img);
        img.apply_orientation(orientation);
        let img = img.into_rgb8();
        let size = img.dimensions();
        self.rgb = img.into_raw();
        Ok(size)
    }

    /// Decodes a JPEG with libjpeg-turbo, reduced as `needs` allow; `None` for a CMYK JPEG, which
    /// TurboJPEG cannot turn into RGB. libjpeg-turbo supplies the standard Huffman tables of an MJPEG frame
    /// that has none.
    fn decode_jpeg(&mut self, bytes: &[u8], needs: &[Need]) -> Result<Option<(u32, u32)>, PreprocessError> {
        let turbo = match &mut self.turbo {
            Some(turbo) => turbo,
            None => self.turbo.insert(turbo::Decompressor::new().map_err(PreprocessError::Jpeg)?),
        };
        let header = turbo.header(bytes).map_err(PreprocessError::Jpeg)?;
        if header.four_channel {
            return Ok(None);
        }
        let (width, height) = (header.width, header.height);
        // A header can claim any size: refuse before allocating (RGB8 at full size, as the other path).
        let pixels = u64::from(width) * u64::from(height);
        if width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS || 3 * pixels > MAX_DECODED_BYTES {
            return Err(PreprocessError::TooLarge { width, height });
        }
        let orientation = mjpeg::exif_orientation(bytes).unwrap_or(image::metadata::Orientation::NoTransforms);
        let turned = matches!(
            orientation,
            image::metadata::Orientation::Rotate90
                | image::metadata::Orientation::Rotate270
                | image::metadata::Orientation::Rotate90FlipH
                | image::metadata::Orientation::Rotate270FlipH
        );
        let upright = if turned { (height, width) } else { (width, height) };
        let scale = choose_scale(upright.0, upright.1, needs);
        let (w, h) = (width.div_ceil(scale), height.div_ceil(scale));
        let need = w as usize * h as usize * 3;
        if self.rgb.capacity() > (2 * need).max(RETAINED_DECODE_BYTES) {
            self.rgb = Vec::new();
        }
        self.rgb.resize(need, 0);
        turbo.decompress(bytes, &mut self.rgb, w, h).map_err(PreprocessError::Jpeg)?;
        self.scale = scale;
        if orientation != image::metadata::Orientation::NoTransforms {
            // Rare (phone pictures): the rotation allocates, camera frames never come here.
            let buffer = std::mem::take(&mut self.rgb);
            let img = image::RgbImage::from_raw(w, h, buffer)
                .ok_or_else(|| PreprocessError::BadFrame("decoded buffer does not match its size".into()))?;
            let mut img = image::DynamicImage::ImageRgb8(img);
            img.apply_orientation(orientation);
            self.rgb = img.into_rgb8().into_raw();
        }
        Ok(Some(upright))
    }

    /// The decoded picture, for [`super::TensorWriter::write_region`] of other recipes.
    pub fn picture(&self) -> Option<Picture<'_>> {
        self.rgb_size.map(|(width, height)| Picture { width, height, rgb: &self.rgb, scale: self.scale })
    }

    /// The decoded RGB8 image (its decoded size: the frame's reduced by [`Picture::scale`]), for tools
    /// that want to look at it.
    pub fn rgb(&self) -> Option<(u32, u32, &[u8])> {
        self.picture().map(|p| {
            let (w, h) = p.decoded_size();
            (w, h, p.rgb)
        })
    }

    /// The decode buffer as it is kept between frames (its capacity is what a frame pins).
    #[cfg(test)]
    pub(super) fn buffer(&self) -> &Vec<u8> {
        &self.rgb
    }
}
