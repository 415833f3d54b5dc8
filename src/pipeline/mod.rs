//! The one stage chain for a frame, shared by the daemon and every tool: [`Prepare`] (decode → the model's
//! input tensor) and [`Infer`] (model + postprocess → [`Classification`]).
//!
//! The daemon runs the two stages on two threads, circulating two [`Input`] tensors between them, so the
//! next frame is prepared straight into the tensor that will be inferred while the current one runs.
//! [`Classifier`] chains them on one thread for `classify`, `compare`, `bench`, the model check and the
//! benchmarks, so a tool's answer is the daemon's by construction.

pub mod report;

use std::time::{Duration, Instant};

use crate::model::{Input, Model, ModelError, ModelSpec};
use crate::postprocess::{Ask, Classification, Postprocessor, Thresholds};
use crate::preprocess::{CropSpec, Frame, PreprocessError, Preprocessor};

/// Time spent in each stage for one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub decode: Duration,
    pub preprocess: Duration,
    pub infer: Duration,
    pub postprocess: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Stage 1 for one frame and one model: a frame → one slot of the model's input tensor (a
/// [`crate::preprocess::Decoder`], then the model's [`crate::preprocess::TensorWriter`]). Its buffers are
/// reused, so same-sized frames allocate nothing after the first. The daemon's workers use the two stage
/// objects themselves: one decode per frame for every region of the camera.
#[derive(Debug)]
pub struct Prepare {
    preprocessor: Preprocessor,
}

impl Prepare {
    pub fn new(spec: &ModelSpec) -> Prepare {
        Prepare { preprocessor: Preprocessor::new(spec) }
    }

    /// Decodes `frame` and writes it into `slot` of `input`; returns the time of each step.
    pub fn frame(&mut self, frame: Frame<'_>, input: &mut Input, slot: usize) -> Result<Timings, PreprocessError> {
        self.frame_crop(frame, None, input, slot)
    }

    /// As [`Prepare::frame`], from `crop` of the decoded frame (default: all of it): a region's tensor. A
    /// JPEG is decoded reduced in the DCT domain when the crop keeps enough pixels for this recipe.
    pub fn frame_crop(
        &mut self,
        frame: Frame<'_>,
        crop: Option<CropSpec>,
        input: &mut Input,
        slot: usize,
    ) -> Result<Timings, PreprocessError> {
        let t0 = Instant::now();
        let need = self.preprocessor.need(crop);
        let (width, height) = self.preprocessor.decode_for(frame, &[need])?;
        let t1 = Instant::now();
        let rect = crop.map(|c| c.resolve(width, height));
        self.preprocessor.write_tensor_crop(rect, input.slot_mut(slot))?;
        Ok(Timings { decode: t1 - t0, preprocess: t1.elapsed(), ..Timings::default() })
    }
}

/// Stage 2: an input tensor → scores (the model) → a [`Classification`] per batch slot (postprocess).
#[derive(Debug)]
pub struct Infer {
    model: Model,
    postprocessor: Postprocessor,
    result: Classification,
}

impl Infer {
    pub fn new(model: Model, top_k: usize, min_score: f32) -> Infer {
        let postprocessor = Postprocessor::new(model.spec().output, top_k, min_score);
        Infer { model, postprocessor, result: Classification::default() }
    }

    /// Runs the model on every slot of `input`; returns the inference time.
    pub fn run(&mut self, input: &Input) -> Result<Duration, ModelError> {
        let t0 = Instant::now();
        self.model.run(input)?;
        Ok(t0.elapsed())
    }

    /// Runs the model on the first `images` slots of `input` (a batch gathered into a larger tensor);
    /// returns the inference time.
    pub fn run_first(&mut self, input: &Input, images: usize) -> Result<Duration, ModelError> {
        let t0 = Instant::now();
        self.model.run_first(input, images)?;
        Ok(t0.elapsed())
    }

    /// The answer of `slot` from the last run to `ask` (a region's question), postprocessed once, into
    /// `out` (its buffers reused): a region's answer is the tools' by construction.
    pub fn answer(&mut self, slot: usize, ask: Ask<'_>, out: &mut Classification) {
        self.postprocessor.convert(self.model.scores(slot));
        self.postprocessor.answer(ask, out);
    }

    /// Whether the model's classes are each on their own (several or none may be on).
    pub fn multi_label(&self) -> bool {
        self.model.spec().output.is_multi_label()
    }

    /// The classification of `slot` from the last run (its buffer reused).
    pub fn classification(&mut self, slot: usize) -> &Classification {
        self.postprocessor.process(self.model.scores(slot), &mut self.result);
        &self.result
    }

    /// A new input tensor for this stage's model, for [`Prepare::frame`] to fill.
    pub fn new_input(&self) -> Result<Input, ModelError> {
        self.model.new_input()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn into_model(self) -> Model {
        self.model
    }

    /// The full probability vector of the last classification.
    pub fn probabilities(&self) -> &[f32] {
        self.postprocessor.probabilities()
    }

    /// Per-class thresholds for [`Classification::on`] (default: 0.5 for a multi-label model, the minimum
    /// score for a single-label one).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.postprocessor.set_thresholds(thresholds);
    }
}

/// Both stages on one thread, one frame at a time: what the tools use.
#[derive(Debug)]
pub struct Classifier {
    prepare: Prepare,
    infer: Infer,
    input: Input,
    /// [`Classifier::set_thresholds`] was called: the caller wants the classes "on" even from a
    /// single-label model.
    thresholds_set: bool,
}

impl Classifier {
    pub fn new(model: Model, top_k: usize, min_score: f32) -> Result<Classifier, ModelError> {
        let prepare = Prepare::new(model.spec());
        let infer = Infer::new(model, top_k, min_score);
        let input = infer.new_input()?;
        Ok(Classifier { prepare, infer, input, thresholds_set: false })
    }

    /// Classifies one frame (batch slot 0).
    pub fn classify(&mut self, frame: Frame<'_>) -> Result<(&Classification, Timings), PipelineError> {
        self.classify_crop(frame, None)
    }

    /// Classifies `crop` of one frame (default: all of it), as the daemon classifies a region.
    pub fn classify_crop(
        &mut self,
        frame: Frame<'_>,
        crop: Option<CropSpec>,
    ) -> Result<(&Classification, Timings), PipelineError> {
        let mut timings = self.prepare.frame_crop(frame, crop, &mut self.input, 0)?;
        timings.infer = self.infer.run(&self.input)?;
        let t0 = Instant::now();
        self.infer.classification(0);
        timings.postprocess = t0.elapsed();
        Ok((&self.infer.result, timings))
    }

    pub fn model(&self) -> &Model {
        self.infer.model()
    }

    /// The model back, for a caller that goes on without the chain.
    pub fn into_model(self) -> Model {
        self.infer.into_model()
    }

    /// The full probability vector of the last classified frame.
    pub fn probabilities(&self) -> &[f32] {
        self.infer.probabilities()
    }

    /// Per-class thresholds for [`Classification::on`] ([`Infer::set_thresholds`]).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.infer.set_thresholds(thresholds);
        self.thresholds_set = true;
    }

    /// Whether [`Classifier::set_thresholds`] was called.
    pub fn thresholds_set(&self) -> bool {
        self.thresholds_set
    }
}
