//! Per-frame heap allocations after warm-up, counted by a global allocator.
//!
//! Its own test binary: the counting allocator must be the process's global allocator, and the counts must
//! not see other tests' threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use camclassd::model::{self, Model, ModelOptions};
use camclassd::postprocess::{Classification, Postprocessor};
use camclassd::preprocess::{Frame, Preprocessor};

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

fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let r = f();
    (r, ALLOCATIONS.load(Ordering::SeqCst) - before)
}

#[test]
fn the_camera_frame_path_allocates_nothing_after_warm_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_path = root.join("models/efficientnet-lite0-int8.onnx");
    assert!(model_path.exists(), "run scripts/setup first");
    let runtime = model::runtime::load(None).expect("ONNX Runtime (run scripts/setup)");
    let options = ModelOptions { threads: Some(1), ..ModelOptions::default() };
    let mut model = Model::load(runtime, &model_path, &options).expect("model loads");
    let mut pre = Preprocessor::new(model.spec());
    let mut post = Postprocessor::new(model.spec().output, 5, 0.0);
    let mut result = Classification::default();

    let (w, h) = (640u32, 480u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (i * 13 % 239) as u8).collect();
    let frames = [Frame::Rgb8 { width: w, height: h, data: &rgb }, Frame::Yuyv { width: w, height: h, data: &yuyv }];

    // Warm-up: buffers grow to the frame size once.
    for frame in frames {
        pre.decode(frame).expect("decode");
        pre.write_tensor(model.input_slot_mut(0)).expect("tensor");
        model.run().expect("infer");
        post.process(model.scores(0), &mut result);
    }

    let mut infer_allocs = Vec::new();
    for _ in 0..10 {
        for frame in frames {
            let (_, n) = count(|| pre.decode(frame).expect("decode"));
            assert_eq!(n, 0, "decoding a raw frame allocated {n} times");
            let (_, n) = count(|| pre.write_tensor(model.input_slot_mut(0)).expect("tensor"));
            assert_eq!(n, 0, "resize + normalise allocated {n} times");
            let (_, n) = count(|| model.run().map(|_| ()).expect("infer"));
            infer_allocs.push(n);
            let (_, n) = count(|| post.process(model.scores(0), &mut result));
            assert_eq!(n, 0, "postprocessing allocated {n} times");
            assert_eq!(result.top.len(), 5);
        }
    }
    // ORT's tensors live in its own arena; what remains is the `ort` crate's per-run bookkeeping
    // (output name/value vectors), a handful of small allocations that do not grow with the frame.
    let max = infer_allocs.iter().copied().max().unwrap_or(0);
    eprintln!("heap allocations per inference call (Rust side): {infer_allocs:?}");
    assert!(max <= 2, "inference allocates {max} times per frame");
    assert!(infer_allocs.windows(2).all(|w| w[0] == w[1]), "allocation count is steady: {infer_allocs:?}");
}
