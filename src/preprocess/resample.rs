//! Pillow-exact separable resampling of packed RGB8, with cached filter coefficients.
//!
//! Exact for bilinear, bicubic and Lanczos; `Nearest` is a unit box filter (widened when downscaling, so
//! it averages), not Pillow's point-sampling NEAREST.
//!
//! This is Pillow's `ImagingResample` (`libImaging/Resample.c`): per output pixel, a filter window scaled
//! by the downscale factor (so downscaling averages, it does not alias), weights normalised and held as
//! 22-bit fixed point, a horizontal pass over only the rows the vertical pass needs, and rounding to
//! 8 bits between the passes. Resizing to `full` and cropping `out` at `offset` is computed directly, by
//! evaluating only the cropped output pixels with the full-size coefficients, so the result equals
//! Pillow's resize-then-crop bit for bit at the cost of the crop alone.
//!
//! Coefficients depend only on the geometry, which is fixed for a camera, so they are computed once and
//! reused: after the first frame of a given size the resampler allocates nothing.

/// Resampling filter, as in Pillow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.5,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos3 => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            // A box of width 1: each output takes the one source pixel its centre falls in.
            Filter::Nearest => {
                if x < 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos3 => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let px = x * std::f64::consts::PI;
                        px.sin() / px
                    }
                };
                if x < 3.0 { sinc(x) * sinc(x / 3.0) } else { 0.0 }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Where to resample: source size, the size the whole picture is scaled to, and the window of that
/// scaled picture that is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub src: (u32, u32),
    pub full: (u32, u32),
    pub offset: (u32, u32),
    pub out: (u32, u32),
}

/// One axis's coefficients: for each output index, the first source index and `ksize` fixed-point weights.
#[derive(Debug, Default)]
struct Axis {
    first: Vec<u32>,
    taps: Vec<u32>,
    weights: Vec<i32>,
    ksize: usize,
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`, for outputs `offset..offset + count` of a
    /// resize from `in_size` to `full`.
    fn compute(&mut self, filter: Filter, in_size: u32, full: u32, offset: u32, count: u32) {
        let scale = f64::from(in_size) / f64::from(full);
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        self.ksize = support.ceil() as usize * 2 + 1;
        self.first.clear();
        self.taps.clear();
        self.weights.clear();
        self.weights.resize(count as usize * self.ksize, 0);
        let mut k = vec![0f64; self.ksize];
        for (i, out_index) in (offset..offset + count).enumerate() {
            let center = (f64::from(out_index) + 0.5) * scale;
            // `as i64` truncates toward zero, as Pillow's (int) cast does.
            let xmin = ((center - support + 0.5) as i64).max(0) as u32;
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as u32;
            let n = xmax.saturating_sub(xmin) as usize;
            let mut total = 0.0;
            for (x, slot) in k.iter_mut().enumerate().take(n) {
                let w = filter.weight((x as f64 + f64::from(xmin) - center + 0.5) / filter_scale);
                *slot = w;
                total += w;
            }
            let row = &mut self.weights[i * self.ksize..(i + 1) * self.ksize];
            for (x, w) in row.iter_mut().enumerate().take(n) {
                let v = if total != 0.0 { k[x] / total } else { k[x] };
                let fixed = v * f64::from(1u32 << PRECISION_BITS);
                *w = if v < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            self.first.push(xmin);
            self.taps.push(n as u32);
        }
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A resampler that keeps its coefficients and intermediate buffer between calls.
#[derive(Debug, Default)]
pub struct Resampler {
    key: Option<(Geometry, Filter)>,
    horizontal: Axis,
    vertical: Axis,
    /// Rows `row_first..row_first + rows` of the source, resampled horizontally.
    temp: Vec<u8>,
    row_first: u32,
    /// One output row of fixed-point sums for the vertical pass.
    acc: Vec<i32>,
}

impl Resampler {
    /// Resamples packed RGB8 `src` into `dst` (`out.0 * out.1 * 3` bytes).
    pub fn resample(&mut self, src: &[u8], dst: &mut [u8], geometry: Geometry, filter: Filter) {
        self.resample_view(src, geometry.src.0, (0, 0), dst, geometry, filter);
    }

    /// As [`Resampler::resample`], from the `geometry.src`-sized window at `origin` of a packed RGB8 picture
    /// `stride` pixels wide: a region is resampled where it lies, without being copied out first.
    pub fn resample_view(
        &mut self,
        src: &[u8],
        stride: u32,
        origin: (u32, u32),
        dst: &mut [u8],
        geometry: Geometry,
        filter: Filter,
    ) {
        let Geometry { src: (sw, sh), out: (ow, oh), .. } = geometry;
        debug_assert!(origin.0 + sw <= stride);
        debug_assert!(src.len() >= (stride as usize * (origin.1 + sh) as usize) * 3);
        debug_assert_eq!(dst.len(), ow as usize * oh as usize * 3);
        if self.key != Some((geometry, filter)) {
            self.prepare(geometry, filter);
        }

        // Horizontal pass over the source rows the vertical pass reads.
        let rows = self.temp.len() / (ow as usize * 3);
        let h = &self.horizontal;
        let src_stride = stride as usize * 3;
        let (x0, y0) = (origin.0 as usize * 3, origin.1 as usize);
        for (r, out_row) in self.temp.chunks_exact_mut(ow as usize * 3).enumerate().take(rows) {
            let in_row = &src[(y0 + self.row_first as usize + r) * src_stride + x0..][..sw as usize * 3];
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                let first = h.first[x] as usize;
                let taps = h.taps[x] as usize;
                let weights = &h.weights[x * h.ksize..][..taps];
                let pixels = &in_row[first * 3..][..taps * 3];
                let half = 1i32 << (PRECISION_BITS - 1);
                let (mut r0, mut g0, mut b0) = (half, half, half);
                for (w, p) in weights.iter().zip(pixels.chunks_exact(3)) {
                    r0 += i32::from(p[0]) * w;
                    g0 += i32::from(p[1]) * w;
                    b0 += i32::from(p[2]) * w;
                }
                px[0] = clip8(r0);
                px[1] = clip8(g0);
                px[2] = clip8(b0);
            }
        }

        // Vertical pass: whole rows at a time (contiguous, so the compiler vectorises the multiply-add).
        let v = &self.vertical;
        let stride = ow as usize * 3;
        self.acc.resize(stride, 0);
        for (y, out_row) in dst.chunks_exact_mut(stride).enumerate() {
            let first = (v.first[y] - self.row_first) as usize;
            let taps = v.taps[y] as usize;
            let weights = &v.weights[y * v.ksize..][..taps];
            self.acc.fill(1i32 << (PRECISION_BITS - 1));
            for (k, &w) in weights.iter().enumerate() {
                let row = &self.temp[(first + k) * stride..][..stride];
                for (a, &p) in self.acc.iter_mut().zip(row) {
                    *a += i32::from(p) * w;
                }
            }
            for (out, &a) in out_row.iter_mut().zip(&self.acc) {
                *out = clip8(a);
            }
        }
    }

    fn prepare(&mut self, g: Geometry, filter: Filter) {
        self.horizontal.compute(filter, g.src.0, g.full.0, g.offset.0, g.out.0);
        self.vertical.compute(filter, g.src.1, g.full.1, g.offset.1, g.out.1);
        let v = &self.vertical;
        self.row_first = v.first.iter().copied().min().unwrap_or(0);
        let row_end = v.first.iter().zip(&v.taps).map(|(f, t)| f + t).max().unwrap_or(0);
        let rows = (row_end - self.row_first) as usize;
        self.temp.clear();
        self.temp.resize(rows * g.out.0 as usize * 3, 0);
        self.key = Some((g, filter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_geometry_copies_the_picture() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 11 % 256) as u8).collect();
        let mut dst = vec![0; src.len()];
        let g = Geometry { src: (5, 4), full: (5, 4), offset: (0, 0), out: (5, 4) };
        Resampler::default().resample(&src, &mut dst, g, Filter::Bilinear);
        assert_eq!(src, dst);
    }

    #[test]
    fn a_view_resamples_as_the_copied_window_does() {
        let (sw, sh) = (29u32, 17u32);
        let src: Vec<u8> = (0..sw * sh * 3).map(|i| (i * 13 % 251) as u8).collect();
        let (x, y, w, h) = (5u32, 3u32, 19u32, 11u32);
        let copy: Vec<u8> = (y..y + h)
            .flat_map(|row| src[((row * sw + x) * 3) as usize..((row * sw + x + w) * 3) as usize].to_vec())
            .collect();
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
            let g = Geometry { src: (w, h), full: (8, 6), offset: (1, 1), out: (6, 4) };
            let mut want = vec![0; 6 * 4 * 3];
            Resampler::default().resample(&copy, &mut want, g, filter);
            let mut got = vec![0; 6 * 4 * 3];
            Resampler::default().resample_view(&src, sw, (x, y), &mut got, g, filter);
            assert_eq!(got, want, "{filter:?}");
        }
    }

    #[test]
    fn halving_averages_pixel_pairs() {
        // 4x1 → 2x1 bilinear with a 2x downscale: each output is the mean of a pixel pair (plus a quarter of
        // the neighbours, per the widened triangle); a constant row stays constant.
        let src = [10u8, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10];
        let mut dst = [0u8; 6];
        let g = Geometry { src: (4, 1), full: (2, 1), offset: (0, 0), out: (2, 1) };
        Resampler::default().resample(&src, &mut dst, g, Filter::Bilinear);
        assert_eq!(dst, [10; 6]);
    }

    #[test]
    fn a_crop_equals_the_same_window_of_the_full_resize() {
        let (sw, sh) = (37u32, 23u32);
        let src: Vec<u8> = (0..sw * sh * 3).map(|i| (i * 7 % 253) as u8).collect();
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
            let full = (20u32, 13u32);
            let mut whole = vec![0; (full.0 * full.1 * 3) as usize];
            let mut r = Resampler::default();
            r.resample(&src, &mut whole, Geometry { src: (sw, sh), full, offset: (0, 0), out: full }, filter);
            let (ox, oy, w, h) = (3u32, 2u32, 11u32, 9u32);
            let mut part = vec![0; (w * h * 3) as usize];
            r.resample(&src, &mut part, Geometry { src: (sw, sh), full, offset: (ox, oy), out: (w, h) }, filter);
            for y in 0..h {
                let a = &whole[(((y + oy) * full.0 + ox) * 3) as usize..][..(w * 3) as usize];
                let b = &part[(y * w * 3) as usize..][..(w * 3) as usize];
                assert_eq!(a, b, "{filter:?} row {y}");
            }
        }
    }
}
