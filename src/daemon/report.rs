//! What became of each frame, told to the health counters and the live view in one place: the worker's two
//! loops say it to a [`Report`] (one account per frame from each loop, one per classified region), and
//! this file alone writes `health` and `live`. What a frame moves — counters, histograms, the page's boxes
//! and newest results — is read here, not gathered from the loops.

use std::time::{Duration, Instant};

use crate::capture::CapturedFrame;
use crate::health::Health;
use crate::live::{LivePipeline, RegionLive};
use crate::postprocess::Classification;
use crate::preprocess::Rect;

/// The prepare thread's account of one frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decoded {
    pub(super) camera: usize,
    pub(super) captured: Instant,
    /// The frame decoded (a region's preparation may still have failed).
    pub(super) decoded: bool,
    /// Its regions the motion gate skipped.
    pub(super) motion_skipped: u32,
}

/// The inference thread's account of one frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inferred {
    pub(super) camera: usize,
    pub(super) captured: Instant,
    /// Its share of the inference runs.
    pub(super) infer: Duration,
    pub(super) ok: bool,
    /// The camera's frames replaced in the hub before a worker took them, so far.
    pub(super) dropped: u64,
}

/// Where health and live are written from the worker's loops.
#[derive(Debug, Clone, Copy)]
pub(super) struct Report<'a> {
    pub(super) health: &'a Health,
    pub(super) live: &'a LivePipeline,
}

impl Report<'_> {
    fn region(&self, camera: usize, region: usize) -> Option<&RegionLive> {
        self.live.cameras.get(camera).and_then(|c| c.regions.get(region))
    }

    /// A frame taken from the hub is prepared: it decoded or not (a run of frames that never decode trips the
    /// watchdog), and which of its regions the motion gate skipped. `frame`: the frame itself, kept for the
    /// page when it shows frames.
    pub(super) fn decoded(&self, account: Decoded, frame: Option<&CapturedFrame>) {
        let Decoded { camera, captured, decoded, motion_skipped } = account;
        if decoded {
            self.health.decoded(camera);
        } else {
            self.health.add_undecodable(camera, captured);
        }
        for _ in 0..motion_skipped {
            self.health.add_motion_skipped(camera);
        }
        if let (true, Some(frame)) = (self.live.keep_frames, frame)
            && let Some(c) = self.live.cameras.get(camera)
        {
            c.store_frame(frame);
        }
    }

    /// A region's crop was placed in a new frame size: its box on the page (`None`: outside the frame).
    pub(super) fn placed(&self, camera: usize, region: usize, rect: Option<Rect>) {
        if let Some(r) = self.region(camera, region) {
            r.set_rect(rect);
        }
    }

    /// Frames taken into an inference batch (the watchdog sees inference busy while they run).
    pub(super) fn batch_started(&self, frames: usize) {
        for _ in 0..frames {
            self.health.begin();
        }
    }

    /// One inference run of `images` images.
    pub(super) fn ran(&self, images: usize) {
        self.health.ran(images);
    }

    /// A frame's inference is over.
    pub(super) fn inferred(&self, account: Inferred) {
        let Inferred { camera, captured, infer, ok, dropped } = account;
        self.health.end(camera, infer, ok);
        if ok {
            self.health.frame_seen(camera, captured);
            self.health.set_dropped(camera, dropped);
            self.live.inference.observe(infer.as_secs_f64());
        }
    }

    /// A region's newest classification, for the page.
    pub(super) fn classified(&self, camera: usize, region: usize, result: &Classification, time: Duration) {
        if let Some(r) = self.region(camera, region) {
            r.store_result(result, time);
        }
    }

    /// Every region of a frame was decided: capture → decision, for `camclassd bench --cameras`.
    pub(super) fn decided(&self, captured: Instant) {
        self.health.decided(captured);
    }

    /// A frame finished after a newer one of its camera (another worker was faster): not published.
    pub(super) fn late(&self, camera: usize) {
        self.health.add_late(camera);
    }
}
