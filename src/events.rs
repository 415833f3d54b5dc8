//! Events: the publish policy (when a camera speaks), the decision for each classified frame, and the
//! versioned JSON schema (what it says).
//!
//! Pure: no I/O, no clocks of its own — the caller passes the frame's capture time, so the policy and the
//! decision are tested with made-up time. [`decide`] takes a camera's [`Tracker`] and returns the next one
//! with the decision; the caller keeps the next tracker only once the publication was accepted, so an event
//! the publisher had no room for is decided again on the next frame instead of being lost.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::postprocess::{Classification, Scored, label};

/// The event schema identifier; bump it on any incompatible change.
pub const SCHEMA: &str = "camclassd.event/1";
/// The schema of a named region's events: version 1 plus `region` (the model is the config's name for it).
pub const SCHEMA_V2: &str = "camclassd.event/2";
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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

/// Everything a camera's publishing remembers between frames: the policy's memory, the class last stated
/// on the retained `state` topic, a pending snapshot request and the last frame decided. `Copy`: deciding a
/// frame allocates nothing unless it publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tracker {
    policy: Policy,
    state: PolicyState,
    /// The class last published on the retained `state` topic (`Some(None)`: "nothing").
    stated: Option<Option<usize>>,
    /// Publish the next classified frame whatever the policy says (the `snapshot` command).
    snapshot: bool,
    /// Capture number of the last frame decided: with several workers a frame can finish after a newer
    /// one of the same camera, and deciding it then would run the policy's time backwards.
    last_frame: Option<u64>,
}

impl Tracker {
    pub fn new(policy: Policy) -> Tracker {
        Tracker { policy, state: PolicyState::default(), stated: None, snapshot: false, last_frame: None }
    }

    /// Publish the next classified frame, whatever the policy says.
    pub fn request_snapshot(&mut self) {
        self.snapshot = true;
    }

    /// Forget what was stated: the next published event re-states the camera's state.
    pub fn restate(&mut self) {
        self.stated = None;
    }
}

/// One classified frame, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The camera's capture number of the frame (increasing in capture order).
    pub frame: u64,
    pub captured: Instant,
    pub captured_at: SystemTime,
    pub classification: &'a Classification,
    pub preprocess: Duration,
    pub infer: Duration,
    /// Frames of this camera never classified, since start.
    pub frames_dropped: u64,
}

/// Who speaks: the node, the camera and the model, with the model's labels.
#[derive(Debug, Clone, Copy)]
pub struct Speaker<'a> {
    pub node: &'a str,
    pub camera: &'a str,
    /// The region; `None` for a camera's whole-frame region (schema version 1).
    pub region: Option<&'a str>,
    pub model: &'a ModelRef,
    pub labels: &'a [String],
}

/// What to do with a classified frame.
#[derive(Debug, Clone, PartialEq)]
// Returned by value and moved once into the publisher's channel: boxing the event would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// An older frame than one already decided (another worker finished it later): ignored.
    Stale,
    /// Nothing to publish.
    Quiet,
    /// An event, with the camera's new retained state when it changed.
    Publish { event: Event, state: Option<State> },
}

/// The publish decision for one classified frame: `(the tracker after it, the decision)`. Keep the new
/// tracker only once a [`Decision::Publish`] was accepted: the same change is then decided again on the
/// next frame instead of being lost.
pub fn decide(tracker: Tracker, frame: &Observed<'_>, who: &Speaker<'_>) -> (Tracker, Decision) {
    if tracker.last_frame.is_some_and(|last| frame.frame <= last) {
        return (tracker, Decision::Stale);
    }
    let mut next = tracker;
    next.last_frame = Some(frame.frame);
    let best = frame.classification.best();
    let observed = next.state.observe(next.policy, best, frame.captured);
    let reason = match (std::mem::take(&mut next.snapshot), observed) {
        // A change is published as one, and the snapshot asked for comes with the next frame.
        (true, Some(Reason::Change)) => {
            next.snapshot = true;
            Reason::Change
        }
        // Every frame (or a heartbeat) is published anyway: this one answers the request, and says so.
        (true, _) => Reason::Snapshot,
        (false, Some(reason)) => reason,
        (false, None) => return (next, Decision::Quiet),
    };
    let shown = match next.policy {
        Policy::OnChange { min_score, .. } => best.filter(|b| b.score >= min_score),
        Policy::EveryFrame => best,
    };
    let class = shown.map(|b| b.class_id);
    let captured_at = rfc3339(frame.captured_at);
    let top: Vec<EventClass> = frame
        .classification
        .top
        .iter()
        .map(|s| EventClass { class_id: s.class_id, label: label(who.labels, s.class_id).into_owned(), score: s.score })
        .collect();
    // A multi-label model's classes at or over their thresholds (several, or none).
    let on: Option<Vec<EventClass>> = frame.classification.multi_label.then(|| {
        frame
            .classification
            .on
            .iter()
            .map(|s| EventClass {
                class_id: s.class_id,
                label: label(who.labels, s.class_id).into_owned(),
                score: s.score,
            })
            .collect()
    });
    let state = (next.stated != Some(class) || reason == Reason::Change).then(|| {
        next.stated = Some(class);
        State {
            schema: STATE_SCHEMA,
            class_id: class,
            label: class.map(|c| label(who.labels, c).into_owned()),
            score: shown.map_or(0.0, |b| b.score),
            since: captured_at.clone(),
            top: top.clone(),
            on: on.clone(),
        }
    });
    let event = Event {
        schema: if who.region.is_some() { SCHEMA_V2 } else { SCHEMA },
        node: who.node.to_string(),
        camera: who.camera.to_string(),
        region: who.region.map(str::to_string),
        // Assigned by the publisher's queue, which keeps counting across restarts.
        seq: 0,
        captured_at,
        reason,
        top,
        on,
        model: who.model.clone(),
        timing_ms: EventTiming {
            // Measured by the publisher when the event leaves for the broker.
            capture_to_publish: 0.0,
            preprocess: millis(frame.preprocess),
            infer: millis(frame.infer),
        },
        frames_dropped: frame.frames_dropped,
    };
    (next, Decision::Publish { event, state })
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

/// The JSON published on `<prefix>/<node>/<camera>/event` (or `…/<camera>/<region>/event`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub schema: &'static str,
    pub node: String,
    pub camera: String,
    /// Version 2: the region's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Per camera, from 1, in publish order; it keeps counting across restarts (the event queue stores
    /// it), so a subscriber that sees a gap knows events were dropped (queue full).
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub captured_at: String,
    pub reason: Reason,
    pub top: Vec<EventClass>,
    /// A multi-label model's classes "on" (at or over their thresholds), best first; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<EventClass>>,
    pub model: ModelRef,
    pub timing_ms: EventTiming,
    /// Frames this camera captured but never classified (inference was busy), since start.
    pub frames_dropped: u64,
}

impl Event {
    /// The topic level(s) under the node: `<camera>` or `<camera>/<region>`.
    pub fn path(&self) -> String {
        match &self.region {
            Some(r) => format!("{}/{r}", self.camera),
            None => self.camera.clone(),
        }
    }
}

/// The retained JSON on `<prefix>/<node>/<camera>/state`: the current top-1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    pub schema: &'static str,
    pub class_id: Option<usize>,
    pub label: Option<String>,
    pub score: f32,
    pub since: String,
    /// The top classes of the frame that set this state (Home Assistant shows them as the label sensor's
    /// attributes).
    pub top: Vec<EventClass>,
    /// A multi-label model's classes "on" in that frame, best first; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<EventClass>>,
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T14:07:02.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Writes `timing_ms.capture_to_publish` into an encoded event as it leaves for the broker at `now`: the time
/// from its frame's capture (`captured_at`) to its publication, outages and re-sends included. The event is
/// encoded (and queued) before it is published, so the value is patched in place; a payload that is not an
/// event is left alone. Returns the time written (`None`: not an event).
pub fn stamp_capture_to_publish(payload: &mut Vec<u8>, now: SystemTime) -> Option<Duration> {
    const CAPTURED: &[u8] = b"\"captured_at\":\"";
    const FIELD: &[u8] = b"\"capture_to_publish\":";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let at = find(payload, CAPTURED).map(|i| i + CAPTURED.len())?;
    let len = payload[at..].iter().position(|&b| b == b'"')?;
    let captured = std::str::from_utf8(&payload[at..at + len]).ok().and_then(|t| humantime::parse_rfc3339(t).ok())?;
    let start = find(payload, FIELD).map(|i| i + FIELD.len())?;
    let end = payload[start..]
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'))
        .map_or(payload.len(), |n| start + n);
    // A wall clock stepped back since the capture reads as 0, not as a negative time.
    let elapsed = now.duration_since(captured).unwrap_or_default();
    let ms = millis(elapsed);
    let mut number = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut number[..]);
    if std::io::Write::write_fmt(&mut cursor, format_args!("{ms:?}")).is_err() {
        return None;
    }
    let written = cursor.position() as usize;
    payload.splice(start..end, number[..written].iter().copied());
    Some(elapsed)
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

    /// Frame `n` of a camera at `t0 + n` seconds whose best class is `best`.
    fn observed<'a>(n: u64, t0: Instant, c: &'a Classification) -> Observed<'a> {
        Observed {
            frame: n,
            captured: t0 + Duration::from_secs(n),
            captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n),
            classification: c,
            preprocess: Duration::from_millis(2),
            infer: Duration::from_millis(9),
            frames_dropped: 0,
        }
    }

    fn classified(class_id: usize, score: f32) -> Classification {
        Classification { top: vec![Scored { class_id, score }], ..Classification::default() }
    }

    const LABELS: &[String] = &[];

    fn speaker(model: &ModelRef) -> Speaker<'_> {
        Speaker { node: "pi", camera: "porch", region: None, model, labels: LABELS }
    }

    #[test]
    fn a_change_the_publisher_had_no_room_for_is_decided_again_on_the_next_frame() {
        let model = ModelRef { name: "m".into(), sha256: "ab".into() };
        let who = speaker(&model);
        let policy = Policy::OnChange { debounce: 2, heartbeat: None, min_score: 0.5 };
        let mut tracker = Tracker::new(policy);
        let t0 = Instant::now();
        let cat = classified(281, 0.9);
        let (next, d) = decide(tracker, &observed(1, t0, &cat), &who);
        assert_eq!(d, Decision::Quiet);
        tracker = next;
        let (_, d) = decide(tracker, &observed(2, t0, &cat), &who);
        let Decision::Publish { event, state } = d else { panic!("the change: {d:?}") };
        assert_eq!((event.reason, event.top[0].class_id), (Reason::Change, 281));
        assert_eq!(state.and_then(|s| s.class_id), Some(281));
        // The channel was full: the caller keeps the old tracker, and the very next frame publishes the change
        // (with its retained state). Before, the policy had moved on and, with no heartbeat, the change was
        // never told.
        let (next, d) = decide(tracker, &observed(3, t0, &cat), &who);
        let Decision::Publish { event, state } = d else { panic!("the change again: {d:?}") };
        assert_eq!((event.reason, event.camera.as_str()), (Reason::Change, "porch"));
        assert!(state.is_some_and(|s| s.class_id == Some(281) && s.label.as_deref() == Some("class_281")));
        // Accepted this time: the camera is quiet until something changes.
        let (_, d) = decide(next, &observed(4, t0, &cat), &who);
        assert_eq!(d, Decision::Quiet);
    }

    #[test]
    fn a_frame_older_than_one_already_decided_is_stale_and_changes_nothing() {
        let model = ModelRef { name: "m".into(), sha256: "ab".into() };
        let who = speaker(&model);
        let tracker = Tracker::new(Policy::EveryFrame);
        let t0 = Instant::now();
        let c = classified(1, 0.9);
        // Two workers: frame 5 finished before frame 4.
        let (after5, d) = decide(tracker, &observed(5, t0, &c), &who);
        assert!(matches!(d, Decision::Publish { .. }));
        let (after4, d) = decide(after5, &observed(4, t0, &c), &who);
        assert_eq!(d, Decision::Stale);
        assert_eq!(after4, after5);
        assert!(matches!(decide(after4, &observed(6, t0, &c), &who).1, Decision::Publish { .. }));
    }

    #[test]
    fn a_snapshot_request_publishes_the_next_frame_once() {
        let model = ModelRef { name: "m".into(), sha256: "ab".into() };
        let who = speaker(&model);
        let policy = Policy::OnChange { debounce: 1, heartbeat: None, min_score: 0.5 };
        let t0 = Instant::now();
        let c = classified(3, 0.9);
        let (mut tracker, _) = decide(Tracker::new(policy), &observed(1, t0, &c), &who);
        tracker.request_snapshot();
        let (tracker, d) = decide(tracker, &observed(2, t0, &c), &who);
        let Decision::Publish { event, state } = d else { panic!("{d:?}") };
        assert_eq!(event.reason, Reason::Snapshot);
        assert!(state.is_none(), "the state did not change");
        assert_eq!(decide(tracker, &observed(3, t0, &c), &who).1, Decision::Quiet);
    }

    /// An every_frame camera publishes each frame anyway: the frame after the request says `snapshot`
    /// (before: the request vanished in a `frame` event). A change keeps its reason, and the snapshot follows.
    #[test]
    fn a_snapshot_request_is_answered_as_such_under_every_policy() {
        let model = ModelRef { name: "m".into(), sha256: "ab".into() };
        let who = speaker(&model);
        let t0 = Instant::now();
        let c = classified(3, 0.9);
        let (mut tracker, _) = decide(Tracker::new(Policy::EveryFrame), &observed(1, t0, &c), &who);
        tracker.request_snapshot();
        let (tracker, d) = decide(tracker, &observed(2, t0, &c), &who);
        let Decision::Publish { event, .. } = d else { panic!("{d:?}") };
        assert_eq!(event.reason, Reason::Snapshot);
        let Decision::Publish { event, .. } = decide(tracker, &observed(3, t0, &c), &who).1 else { panic!() };
        assert_eq!(event.reason, Reason::Frame, "once");

        let policy = Policy::OnChange { debounce: 1, heartbeat: None, min_score: 0.5 };
        let (mut tracker, _) = decide(Tracker::new(policy), &observed(1, t0, &c), &who);
        tracker.request_snapshot();
        let other = classified(5, 0.9);
        let (tracker, d) = decide(tracker, &observed(2, t0, &other), &who);
        let Decision::Publish { event, .. } = d else { panic!("{d:?}") };
        assert_eq!(event.reason, Reason::Change);
        let Decision::Publish { event, .. } = decide(tracker, &observed(3, t0, &other), &who).1 else { panic!() };
        assert_eq!(event.reason, Reason::Snapshot);
    }

    #[test]
    fn capture_to_publish_is_measured_when_the_event_leaves() {
        let captured = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let e = Event {
            schema: SCHEMA,
            node: "pi".into(),
            camera: "porch".into(),
            region: None,
            seq: 7,
            captured_at: rfc3339(captured),
            reason: Reason::Change,
            // A label that looks like the field must not be touched.
            top: vec![EventClass { class_id: 1, label: "\"capture_to_publish\":5".into(), score: 0.5 }],
            on: None,
            model: ModelRef { name: "m".into(), sha256: "ab".into() },
            timing_ms: EventTiming { capture_to_publish: 0.0, preprocess: 1.0, infer: 3.25 },
            frames_dropped: 0,
        };
        let mut payload = serde_json::to_vec(&e).expect("encodes");
        // Queued at capture + 20 ms, published 31.5 s later (a broker outage): the event says 31.52 s.
        stamp_capture_to_publish(&mut payload, captured + Duration::from_micros(31_520_250));
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("still JSON");
        assert_eq!(v["timing_ms"]["capture_to_publish"], 31520.25);
        assert_eq!(v["top"][0]["label"], "\"capture_to_publish\":5");
        // Sent again after a reconnection: measured again.
        stamp_capture_to_publish(&mut payload, captured + Duration::from_secs(40));
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("still JSON");
        assert_eq!(v["timing_ms"]["capture_to_publish"], 40000.0);
        // Not an event: untouched.
        let mut other = b"online".to_vec();
        stamp_capture_to_publish(&mut other, captured);
        assert_eq!(other, b"online");
    }

    #[test]
    fn a_region_speaks_schema_2_with_its_name() {
        let model = ModelRef { name: "doors".into(), sha256: "ab".into() };
        let who = Speaker { node: "pi", camera: "garage", region: Some("door"), model: &model, labels: LABELS };
        let c = classified(1, 0.9);
        let (_, d) = decide(Tracker::new(Policy::EveryFrame), &observed(1, Instant::now(), &c), &who);
        let Decision::Publish { event, .. } = d else { panic!("{d:?}") };
        assert_eq!(event.path(), "garage/door");
        let v = serde_json::to_value(&event).expect("encodes");
        assert_eq!((v["schema"].as_str(), v["region"].as_str()), (Some("camclassd.event/2"), Some("door")));
        assert_eq!(v["model"]["name"], "doors");
    }

    #[test]
    fn a_multi_label_answer_lists_the_classes_on_in_event_and_state() {
        let model = ModelRef { name: "doors".into(), sha256: "ab".into() };
        let who = Speaker { node: "pi", camera: "garage", region: Some("door"), model: &model, labels: LABELS };
        let mut c = classified(1, 0.9);
        c.multi_label = true;
        c.on = vec![Scored { class_id: 1, score: 0.9 }, Scored { class_id: 2, score: 0.6 }];
        let (_, d) = decide(Tracker::new(Policy::EveryFrame), &observed(1, Instant::now(), &c), &who);
        let Decision::Publish { event, state } = d else { panic!("{d:?}") };
        let want = Some(vec![
            EventClass { class_id: 1, label: label(LABELS, 1).into_owned(), score: 0.9 },
            EventClass { class_id: 2, label: label(LABELS, 2).into_owned(), score: 0.6 },
        ]);
        assert_eq!(event.on, want);
        assert_eq!(state.expect("a new state").on, want);
        // None on is an empty list; a single-label answer has no `on` at all.
        c.on.clear();
        let (_, d) = decide(Tracker::new(Policy::EveryFrame), &observed(1, Instant::now(), &c), &who);
        let Decision::Publish { event, .. } = d else { panic!("{d:?}") };
        assert_eq!(serde_json::to_value(&event).expect("encodes")["on"], serde_json::json!([]));
        c.multi_label = false;
        let (_, d) = decide(Tracker::new(Policy::EveryFrame), &observed(1, Instant::now(), &c), &who);
        let Decision::Publish { event, .. } = d else { panic!("{d:?}") };
        assert!(serde_json::to_value(&event).expect("encodes").get("on").is_none());
    }

    #[test]
    fn the_event_encodes_to_the_documented_schema() {
        let e = Event {
            schema: SCHEMA,
            node: "pi".into(),
            camera: "porch".into(),
            region: None,
            seq: 1,
            captured_at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            reason: Reason::Change,
            top: vec![EventClass { class_id: 281, label: "tabby cat".into(), score: 0.5 }],
            on: None,
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
