//! What a JPEG camera frame costs to turn into the model's tensor, by frame size:
//! `cargo bench --bench decode`.
//!
//! Decode + preprocess (`pipeline::Prepare::frame`, the stage the daemon and every tool run) of a 640×480,
//! a 1280×720, a 1920×1080 and a 3840×2160 JPEG for the INT8 EfficientNet-Lite0 recipe, and the ratio of
//! each to the 640×480 frame. The frames are made here the same way (the coffee photo scaled to fill,
//! JPEG quality 95). Medians of `BENCH_ITERATIONS` (default 200) frames, after 5 to warm up.
//!
//! The last column is the floor no reduced decoding goes below: the same frame decoded at 1/8 scale by the
//! same library (`tjDecompress2`, one DC coefficient per 8×8 block, colour conversion of 1/64 of the pixels),
//! which still entropy-decodes (Huffman) every coefficient of the whole frame, as a ratio to the 640×480
//! frame's whole decode + preprocess. That part grows with the compressed size, not with the pixels the
//! model needs.

use std::path::Path;
use std::time::{Duration, Instant};

use camclassd::model::{self, Model, ModelOptions};
use camclassd::pipeline::Prepare;
use camclassd::preprocess::Frame;
use camclassd::preprocess::turbo::Decompressor;

/// The median time to decode `jpeg` (`width` × `height`) at 1/8 scale: every coefficient entropy-decoded,
/// the least pixel work libjpeg-turbo can do.
fn eighth_scale_decode(
    jpeg: &[u8],
    width: u32,
    height: u32,
    iterations: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let (w, h) = (width.div_ceil(8), height.div_ceil(8));
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    let mut decompressor = Decompressor::new()?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations + 5 {
        let t = Instant::now();
        decompressor.decompress(jpeg, &mut rgb, w, h)?;
        samples.push(t.elapsed());
    }
    Ok(median(&mut samples[5..]))
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
        "| frame | JPEG bytes | decode | preprocess | decode + preprocess | ÷ 640x480 | decode at 1/8, the floor (÷ 640x480) |"
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
        let floor = eighth_scale_decode(&jpeg, width, height, iterations)?;
        println!(
            "| {width}x{height} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {:.2} ms ({:.2}) |",
            jpeg.len(),
            ms(median(&mut decode)),
            ms(median(&mut preprocess)),
            ms(total),
            total.as_secs_f64() / base.as_secs_f64(),
            ms(floor),
            floor.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!("\n{iterations} frames per size, medians.");
    Ok(())
}
