//! The newest-frame hub: a single slot per camera, where a frame the consumer has not taken when the next one
//! arrives is replaced and counted as dropped, so when inference is slower than the cameras, latency stays
//! bounded and memory flat. Frame buffers circulate between the hub and the capture threads instead of being
//! allocated. It also holds what the watchdog and health read of each camera: its last frame, whether its
//! source finished, whether the supervisor reported it down.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How a captured frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// JPEG (also MJPEG) or PNG.
    Encoded,
    Rgb8 {
        width: u32,
        height: u32,
    },
    Yuyv {
        width: u32,
        height: u32,
    },
}

/// A frame from a camera, owning its bytes.
#[derive(Debug)]
pub struct CapturedFrame {
    pub data: Vec<u8>,
    pub format: PixelFormat,
    pub captured_at: SystemTime,
    pub captured: Instant,
}

impl CapturedFrame {
    pub fn as_frame(&self) -> crate::preprocess::Frame<'_> {
        use crate::preprocess::Frame;
        match self.format {
            PixelFormat::Encoded => Frame::Encoded(&self.data),
            PixelFormat::Rgb8 { width, height } => Frame::Rgb8 { width, height, data: &self.data },
            PixelFormat::Yuyv { width, height } => Frame::Yuyv { width, height, data: &self.data },
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// The newest frame not yet taken, with its capture number.
    frame: Option<(u64, CapturedFrame)>,
    /// When the source last delivered a frame (taken or not).
    last_put: Option<Instant>,
    /// Buffers handed back by the consumer, for the capture thread to fill next.
    spare: Vec<Vec<u8>>,
    dropped: u64,
    captured: u64,
    finished: bool,
    /// The source reported a failure (and retries) and has delivered no frame since.
    down: bool,
    /// What the capture thread is doing, since when ([`FrameHub::set_step`]).
    step: Option<(&'static str, Instant)>,
}

#[derive(Debug)]
struct HubState {
    slots: Vec<Slot>,
    closed: bool,
    failed: bool,
    /// The consumers' generation: a [`Consumer`] of an older one gets `None` from `take` at once (a reload
    /// that keeps the cameras retired it).
    generation: u64,
    /// The next consumer's id.
    next_consumer: u64,
    /// Consumers retired one by one ([`FrameHub::retire_consumer`]) whose `take` has not returned `None` yet,
    /// and those whose `take` has, until [`FrameHub::was_retired`] asks.
    retired: Vec<u64>,
    left: Vec<u64>,
}

/// The newest frame of every camera, and the consumers' wake-up.
#[derive(Debug)]
pub struct FrameHub {
    state: Mutex<HubState>,
    ready: Condvar,
}

/// A consumer's place in the hub: the camera it visits first next time, and its generation.
#[derive(Debug, Clone, Copy)]
pub struct Consumer {
    next: usize,
    generation: u64,
    id: u64,
}

impl Consumer {
    /// Its id, for [`FrameHub::retire_consumer`].
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Keeps at most this many spare buffers per camera (one being filled, one in flight, one waiting).
const MAX_SPARES: usize = 3;

impl FrameHub {
    pub fn new(cameras: usize) -> FrameHub {
        let slots = (0..cameras).map(|_| Slot::default()).collect();
        FrameHub {
            state: Mutex::new(HubState {
                slots,
                closed: false,
                failed: false,
                generation: 0,
                next_consumer: 0,
                retired: Vec::new(),
                left: Vec::new(),
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panicking capture thread must not take the others down: the state stays consistent per call.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A buffer for the next frame of `camera` (reused when one is spare).
    pub fn buffer(&self, camera: usize) -> Vec<u8> {
        let mut buf = self.lock().slots[camera].spare.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Publishes `camera`'s newest frame, replacing (and counting) one that was never taken.
    pub fn put(&self, camera: usize, frame: CapturedFrame) {
        let mut state = self.lock();
        let slot = &mut state.slots[camera];
        slot.captured += 1;
        slot.last_put = Some(frame.captured);
        slot.down = false;
        if let Some((_, old)) = slot.frame.replace((slot.captured, frame)) {
            slot.dropped += 1;
            if slot.spare.len() < MAX_SPARES {
                slot.spare.push(old.data);
            }
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Returns a consumed frame's buffer for reuse.
    pub fn recycle(&self, camera: usize, data: Vec<u8>) {
        let mut state = self.lock();
        let slot = &mut state.slots[camera];
        if slot.spare.len() < MAX_SPARES {
            slot.spare.push(data);
        }
    }

    /// A camera's source has ended (a replay with `loop = false`).
    pub fn finish(&self, camera: usize) {
        self.lock().slots[camera].finished = true;
        self.ready.notify_all();
    }

    /// `camera`'s source has reported a failure and retries: disconnected until its next frame.
    pub fn report_down(&self, camera: usize) {
        self.lock().slots[camera].down = true;
    }

    /// What `camera`'s capture thread is doing ("opening the source", "starting the pipeline", "reading frames" …): the
    /// watchdog names it when the camera goes stale, so a source blocked inside a library call says where.
    pub fn set_step(&self, camera: usize, step: &'static str) {
        let mut state = self.lock();
        let slot = &mut state.slots[camera];
        if slot.step.is_none_or(|(s, _)| s != step) {
            slot.step = Some((step, Instant::now()));
        }
    }

    /// `camera`'s capture step and how long it has lasted at `now` (`None`: its source sets none).
    pub fn step(&self, camera: usize, now: Instant) -> Option<(&'static str, Duration)> {
        self.lock().slots[camera].step.map(|(s, since)| (s, now.saturating_duration_since(since)))
    }

    /// Whether `camera`'s source reported a failure and has delivered no frame since.
    pub fn reported_down(&self, camera: usize) -> bool {
        self.lock().slots[camera].down
    }

    /// Stops the consumers once the frames already captured are taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// A consumer of the current generation: it takes frames until the hub closes or
    /// [`FrameHub::retire_consumers`] ends its generation.
    pub fn consumer(&self) -> Consumer {
        let mut state = self.lock();
        state.next_consumer += 1;
        Consumer { next: 0, generation: state.generation, id: state.next_consumer }
    }

    /// Ends one consumer (a worker the adaptive parallelism retires): its next [`FrameHub::take`] returns
    /// `None`, the others go on.
    pub fn retire_consumer(&self, id: u64) {
        let mut state = self.lock();
        if !state.retired.contains(&id) {
            state.retired.push(id);
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Ends the current consumers while the sources go on capturing (a reload that keeps the cameras): their
    /// next [`FrameHub::take`] returns `None` at once, and the frames waiting stay for the consumers made
    /// after this call. A consumer that was stuck (an inference that hung) can never take a frame again.
    pub fn retire_consumers(&self) {
        self.lock().generation += 1;
        self.ready.notify_all();
    }

    /// A pipeline thread died: stop everything, and let the daemon exit with an error (systemd restarts it).
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.closed = true;
        drop(state);
        self.ready.notify_all();
    }

    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// The next frame, visiting cameras in turn from `*next`, as (camera, capture number, frame): a camera's
    /// capture numbers increase in capture order (from 1). `None` when closed (or every source finished) and
    /// nothing is left.
    pub fn take(&self, consumer: &mut Consumer) -> Option<(usize, u64, CapturedFrame)> {
        let mut state = self.lock();
        loop {
            if state.generation != consumer.generation {
                return None;
            }
            if let Some(i) = state.retired.iter().position(|&r| r == consumer.id) {
                let id = state.retired.swap_remove(i);
                state.left.push(id);
                return None;
            }
            let n = state.slots.len();
            for i in 0..n {
                let camera = (consumer.next + i) % n;
                if let Some((number, frame)) = state.slots[camera].frame.take() {
                    consumer.next = (camera + 1) % n;
                    return Some((camera, number, frame));
                }
            }
            if state.closed || state.slots.iter().all(|s| s.finished) {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Whether a captured frame is waiting to be taken (the watchdog's sign that the pipeline has work).
    pub fn waiting(&self) -> bool {
        self.lock().slots.iter().any(|s| s.frame.is_some())
    }

    /// How long ago `camera`'s source last delivered a frame (`None`: never), and whether it has finished.
    pub fn last_frame(&self, camera: usize, now: Instant) -> (Option<Duration>, bool) {
        let state = self.lock();
        let slot = &state.slots[camera];
        (slot.last_put.map(|t| now.saturating_duration_since(t)), slot.finished)
    }

    /// Whether consumer `id` ended because [`FrameHub::retire_consumer`] retired it (asked once, when it ends:
    /// a retired worker is not the end of the pipeline).
    pub fn was_retired(&self, id: u64) -> bool {
        let mut state = self.lock();
        let found = state.left.iter().position(|&r| r == id);
        found.map(|i| state.left.swap_remove(i)).is_some()
    }

    /// Frames replaced before any consumer took them, all cameras, since the hub was made: the sign that
    /// the consumers are slower than the cameras.
    pub fn replaced(&self) -> u64 {
        self.lock().slots.iter().map(|s| s.dropped).sum()
    }

    /// (captured, dropped) frame counts of a camera.
    pub fn counts(&self, camera: usize) -> (u64, u64) {
        let state = self.lock();
        (state.slots[camera].captured, state.slots[camera].dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> CapturedFrame {
        CapturedFrame {
            data: vec![byte],
            format: PixelFormat::Encoded,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
        }
    }

    #[test]
    fn the_newest_frame_wins_and_the_rest_are_counted() {
        let hub = FrameHub::new(2);
        hub.put(0, frame(1));
        hub.put(0, frame(2));
        hub.put(1, frame(9));
        hub.put(0, frame(3));
        let mut next = hub.consumer();
        let (cam, number, f) = hub.take(&mut next).expect("frame");
        assert_eq!((cam, number, f.data[0]), (0, 3, 3));
        assert_eq!(hub.take(&mut next).map(|(c, n, f)| (c, n, f.data[0])), Some((1, 1, 9)));
        // Capture numbers keep increasing per camera.
        hub.put(0, frame(4));
        assert_eq!(hub.take(&mut next).map(|(c, n, _)| (c, n)), Some((0, 4)));
        assert_eq!(hub.counts(0), (4, 2));
        hub.close();
        assert!(hub.take(&mut next).is_none());
        // Dropped frames' buffers come back as spares.
        assert_eq!(hub.buffer(0).capacity(), 1);
    }

    #[test]
    fn retired_consumers_end_at_once_and_leave_the_frames_to_the_next() {
        let hub = std::sync::Arc::new(FrameHub::new(1));
        let mut old = hub.consumer();
        let waiting = {
            let hub = std::sync::Arc::clone(&hub);
            let mut waiting = hub.consumer();
            std::thread::spawn(move || hub.take(&mut waiting).is_none())
        };
        std::thread::sleep(Duration::from_millis(50));
        hub.retire_consumers();
        assert!(waiting.join().expect("join"), "a waiting consumer ends");
        hub.put(0, frame(7));
        assert!(hub.take(&mut old).is_none(), "a retired consumer never takes a frame again");
        let mut new = hub.consumer();
        assert_eq!(hub.take(&mut new).map(|(_, n, f)| (n, f.data[0])), Some((1, 7)), "the next consumer's");
    }

    #[test]
    fn a_retired_consumer_ends_and_the_others_go_on() {
        let hub = std::sync::Arc::new(FrameHub::new(1));
        let mut stays = hub.consumer();
        let waiting = {
            let hub = std::sync::Arc::clone(&hub);
            let mut goes = hub.consumer();
            let id = goes.id();
            (id, std::thread::spawn(move || hub.take(&mut goes).is_none()))
        };
        std::thread::sleep(Duration::from_millis(50));
        hub.retire_consumer(waiting.0);
        assert!(waiting.1.join().expect("join"), "the retired consumer ends");
        assert!(hub.was_retired(waiting.0) && !hub.was_retired(waiting.0), "said once");
        assert!(!hub.was_retired(stays.id()));
        hub.put(0, frame(1));
        hub.put(0, frame(2));
        assert_eq!(hub.replaced(), 1);
        assert_eq!(hub.take(&mut stays).map(|(_, n, _)| n), Some(2), "the other one takes the newest frame");
    }

    #[test]
    fn a_source_reported_down_is_up_again_at_its_next_frame() {
        let hub = FrameHub::new(2);
        assert!(!hub.reported_down(0));
        hub.report_down(0);
        assert!(hub.reported_down(0) && !hub.reported_down(1));
        hub.put(0, frame(1));
        assert!(!hub.reported_down(0));
    }

    #[test]
    fn a_step_keeps_its_start_until_it_changes() {
        let hub = FrameHub::new(1);
        assert_eq!(hub.step(0, Instant::now()), None);
        hub.set_step(0, "opening");
        std::thread::sleep(Duration::from_millis(20));
        hub.set_step(0, "opening");
        let (step, lasted) = hub.step(0, Instant::now()).expect("a step");
        assert_eq!(step, "opening");
        assert!(lasted >= Duration::from_millis(20), "the same step again keeps its start: {lasted:?}");
        hub.set_step(0, "streaming");
        assert!(hub.step(0, Instant::now()).is_some_and(|(s, d)| s == "streaming" && d < Duration::from_millis(20)));
    }

    #[test]
    fn take_ends_when_every_source_finished() {
        let hub = FrameHub::new(1);
        hub.put(0, frame(1));
        hub.finish(0);
        let mut next = hub.consumer();
        assert!(hub.take(&mut next).is_some(), "frames captured before the end are still delivered");
        assert!(hub.take(&mut next).is_none());
    }
}
