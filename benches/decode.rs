//! What a JPEG camera frame costs to turn into the model's tensor, by frame size:
//! `cargo bench --bench decode`.
//!
//! Decode + preprocess (`pipeline::Prepare::frame`, the stage the daemon and every tool run) of a 640×480,
//! a 1280×720, a 1920×1080 and a 3840×2160 JPEG for the INT8 EfficientNet-Lite0 recipe, and the ratio of
//! each to the 640×480 frame. The frames are made here the same way (the coffee photo scaled to fill,
//! JPEG quality 95). Medians of `BENCH_ITERATIONS` (default 200) frames, after 5 to warm up.
//!
//! The last column is the floor no reduced decoding goes below: the frame's entropy (Huffman) decoding
//! alone, which libjpeg-turbo must do for every coefficient of the whole frame before any scaled IDCT
//! (measured with the same library: `tjTransform` with `TJXOPT_NOOUTPUT` reads the coefficients and writes
//! nothing), as a ratio to the 640×480 frame's whole decode + preprocess.

use std::ffi::{c_int, c_uchar, c_ulong, c_void};
use std::path::Path;
use std::time::{Duration, Instant};

use camclassd::model::{self, Model, ModelOptions};
use camclassd::pipeline::Prepare;
use camclassd::preprocess::Frame;

/// `tjregion` and `tjtransform` of TurboJPEG 2.x.
#[repr(C)]
struct TjRegion {
    x: c_int,
    y: c_int,
    w: c_int,
    h: c_int,
}

#[repr(C)]
struct TjTransform {
    r: TjRegion,
    op: c_int,
    options: c_int,
    data: *mut c_void,
    custom_filter: Option<unsafe extern "C" fn() -> c_int>,
}

/// `TJXOPT_NOOUTPUT`: read the coefficients, write no JPEG.
const TJXOPT_NOOUTPUT: c_int = 16;

#[link(name = "turbojpeg")]
unsafe extern "C" {
    fn tjInitTransform() -> *mut c_void;
    fn tjTransform(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        n: c_int,
        dst_bufs: *mut *mut c_uchar,
        dst_sizes: *mut c_ulong,
        transforms: *mut TjTransform,
        flags: c_int,
    ) -> c_int;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

/// The median time to entropy-decode `jpeg` (every coefficient of every block), nothing else.
fn entropy_decode(jpeg: &[u8], iterations: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    // SAFETY: TurboJPEG 2.x's documented calls: a handle made and destroyed here, a transform that writes no
    // output (the destination arrays are read but not written), the JPEG borrowed for the call.
    unsafe {
        let handle = tjInitTransform();
        if handle.is_null() {
            return Err("tjInitTransform failed".into());
        }
        let mut samples = Vec::with_capacity(iterations);
        let mut result = Ok(());
        for _ in 0..iterations + 5 {
            let mut transform = TjTransform {
                r: TjRegion { x: 0, y: 0, w: 0, h: 0 },
                op: 0,
                options: TJXOPT_NOOUTPUT,
                data: std::ptr::null_mut(),
                custom_filter: None,
            };
            let (mut dst, mut dst_size): (*mut c_uchar, c_ulong) = (std::ptr::null_mut(), 0);
            let t = Instant::now();
            let rc = tjTransform(
                handle,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                1,
                &mut dst,
                &mut dst_size,
                &mut transform,
                0,
            );
            samples.push(t.elapsed());
            if rc != 0 {
                result = Err("tjTransform failed".into());
                break;
            }
        }
        tjDestroy(handle);
        result.map(|()| median(&mut samples[5..]))
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let iterations = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let runtime = model::runtime::load(None)?;
    let model = Model::load(
        runtime,
        &root.join("models/efficientnet-lite0-int8.onnx"),
        &ModelOptions { threads: Some(1), ..ModelOptions::default() },
    )?;
    let photo = image::open(root.join("tests/data/generated/coffee.png"))?;

    println!(
        "| frame | JPEG bytes | decode | preprocess | decode + preprocess | ÷ 640x480 | entropy decoding alone (÷ 640x480) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut vga = None;
    for (width, height) in [(640, 480), (1280, 720), (1920, 1080), (3840, 2160)] {
        let frame = photo.resize_to_fill(width, height, image::imageops::FilterType::Triangle).to_rgb8();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&frame)?;
        let mut prepare = Prepare::new(model.spec());
        let mut input = model.new_input()?;
        for _ in 0..5 {
            prepare.frame(Frame::Encoded(&jpeg), &mut input, 0)?;
        }
        let (mut decode, mut preprocess, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iterations {
            let t = prepare.frame(Frame::Encoded(&jpeg), &mut input, 0)?;
            decode.push(t.decode);
            preprocess.push(t.preprocess);
            total.push(t.decode + t.preprocess);
        }
        let total = median(&mut total);
        let base = *vga.get_or_insert(total);
        let entropy = entropy_decode(&jpeg, iterations)?;
        println!(
            "| {width}x{height} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {:.2} ms ({:.2}) |",
            jpeg.len(),
            ms(median(&mut decode)),
            ms(median(&mut preprocess)),
            ms(total),
            total.as_secs_f64() / base.as_secs_f64(),
            ms(entropy),
            entropy.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!("\n{iterations} frames per size, medians.");
    Ok(())
}
