//! The delivery state, pure (no I/O, no clock of its own): which publish requests of the current connection
//! wait for their packet id, which wait for their acknowledgement, which queue records an acknowledgement
//! frees, and the retained "latest value" messages waiting for the broker. In the manner of rumqttc's
//! `state.rs`: the connection driver feeds it what rumqttc reports, and acts on what it answers.
//!
//! Matching acknowledgements to queue records relies on rumqttc reporting `Outgoing::Publish(pkid)` for each
//! publish request in the order the requests were made, which holds within one connection: on a new
//! connection, [`Delivery::lost`] starts over.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a publish request stands for, to act on its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// A queued event, by its queue id.
    Event(u64),
    /// A retained message, by its request number: put back in the list if its connection drops first.
    Retained(u64),
}

/// A retained "latest value" message waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What a `Sent` notice means.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Waiting for its acknowledgement.
    Waiting,
    /// QoS 0: nothing will acknowledge it; this queue record is done.
    Done(u64),
    /// Nothing was waiting for a packet id (a request of a connection already given up).
    Unknown,
    /// rumqttc reused a packet id still waiting for its acknowledgement (QoS 2 frees ids at PUBREC): the
    /// next acknowledgement could not be matched. The connection must be given up.
    Reused,
}

#[derive(Debug, Default)]
pub struct Delivery {
    /// Requests made on this connection, waiting for their packet id (in order).
    requested: VecDeque<Tag>,
    /// Sent, waiting for their acknowledgement, by packet id, with when they were sent.
    inflight: HashMap<u16, (Tag, Instant)>,
    /// Retained messages to (re)send, newest per topic, in order.
    retained: VecDeque<Retained>,
    /// Retained messages requested and not yet acknowledged, by request number.
    retained_in_flight: HashMap<u64, Retained>,
    retained_requests: u64,
}

impl Delivery {
    /// Requests waiting for a packet id or an acknowledgement.
    pub fn outstanding(&self) -> usize {
        self.requested.len() + self.inflight.len()
    }

    /// Queues a retained message, replacing an older one for the same topic.
    pub fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        if let Some(r) = self.retained.iter_mut().find(|r| r.topic == topic) {
            r.payload = payload;
        } else {
            self.retained.push_back(Retained { topic, payload });
        }
    }

    /// Queues a retained message to go before every other one (the status after a reconnection).
    pub fn set_retained_first(&mut self, topic: String, payload: Vec<u8>) {
        self.retained.retain(|r| r.topic != topic);
        self.retained.push_front(Retained { topic, payload });
    }

    /// The next retained message to send, if any.
    pub fn next_retained(&self) -> Option<&Retained> {
        self.retained.front()
    }

    /// The next retained message was requested on the connection.
    pub fn retained_requested(&mut self) {
        if let Some(r) = self.retained.pop_front() {
            self.retained_requests += 1;
            self.requested.push_back(Tag::Retained(self.retained_requests));
            self.retained_in_flight.insert(self.retained_requests, r);
        }
    }

    /// Queue record `id` was requested on the connection.
    pub fn event_requested(&mut self, id: u64) {
        self.requested.push_back(Tag::Event(id));
    }

    /// rumqttc wrote the oldest request with packet id `pkid` (0 for QoS 0) at `now`.
    pub fn sent(&mut self, pkid: u16, now: Instant) -> Sent {
        let Some(tag) = self.requested.pop_front() else { return Sent::Unknown };
        if pkid == 0 {
            return match tag {
                Tag::Event(id) => Sent::Done(id),
                Tag::Retained(n) => {
                    self.retained_in_flight.remove(&n);
                    Sent::Waiting
                }
            };
        }
        if self.inflight.insert(pkid, (tag, now)).is_some() { Sent::Reused } else { Sent::Waiting }
    }

    /// The broker acknowledged `pkid` (PUBACK, or PUBCOMP for QoS 2): the queue record it freed, if an event.
    pub fn acked(&mut self, pkid: u16) -> Option<u64> {
        match self.inflight.remove(&pkid)? {
            (Tag::Event(id), _) => Some(id),
            (Tag::Retained(n), _) => {
                self.retained_in_flight.remove(&n);
                None
            }
        }
    }

    /// How long the oldest unacknowledged request has waited at `now`.
    pub fn oldest_unacknowledged(&self, now: Instant) -> Option<Duration> {
        self.inflight.values().map(|(_, sent)| now.saturating_duration_since(*sent)).max()
    }

    /// The connection is gone: whatever it had not had acknowledged starts over on the next one. Retained
    /// messages go back in the list (unless a newer value for their topic waits there); events are sent
    /// again from the queue by the caller.
    pub fn lost(&mut self) {
        let unacknowledged: Vec<u64> = self
            .requested
            .iter()
            .chain(self.inflight.values().map(|(t, _)| t))
            .filter_map(|t| match t {
                Tag::Retained(n) => Some(*n),
                Tag::Event(_) => None,
            })
            .collect();
        for n in unacknowledged {
            if let Some(r) = self.retained_in_flight.remove(&n)
                && !self.retained.iter().any(|q| q.topic == r.topic)
            {
                self.retained.push_back(r);
            }
        }
        self.retained_in_flight.clear();
        self.requested.clear();
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_free_the_events_their_requests_stood_for() {
        let mut d = Delivery::default();
        let t = Instant::now();
        d.event_requested(10);
        d.event_requested(11);
        d.event_requested(12);
        assert_eq!(d.outstanding(), 3);
        assert_eq!(d.sent(1, t), Sent::Waiting);
        assert_eq!(d.sent(2, t), Sent::Waiting);
        // Acknowledgements may come in any order; each frees its own record.
        assert_eq!(d.acked(2), Some(11));
        assert_eq!(d.acked(1), Some(10));
        assert_eq!(d.acked(1), None, "a duplicate acknowledgement frees nothing");
        assert_eq!(d.outstanding(), 1);
        // QoS 0: done once written.
        assert_eq!(d.sent(0, t), Sent::Done(12));
        assert_eq!(d.outstanding(), 0);
        assert_eq!(d.sent(3, t), Sent::Unknown);
    }

    #[test]
    fn a_packet_id_reused_before_its_acknowledgement_is_reported() {
        let mut d = Delivery::default();
        let t = Instant::now();
        d.event_requested(1);
        d.event_requested(2);
        assert_eq!(d.sent(7, t), Sent::Waiting);
        assert_eq!(d.sent(7, t), Sent::Reused);
    }

    #[test]
    fn retained_messages_coalesce_and_come_back_when_the_connection_drops() {
        let mut d = Delivery::default();
        let t = Instant::now();
        d.set_retained("a/state".into(), b"1".to_vec());
        d.set_retained("b/state".into(), b"x".to_vec());
        d.set_retained("a/state".into(), b"2".to_vec());
        d.set_retained_first("status".into(), b"online".to_vec());
        let order: Vec<&str> = std::iter::from_fn({
            let mut d2 = Delivery { retained: d.retained.clone(), ..Delivery::default() };
            move || {
                let r = d2.next_retained().map(|r| r.topic.clone());
                d2.retained_requested();
                r
            }
        })
        .map(|s| {
            if s == "status" {
                "status"
            } else if s == "a/state" {
                "a"
            } else {
                "b"
            }
        })
        .collect();
        assert_eq!(order, ["status", "a", "b"], "newest value per topic, status first");

        // Two requested: one acknowledged, one not; then the connection drops.
        d.retained_requested(); // status
        d.retained_requested(); // a/state = 2
        assert_eq!(d.sent(1, t), Sent::Waiting);
        assert_eq!(d.sent(2, t), Sent::Waiting);
        assert_eq!(d.acked(1), None);
        // A newer value for b/state waits already; a/state's was never acknowledged.
        d.lost();
        assert_eq!(d.outstanding(), 0);
        let left: Vec<(String, Vec<u8>)> = std::iter::from_fn(|| {
            let r = d.next_retained().cloned();
            d.retained_requested();
            r.map(|r| (r.topic, r.payload))
        })
        .collect();
        assert_eq!(left, [("b/state".to_string(), b"x".to_vec()), ("a/state".to_string(), b"2".to_vec())]);
    }

    #[test]
    fn a_retained_message_is_not_resent_over_a_newer_value() {
        let mut d = Delivery::default();
        d.set_retained("a/state".into(), b"old".to_vec());
        d.retained_requested();
        d.set_retained("a/state".into(), b"new".to_vec());
        d.lost();
        assert_eq!(d.next_retained().map(|r| r.payload.clone()), Some(b"new".to_vec()));
        d.retained_requested();
        assert!(d.next_retained().is_none());
    }

    #[test]
    fn the_oldest_unacknowledged_request_is_timed() {
        let mut d = Delivery::default();
        let t0 = Instant::now();
        assert_eq!(d.oldest_unacknowledged(t0), None);
        d.event_requested(1);
        d.event_requested(2);
        d.sent(1, t0);
        d.sent(2, t0 + Duration::from_secs(5));
        assert_eq!(d.oldest_unacknowledged(t0 + Duration::from_secs(61)), Some(Duration::from_secs(61)));
        d.acked(1);
        assert_eq!(d.oldest_unacknowledged(t0 + Duration::from_secs(61)), Some(Duration::from_secs(56)));
    }
}
