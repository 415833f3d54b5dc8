//! Per-frame heap allocations after warm-up, counted by a global allocator.
//!
//! Its own test binary: the counting allocator must be the process's global allocator, and the counts must
//! not see other tests' threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use camclassd::model::{self, Model, ModelOptions};
use camclassd::pipeline::{Infer, Prepare};
use camclassd::preprocess::{Decoder, Frame, TensorWriter};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Loading ONNX Runtime from two test threads at once crashes: the tests of this file take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let r = f();
    (r, ALLOCATIONS.load(Ordering::SeqCst) - before)
}

/// The daemon's stage chain for one model: its prepare thread fills an input tensor, its inference thread
/// runs it and postprocesses. Counts allocations per stage on camera frames after a warm-up.
fn assert_no_allocations_per_frame(model_path: &Path) {
    assert!(model_path.exists(), "{} is missing: run scripts/setup first", model_path.display());
    let runtime = model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions { threads: Some(1), ..ModelOptions::default() };
    let model = Model::load(runtime, model_path, &options).expect("model loads");
    let mut prepare = Prepare::new(model.spec());
    let mut infer = Infer::new(model, 5, 0.0);
    let mut input = infer.new_input().expect("input tensor");

    let (w, h) = (640u32, 480u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (i * 13 % 239) as u8).collect();
    let frames = [Frame::Rgb8 { width: w, height: h, data: &rgb }, Frame::Yuyv { width: w, height: h, data: &yuyv }];

    // Warm-up: buffers grow to the frame size once.
    for frame in frames {
        prepare.frame(frame, &mut input, 0).expect("prepare");
        infer.run(&input).expect("infer");
        infer.classification(0);
    }

    let name = model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut infer_allocs = Vec::new();
    for _ in 0..10 {
        for frame in frames {
            let (_, n) = count(|| prepare.frame(frame, &mut input, 0).expect("prepare"));
            assert_eq!(n, 0, "{name}: decode + resize + normalise allocated {n} times");
            let (_, n) = count(|| infer.run(&input).map(|_| ()).expect("infer"));
            infer_allocs.push(n);
            let (top, n) = count(|| infer.classification(0).top.len());
            assert_eq!(n, 0, "{name}: postprocessing allocated {n} times");
            assert_eq!(top, 5);
        }
    }
    // ORT's tensors live in its own arena; what remains is the `ort` crate's per-run bookkeeping
    // (output name/value vectors), a handful of small allocations that do not grow with the frame.
    let max = infer_allocs.iter().copied().max().unwrap_or(0);
    eprintln!("{name}: heap allocations per inference call (Rust side): {infer_allocs:?}");
    assert!(max <= 2, "{name}: inference allocates {max} times per frame");
    assert!(infer_allocs.windows(2).all(|w| w[0] == w[1]), "{name}: allocation count is steady: {infer_allocs:?}");
}

/// One test, models one after the other: the counts must not see another test's threads.
#[test]
fn the_camera_frame_path_allocates_nothing_after_warm_up() {
    let _turn = one_at_a_time();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The shipped INT8 model (float NCHW input, logits); a uint8 NHWC-input model (raw pixels, no
    // normalisation); a multi-label model whose set of classes "on" changes from frame to frame.
    for path in [
        root.join("models/efficientnet-lite0-int8.onnx"),
        root.join("tests/data/generated/effnet-uint8-nhwc.onnx"),
        root.join("tests/data/generated/effnet-sigmoid.onnx"),
    ] {
        assert_no_allocations_per_frame(&path);
    }
}

/// A camera's regions: one decode, then each region's crop resampled where it lies into its own tensor, its
/// motion thumbnail and its snapshot, and its thresholded top-k: nothing allocated after the first frame.
#[test]
fn the_region_path_allocates_nothing_after_warm_up() {
    use camclassd::postprocess::{Ask, Classification, Floors, Postprocessor, Thresholds};
    use camclassd::preprocess::motion::Thumbnails;
    use camclassd::preprocess::snapshot::Snap;
    use camclassd::preprocess::{CropSpec, Rect};

    let _turn = one_at_a_time();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions { threads: Some(1), ..ModelOptions::default() };
    let model = Model::load(runtime, &root.join("models/efficientnet-lite0-int8.onnx"), &options).expect("loads");
    let mut decoder = Decoder::new();
    let crops = [CropSpec([0.0, 0.0, 0.5, 1.0]), CropSpec([320.0, 40.0, 300.0, 400.0])];
    let mut regions: Vec<TensorWriter> = crops.iter().map(|_| TensorWriter::new(model.spec())).collect();
    let mut inputs: Vec<_> = crops.iter().map(|_| model.new_input().expect("input")).collect();
    let mut thumbs: Vec<Thumbnails> = crops.iter().map(|_| Thumbnails::default()).collect();
    let mut snaps: Vec<Snap> = crops.iter().map(|_| Snap::default()).collect();
    let scores: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 / 17.0).collect();
    let thresholds: Vec<f32> = (0..1000).map(|i| if i % 2 == 0 { 0.3 } else { f32::INFINITY }).collect();
    let on = Thresholds::uniform(0.5);
    let mut post = Postprocessor::new(model.spec().output, 5, 0.0);
    let mut answer = Classification::default();

    let (w, h) = (640u32, 480u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut frame = || {
        decoder.decode(Frame::Rgb8 { width: w, height: h, data: &rgb }).expect("decode");
        let picture = decoder.picture().expect("decoded");
        for (i, crop) in crops.iter().enumerate() {
            let rect: Rect = crop.resolve(w, h);
            thumbs[i].measure(picture, rect);
            thumbs[i].keep();
            regions[i].write_region(picture, Some(rect), inputs[i].slot_mut(0)).expect("region");
            snaps[i].take(picture, rect, 200, i == 1);
            // The region's question, asked once of the converted scores (as Infer::answer does).
            post.convert(&scores);
            post.answer(Ask { top_k: 5, floors: Floors::PerClass(&thresholds), on: Some(&on) }, &mut answer);
        }
    };
    frame();
    frame();
    for _ in 0..5 {
        let ((), n) = count(&mut frame);
        assert_eq!(n, 0, "a frame's regions allocated {n} times");
    }
}

/// A 1080p MJPEG camera's frames, decoded reduced (as far as its regions allow) and read by its regions:
/// nothing allocated on the Rust side after the first frame (libjpeg-turbo's own working memory is its
/// business, in C).
#[test]
fn the_reduced_jpeg_path_allocates_nothing_after_warm_up() {
    use camclassd::preprocess::{CropSpec, Need};

    let _turn = one_at_a_time();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions { threads: Some(1), ..ModelOptions::default() };
    let model = Model::load(runtime, &root.join("models/efficientnet-lite0-int8.onnx"), &options).expect("loads");
    let (w, h) = (1920u32, 1080u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).expect("encodes");

    let mut decoder = Decoder::new();
    let crops = [None, Some(CropSpec([0.5, 0.0, 0.5, 1.0]))];
    let mut regions: Vec<TensorWriter> = crops.iter().map(|_| TensorWriter::new(model.spec())).collect();
    let needs: Vec<Need> = crops.iter().zip(&regions).map(|(c, r)| r.need(*c)).collect();
    let mut inputs: Vec<_> = crops.iter().map(|_| model.new_input().expect("input")).collect();
    let mut frame = || {
        decoder.decode_for(Frame::Encoded(&jpeg), &needs).expect("decode");
        let picture = decoder.picture().expect("decoded");
        // The right half (960x1080) keeps 2 x 256 pixels across at 1/2, not at 1/4.
        assert_eq!(picture.scale, 2);
        for (i, crop) in crops.iter().enumerate() {
            let rect = crop.map(|c| c.resolve(w, h));
            regions[i].write_region(picture, rect, inputs[i].slot_mut(0)).expect("region");
        }
    };
    frame();
    frame();
    for _ in 0..5 {
        let ((), n) = count(&mut frame);
        assert_eq!(n, 0, "a reduced JPEG frame and its regions allocated {n} times");
    }
}
