//! JPEG decoding through libjpeg-turbo's TurboJPEG 2.x C API (Debian's `libturbojpeg0`, also on Raspberry
//! Pi OS and Ubuntu/JetPack), reduced by 1/2, 1/4 or 1/8 in the DCT domain when the caller needs fewer
//! pixels: the scaled inverse DCT computes only the reduced picture, so a 1080p frame decoded at 1/4 costs
//! about what a 480×270 one does. Pillow's `Image.draft()` uses the same scaled IDCT.
//!
//! Six functions of the stable 2.x API, declared by hand: the `turbojpeg` crate's current releases need
//! libjpeg-turbo 3 (the `tj3*` API), which Debian 12 does not ship, and their bundled build needs cmake and
//! nasm for every target.

use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong, c_void};

/// `TJPF_RGB`: packed RGB, 3 bytes a pixel.
const TJPF_RGB: c_int = 0;
/// `TJERR_WARNING`: the picture was decoded, with a complaint (corrupt data libjpeg recovered from).
const TJERR_WARNING: c_int = 0;
/// `TJCS_CMYK`, `TJCS_YCCK`: four-channel JPEGs, which TurboJPEG cannot turn into RGB.
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;

#[link(name = "turbojpeg")]
unsafe extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsampling: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjGetErrorCode(handle: *mut c_void) -> c_int;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

/// What a JPEG's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// CMYK or YCCK: TurboJPEG cannot decode it to RGB.
    pub four_channel: bool,
}

/// A TurboJPEG decompressor (one per preprocessor: a handle must not be used by two threads at once).
///
/// After any error the handle is destroyed and a new one made: libjpeg-turbo 2.x leaves a handle that
/// failed inside `jpeg_read_header` (a 12-bit or lossless SOF, a zero or oversized side, a bad component
/// count) in a state where every later picture fails with "two SOI markers", so one bad frame from a
/// camera or one bad upload would otherwise poison the decoder for good.
#[derive(Debug)]
pub struct Decompressor {
    handle: std::ptr::NonNull<c_void>,
}

// SAFETY: a TurboJPEG handle holds no thread-local state; `&mut self` on every call keeps it to one
// thread at a time.
unsafe impl Send for Decompressor {}

impl Decompressor {
    /// A new decompressor; `Err` with TurboJPEG's message when it cannot make one (out of memory).
    pub fn new() -> Result<Decompressor, String> {
        // SAFETY: no arguments; a null return is handled.
        let handle = unsafe { tjInitDecompress() };
        std::ptr::NonNull::new(handle)
            .map(|handle| Decompressor { handle })
            .ok_or_else(|| error_text(std::ptr::null_mut()))
    }

    /// Reads the header (the markers up to the first scan): size and colour space.
    pub fn header(&mut self, jpeg: &[u8]) -> Result<Header, String> {
        let (mut width, mut height, mut subsampling, mut colorspace) = (0, 0, 0, 0);
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| "JPEG too large".to_string())?;
        // SAFETY: `jpeg` is valid for `size` bytes; the out-pointers are valid locals.
        let rc = unsafe {
            tjDecompressHeader3(
                self.handle.as_ptr(),
                jpeg.as_ptr(),
                size,
                &mut width,
                &mut height,
                &mut subsampling,
                &mut colorspace,
            )
        };
        if rc != 0 {
            return Err(self.fail());
        }
        let side = |v: c_int| u32::try_from(v).ok().filter(|v| *v > 0);
        match (side(width), side(height)) {
            (Some(width), Some(height)) => {
                Ok(Header { width, height, four_channel: matches!(colorspace, TJCS_CMYK | TJCS_YCCK) })
            }
            _ => Err(format!("bad JPEG size {width}x{height}")),
        }
    }

    /// Decodes `jpeg` into `rgb` (packed RGB8, at least `width * height * 3` bytes), reduced in the DCT
    /// domain to the largest picture that fits `width` × `height`: pass the header's size divided by 2, 4
    /// or 8 and rounded up (libjpeg's `TJSCALED`) to get that reduction. Warnings (corrupt data libjpeg
    /// recovered from) are not errors, as for Pillow and the `image` crate.
    pub fn decompress(&mut self, jpeg: &[u8], rgb: &mut [u8], width: u32, height: u32) -> Result<(), String> {
        let too_large = || "JPEG too large".to_string();
        let need = usize::try_from(u64::from(width) * u64::from(height) * 3).map_err(|_| too_large())?;
        if rgb.len() < need {
            return Err(format!("a {width}x{height} picture needs {need} bytes, the buffer has {}", rgb.len()));
        }
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| too_large())?;
        let w = c_int::try_from(width).map_err(|_| too_large())?;
        let h = c_int::try_from(height).map_err(|_| too_large())?;
        let pitch = w.checked_mul(3).ok_or_else(too_large)?;
        // SAFETY: `jpeg` is valid for `size` bytes; TurboJPEG writes at most `height` rows of `pitch` bytes
        // (the picture it picks fits `width` × `height`), which `rgb` holds (checked above).
        let rc = unsafe {
            tjDecompress2(self.handle.as_ptr(), jpeg.as_ptr(), size, rgb.as_mut_ptr(), w, pitch, h, TJPF_RGB, 0)
        };
        // SAFETY: a valid handle.
        if rc != 0 && unsafe { tjGetErrorCode(self.handle.as_ptr()) } != TJERR_WARNING {
            return Err(self.fail());
        }
        Ok(())
    }

    /// The last error's message; the handle is then replaced by a fresh one (see the type's doc). When no
    /// new handle can be made (out of memory), the old one is kept and the next call reports its state.
    fn fail(&mut self) -> String {
        let text = error_text(self.handle.as_ptr());
        // SAFETY: no arguments; a null return is handled.
        if let Some(fresh) = std::ptr::NonNull::new(unsafe { tjInitDecompress() }) {
            // SAFETY: the old handle came from tjInitDecompress, is destroyed once and never used again.
            unsafe { tjDestroy(self.handle.as_ptr()) };
            self.handle = fresh;
        }
        text
    }
}

/// TurboJPEG's message for the last error of `handle` (or of the library, for a null handle).
fn error_text(handle: *mut c_void) -> String {
    // SAFETY: TurboJPEG returns a pointer to a NUL-terminated message it owns (never null in 2.x; checked).
    let text = unsafe { tjGetErrorStr2(handle) };
    if text.is_null() {
        return "unknown TurboJPEG error".to_string();
    }
    // SAFETY: non-null and NUL-terminated, valid until the next call on this handle; copied at once.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { tjDestroy(self.handle.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).expect("encodes");
        out
    }

    #[test]
    fn reduced_sizes_round_up_like_libjpeg() {
        let data = jpeg(1921, 1081);
        let mut d = Decompressor::new().expect("decompressor");
        assert_eq!(d.header(&data).expect("header"), Header { width: 1921, height: 1081, four_channel: false });
        for s in [1u32, 2, 4, 8] {
            let (w, h) = (1921u32.div_ceil(s), 1081u32.div_ceil(s));
            let mut rgb = vec![0u8; (w * h * 3) as usize];
            d.decompress(&data, &mut rgb, w, h).expect("decodes");
            // The last column is decoded (not left at 0): the picture is exactly w × h.
            let last = &rgb[((h - 1) * w + w - 1) as usize * 3..][..3];
            assert!(last[2] > 40, "1/{s}: last pixel {last:?}");
        }
    }

    #[test]
    fn a_short_buffer_and_garbage_are_errors() {
        let data = jpeg(64, 48);
        let mut d = Decompressor::new().expect("decompressor");
        let mut rgb = vec![0u8; 10];
        assert!(d.decompress(&data, &mut rgb, 64, 48).is_err());
        assert!(d.header(b"\xff\xd8 not a jpeg").is_err());
    }

    /// The index of the SOF0 marker of a baseline JPEG (what the `image` crate writes).
    fn sof(data: &[u8]) -> usize {
        data.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG has SOF0")
    }

    /// The header corruptions that poisoned a libjpeg-turbo 2.x handle (issue 26): each fails, and a good
    /// picture decodes on the same decompressor right after it.
    #[test]
    fn a_bad_header_does_not_poison_the_next_picture() {
        let good = jpeg(64, 48);
        let at = sof(&good);
        let patch = |edits: &[(usize, u8)]| {
            let mut bad = good.clone();
            for &(i, v) in edits {
                bad[at + i] = v;
            }
            bad
        };
        let cases = [
            ("12-bit precision", patch(&[(4, 12)])),
            ("SOF3 (lossless)", patch(&[(1, 0xc3)])),
            ("height 0", patch(&[(5, 0), (6, 0)])),
            ("width 0", patch(&[(7, 0), (8, 0)])),
            ("width 65535", patch(&[(7, 0xff), (8, 0xff)])),
            ("2 components", patch(&[(9, 2)])),
            ("0 components", patch(&[(9, 0)])),
        ];
        let mut d = Decompressor::new().expect("decompressor");
        let mut rgb = vec![0u8; 64 * 48 * 3];
        for (what, bad) in &cases {
            let failed = d.header(bad).is_err() || d.decompress(bad, &mut rgb, 64, 48).is_err();
            assert!(failed, "{what}: decoded");
            assert_eq!(d.header(&good), Ok(Header { width: 64, height: 48, four_channel: false }), "after {what}");
            d.decompress(&good, &mut rgb, 64, 48).unwrap_or_else(|e| panic!("after {what}: {e}"));
        }
    }
}
