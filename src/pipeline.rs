//! The frame path shared by the daemon and every tool: decode → preprocess → infer → postprocess.
//!
//! [`Classifier`] owns one model with its preprocessor and postprocessor, so `classify`, `bench`,
//! `compare` and the daemon give the same answer for the same picture.

use std::time::{Duration, Instant};

use crate::model::{Model, ModelError};
use crate::postprocess::{Classification, Postprocessor};
use crate::preprocess::{Frame, PreprocessError, Preprocessor};

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

/// A model with its pre- and postprocessing, ready for frames.
#[derive(Debug)]
pub struct Classifier {
    model: Model,
    preprocessor: Preprocessor,
    postprocessor: Postprocessor,
    result: Classification,
}

impl Classifier {
    pub fn new(model: Model, top_k: usize, min_score: f32) -> Classifier {
        let preprocessor = Preprocessor::new(model.spec());
        let postprocessor = Postprocessor::new(model.spec().output, top_k, min_score);
        Classifier { model, preprocessor, postprocessor, result: Classification::default() }
    }

    /// Classifies one frame (batch slot 0).
    pub fn classify(&mut self, frame: Frame<'_>) -> Result<(&Classification, Timings), PipelineError> {
        let t0 = Instant::now();
        self.preprocessor.decode(frame)?;
        let t1 = Instant::now();
        self.preprocessor.write_tensor(self.model.input_slot_mut(0))?;
        let t2 = Instant::now();
        self.model.run()?;
        let t3 = Instant::now();
        self.postprocessor.process(self.model.scores(0), &mut self.result);
        let t4 = Instant::now();
        let timings = Timings { decode: t1 - t0, preprocess: t2 - t1, infer: t3 - t2, postprocess: t4 - t3 };
        Ok((&self.result, timings))
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model back, for a caller that runs its own stage chain (the daemon's workers).
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The full probability vector of the last classified frame.
    pub fn probabilities(&self) -> &[f32] {
        self.postprocessor.probabilities()
    }
}
