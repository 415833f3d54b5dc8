//! Stopping a failed session's pipeline without letting a blocked element stop the camera for good:
//! `set_state(Null)` waits for every streaming thread, and an element stuck in a call that never returns
//! (a socket without a timeout, a driver) would hold the capture thread with it, the camera silent and
//! never reopened. The pipeline is stopped on a thread of its own; after [`WAIT`] the camera goes on and
//! the pipeline is left to stop there. At most [`MAX_STUCK`] such pipelines per camera: beyond that the
//! camera opens nothing more until one of them stops, so a camera that keeps blocking costs a bounded
//! number of threads and pipelines, not one per retry for months.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a failed session's pipeline may take to stop before the camera goes on without it.
pub(super) const WAIT: Duration = Duration::from_secs(5);

/// Pipelines of one camera left stopping on their own threads, at most.
pub(super) const MAX_STUCK: usize = 2;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// One camera's pipelines being stopped.
#[derive(Debug)]
pub(super) struct Teardown {
    wait: Duration,
    /// Pipelines that outlived `wait` and have not stopped yet.
    stuck: Arc<AtomicUsize>,
    /// Abandoned pipelines so far (the first is a warning, later ones are debug lines).
    abandoned: u64,
}

impl Default for Teardown {
    fn default() -> Teardown {
        Teardown::with_wait(WAIT)
    }
}

impl Teardown {
    pub(super) fn with_wait(wait: Duration) -> Teardown {
        Teardown { wait, stuck: Arc::new(AtomicUsize::new(0)), abandoned: 0 }
    }

    /// Sets `pipeline` to NULL, waiting at most [`WAIT`].
    pub(super) fn stop(&mut self, pipeline: gstreamer::Bin, camera: &str) {
        use gstreamer::prelude::*;
        self.run(camera, move || {
            let _ = pipeline.set_state(gstreamer::State::Null);
        });
    }

    /// Runs `stop` on a thread of its own and waits for it at most `wait`.
    pub(super) fn run(&mut self, camera: &str, stop: impl FnOnce() + Send + 'static) {
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (thread_state, stuck) = (Arc::clone(&state), Arc::clone(&self.stuck));
        // Shared so that, should no thread start, it is run here, blocking or not: nothing else can stop it.
        let stop = Arc::new(Mutex::new(Some(stop)));
        let theirs = Arc::clone(&stop);
        let spawned = std::thread::Builder::new().name(format!("stop-{camera}")).spawn(move || {
            if let Some(stop) = theirs.lock().ok().and_then(|mut s| s.take()) {
                stop();
            }
            if thread_state.compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let _ = done_tx.send(());
            } else {
                stuck.fetch_sub(1, Ordering::AcqRel);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(camera = %camera, "cannot start a thread to stop the pipeline ({e}); stopping it here");
            if let Some(stop) = stop.lock().ok().and_then(|mut s| s.take()) {
                stop();
            }
            return;
        }
        if done_rx.recv_timeout(self.wait).is_ok() {
            return;
        }
        // Counted before it is marked abandoned: a stop that ends meanwhile takes its count back.
        self.stuck.fetch_add(1, Ordering::AcqRel);
        if state.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.stuck.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.abandoned += 1;
        let stuck = self.stuck.load(Ordering::Acquire);
        if self.abandoned == 1 {
            tracing::warn!(
                camera = %camera,
                "the pipeline did not stop within {:.0?} (a GStreamer element is blocked): left to stop on its own thread ({stuck} of at most {MAX_STUCK})",
                self.wait
            );
        } else {
            tracing::debug!(camera = %camera, "a pipeline did not stop within {:.0?} ({stuck} left stopping)", self.wait);
        }
    }

    /// Why no new pipeline may be opened now (too many left stopping), if so.
    pub(super) fn blocked(&self) -> Option<String> {
        let stuck = self.stuck.load(Ordering::Acquire);
        (stuck >= MAX_STUCK).then(|| {
            format!(
                "{stuck} earlier pipelines of this camera have not stopped (a GStreamer element is blocked): \
                 no new one until one of them does"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_stop_that_blocks_is_left_behind_and_bounded() {
        let mut teardown = Teardown::with_wait(Duration::from_millis(50));
        // A stop that returns: waited for, nothing left behind.
        teardown.run("cam", || {});
        assert_eq!(teardown.blocked(), None);
        // Two that block until released: each is left after the wait; then the camera opens nothing more.
        let release = Arc::new(Barrier::new(3));
        for _ in 0..2 {
            let release = Arc::clone(&release);
            teardown.run("cam", move || {
                release.wait();
            });
        }
        assert!(teardown.blocked().is_some_and(|why| why.contains("2 earlier pipelines")), "{:?}", teardown.blocked());
        // Once they stop, the count goes back down.
        release.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while teardown.blocked().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(teardown.blocked(), None);
        assert_eq!(teardown.stuck.load(Ordering::Acquire), 0);
    }
}
