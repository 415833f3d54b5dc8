//! The Pillow-exact resize + crop alone (`preprocess::resample`), the part of preprocessing that scales with
//! the decoded picture: `cargo bench --bench resample`.
//!
//! The geometries are the ones the daemon runs for the INT8 EfficientNet-Lite0 recipe (shorter side to 256,
//! centre crop 224): a 640×480 frame decoded at full size, a 1920×1080 frame decoded at 1/4 (480×270), a
//! 1280×720 one at 1/2 (640×360), and a 200×150 region of a VGA frame enlarged to 256. Each with the
//! bilinear filter (the recipe's) and bicubic. Medians of `BENCH_ITERATIONS` (default 500) after 20 to warm up.

use std::time::{Duration, Instant};

use camclassd::model::spec::Crop;
use camclassd::preprocess::geometry;
use camclassd::preprocess::resample::{Filter, Resampler};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let iterations = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    println!("| picture → tensor | filter | resize + crop |");
    println!("|---|---|---|");
    for (what, (w, h)) in [
        ("640x480 (VGA, full size)", (640u32, 480u32)),
        ("480x270 (1080p at 1/4)", (480, 270)),
        ("640x360 (720p at 1/2)", (640, 360)),
        ("200x150 (a region)", (200, 150)),
    ] {
        // A smooth picture with some detail: a gradient plus a pattern, like a photo's statistics.
        let src: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 255 / w) as u8, (y * 255 / h) as u8, ((x * 7 + y * 13) % 256) as u8]
            })
            .collect();
        let g = geometry((w, h), (224, 224), 256, Crop::Center);
        let mut dst = vec![0u8; 224 * 224 * 3];
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let mut r = Resampler::default();
            let mut samples = Vec::with_capacity(iterations);
            for i in 0..iterations + 20 {
                let t = Instant::now();
                r.resample(&src, &mut dst, g, filter);
                if i >= 20 {
                    samples.push(t.elapsed());
                }
            }
            std::hint::black_box(&dst);
            println!("| {what} | {filter:?} | {:.3} ms |", median(&mut samples).as_secs_f64() * 1e3);
        }
    }
    println!("\n{iterations} runs each, medians.");
}
