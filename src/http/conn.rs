//! The HTTP server's edge: the accept loop and each connection's deadlines, so that clients that connect and
//! say nothing (or half a request, or a body a few bytes at a time) cannot take the daemon's descriptors,
//! memory or classify slots.
//!
//! - At most `max_connections` connections are open at once. At the cap, a new connection takes the place of
//!   the one that has waited longest without a request being answered (one that sent nothing, half a head,
//!   or idles between requests): a flood of idle sockets, renewed as fast as they are cut, cannot keep a real
//!   request out (`scripts/soak-hostile`: half the polite requests failed while new connections were simply
//!   closed at the cap). With every connection busy, the new one is closed. The cap is lowered at start to what the open-file limit leaves once the rest of the daemon has
//!   its share ([`Limits::fit_descriptors`]), so that cameras, GStreamer, ONNX Runtime, the queue file and
//!   MQTT never find the descriptors taken by HTTP clients. An accept that fails (EMFILE) backs off.
//! - A request head (and a TLS handshake) must arrive whole within `header_timeout_s` of the connection's
//!   opening or of the previous answer (hyper's header timer); a kept-alive connection waits at most
//!   `idle_timeout_s` for its next request. An answer must be taken (read by the client) within
//!   `idle_timeout_s` + `header_timeout_s` of its start, or the connection is dropped: a client that asks and
//!   never reads holds no slot for long.
//! - A body is read within `body_timeout_s` ([`read_body`]), before a classify slot is taken, and the bodies
//!   being read hold at most a fixed number of bytes together ([`BodyBudget`]): slow uploads hold neither
//!   slots nor memory.
//! - A refusal for a request that sent `Expect: 100-continue` ([`expects_continue`]) is answered without
//!   reading the body, so no `100 Continue` goes out for a request that is turned away.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::HttpConfig;

/// Descriptors the daemon keeps for itself whatever its cameras: standard streams, the runtime's epoll and
/// wakers, the log, ONNX Runtime and GStreamer's own (registry, plugins' pipes), the queue file, the MQTT
/// connection, the HTTP listener and a margin.
pub const RESERVED_FDS: u64 = 128;
/// Descriptors per camera: a V4L2 device and its buffers' dmabufs, or a GStreamer pipeline's sockets (RTSP's
/// control connection, RTP and RTCP per stream), its pipes and wakers, a replay's open file; an allowance
/// well above what one camera opens.
pub const FDS_PER_CAMERA: u64 = 32;
/// How long a new connection at the cap waits for the evicted one's slot (its task ends at its next poll).
const EVICTION_WAIT: Duration = Duration::from_millis(250);
/// The fewest connections the cap is lowered to: the page and a scrape still get through.
const MIN_CONNECTIONS: usize = 4;

/// `[http]`'s deadlines and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Bytes of request bodies held at once: enough for every classify slot's picture, as before bodies were
    /// read ahead of the slot.
    pub body_budget: usize,
}

impl Limits {
    pub fn from_config(http: &HttpConfig) -> Limits {
        let max_body = (http.max_body_mb as usize) << 20;
        Limits {
            header_timeout: Duration::from_secs(http.header_timeout_s),
            idle_timeout: Duration::from_secs(http.idle_timeout_s),
            body_timeout: Duration::from_secs(http.body_timeout_s),
            max_connections: http.max_connections.max(1),
            body_budget: max_body.saturating_mul(http.classify_workers.max(1) + http.classify_queue),
        }
    }

    /// Lowers the connection cap to what this process's open-file limit leaves after the rest of the daemon's
    /// share (`cameras` cameras), with a warning that says how to raise it.
    pub fn fit_descriptors(&mut self, cameras: usize) {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        if let Some(warning) = self.fit(limit.rlim_cur, cameras) {
            tracing::warn!("{warning}");
        }
    }

    /// [`Limits::fit_descriptors`] for an open-file limit of `nofile`: the warning when the cap was lowered.
    fn fit(&mut self, nofile: u64, cameras: usize) -> Option<String> {
        let reserved = RESERVED_FDS.saturating_add(FDS_PER_CAMERA.saturating_mul(cameras as u64));
        let room = usize::try_from(nofile.saturating_sub(reserved)).unwrap_or(usize::MAX).max(MIN_CONNECTIONS);
        if self.max_connections <= room {
            return None;
        }
        let asked = std::mem::replace(&mut self.max_connections, room);
        Some(format!(
            "http.max_connections {asked} lowered to {room}: the open-file limit is {nofile} and the daemon keeps \
             {reserved} for itself ({RESERVED_FDS} + {FDS_PER_CAMERA} per camera); raise it (LimitNOFILE= in the \
             unit, ulimit -n) or lower http.max_connections"
        ))
    }
}

tokio::task_local! {
    /// Whether the request being answered sent `Expect: 100-continue`.
    static EXPECTS_CONTINUE: bool;
    /// The connection of the request being answered.
    static ACTIVITY: Arc<Activity>;
}

/// While it lives, the request being answered is a refusal draining its body: its connection may be closed
/// at the cap as an idle one would (an attacker's bodies sent a byte a second must not make every slot look
/// busy). Nothing outside a served connection (tests of the router alone).
pub fn refusing() -> Option<Refusing> {
    ACTIVITY
        .try_with(|a| {
            a.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Refusing(Arc::clone(a))
        })
        .ok()
}

/// See [`refusing`].
#[derive(Debug)]
pub struct Refusing(Arc<Activity>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.1.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the request being answered waits for `100 Continue` before it sends its body. hyper sends that
/// line when the body is first read, so a refusal must not read the body (and must close the connection,
/// since the body may still come).
pub fn expects_continue() -> bool {
    EXPECTS_CONTINUE.try_with(|e| *e).unwrap_or(false)
}

fn asks_continue(headers: &axum::http::HeaderMap) -> bool {
    headers.get(axum::http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How a body failed to arrive.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit.
    TooLarge,
    /// Not whole within the body deadline.
    TimedOut,
    /// The connection broke or the framing was wrong.
    Broken,
}

/// The bytes of request bodies held at once: bodies being read take their bytes from it as they arrive and
/// give them back when the request is done ([`Held`]), so that many slow uploads hold only what they sent,
/// and many fast ones wait (within their deadline) rather than grow the daemon's memory.
#[derive(Debug)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }
}

/// Bytes taken from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

/// Reads a whole body of at most `max` bytes within `deadline`, taking its bytes from `budget`.
pub async fn read_body(
    body: Body,
    max: usize,
    deadline: Duration,
    budget: &BodyBudget,
) -> Result<(Bytes, Held), BodyError> {
    use http_body_util::BodyExt;
    let mut held = Held { budget: Arc::clone(&budget.0), bytes: 0 };
    // A declared length is taken from the budget whole, before any byte is read: bodies that each took part
    // of the budget and wait for more could otherwise all wait together until their deadline (18 uploads
    // near the limit against a budget of 17). A body without a length takes its bytes as they come.
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    let read = async {
        if let Some(n) = declared {
            let n = usize::try_from(n).ok().filter(|n| *n <= max).ok_or(BodyError::TooLarge)?;
            let permits = u32::try_from(n).map_err(|_| BodyError::TooLarge)?;
            held.budget.acquire_many(permits).await.map_err(|_| BodyError::Broken)?.forget();
            held.bytes = n;
        }
        let mut body = body;
        let mut data = Vec::with_capacity(held.bytes);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            let Ok(chunk) = frame.into_data() else { continue };
            if data.len() + chunk.len() > max {
                return Err(BodyError::TooLarge);
            }
            if declared.is_none() {
                // A chunk is at most `max` bytes, and the budget is at least that: this wait ends.
                let n = u32::try_from(chunk.len()).map_err(|_| BodyError::TooLarge)?;
                held.budget.acquire_many(n).await.map_err(|_| BodyError::Broken)?.forget();
                held.bytes += chunk.len();
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(data))
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// A connection's requests: whether one is being answered, and when the last answer was given (none yet:
/// the header deadline covers the first request).
/// The second field counts the requests among them that are refusals draining their bodies ([`refusing`]).
#[derive(Debug, Default)]
struct Activity(Mutex<(usize, Option<Instant>)>, std::sync::atomic::AtomicUsize);

/// One open connection, as the accept loop sees it: what it is doing, and how to close it for a newcomer.
#[derive(Debug)]
struct Open {
    activity: Arc<Activity>,
    opened: Instant,
    evict: tokio::sync::Notify,
}

impl Open {
    /// Since when the connection has waited without a request being answered (a refusal draining its body
    /// counts as waiting); `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let draining = self.activity.1.load(std::sync::atomic::Ordering::Relaxed);
        match *self.activity.0.lock().unwrap_or_else(|p| p.into_inner()) {
            (n, last) if n <= draining => Some(last.unwrap_or(self.opened)),
            _ => None,
        }
    }
}

/// The open connections, for making room at the cap.
#[derive(Debug, Default)]
struct Registry(Mutex<Vec<std::sync::Weak<Open>>>);

impl Registry {
    fn add(&self, open: &Arc<Open>, cap: usize) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= 2 * cap {
            all.retain(|w| w.strong_count() > 0);
        }
        all.push(Arc::downgrade(open));
    }

    /// Asks the connection idle longest to close; false when every connection is answering a request.
    fn evict_idlest(&self) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        let idlest = all
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter_map(|o| Some((o.idle_since()?, o)))
            .min_by_key(|(since, _)| *since);
        match idlest {
            Some((_, open)) => {
                open.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        InFlight(Arc::clone(self))
    }

    /// When the connection has waited `idle` for its next request; `None` while a request is answered or
    /// before the first.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            (0, Some(last)) => Some(last + idle),
            _ => None,
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        a.0 = a.0.saturating_sub(1);
        a.1 = Some(Instant::now());
    }
}

/// Counts and logs at 1, 2, 4, 8, … occurrences: a flood of the same failure does not flood the log.
#[derive(Debug, Default)]
struct Sparse(u64);

impl Sparse {
    fn hit(&mut self) -> Option<u64> {
        self.0 += 1;
        self.0.is_power_of_two().then_some(self.0)
    }
}

/// Accepts connections on `listener` and serves `router` on them under `limits` until `stop` says so, then
/// lets the connections finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    const MIN_BACKOFF: Duration = Duration::from_millis(10);
    let (mut backoff, mut failures, mut refused) = (MIN_BACKOFF, Sparse::default(), Sparse::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => {
                backoff = MIN_BACKOFF;
                c
            }
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: the pending connection stays in the backlog;
                // waiting lets closing connections give theirs back instead of spinning on the same error.
                if let Some(n) = failures.hit() {
                    tracing::warn!("HTTP accept failed ({n} times so far): {e}; retrying in {backoff:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // The connection idle longest makes room; its task ends at once and gives its slot back.
                let evicted = registry.evict_idlest();
                let room = if evicted {
                    tokio::time::timeout(EVICTION_WAIT, Arc::clone(&slots).acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                if let Some(n) = refused.hit() {
                    let what = if room.is_some() {
                        "closed the connection idle longest for a new one"
                    } else {
                        "every connection is answering a request: closed a new connection"
                    };
                    tracing::warn!(%peer, "HTTP connection limit ({}) reached: {what} ({n} so far)", limits.max_connections);
                }
                match room {
                    Some(slot) => slot,
                    None => {
                        drop(tcp);
                        continue;
                    }
                }
            }
        };
        let open =
            Arc::new(Open { activity: Arc::default(), opened: Instant::now(), evict: tokio::sync::Notify::new() });
        registry.add(&open, limits.max_connections);
        let (acceptor, http, router, stop) = (acceptor.clone(), http.clone(), router.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            match acceptor {
                None => connection(tcp, peer, &http, router, limits, stop, &open).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        tls = handshake => tls,
                        () = open.evict.notified() => return,
                    };
                    match tls {
                        Ok(Ok(tls)) => connection(tls, peer, &http, router, limits, stop, &open).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Every connection gives its slot back when it ends.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Serves one connection: hyper's header deadline, the idle deadline between requests, and a graceful end
/// (the request in progress answered) when the server stops.
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    http: &hyper::server::conn::http1::Builder,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    open: &Open,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&open.activity);
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
        let mut router = router.clone();
        let in_flight = requests.begin();
        let expects = asks_continue(request.headers());
        let activity = Arc::clone(&requests);
        async move {
            let _in_flight = in_flight;
            let call = tower_service::Service::call(&mut router, request.map(Body::new));
            ACTIVITY.scope(activity, EXPECTS_CONTINUE.scope(expects, call)).await
        }
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    // Once the connection is asked to end: when it is dropped if hyper has not ended it (an answer the client
    // does not read would hold it, and its slot, for ever).
    let mut ending: Option<Instant> = None;
    loop {
        // Checked again at least every idle_timeout (a request may have ended since).
        let wake = activity.idle_deadline(limits.idle_timeout).unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, "HTTP connection ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake), if ending.is_none() => {
                if activity.idle_deadline(limits.idle_timeout).is_some_and(|d| d <= Instant::now()) {
                    conn.as_mut().graceful_shutdown();
                    ending = Some(Instant::now() + limits.header_timeout);
                }
            }
            _ = stop.wait_for(|s| *s), if ending.is_none() => {
                conn.as_mut().graceful_shutdown();
                ending = Some(Instant::now() + limits.header_timeout);
            }
            _ = tokio::time::sleep_until(ending.unwrap_or(wake)), if ending.is_some() => {
                tracing::debug!(%peer, "HTTP connection dropped: its answer was not taken in time");
                return;
            }
            () = open.evict.notified() => {
                // Chosen while idle; a request that began since is answered first.
                if open.idle_since().is_some() {
                    tracing::debug!(%peer, "HTTP connection closed at the cap for a new one");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> Limits {
        Limits { max_connections, ..Limits::from_config(&HttpConfig::default()) }
    }

    #[test]
    fn the_connection_cap_leaves_the_cameras_their_descriptors() {
        let defaults = Limits::from_config(&HttpConfig::default());
        assert_eq!(defaults.max_connections, 256);
        assert_eq!(defaults.header_timeout, Duration::from_secs(10));
        // Every classify slot's picture (1 worker + 16 waiting, 10 MiB each).
        assert_eq!(defaults.body_budget, 17 * (10 << 20));
        // The unit's LimitNOFILE=4096 keeps the default cap up to 115 cameras.
        let mut l = defaults;
        assert_eq!(l.fit(4096, 115), None);
        assert_eq!(l.max_connections, 256);
        // A shell's 1024: 1024 - 128 - 4 × 32 = 768, more than the cap.
        assert_eq!(l.fit(1024, 4), None);
        // 256 with one camera: 256 - 160 = 96, with a warning that says why and how to raise it.
        let warning = l.fit(256, 1).expect("lowered");
        assert_eq!(l.max_connections, 96);
        assert!(warning.contains("256 lowered to 96") && warning.contains("LimitNOFILE"), "{warning}");
        // Never below a handful.
        let mut l = limits(100);
        assert!(l.fit(64, 8).is_some());
        assert_eq!(l.max_connections, MIN_CONNECTIONS);
        let mut l = limits(10);
        assert_eq!(l.fit(u64::MAX, 0), None);
        assert!(l.fit(u64::MAX, usize::MAX).is_some(), "no overflow");
    }

    #[test]
    fn idle_deadlines_start_after_the_first_answer_and_pause_during_requests() {
        let activity = Arc::new(Activity::default());
        let idle = Duration::from_secs(5);
        assert_eq!(activity.idle_deadline(idle), None, "the first request is the header deadline's");
        let request = activity.begin();
        assert_eq!(activity.idle_deadline(idle), None);
        drop(request);
        let deadline = activity.idle_deadline(idle).expect("idle since the answer");
        assert!(deadline > Instant::now() && deadline <= Instant::now() + idle);
        let _again = activity.begin();
        assert_eq!(activity.idle_deadline(idle), None);
    }

    #[tokio::test]
    async fn at_the_cap_the_connection_idle_longest_is_asked_to_close() {
        let now = Instant::now();
        let open = |age_s: u64, busy: bool| {
            let o = Arc::new(Open {
                activity: Arc::default(),
                opened: now - Duration::from_secs(age_s),
                evict: tokio::sync::Notify::new(),
            });
            (o, busy)
        };
        let conns = [open(30, true), open(20, false), open(5, false), open(40, true)];
        let registry = Registry::default();
        let mut in_flight = Vec::new();
        for (o, busy) in &conns {
            registry.add(o, 8);
            if *busy {
                in_flight.push(o.activity.begin());
            }
        }
        let asked = |o: &Open| {
            let notified = o.evict.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        // The oldest ones answer requests: the one that has waited 20 s is asked, no other.
        assert!(registry.evict_idlest());
        let picked: Vec<bool> = conns.iter().map(|(o, _)| asked(o)).collect();
        assert_eq!(picked, [false, true, false, false]);
        // Once every connection is busy, nobody is asked.
        let _more: Vec<InFlight> = conns.iter().filter(|(_, busy)| !busy).map(|(o, _)| o.activity.begin()).collect();
        assert!(!registry.evict_idlest());
        // Unless a request is only a refusal draining its body: that connection may go.
        let oldest = &conns[3].0;
        ACTIVITY
            .scope(Arc::clone(&oldest.activity), async {
                let refusing = refusing().expect("inside a served request");
                assert!(registry.evict_idlest());
                assert!(asked(oldest));
                drop(refusing);
                assert!(!registry.evict_idlest(), "busy again once the refusal is answered");
            })
            .await;
        drop(in_flight);
    }

    #[test]
    fn repeated_failures_are_logged_at_powers_of_two() {
        let mut s = Sparse::default();
        let logged: Vec<u64> = (0..20).filter_map(|_| s.hit()).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
    }

    /// A body that sends `first` and then nothing more (a slow upload), counting its polls.
    struct Stalled(Option<Bytes>, Arc<std::sync::atomic::AtomicUsize>);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.0.take() {
                Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
                None => std::task::Poll::Pending,
            }
        }
    }

    fn stalled(first: &[u8]) -> (Body, Arc<std::sync::atomic::AtomicUsize>) {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (Body::new(Stalled(Some(Bytes::copy_from_slice(first)), Arc::clone(&polls))), polls)
    }

    #[tokio::test]
    async fn bodies_are_read_within_their_deadline_and_budget() {
        let budget = BodyBudget::new(1000);
        // Whole: the bytes, held from the budget until the request is done.
        let (bytes, held) =
            read_body(Body::from(vec![7u8; 600]), 1000, Duration::from_secs(5), &budget).await.expect("body");
        assert_eq!((bytes.len(), budget.0.available_permits()), (600, 400));
        drop(held);
        assert_eq!(budget.0.available_permits(), 1000);
        // Over the limit.
        let got = read_body(Body::from(vec![7u8; 1001]), 1000, Duration::from_secs(5), &budget).await;
        assert_eq!(got.map(|_| ()), Err(BodyError::TooLarge));
        // A slow upload: cut at the deadline, its bytes given back.
        let (body, _) = stalled(b"first bytes");
        let got = read_body(body, 1000, Duration::from_millis(50), &budget).await;
        assert_eq!(got.map(|_| ()), Err(BodyError::TimedOut));
        assert_eq!(budget.0.available_permits(), 1000);
        // While the budget is taken, a body waits (here past its deadline) instead of growing memory.
        let (_taken, held) =
            read_body(Body::from(vec![7u8; 1000]), 1000, Duration::from_secs(5), &budget).await.expect("body");
        let got = read_body(Body::from(vec![7u8; 10]), 1000, Duration::from_millis(50), &budget).await;
        assert_eq!(got.map(|_| ()), Err(BodyError::TimedOut));
        drop(held);
        assert!(read_body(Body::from(vec![7u8; 10]), 1000, Duration::from_secs(5), &budget).await.is_ok());
    }

    #[tokio::test]
    async fn a_refusal_does_not_read_a_body_that_waits_for_100_continue() {
        assert!(!expects_continue());
        let (body, polls) = stalled(b"x");
        let code = axum::http::StatusCode::UNAUTHORIZED;
        let response = EXPECTS_CONTINUE.scope(true, super::super::refuse(body, 1000, code, "no\n".into())).await;
        assert_eq!(response.status(), code);
        assert_eq!(response.headers()[axum::http::header::CONNECTION], "close");
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 0, "the body was read: hyper would send 100");
        let mut headers = axum::http::HeaderMap::new();
        assert!(!asks_continue(&headers));
        headers.insert(axum::http::header::EXPECT, axum::http::HeaderValue::from_static("100-Continue"));
        assert!(asks_continue(&headers));
    }
}
