//! The motion gate's measure: a region of a decoded frame as a small grey thumbnail, and how much it
//! differs from another. Buffers are reused: a region's thumbnails allocate nothing after the first.

use super::resample::{Filter, Geometry, Resampler};
use super::{Picture, Rect};

/// The thumbnail's side, in pixels.
pub const SIDE: u32 = 32;

/// A region's thumbnails: the current frame's and the one last classified.
#[derive(Debug, Default)]
pub struct Thumbnails {
    rgb: Vec<u8>,
    current: Vec<u8>,
    last: Vec<u8>,
    resampler: Resampler,
}

impl Thumbnails {
    /// Takes `rect` of `picture` as the current thumbnail; returns its mean absolute difference from the
    /// last kept one, as a fraction of full scale (1.0 when none was kept yet).
    pub fn measure(&mut self, picture: Picture<'_>, rect: Rect) -> f32 {
        let out = (SIDE, SIDE);
        self.rgb.resize((SIDE * SIDE * 3) as usize, 0);
        let rect = picture.decoded_rect(rect);
        let geometry = Geometry { src: (rect.width, rect.height), full: out, offset: (0, 0), out };
        self.resampler.resample_view(
            picture.rgb,
            picture.decoded_size().0,
            (rect.x, rect.y),
            &mut self.rgb,
            geometry,
            Filter::Bilinear,
        );
        self.current.clear();
        self.current.extend(
            self.rgb
                .chunks_exact(3)
                .map(|p| ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500) / 1000) as u8),
        );
        difference(&self.current, &self.last)
    }

    /// The current thumbnail becomes the one compared against (its region was classified).
    pub fn keep(&mut self) {
        std::mem::swap(&mut self.current, &mut self.last);
    }
}

/// Mean absolute difference of two grey pictures of one size, a fraction of full scale (1.0 when the sizes
/// differ, as when nothing was kept yet).
pub fn difference(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 1.0;
    }
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
    sum as f32 / (a.len() as f32 * 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_picture_does_not_move_and_a_changed_one_does() {
        let (w, h) = (64u32, 48u32);
        let dark = vec![40u8; (w * h * 3) as usize];
        let mut bright = dark.clone();
        bright[..(w * h * 3 / 2) as usize].fill(200);
        let rect = Rect { x: 0, y: 0, width: w, height: h };
        let mut t = Thumbnails::default();
        assert_eq!(t.measure(Picture::new(w, h, &dark), rect), 1.0, "nothing kept yet");
        t.keep();
        assert_eq!(t.measure(Picture::new(w, h, &dark), rect), 0.0);
        let moved = t.measure(Picture::new(w, h, &bright), rect);
        assert!((moved - 160.0 / 255.0 / 2.0).abs() < 0.02, "{moved}");
        assert_eq!(difference(&[0, 255], &[255, 255]), 0.5);
    }
}
