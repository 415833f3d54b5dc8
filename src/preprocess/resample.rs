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
//!
//! Speed: the horizontal pass, most of the work, runs vector kernels where the CPU has them (SSE4.1 or
//! AVX2 on x86-64, detected at run time; NEON on aarch64), over windows padded with zero weights to a fixed
//! tap count. They add the same 32-bit products as Pillow's loop, so every CPU gives Pillow's bytes: unit
//! tests compare each kernel with the plain loops (`scripts/cross-check` runs them on an emulated
//! Cortex-A72), and `tests/it/reference.rs` compares with Pillow itself. `cargo bench --bench resample`.

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

use super::isa::Isa;

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
    /// Every output has exactly `ksize` taps (zero weights pad the window, which is moved inside the source
    /// where it would run past its end): the fixed-length kernels apply.
    padded: bool,
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`, for outputs `offset..offset + count` of a
    /// resize from `in_size` to `full`. With `pad` (and a source at least `ksize` long), each output's
    /// window is widened to `ksize` taps with zero weights, starting earlier where it would end past the
    /// source: the sums are Pillow's, as a zero weight adds nothing.
    fn compute(&mut self, filter: Filter, in_size: u32, full: u32, offset: u32, count: u32, pad: bool) {
        let scale = f64::from(in_size) / f64::from(full);
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        self.ksize = support.ceil() as usize * 2 + 1;
        self.first.clear();
        self.taps.clear();
        self.weights.clear();
        self.weights.resize(count as usize * self.ksize, 0);
        self.padded = pad && in_size as usize >= self.ksize;
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
            let (first, shift) = if self.padded { padded_window(xmin, self.ksize, in_size) } else { (xmin, 0) };
            let row = &mut self.weights[i * self.ksize..(i + 1) * self.ksize];
            for (x, w) in row[shift..].iter_mut().enumerate().take(n) {
                let v = if total != 0.0 { k[x] / total } else { k[x] };
                let fixed = v * f64::from(1u32 << PRECISION_BITS);
                *w = if v < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            self.first.push(first);
            self.taps.push(if self.padded { self.ksize as u32 } else { n as u32 });
        }
    }
}

/// A window of `ksize` taps holding `xmin..`: starting at `xmin`, or earlier so that it ends inside the
/// source (`in_size >= ksize`). Returns the window's first index and where `xmin`'s weight goes in it.
fn padded_window(xmin: u32, ksize: usize, in_size: u32) -> (u32, usize) {
    let first = xmin.min(in_size - ksize as u32);
    (first, (xmin - first) as usize)
}

/// `$fixed` with the kernel's tap count as its const parameter for a fixed window, `$any` for any other:
/// the one list of the tap counts that have unrolled kernels.
macro_rules! by_taps {
    ($kernel:expr, $fixed:ident($($arg:expr),*), $any:expr) => {
        match $kernel {
            Kernel::Fixed(3) => $fixed::<3>($($arg),*),
            Kernel::Fixed(5) => $fixed::<5>($($arg),*),
            Kernel::Fixed(7) => $fixed::<7>($($arg),*),
            Kernel::Fixed(9) => $fixed::<9>($($arg),*),
            Kernel::Fixed(11) => $fixed::<11>($($arg),*),
            Kernel::Fixed(13) => $fixed::<13>($($arg),*),
            _ => $any,
        }
    };
}

/// True: [`by_taps!`] calls it for the tap counts it lists.
const fn listed<const N: usize>() -> bool {
    true
}

/// The horizontal pass's kernel for one row: chosen once per call from the axis's window size.
#[derive(Clone, Copy)]
enum Kernel {
    /// Any window, tap counts as Pillow computes them.
    Any,
    /// Padded windows of 3 to 13 taps (bilinear up to a 6× reduction, bicubic up to 3×, Lanczos up to 2×),
    /// unrolled.
    Fixed(usize),
}

impl Kernel {
    /// A fixed window where the axis is padded and [`by_taps!`] lists its tap count.
    fn for_axis(axis: &Axis) -> Kernel {
        let fixed = Kernel::Fixed(axis.ksize);
        if axis.padded && by_taps!(fixed, listed(), false) { fixed } else { Kernel::Any }
    }

    /// Resamples the row at the start of `src` (`row_len` bytes; what follows it in the picture may be read,
    /// never used) into `out`.
    #[inline(always)]
    fn run(self, axis: &Axis, src: &[u8], row_len: usize, out: &mut [u8]) {
        by_taps!(self, fixed(axis, src, row_len, out), row_any(axis, &src[..row_len], out))
    }
}

/// The portable fixed-window kernel: NEON on aarch64, plain code elsewhere (which x86-64's baseline, SSE2,
/// leaves scalar: `Isa::Sse41` and `Isa::Avx2` use [`x86`]'s).
#[inline(always)]
fn fixed<const N: usize>(h: &Axis, src: &[u8], row_len: usize, out_row: &mut [u8]) {
    #[cfg(target_arch = "aarch64")]
    arm::row::<N>(h, src, row_len, out_row);
    #[cfg(not(target_arch = "aarch64"))]
    row_fixed::<N>(h, src, row_len, out_row);
}

/// Pillow's horizontal pass over one row, each output over its own taps.
#[inline(always)]
fn row_any(h: &Axis, in_row: &[u8], out_row: &mut [u8]) {
    for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
        let (first, taps) = (h.first[x] as usize, h.taps[x] as usize);
        px.copy_from_slice(&pixel3(&in_row[first * 3..][..taps * 3], &h.weights[x * h.ksize..][..taps]));
    }
}

/// One output of the horizontal pass from its taps' pixels (3 bytes each) and weights: Pillow's sums.
#[inline(always)]
fn pixel3(pixels: &[u8], weights: &[i32]) -> [u8; 3] {
    let mut acc = [HALF; 3];
    for (w, p) in weights.iter().zip(pixels.chunks_exact(3)) {
        for c in 0..3 {
            acc[c] += i32::from(p[c]) * w;
        }
    }
    acc.map(clip8)
}

/// The horizontal pass over one row with `N` taps per output, unrolled. (The picture's last bytes are
/// where `src` ends: `row_len` is only for checks.)
#[cfg(not(target_arch = "aarch64"))]
#[inline(always)]
fn row_fixed<const N: usize>(h: &Axis, src: &[u8], row_len: usize, out_row: &mut [u8]) {
    debug_assert!(src.len() >= row_len);
    for ((px, &first), weights) in out_row.chunks_exact_mut(3).zip(&h.first).zip(h.weights.chunks_exact(N)) {
        let first = first as usize * 3;
        px.copy_from_slice(&pixel3(&src[first..first + 3 * N], weights));
    }
}

/// Pillow's rounding: a half added before the sum is shifted down.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

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
    /// Pillow's loops as written (no padded windows, no vector kernels): what tests compare the others with.
    #[cfg(test)]
    reference: bool,
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

        #[cfg(test)]
        if self.reference {
            return self
                .passes_with(src, stride as usize, origin, dst, |_, h, src, len, out| row_any(h, &src[..len], out));
        }
        self.passes(Isa::detect(), src, stride as usize, origin, dst);
    }

    /// The two passes with `isa`'s code (the same integer arithmetic, so the same bytes, on every ISA).
    fn passes(&mut self, isa: Isa, src: &[u8], stride: usize, origin: (u32, u32), dst: &mut [u8]) {
        match isa {
            // SAFETY: `Isa::Avx2` and `Isa::Sse41` are only made where the CPU has them (`Isa::detect`,
            // `Isa::all`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.passes_avx2(src, stride, origin, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa::Sse41 => unsafe { self.passes_sse41(src, stride, origin, dst) },
            Isa::Portable => {
                self.passes_with(src, stride, origin, dst, |kernel, h, src, len, out| kernel.run(h, src, len, out))
            }
        }
    }

    /// The passes compiled for AVX2: the horizontal kernels of [`x86`], and the vertical pass vectorised
    /// 8 lanes wide.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn passes_avx2(&mut self, src: &[u8], stride: usize, origin: (u32, u32), dst: &mut [u8]) {
        self.passes_with(src, stride, origin, dst, x86::horizontal)
    }

    /// The passes compiled for SSE4.1 (x86-64 boards without AVX2, such as Celeron J4125's Goldmont Plus):
    /// the horizontal kernels of [`x86`], and the vertical pass 4 lanes wide with `pmulld`, which the
    /// x86-64 baseline (SSE2) lacks.
    ///
    /// # Safety
    /// The CPU must have SSE4.1.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1")]
    unsafe fn passes_sse41(&mut self, src: &[u8], stride: usize, origin: (u32, u32), dst: &mut [u8]) {
        self.passes_with(src, stride, origin, dst, x86::horizontal)
    }

    /// The passes, with `horizontal` resampling each row.
    #[inline(always)]
    fn passes_with(
        &mut self,
        src: &[u8],
        stride: usize,
        origin: (u32, u32),
        dst: &mut [u8],
        horizontal: impl Fn(Kernel, &Axis, &[u8], usize, &mut [u8]),
    ) {
        let Some((geometry, _)) = self.key else { return };
        let Geometry { src: (sw, _), out: (ow, _), .. } = geometry;
        // Horizontal pass over the source rows the vertical pass reads.
        let rows = self.temp.len() / (ow as usize * 3);
        let h = &self.horizontal;
        let src_stride = stride * 3;
        let (x0, y0) = (origin.0 as usize * 3, origin.1 as usize);
        let kernel = Kernel::for_axis(h);
        for (r, out_row) in self.temp.chunks_exact_mut(ow as usize * 3).enumerate().take(rows) {
            let start = (y0 + self.row_first as usize + r) * src_stride + x0;
            // The row and what follows it in the picture: the 4-lane kernels read one byte past a pixel.
            horizontal(kernel, h, &src[start..], sw as usize * 3, out_row);
        }

        // Vertical pass: whole rows at a time (contiguous, so the compiler vectorises the multiply-add).
        let v = &self.vertical;
        let stride = ow as usize * 3;
        self.acc.resize(stride, 0);
        for (y, out_row) in dst.chunks_exact_mut(stride).enumerate() {
            let first = (v.first[y] - self.row_first) as usize;
            let taps = v.taps[y] as usize;
            let weights = &v.weights[y * v.ksize..][..taps];
            self.acc.fill(HALF);
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
        #[cfg(test)]
        let pad = !self.reference;
        #[cfg(not(test))]
        let pad = true;
        self.horizontal.compute(filter, g.src.0, g.full.0, g.offset.0, g.out.0, pad);
        self.vertical.compute(filter, g.src.1, g.full.1, g.offset.1, g.out.1, false);
        let v = &self.vertical;
        self.row_first = v.first.iter().copied().min().unwrap_or(0);
        let row_end = v.first.iter().zip(&v.taps).map(|(f, t)| f + t).max().unwrap_or(0);
        let rows = (row_end - self.row_first) as usize;
        self.temp.clear();
        self.temp.resize(rows * g.out.0 as usize * 3, 0);
        self.key = Some((g, filter));
    }
}

/// The horizontal pass with SSE4.1 intrinsics, inlined into the passes compiled for SSE4.1 or AVX2.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Axis, HALF, Kernel, PRECISION_BITS};

    /// One row with the SSE4.1 kernel for a fixed window, or the portable code for any other.
    /// Inlined only into the passes compiled for SSE4.1 or AVX2.
    #[inline(always)]
    pub(super) fn horizontal(kernel: Kernel, h: &Axis, src: &[u8], row_len: usize, out: &mut [u8]) {
        // SAFETY: this runs only inside `passes_sse41` and `passes_avx2`, on CPUs that have SSE4.1.
        unsafe { by_taps!(kernel, row(h, src, row_len, out), kernel.run(h, src, row_len, out)) }
    }

    /// The fixed-window loop with one pixel's 4 bytes per 128-bit vector: per tap, widen, multiply by the
    /// weight, add; then shift, saturate to 0..=255 (Pillow's `clip8`) and keep 3 bytes.
    ///
    /// # Safety
    /// The CPU must have SSE4.1.
    #[target_feature(enable = "sse4.1")]
    pub(super) unsafe fn row<const N: usize>(h: &Axis, src: &[u8], row_len: usize, out_row: &mut [u8]) {
        debug_assert!(src.len() >= row_len);
        // SAFETY: SSE4.1 is enabled here; each load reads 4 bytes of a slice checked to hold them.
        unsafe {
            let half = _mm_set1_epi32(HALF);
            for ((px, &first), weights) in out_row.chunks_exact_mut(3).zip(&h.first).zip(h.weights.chunks_exact(N)) {
                let first = first as usize * 3;
                let Some(pixels) = src.get(first..first + 3 * N + 1) else {
                    // The picture's last bytes: no 4th byte to read.
                    px.copy_from_slice(&super::pixel3(&src[first..first + 3 * N], weights));
                    continue;
                };
                let mut acc = half;
                for (k, &w) in weights.iter().enumerate() {
                    let wide = _mm_cvtepu8_epi32(_mm_loadu_si32(pixels[3 * k..][..4].as_ptr().cast()));
                    acc = _mm_add_epi32(acc, _mm_mullo_epi32(wide, _mm_set1_epi32(w)));
                }
                let shifted = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
                let bytes = _mm_packus_epi16(_mm_packs_epi32(shifted, shifted), _mm_setzero_si128());
                px.copy_from_slice(&_mm_cvtsi128_si32(bytes).to_le_bytes()[..3]);
            }
        }
    }
}

/// The horizontal pass with NEON intrinsics (aarch64's baseline, so always taken there).
#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::{Axis, HALF, PRECISION_BITS};

    /// The fixed-window loop with one pixel's 4 bytes per 128-bit vector: per tap, widen and multiply-add by
    /// the weight; then shift, saturate to 0..=255 (Pillow's `clip8`) and keep 3 bytes.
    #[inline(always)]
    pub(super) fn row<const N: usize>(h: &Axis, src: &[u8], row_len: usize, out_row: &mut [u8]) {
        debug_assert!(src.len() >= row_len);
        for ((px, &first), weights) in out_row.chunks_exact_mut(3).zip(&h.first).zip(h.weights.chunks_exact(N)) {
            let first = first as usize * 3;
            let Some(pixels) = src.get(first..first + 3 * N + 1) else {
                // The picture's last bytes: no 4th byte to read.
                px.copy_from_slice(&super::pixel3(&src[first..first + 3 * N], weights));
                continue;
            };
            // NEON is part of the aarch64 target; the intrinsics here take values, not pointers (those that
            // the Rust release in use still marks unsafe).
            #[allow(unused_unsafe)]
            // SAFETY: NEON is always present on aarch64; no memory is accessed through a pointer.
            let bytes = unsafe {
                let mut acc = vdupq_n_s32(HALF);
                for (k, &w) in weights.iter().enumerate() {
                    let p =
                        u32::from_le_bytes([pixels[3 * k], pixels[3 * k + 1], pixels[3 * k + 2], pixels[3 * k + 3]]);
                    let wide = vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(u64::from(p)))));
                    acc = vmlaq_n_s32(acc, vreinterpretq_s32_u32(wide), w);
                }
                let narrow = vqmovun_s32(vshrq_n_s32::<{ PRECISION_BITS as i32 }>(acc));
                vget_lane_u32::<0>(vreinterpret_u32_u8(vqmovn_u16(vcombine_u16(narrow, narrow))))
            };
            px.copy_from_slice(&bytes.to_le_bytes()[..3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: [Filter; 4] = [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3];

    /// A picture with the statistics that matter here: smooth areas, edges and every byte value.
    fn picture(w: u32, h: u32, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2654435761) | 1;
        (0..w * h * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let (x, y) = ((i / 3) % w, (i / 3) / w);
                if (x / 7 + y / 5) % 3 == 0 { (state >> 24) as u8 } else { ((x * 9 + y * 4 + i % 3 * 80) % 256) as u8 }
            })
            .collect()
    }

    /// Runs `geometry` over the `geometry.src` window at `origin` of `src` (`stride` wide) with Pillow's
    /// loops and with each kernel this CPU runs, and requires the same bytes.
    fn same_on_every_isa(src: &[u8], stride: u32, origin: (u32, u32), geometry: Geometry, filter: Filter) {
        let len = (geometry.out.0 * geometry.out.1 * 3) as usize;
        let mut want = vec![0; len];
        let mut reference = Resampler { reference: true, ..Resampler::default() };
        reference.resample_view(src, stride, origin, &mut want, geometry, filter);
        for isa in Isa::all() {
            let mut r = Resampler::default();
            let mut got = vec![0; len];
            r.prepare(geometry, filter);
            r.passes(isa, src, stride as usize, origin, &mut got);
            assert_eq!(got, want, "{isa:?} {filter:?} {geometry:?} at {origin:?} of a picture {stride} wide");
        }
    }

    #[test]
    fn every_kernel_gives_the_bytes_of_pillows_loops() {
        // Reductions of 1 to 6 (3- to 13-tap bilinear windows, wider for bicubic and Lanczos), enlargements,
        // crops, odd sizes, and pictures narrower than a window.
        let g = |src, full, offset, out| Geometry { src, full, offset, out };
        let cases = [
            g((640, 480), (341, 256), (58, 16), (224, 224)),
            g((480, 270), (455, 256), (115, 16), (224, 224)),
            g((640, 360), (455, 256), (115, 16), (224, 224)),
            g((200, 150), (341, 256), (58, 16), (224, 224)),
            g((97, 61), (31, 20), (2, 1), (27, 17)),
            g((301, 203), (61, 41), (0, 0), (61, 41)),
            g((900, 300), (150, 50), (3, 2), (140, 44)),
            g((33, 29), (33, 29), (0, 0), (33, 29)),
            g((2, 3), (7, 5), (1, 1), (5, 3)),
            g((5, 4), (3, 9), (0, 2), (3, 5)),
        ];
        for (i, &geometry) in cases.iter().enumerate() {
            let src = geometry.src;
            let pixels = picture(src.0, src.1, i as u32);
            for filter in FILTERS {
                // The whole picture: its last row's windows end where the buffer does.
                same_on_every_isa(&pixels, src.0, (0, 0), geometry, filter);
                // A window of a larger picture, at its bottom-right corner and inside it.
                let (sw, sh) = (src.0 + 9, src.1 + 4);
                let bigger = picture(sw, sh, 100 + i as u32);
                same_on_every_isa(&bigger, sw, (9, 4), geometry, filter);
                same_on_every_isa(&bigger, sw, (4, 1), geometry, filter);
            }
        }
    }

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
