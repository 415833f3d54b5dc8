//! What to subscribe to after the broker sent a packet over our incoming limit. Pure: the publisher feeds
//! it losses and time, and asks it which filters to subscribe.
//!
//! MQTT 3.1.1 gives a client no way to refuse one packet: rumqttc ends the connection on a packet over
//! its limit, and a *retained* one comes again at every reconnection, so one client publishing 1 MiB with
//! the retain flag on the command topic would stop the node's delivery for good (issue 26: 0 events in
//! 30 s, 6 reconnect cycles). So each such loss leaves out one more of the subscriptions, least needed
//! first (the command topic, that anyone allowed may publish to; then our own discovery configs; then Home
//! Assistant's status), and the node keeps publishing without them. They are tried again later (10 min,
//! doubling up to 6 h): a cleared message brings them back by itself.

use std::time::{Duration, Instant};

/// The first wait before the left-out filters are tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(600);
/// The longest wait between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

/// The subscriptions left out, and when to try them again.
#[derive(Debug, Clone)]
pub struct Shield {
    /// The filters that may be left out, least needed first.
    order: Vec<String>,
    /// How many of `order` (from its start) are left out now.
    paused: usize,
    /// How many were left out before the last retry (a loss during a retry pauses them again, no more).
    before_retry: Option<usize>,
    retry_at: Option<Instant>,
    wait: Duration,
}

/// What an oversize loss led to, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The filters left out from the next connection on.
    pub filters: Vec<String>,
    /// When they are tried again.
    pub retry_in: Duration,
}

impl Shield {
    /// `order`: the filters that may be left out, least needed first.
    pub fn new(order: Vec<String>) -> Shield {
        Shield { order, paused: 0, before_retry: None, retry_at: None, wait: RETRY_FIRST }
    }

    /// Whether `filter` is subscribed now.
    pub fn allows(&self, filter: &str) -> bool {
        !self.order[..self.paused].iter().any(|f| f == filter)
    }

    /// A connection ended on a packet over the limit, at `now`: one more filter is left out (or, when it
    /// happened while the left-out ones were being tried again, those same ones).
    pub fn oversize_loss(&mut self, now: Instant) -> Paused {
        match self.before_retry.take() {
            // The retry brought the big message back: pause what was paused, and wait longer.
            Some(n) => {
                self.paused = n;
                self.wait = (self.wait * 2).min(RETRY_MAX);
            }
            None => self.paused = (self.paused + 1).min(self.order.len()),
        }
        self.retry_at = Some(now + self.wait);
        Paused { filters: self.order[..self.paused].to_vec(), retry_in: self.wait }
    }

    /// At `now`, with a connection up: the filters to subscribe again (all left out ones, once their wait is
    /// over); empty when there is nothing to try.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        match self.retry_at {
            Some(at) if now >= at && self.paused > 0 => {
                self.retry_at = None;
                self.before_retry = Some(self.paused);
                let again = self.order[..self.paused].to_vec();
                self.paused = 0;
                again
            }
            _ => Vec::new(),
        }
    }

    /// The connection held for long after a retry: the retry is over, the wait starts from the start again.
    pub fn settled(&mut self) {
        if self.before_retry.take().is_some() {
            self.wait = RETRY_FIRST;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shield() -> Shield {
        Shield::new(vec!["cmd".into(), "configs".into(), "ha".into()])
    }

    #[test]
    fn each_loss_leaves_out_one_more_filter_least_needed_first() {
        let (mut s, t) = (shield(), Instant::now());
        assert!(s.allows("cmd") && s.allows("configs") && s.allows("ha") && s.allows("other"));
        assert_eq!(s.oversize_loss(t), Paused { filters: vec!["cmd".into()], retry_in: RETRY_FIRST });
        assert!(!s.allows("cmd") && s.allows("configs"));
        assert_eq!(s.oversize_loss(t).filters, ["cmd", "configs"]);
        assert_eq!(s.oversize_loss(t).filters, ["cmd", "configs", "ha"]);
        // Nothing more to leave out: publishing goes on with no subscription at all.
        assert_eq!(s.oversize_loss(t).filters.len(), 3);
        assert!(s.allows("other"), "filters outside the list are never left out");
    }

    #[test]
    fn left_out_filters_are_tried_again_later_with_a_growing_wait() {
        let (mut s, t) = (shield(), Instant::now());
        s.oversize_loss(t);
        assert!(s.due(t + RETRY_FIRST - Duration::from_secs(1)).is_empty(), "not yet");
        assert_eq!(s.due(t + RETRY_FIRST), ["cmd"]);
        assert!(s.allows("cmd"), "subscribed again");
        assert!(s.due(t + RETRY_FIRST).is_empty(), "one retry at a time");
        // The big message is still there: the same filter is paused again, for twice as long.
        let t2 = t + RETRY_FIRST + Duration::from_secs(1);
        assert_eq!(s.oversize_loss(t2), Paused { filters: vec!["cmd".into()], retry_in: 2 * RETRY_FIRST });
        assert!(s.due(t2 + RETRY_FIRST).is_empty());
        assert_eq!(s.due(t2 + 2 * RETRY_FIRST), ["cmd"]);
        // This time it held: the next trouble starts from the first wait again.
        s.settled();
        assert_eq!(s.oversize_loss(t2 + 3 * RETRY_FIRST).retry_in, RETRY_FIRST);
    }

    #[test]
    fn the_wait_is_capped() {
        let (mut s, mut t) = (shield(), Instant::now());
        s.oversize_loss(t);
        for _ in 0..20 {
            t += RETRY_MAX;
            assert_eq!(s.due(t).len(), 1);
            assert!(s.oversize_loss(t).retry_in <= RETRY_MAX);
        }
    }
}
