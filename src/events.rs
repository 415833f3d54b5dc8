//! Events: the publish policy (when a camera speaks) and the versioned JSON schema (what it says).
//!
//! Pure: no I/O, no clocks of its own — the caller passes `now`, so the policy is tested with made-up time.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::postprocess::Scored;

/// The event schema identifier; bump it on any incompatible change.
pub const SCHEMA: &str = "camclassd.event/1";
/// The state message's schema identifier.
pub const STATE_SCHEMA: &str = "camclassd.state/1";

/// Why an event was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `every_frame`: each classified frame.
    Frame,
    /// `on_change`: a new top-1 held for `debounce` frames.
    Change,
    /// `on_change`: nothing changed for `interval`.
    Heartbeat,
    /// Asked for on the command topic.
    Snapshot,
}

/// A camera's publish policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    EveryFrame,
    OnChange { debounce: u32, heartbeat: Option<Duration>, min_score: f32 },
}

/// The policy's memory for one camera.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// The published top-1 (`Some(None)`: "nothing above min_score" was published).
    current: Option<Option<usize>>,
    candidate: Option<Option<usize>>,
    streak: u32,
    last_publish: Option<Instant>,
}

impl PolicyState {
    /// Feeds one classified frame's best class; says whether (and why) to publish.
    pub fn observe(&mut self, policy: Policy, best: Option<Scored>, now: Instant) -> Option<Reason> {
        let (debounce, heartbeat, min_score) = match policy {
            Policy::EveryFrame => {
                self.last_publish = Some(now);
                return Some(Reason::Frame);
            }
            Policy::OnChange { debounce, heartbeat, min_score } => (debounce, heartbeat, min_score),
        };
        let label = best.filter(|b| b.score >= min_score).map(|b| b.class_id);
        if self.current == Some(label) {
            self.candidate = None;
            self.streak = 0;
        } else {
            if self.candidate == Some(label) {
                self.streak += 1;
            } else {
                self.candidate = Some(label);
                self.streak = 1;
            }
            if self.streak >= debounce.max(1) {
                self.current = Some(label);
                self.candidate = None;
                self.streak = 0;
                self.last_publish = Some(now);
                return Some(Reason::Change);
            }
        }
        match (heartbeat, self.last_publish) {
            (Some(period), Some(last)) if self.current.is_some() && now.duration_since(last) >= period => {
                self.last_publish = Some(now);
                Some(Reason::Heartbeat)
            }
            _ => None,
        }
    }
}

/// One class in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventClass {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventTiming {
    pub capture_to_publish: f64,
    pub preprocess: f64,
    pub infer: f64,
}

/// The JSON published on `<prefix>/<node>/<camera>/event`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub schema: &'static str,
    pub node: String,
    pub camera: String,
    /// Per camera, from 1, in publish order; it keeps counting across restarts (the event queue stores
    /// it), so a subscriber that sees a gap knows events were dropped (queue full).
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub captured_at: String,
    pub reason: Reason,
    pub top: Vec<EventClass>,
    pub model: ModelRef,
    pub timing_ms: EventTiming,
    /// Frames this camera captured but never classified (inference was busy), since start.
    pub frames_dropped: u64,
}

/// The retained JSON on `<prefix>/<node>/<camera>/state`: the current top-1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    pub schema: &'static str,
    pub class_id: Option<usize>,
    pub label: Option<String>,
    pub score: f32,
    pub since: String,
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T14:07:02.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(class_id: usize, score: f32) -> Option<Scored> {
        Some(Scored { class_id, score })
    }

    #[test]
    fn every_frame_publishes_every_frame() {
        let mut s = PolicyState::default();
        let t = Instant::now();
        assert_eq!(s.observe(Policy::EveryFrame, best(1, 0.9), t), Some(Reason::Frame));
        assert_eq!(s.observe(Policy::EveryFrame, None, t), Some(Reason::Frame));
    }

    #[test]
    fn on_change_debounces_flicker_and_sends_heartbeats() {
        let policy = Policy::OnChange { debounce: 3, heartbeat: Some(Duration::from_secs(60)), min_score: 0.5 };
        let mut s = PolicyState::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let seq = [
            (best(7, 0.9), None),                 // candidate 7 (1)
            (best(7, 0.8), None),                 // (2)
            (best(7, 0.9), Some(Reason::Change)), // held 3 frames: published
            (best(8, 0.9), None),                 // flicker to 8 ...
            (best(7, 0.9), None),                 // ... and back: nothing
            (best(8, 0.4), None),                 // below min_score: "nothing" (1)
            (best(7, 0.9), None),                 // back to 7
        ];
        for (i, (b, want)) in seq.into_iter().enumerate() {
            assert_eq!(s.observe(policy, b, at(i as u64)), want, "frame {i}");
        }
        assert_eq!(s.observe(policy, best(7, 0.9), at(61)), None, "last publish was at 2 s");
        assert_eq!(s.observe(policy, best(7, 0.9), at(62)), Some(Reason::Heartbeat));
        assert_eq!(s.observe(policy, best(7, 0.9), at(63)), None);
        // Everything drops below min_score for 3 frames: "nothing" is a change too.
        assert_eq!(s.observe(policy, best(3, 0.1), at(64)), None);
        assert_eq!(s.observe(policy, None, at(65)), None);
        assert_eq!(s.observe(policy, best(9, 0.2), at(66)), Some(Reason::Change));
    }

    #[test]
    fn no_heartbeat_before_the_first_publish_or_when_disabled() {
        let policy = Policy::OnChange { debounce: 5, heartbeat: None, min_score: 0.0 };
        let mut s = PolicyState::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(s.observe(policy, best(1, 0.9), t0 + Duration::from_secs(i * 100)), None);
        }
        assert_eq!(s.observe(policy, best(1, 0.9), t0 + Duration::from_secs(500)), Some(Reason::Change));
        assert_eq!(s.observe(policy, best(1, 0.9), t0 + Duration::from_secs(5000)), None);
    }

    #[test]
    fn the_event_encodes_to_the_documented_schema() {
        let e = Event {
            schema: SCHEMA,
            node: "pi".into(),
            camera: "porch".into(),
            seq: 1,
            captured_at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            reason: Reason::Change,
            top: vec![EventClass { class_id: 281, label: "tabby cat".into(), score: 0.5 }],
            model: ModelRef { name: "efficientnet-lite0".into(), sha256: "ab".into() },
            timing_ms: EventTiming { capture_to_publish: 12.5, preprocess: 1.0, infer: 3.25 },
            frames_dropped: 4,
        };
        let v: serde_json::Value = serde_json::to_value(&e).expect("encodes");
        assert_eq!(
            v,
            serde_json::json!({
                "schema": "camclassd.event/1", "node": "pi", "camera": "porch", "seq": 1,
                "captured_at": "2023-11-14T22:13:20.123Z", "reason": "change",
                "top": [{"class_id": 281, "label": "tabby cat", "score": 0.5}],
                "model": {"name": "efficientnet-lite0", "sha256": "ab"},
                "timing_ms": {"capture_to_publish": 12.5, "preprocess": 1.0, "infer": 3.25},
                "frames_dropped": 4
            })
        );
    }
}
