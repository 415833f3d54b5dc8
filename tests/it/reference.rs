//! camclassd against the independent Python reference (PIL + onnxruntime, `tests/reference/reference.py`).
//!
//! The FP32 model is compared on every decodable test image: same top-1, and top-1 probabilities within
//! 0.03. PNG input decodes to the same pixels on both sides and camclassd resamples exactly as Pillow does,
//! so there the scores agree to float rounding, for INT8 too. JPEG goes through libjpeg-turbo on both sides
//! (Pillow's bundled build, Debian's here; CMYK JPEG through zune-jpeg here), reduced in the DCT domain by
//! the same rule (Pillow's `draft()`) when the picture is at least twice the model's resize.

use super::*;

/// espresso, cup, coffee mug.
const COFFEE: &[usize] = &[967, 968, 504];

fn reference(model: &Path, images: &[PathBuf]) -> Vec<Report> {
    let python = root().join(".cache/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup first", python.display());
    let out = Command::new(python)
        .arg(root().join("tests/reference/reference.py"))
        .arg("--model")
        .arg(model)
        .args(["--top", "5"])
        .args(images)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "reference failed: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("reference JSON")).collect()
}

#[test]
fn fp32_matches_the_python_reference_on_every_test_image() {
    let images: Vec<_> = PHOTOS.iter().chain(EDGE_IMAGES).map(|n| generated(n)).collect();
    let ours = classify_json(&model("fp32"), &images, &["--top", "5"], 0);
    let theirs = reference(&model("fp32"), &images);
    assert_eq!(ours.len(), theirs.len());
    let mut failures = Vec::new();
    let mut worst: f64 = 0.0;
    for (a, b) in ours.iter().zip(&theirs) {
        let (x, y) = (&a.top[0], &b.top[0]);
        let diff = (x.score - y.score).abs();
        worst = worst.max(diff);
        if x.class_id != y.class_id || diff > 0.03 {
            failures.push(format!("{}: ours {x:?} reference {y:?}", a.image));
        }
    }
    eprintln!("largest top-1 probability difference: {worst:.4}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lossless_images_give_the_reference_scores_with_both_models() {
    // Same pixels on both sides and the same resampling: the whole top-5 must agree, class and score.
    let images: Vec<_> =
        PHOTOS.iter().chain(EDGE_IMAGES).filter(|n| n.ends_with(".png")).map(|n| generated(n)).collect();
    for precision in ["fp32", "int8"] {
        let ours = classify_json(&model(precision), &images, &["--top", "5"], 0);
        let theirs = reference(&model(precision), &images);
        for (a, b) in ours.iter().zip(&theirs) {
            for (x, y) in a.top.iter().zip(&b.top) {
                assert!(
                    x.class_id == y.class_id && (x.score - y.score).abs() < 1e-4,
                    "{precision} {}: {:?} vs {:?}",
                    a.image,
                    a.top,
                    b.top
                );
            }
        }
    }
}

/// A camera-like `width` × `height` JPEG (the coffee photo scaled to fill and centre-cropped, quality 95 as
/// the fixtures), written into `dir`.
fn camera_frame(dir: &Path, width: u32, height: u32) -> PathBuf {
    let photo = image::open(generated("coffee.png")).expect("coffee.png decodes");
    let frame = photo.resize_to_fill(width, height, image::imageops::FilterType::Triangle).to_rgb8();
    let path = dir.join(format!("frame{width}x{height}.jpg"));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&frame).expect("encodes");
    std::fs::write(&path, jpeg).expect("writes the frame");
    path
}

/// The reference's tensor (steps 1-4, no normalisation: pixel levels) for EfficientNet-Lite0's recipe, one
/// image after another as little-endian float32.
const LEVELS_SCRIPT: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
from reference import Preprocess
p = Preprocess(layout="NCHW", channel_order="RGB", height=224, width=224, resize=256,
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
for path in sys.argv[2:]:
    sys.stdout.buffer.write(p(p.load(path)).astype("<f4").tobytes())
"#;

/// The reference's tensors for `images`, in pixel levels.
fn reference_levels(images: &[PathBuf]) -> Vec<Vec<f32>> {
    let out = Command::new(root().join(".cache/venv/bin/python"))
        .args(["-c", LEVELS_SCRIPT])
        .arg(root().join("tests/reference"))
        .args(images)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "reference failed: {}", stderr(&out));
    let values: Vec<f32> = out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values.len(), images.len() * 3 * 224 * 224);
    values.chunks(3 * 224 * 224).map(<[f32]>::to_vec).collect()
}

/// The largest difference, in pixel levels, between camclassd's tensor and the reference's (Pillow's
/// `draft()` + resize) for a JPEG decoded reduced: they decode with the same scaled IDCT and resample alike.
/// Measured 0 (bit for bit) between Debian's libjpeg-turbo 2.1.5 and Pillow 13's bundled 3.2.0; one level
/// of slack for other builds of either.
const DRAFT_TOLERANCE: f32 = 1.0;

#[test]
fn hd_jpeg_frames_decode_reduced_as_pillows_draft_does() {
    use camclassd::model::{ModelSpec, TensorSlot};
    use camclassd::preprocess::{Frame, Preprocessor};
    let dir = tempfile::tempdir().expect("tempdir");
    // 1080p and 4K decode at 1/4 and 1/8; odd sides round up as libjpeg's do; VGA is not reduced.
    let sizes = [(1920, 1080, 4), (1921, 1081, 4), (3840, 2160, 8), (640, 480, 1)];
    let images: Vec<PathBuf> = sizes.iter().map(|&(w, h, _)| camera_frame(dir.path(), w, h)).collect();
    let theirs = reference_levels(&images);
    let spec = ModelSpec { input_size: (224, 224), resize: 256, ..ModelSpec::plain() };
    let mut p = Preprocessor::new(&spec);
    let mut ours = vec![0f32; p.tensor_len()];
    for ((&(w, h, scale), path), theirs) in sizes.iter().zip(&images).zip(&theirs) {
        let jpeg = std::fs::read(path).expect("reads");
        let need = p.need(None);
        assert_eq!(p.decode_for(Frame::Encoded(&jpeg), &[need]).expect("decodes"), (w, h));
        let picture = p.picture().expect("decoded");
        assert_eq!((picture.scale, picture.decoded_size()), (scale, (w.div_ceil(scale), h.div_ceil(scale))));
        p.write_tensor(TensorSlot::F32(&mut ours)).expect("writes");
        let worst = ours.iter().zip(theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let mean = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).sum::<f32>() / ours.len() as f32;
        eprintln!("{w}x{h} at 1/{scale}: largest difference {worst} levels, mean {mean:.4}");
        assert!(worst <= DRAFT_TOLERANCE, "{w}x{h}: {worst} levels from Pillow's draft() + resize");
    }
}

#[test]
fn a_1080p_jpeg_classifies_like_its_full_decode_and_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpeg = camera_frame(dir.path(), 1920, 1080);
    // The same pixels decoded at full size (zune-jpeg, through the `image` crate), stored losslessly:
    // camclassd resizes all 1920x1080 of them.
    let full = dir.path().join("full.png");
    image::open(&jpeg).expect("decodes").save(&full).expect("writes PNG");
    let images = [jpeg, full];
    let ours = classify_json(&model("fp32"), &images, &["--top", "5"], 0);
    let theirs = reference(&model("fp32"), &images[..1]);
    let (reduced, full, pillow) = (&ours[0].top[0], &ours[1].top[0], &theirs[0].top[0]);
    eprintln!("reduced {reduced:?}\nfull {full:?}\nPillow draft {pillow:?}");
    assert!(COFFEE.contains(&reduced.class_id), "{reduced:?}");
    assert_eq!(reduced.class_id, full.class_id, "reduced decode {reduced:?}, full decode {full:?}");
    assert!((reduced.score - full.score).abs() < 0.03, "reduced decode {reduced:?}, full decode {full:?}");
    assert_eq!(reduced.class_id, pillow.class_id, "ours {reduced:?}, Pillow's draft {pillow:?}");
    assert!((reduced.score - pillow.score).abs() < 1e-3, "ours {reduced:?}, Pillow's draft {pillow:?}");
}

/// Pillow's resize of raw RGB pictures, then the crop: argv = directory, then per case
/// `WIDTH HEIGHT FULL_W FULL_H X Y OUT_W OUT_H FILTER`; reads `DIR/N.rgb`, writes `DIR/N.out`.
const PILLOW_RESIZE_SCRIPT: &str = r#"
import sys
from PIL import Image
d, args = sys.argv[1], sys.argv[2:]
for n in range(len(args) // 9):
    w, h, fw, fh, x, y, ow, oh = map(int, args[9 * n:9 * n + 8])
    f = getattr(Image.Resampling, args[9 * n + 8])
    im = Image.frombytes("RGB", (w, h), open(f"{d}/{n}.rgb", "rb").read())
    out = im.resize((fw, fh), f).crop((x, y, x + ow, y + oh))
    open(f"{d}/{n}.out", "wb").write(out.tobytes())
"#;

#[test]
fn the_resampler_gives_pillows_bytes_for_every_filter() {
    // camclassd's resize + crop (its vector kernels on this CPU) against Pillow's, byte for byte: camera
    // frames to the 224 recipe, a region enlarged, odd sizes, and reductions up to 5x.
    use camclassd::preprocess::resample::{Filter, Geometry, Resampler};
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ((640, 480), (341, 256), (58, 16), (224, 224)),
        ((480, 270), (455, 256), (115, 16), (224, 224)),
        ((200, 150), (341, 256), (58, 16), (224, 224)),
        ((97, 61), (31, 20), (2, 1), (27, 17)),
        ((301, 203), (61, 41), (0, 0), (61, 41)),
        ((3, 2), (11, 7), (1, 1), (9, 5)),
    ];
    let filters = [(Filter::Bilinear, "BILINEAR"), (Filter::Bicubic, "BICUBIC"), (Filter::Lanczos3, "LANCZOS")];
    let mut args = Vec::new();
    let mut ours = Vec::new();
    for (i, &(src, full, offset, out)) in cases.iter().enumerate() {
        let mut state = 0x9E37_79B9u32 ^ i as u32;
        let pixels: Vec<u8> = (0..src.0 * src.1 * 3)
            .map(|j| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let (x, y) = ((j / 3) % src.0, (j / 3) / src.0);
                if (x / 5 + y / 3) % 2 == 0 { (state >> 24) as u8 } else { ((x * 5 + y * 3) % 256) as u8 }
            })
            .collect();
        for &(filter, name) in &filters {
            let n = args.len() / 9;
            std::fs::write(dir.path().join(format!("{n}.rgb")), &pixels).expect("writes");
            let mut got = vec![0u8; (out.0 * out.1 * 3) as usize];
            Resampler::default().resample(&pixels, &mut got, Geometry { src, full, offset, out }, filter);
            ours.push((format!("{src:?} → {full:?}, {out:?} at {offset:?}, {name}"), got));
            args.extend([src.0, src.1, full.0, full.1, offset.0, offset.1, out.0, out.1].map(|v| v.to_string()));
            args.push(name.to_string());
        }
    }
    let out = Command::new(root().join(".cache/venv/bin/python"))
        .args(["-c", PILLOW_RESIZE_SCRIPT])
        .arg(dir.path())
        .args(&args)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "Pillow failed: {}", stderr(&out));
    for (n, (what, got)) in ours.iter().enumerate() {
        let want = std::fs::read(dir.path().join(format!("{n}.out"))).expect("Pillow's output");
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(
            got.len() == want.len() && differ == 0,
            "{what}: {differ} of {} bytes differ from Pillow's",
            want.len()
        );
    }
}
