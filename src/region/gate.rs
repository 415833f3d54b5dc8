//! [`Gate`]: whether a region of a frame is classified. Pure (time, frame size and the measured motion are
//! given), so every rule is tested with made-up time, as [`crate::events::decide`] is:
//!
//! - **placement**: the region's crop is resolved against the frame size once per size; a crop outside the
//!   frame disables the region until the size changes (logged once per size, for up to [`REPORTED_SIZES`]
//!   sizes: a replay folder of mixed pictures is not logged at every frame);
//! - **`classify_every`**: not again before this long after the frame it was last classified on (by any
//!   worker: the caller gives that time);
//! - **the motion gate**: skipped while the picture stands still (less change than `motion_threshold` since
//!   it was last classified), but classified anyway after `max_skip`.

use std::time::Instant;

use super::Region;
use crate::preprocess::Rect;

/// Frame sizes remembered per region for the crop-outside log line; beyond them, new sizes are not logged.
pub const REPORTED_SIZES: usize = 8;

/// A region's crop against the frame size it was resolved for.
#[derive(Debug, Clone, Copy, Default)]
enum Placed {
    #[default]
    Unknown,
    /// Inside the frame of this size (`None`: the whole frame).
    Inside { frame: (u32, u32), rect: Option<Rect> },
    /// Outside the frame of this size: the region is disabled.
    Outside { frame: (u32, u32) },
}

/// What the gate decided for a region of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Classify the region from `rect` of the frame (`None`: all of it).
    Classify(Option<Rect>),
    /// The crop lies outside the frame: disabled until the frame size changes.
    Outside,
    /// `classify_every` has not passed since the region was last classified.
    NotDue,
    /// The motion gate: too little change since the region was last classified, within `max_skip`.
    Still,
}

/// Where the region lies now, when that changed with this frame (a new frame size): for the page's box and
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Inside: the box drawn on the page, in the frame's pixels.
    Inside(Rect),
    /// Outside: no box; `log`: say so (the first time for this frame size).
    Outside { crop: Option<Rect>, log: bool },
}

/// One region's gate, per worker: what it remembers of the frame sizes it has seen.
#[derive(Debug, Default)]
pub struct Gate {
    placed: Placed,
    reported: Vec<(u32, u32)>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Whether `region` of a `frame`-sized frame captured at `captured` is classified, given when it was
    /// last classified (`last`, by any worker) and `moved`, which measures the change in the region's
    /// rectangle since it was last classified (called only for a region with a motion gate that is due by
    /// `classify_every`, whether or not it was ever classified).
    /// The placement is returned when it changed with this frame.
    pub fn decide(
        &mut self,
        region: &Region,
        frame: (u32, u32),
        captured: Instant,
        last: Option<Instant>,
        moved: impl FnOnce(Rect) -> f32,
    ) -> (Verdict, Option<Placement>) {
        let (rect, placement) = match self.placed {
            Placed::Inside { frame: size, rect } if size == frame => (rect, None),
            Placed::Outside { frame: size } if size == frame => return (Verdict::Outside, None),
            _ => {
                let rect = region.crop.map(|c| c.resolve(frame.0, frame.1));
                if rect.is_some_and(|r| !r.fits(frame.0, frame.1)) {
                    self.placed = Placed::Outside { frame };
                    let log = self.report(frame);
                    return (Verdict::Outside, Some(Placement::Outside { crop: rect, log }));
                }
                self.placed = Placed::Inside { frame, rect };
                (rect, Some(Placement::Inside(rect.unwrap_or(whole(frame)))))
            }
        };
        // Since the frame it was last classified on (zero for an earlier frame another worker was slow with).
        let since_last = last.map(|last| captured.saturating_duration_since(last));
        if since_last.is_some_and(|d| d < region.classify_every) {
            return (Verdict::NotDue, placement);
        }
        if let Some(motion) = region.motion {
            let change = moved(rect.unwrap_or(whole(frame)));
            let recent = since_last.is_some_and(|d| d < motion.max_skip);
            if change < motion.threshold && recent {
                return (Verdict::Still, placement);
            }
        }
        (Verdict::Classify(rect), placement)
    }

    /// Where the region lies in frames of the size last decided: `Some(None)` the whole frame, `None` outside
    /// (or not placed yet).
    pub fn inside(&self) -> Option<Option<Rect>> {
        match self.placed {
            Placed::Inside { rect, .. } => Some(rect),
            _ => None,
        }
    }

    /// Whether a crop outside a `size` frame is to be logged: the first time for each size, for up to
    /// [`REPORTED_SIZES`] sizes (the last of them says that later ones are not).
    fn report(&mut self, size: (u32, u32)) -> bool {
        if self.reported.contains(&size) || self.reported.len() >= REPORTED_SIZES {
            return false;
        }
        self.reported.push(size);
        if self.reported.len() == REPORTED_SIZES {
            tracing::warn!("frame sizes keep changing: crops outside further sizes are not logged");
        }
        true
    }
}

fn whole(frame: (u32, u32)) -> Rect {
    Rect { x: 0, y: 0, width: frame.0, height: frame.1 }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::Policy;
    use crate::preprocess::CropSpec;
    use crate::region::Motion;

    fn region(crop: Option<[f64; 4]>, every: Duration, motion: Option<Motion>) -> Region {
        Region {
            name: Some("r".into()),
            model: 0,
            crop: crop.map(CropSpec),
            policy: Policy::EveryFrame,
            thresholds: Vec::new(),
            on: Default::default(),
            classify_every: every,
            binary: None,
            snapshot: None,
            motion,
            untrained: false,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_crop_is_placed_once_per_frame_size_and_disabled_outside() {
        let r = region(Some([0.0, 0.0, 100.0, 100.0]), Duration::ZERO, None);
        let mut gate = Gate::new();
        let t = Instant::now();
        let rect = Rect { x: 0, y: 0, width: 100, height: 100 };
        assert_eq!(
            gate.decide(&r, (640, 480), t, None, |_| 0.0),
            (Verdict::Classify(Some(rect)), Some(Placement::Inside(rect)))
        );
        assert_eq!(gate.decide(&r, (640, 480), t, None, |_| 0.0), (Verdict::Classify(Some(rect)), None), "placed once");
        let (verdict, placement) = gate.decide(&r, (50, 50), t, None, |_| 0.0);
        assert_eq!(verdict, Verdict::Outside);
        assert_eq!(placement, Some(Placement::Outside { crop: Some(rect), log: true }));
        assert_eq!(gate.decide(&r, (50, 50), t, None, |_| 0.0), (Verdict::Outside, None));
        // Back to the first size: inside again, placed again.
        assert_eq!(gate.decide(&r, (640, 480), t, None, |_| 0.0).1, Some(Placement::Inside(rect)));
        // The same outside size again: disabled again, not logged again.
        assert_eq!(
            gate.decide(&r, (50, 50), t, None, |_| 0.0).1,
            Some(Placement::Outside { crop: Some(rect), log: false })
        );
    }

    #[test]
    fn a_crop_outside_is_logged_once_per_size_and_for_a_bounded_number_of_sizes() {
        let r = region(Some([0.0, 0.0, 1000.0, 1000.0]), Duration::ZERO, None);
        let mut gate = Gate::new();
        let t = Instant::now();
        let logged = |p: Option<Placement>| matches!(p, Some(Placement::Outside { log: true, .. }));
        let sizes: Vec<(u32, u32)> = (0..100).map(|i| if i % 2 == 0 { (640, 480) } else { (320, 240) }).collect();
        let lines = sizes.iter().filter(|&&s| logged(gate.decide(&r, s, t, None, |_| 0.0).1)).count();
        assert_eq!(lines, 2, "two sizes alternating: two lines, not 100");
        let lines = (1..100u32).filter(|&i| logged(gate.decide(&r, (i, i), t, None, |_| 0.0).1)).count();
        assert_eq!(lines, REPORTED_SIZES - 2, "bounded however many sizes come");
    }

    #[test]
    fn classify_every_waits_from_the_last_classified_frame() {
        let r = region(None, 10 * SECOND, None);
        let mut gate = Gate::new();
        let t0 = Instant::now();
        let whole = Verdict::Classify(None);
        assert_eq!(gate.decide(&r, (64, 64), t0, None, |_| 0.0).0, whole, "never classified: due");
        assert_eq!(gate.decide(&r, (64, 64), t0 + 9 * SECOND, Some(t0), |_| 0.0).0, Verdict::NotDue);
        assert_eq!(gate.decide(&r, (64, 64), t0 + 10 * SECOND, Some(t0), |_| 0.0).0, whole);
        // A frame captured before the last classified one (another worker was faster) is not due either.
        assert_eq!(gate.decide(&r, (64, 64), t0, Some(t0 + SECOND), |_| 0.0).0, Verdict::NotDue);
    }

    #[test]
    fn the_motion_gate_skips_a_still_picture_until_max_skip() {
        let motion = Motion { threshold: 0.02, max_skip: 60 * SECOND };
        let r = region(Some([10.0, 10.0, 20.0, 20.0]), Duration::ZERO, Some(motion));
        let mut gate = Gate::new();
        let t0 = Instant::now();
        let rect = Rect { x: 10, y: 10, width: 20, height: 20 };
        let mut measured = None;
        let (verdict, _) = gate.decide(&r, (64, 64), t0 + SECOND, Some(t0), |at| {
            measured = Some(at);
            0.001
        });
        assert_eq!((verdict, measured), (Verdict::Still, Some(rect)), "still, and measured in the region only");
        assert_eq!(gate.decide(&r, (64, 64), t0 + SECOND, Some(t0), |_| 0.5).0, Verdict::Classify(Some(rect)), "moved");
        assert_eq!(
            gate.decide(&r, (64, 64), t0 + 60 * SECOND, Some(t0), |_| 0.0).0,
            Verdict::Classify(Some(rect)),
            "max_skip"
        );
        assert_eq!(gate.decide(&r, (64, 64), t0, None, |_| 0.0).0, Verdict::Classify(Some(rect)), "never classified");
        // Not due by classify_every: the motion is not even measured.
        let r = region(None, 10 * SECOND, Some(motion));
        let (verdict, _) = gate.decide(&r, (64, 64), t0 + SECOND, Some(t0), |_| panic!("measured a region not due"));
        assert_eq!(verdict, Verdict::NotDue);
    }
}
