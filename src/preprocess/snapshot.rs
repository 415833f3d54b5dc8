//! Snapshots: a region of a decoded frame (or the whole frame with the region's box drawn), scaled so that
//! its longest side is at most a given size, kept as RGB8 in a reused buffer and encoded as JPEG only when
//! it is published.

use super::resample::{Filter, Geometry, Resampler};
use super::{Picture, Rect};

/// A snapshot's pixels, reused frame after frame.
#[derive(Debug, Default)]
pub struct Snap {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    resampler: Resampler,
}

/// `(width, height)` scaled so that the longest side is at most `max` (never enlarged, never 0).
pub fn fit(width: u32, height: u32, max: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max {
        return (width, height);
    }
    let scale = |v: u32| ((u64::from(v) * u64::from(max) + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
    (scale(width), scale(height))
}

impl Snap {
    /// Takes `rect` of `picture` (`frame`: the whole picture with `rect` outlined), longest side ≤ `max`.
    /// `rect` and the snapshot's size are in the frame's pixels: from a picture decoded reduced
    /// ([`Picture::scale`]) the snapshot has the size it would have at full size, resampled from fewer
    /// pixels.
    pub fn take(&mut self, picture: Picture<'_>, rect: Rect, max: u32, frame: bool) {
        let source = if frame { Rect { x: 0, y: 0, width: picture.width, height: picture.height } } else { rect };
        let out = fit(source.width, source.height, max);
        self.rgb.resize(out.0 as usize * out.1 as usize * 3, 0);
        let decoded = picture.decoded_rect(source);
        let geometry = Geometry { src: (decoded.width, decoded.height), full: out, offset: (0, 0), out };
        self.resampler.resample_view(
            picture.rgb,
            picture.decoded_size().0,
            (decoded.x, decoded.y),
            &mut self.rgb,
            geometry,
            Filter::Bilinear,
        );
        (self.width, self.height) = out;
        if frame {
            let sx = |v: u32| (u64::from(v) * u64::from(out.0) / u64::from(picture.width.max(1))) as u32;
            let sy = |v: u32| (u64::from(v) * u64::from(out.1) / u64::from(picture.height.max(1))) as u32;
            let (x0, y0) = (sx(rect.x), sy(rect.y));
            let (x1, y1) = (sx(rect.x + rect.width).saturating_sub(1), sy(rect.y + rect.height).saturating_sub(1));
            self.outline(x0, y0, x1.max(x0), y1.max(y0));
        }
    }

    /// A 2-pixel red rectangle (inclusive corners).
    fn outline(&mut self, x0: u32, y0: u32, x1: u32, y1: u32) {
        let (w, h) = (self.width, self.height);
        let mut put = |x: u32, y: u32| {
            if x < w && y < h {
                let i = (y as usize * w as usize + x as usize) * 3;
                self.rgb[i..i + 3].copy_from_slice(&[255, 0, 0]);
            }
        };
        for t in 0..2 {
            for x in x0..=x1 {
                put(x, y0 + t);
                put(x, y1.saturating_sub(t));
            }
            for y in y0..=y1 {
                put(x0 + t, y);
                put(x1.saturating_sub(t), y);
            }
        }
    }

    /// The snapshot as a JPEG (quality 85).
    pub fn jpeg(&self) -> Result<Vec<u8>, image::ImageError> {
        let mut out = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        encoder.encode(&self.rgb, self.width, self.height, image::ExtendedColorType::Rgb8)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_side_fits_and_the_aspect_stays() {
        assert_eq!(fit(450, 300, 640), (450, 300));
        assert_eq!(fit(900, 300, 300), (300, 100));
        assert_eq!(fit(300, 1200, 100), (25, 100));
        assert_eq!(fit(5000, 1, 100), (100, 1));
    }

    #[test]
    fn a_snapshot_is_the_crop_or_the_frame_with_its_box() {
        let (w, h) = (40u32, 20u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| if i % w < 20 { [0, 0, 200] } else { [0, 200, 0] }).collect();
        let picture = Picture::new(w, h, &rgb);
        let mut snap = Snap::default();
        snap.take(picture, Rect { x: 20, y: 0, width: 20, height: 20 }, 10, false);
        assert_eq!((snap.width, snap.height), (10, 10));
        assert!(snap.rgb.chunks(3).all(|p| p == [0, 200, 0]), "only the green half");
        snap.take(picture, Rect { x: 20, y: 0, width: 20, height: 20 }, 40, true);
        assert_eq!((snap.width, snap.height), (40, 20));
        assert_eq!(&snap.rgb[(5 * 40 + 20) * 3..][..3], &[255, 0, 0], "the box's left edge");
        assert_eq!(&snap.rgb[(5 * 40 + 5) * 3..][..3], &[0, 0, 200], "outside the box untouched");
        let jpeg = snap.jpeg().expect("encodes");
        let back = image::load_from_memory(&jpeg).expect("decodes");
        assert_eq!((back.width(), back.height()), (40, 20));
    }
}
