//! Publishing over MQTT (rumqttc): topics, the durable event queue, delivery with acknowledgement, the
//! retained status / state / health messages, Home Assistant discovery and the command topic.
//!
//! Delivery: every event is written to the on-disk [`Queue`] first and removed only when the broker's
//! PUBACK for it arrived, so events survive broker outages, daemon restarts and power cuts, and reach the
//! broker in order, at least once. Connections are ours to manage: each connection gets a fresh rumqttc
//! client and event loop (clean session), and when it breaks both are dropped — with them whatever
//! rumqttc still held — and, after a capped exponential backoff with jitter, a new connection re-sends
//! everything not yet acknowledged, oldest first. Matching acknowledgements to events relies on rumqttc
//! reporting `Outgoing::Publish(pkid)` for each publish request in the order they were made, which holds
//! within one connection; that is why a connection is never reused across a failure.
//!
//! Retained messages (status, states, health, discovery) are "latest value": they wait in a small
//! coalescing list while the broker is away and go out first on reconnection.

pub mod command;
mod delivery;
pub mod discovery;
mod driver;
pub mod oversize;
pub mod queue;
mod settings;
mod topics;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::events::{Event, State};
use crate::health::{Health, QueueHealth, Reporter};
use crate::live::BrokerStats;
pub use command::Command;
use delivery::{Delivery, Sent};
pub use discovery::Target;
use driver::{Notice, drive};
pub use queue::{Limits, Queue, QueueError};
pub use settings::Settings;
pub use topics::Topics;

/// What the pipeline hands to the publisher: an event, and the camera's new state when it changed.
#[derive(Debug)]
pub struct Publication {
    pub event: Event,
    pub state: Option<State>,
    /// A JPEG of the region, retained on `…/snapshot`.
    pub snapshot: Option<Vec<u8>>,
}

/// What the daemon tells a running publisher.
#[derive(Debug)]
pub enum Control {
    /// The pipeline was rebuilt (config reload): these cameras and counters from now on.
    Pipeline { targets: Vec<Target>, health: Arc<Health> },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("mqtt.password_file {}: {source}", path.display())]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error("mqtt.tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Acknowledged-or-not publishes in flight at once; PUBACKs are matched to events through this window.
const WINDOW: usize = 32;

/// Events are committed to the queue at most this often (one fsync per commit): at every_frame rates a
/// commit per event cost 5 % of the frame rate on this machine's disk; sparse events are not delayed.
const GROUP_COMMIT: Duration = Duration::from_millis(20);

/// A connection that lasted this long was healthy: the reconnection backoff starts again from 1 s after it.
const STABLE: Duration = Duration::from_secs(10);

/// Acknowledged events are removed from the queue at least this often.
const ACK_BATCH: Duration = Duration::from_millis(100);

/// Counters the publisher reports when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    /// Events the broker acknowledged.
    pub events: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events still queued on disk at exit, for the next start.
    pub queued: u64,
}

/// One connection: its client handle and the bookkeeping that maps acknowledgements to events.
struct Connection {
    id: u64,
    client: AsyncClient,
    /// The task driving this connection's event loop; aborted with the connection, so that a connection
    /// given up cannot come back behind our back (and take over the client id).
    task: tokio::task::JoinHandle<()>,
    /// When the broker accepted it.
    connected: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The publisher's own state.
struct Publisher {
    settings: Settings,
    queue: Queue,
    /// The cameras and regions that speak.
    targets: Vec<Target>,
    health: Arc<Health>,
    reporter: Reporter,
    commands: mpsc::Sender<Command>,
    notices: mpsc::Sender<(u64, Notice)>,
    conn: Option<Connection>,
    next_conn: u64,
    /// The next queued event id to send on this connection.
    cursor: u64,
    /// The current connection's requests and acknowledgements, and the retained messages waiting.
    delivery: Delivery,
    /// Each camera's last state payload, re-stated on reconnection.
    states: HashMap<String, Vec<u8>>,
    acked: Vec<u64>,
    last_removal: Instant,
    /// Publications received but not yet committed to the queue.
    waiting: Vec<Publication>,
    last_push: Instant,
    stats: PublishStats,
    backoff: Backoff,
    reconnect_at: Option<tokio::time::Instant>,
    down_since: Option<Instant>,
    refused_commands: u64,
    /// Connections in a row that the broker closed within [`STABLE`] of accepting them.
    short_connections: u64,
    /// Failed attempts to rewrite a deleted queue file (logged at powers of two).
    queue_file_errors: u64,
    /// What the HTTP page and `/metrics` read.
    live: Arc<BrokerStats>,
    /// The subscriptions left out after packets over the incoming limit.
    shield: oversize::Shield,
    /// When the left-out subscriptions were last tried again on a live connection.
    retried_at: Option<Instant>,
    /// Lines about received commands: a flood of commands must not flood the journal.
    command_lines: LineBudget,
}

/// At most [`LineBudget::LINES`] log lines a minute; the lines held back are counted and reported with
/// the next line.
#[derive(Debug)]
struct LineBudget {
    window: Instant,
    used: u32,
    held: u64,
}

impl LineBudget {
    const LINES: u32 = 5;
    const WINDOW: Duration = Duration::from_secs(60);

    fn new() -> LineBudget {
        LineBudget { window: Instant::now(), used: 0, held: 0 }
    }

    /// `Some(lines held back since the last one)` when a line may be written at `now`, else `None`.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.window) >= Self::WINDOW {
            self.window = now;
            self.used = 0;
        }
        if self.used >= Self::LINES {
            self.held += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.held))
    }
}

/// Runs the publisher until every sender of `rx` is gone, then drains the queue (a few seconds at most),
/// says `offline` and disconnects. Events not yet acknowledged stay in the queue for the next start.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: Settings,
    queue: Queue,
    targets: Vec<Target>,
    health: Arc<Health>,
    mut rx: mpsc::Receiver<Publication>,
    mut control: mpsc::Receiver<Control>,
    commands: mpsc::Sender<Command>,
    live: Arc<BrokerStats>,
) -> (PublishStats, Queue) {
    let (notice_tx, mut notice_rx) = mpsc::channel::<(u64, Notice)>(1024);
    let reporter = Reporter::new(&health);
    let backoff = Backoff::with_max(settings.reconnect_max);
    // Least needed first: commands (anyone allowed may publish there), our own discovery configs, then Home
    // Assistant's status.
    let mut optional = Vec::new();
    if settings.commands {
        optional.push(settings.topics.command());
    }
    if let Some(d) = &settings.discovery {
        optional.push(d.own_configs_filter());
        optional.push(d.status_topic());
    }
    let mut p = Publisher {
        shield: oversize::Shield::new(optional),
        retried_at: None,
        command_lines: LineBudget::new(),
        settings,
        cursor: queue.first_id(),
        queue,
        targets,
        health,
        reporter,
        commands,
        notices: notice_tx,
        conn: None,
        next_conn: 0,
        delivery: Delivery::default(),
        states: HashMap::new(),
        acked: Vec::new(),
        last_removal: Instant::now(),
        waiting: Vec::new(),
        last_push: Instant::now(),
        stats: PublishStats::default(),
        backoff,
        reconnect_at: None,
        down_since: None,
        refused_commands: 0,
        short_connections: 0,
        queue_file_errors: 0,
        live,
    };
    if !p.queue.is_empty() {
        tracing::info!(
            events = p.queue.len(),
            "event queue {}: delivering events from before",
            p.queue.path().display()
        );
    }
    p.connect();
    let mut health_tick = tokio::time::interval(p.settings.health_interval);
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush_tick = tokio::time::interval(queue::ACK_FLUSH);
    let mut open = true;
    let mut control_open = true;

    while open {
        let reconnect_at = p.reconnect_at;
        let push_at = (!p.waiting.is_empty()).then(|| tokio::time::Instant::from_std(p.last_push + GROUP_COMMIT));
        tokio::select! {
            publication = rx.recv() => match publication {
                Some(first) => p.accept(first, &mut rx),
                None => open = false,
            },
            () = sleep_until(push_at), if push_at.is_some() => p.commit(),
            Some((conn, notice)) = notice_rx.recv() => p.on_notice(conn, notice),
            message = control.recv(), if control_open => match message {
                Some(Control::Pipeline { targets, health }) => {
                    // The old pipeline's last publications are all in `rx` by now (it was stopped before
                    // this was sent, the new one starts after): they go first, under the old camera list.
                    while let Ok(publication) = rx.try_recv() {
                        p.waiting.push(publication);
                    }
                    p.commit();
                    p.new_pipeline(targets, health);
                }
                None => control_open = false,
            },
            () = sleep_until(reconnect_at), if reconnect_at.is_some() => {
                p.reconnect_at = None;
                p.connect();
            }
            _ = health_tick.tick() => p.publish_health(),
            _ = flush_tick.tick() => {
                p.check_queue_file();
                p.flush_acks(true);
                p.check_ack_timeout();
                p.retry_left_out();
            }
        }
        p.flush_acks(false);
        p.pump();
        p.live.set_queue(p.queue.len(), p.queue.bytes(), p.queue.dropped());
    }
    p.commit();

    // Shutting down: give the queue a few seconds to drain while connected, then say goodbye.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while p.conn.as_ref().is_some_and(|c| c.connected.is_some()) && (!p.queue.is_empty() || p.has_outstanding()) {
        tokio::select! {
            Some((conn, notice)) = notice_rx.recv() => p.on_notice(conn, notice),
            () = tokio::time::sleep_until(deadline) => break,
        }
        p.flush_acks(false);
        p.pump();
    }
    p.flush_acks(true);
    if let Err(e) = tokio::task::block_in_place(|| p.queue.flush()) {
        tracing::error!("{e}");
    }
    p.check_queue_file();
    p.stats.queued = p.queue.len();
    p.stats.dropped = p.queue.dropped();
    p.goodbye(&mut notice_rx).await;
    p.live.connected.store(false, std::sync::atomic::Ordering::Relaxed);
    (p.stats, p.queue)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// Opens a new connection: a fresh client and event loop, driven by their own task.
    fn connect(&mut self) {
        self.next_conn += 1;
        let id = self.next_conn;
        if id > 1 {
            self.live.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Room for the window, subscriptions and the final DISCONNECT: requests never wait for space.
        let (client, eventloop) = AsyncClient::new(self.settings.options.clone(), WINDOW + 16);
        let task = tokio::spawn(drive(id, eventloop, self.notices.clone()));
        self.conn = Some(Connection { id, client, task, connected: None });
    }

    fn has_outstanding(&self) -> bool {
        self.conn.is_some() && self.delivery.outstanding() > 0
    }

    /// Takes a publication and whatever else is already waiting; they are queued in one commit, at once
    /// unless the last commit was less than [`GROUP_COMMIT`] ago.
    fn accept(&mut self, first: Publication, rx: &mut mpsc::Receiver<Publication>) {
        self.waiting.push(first);
        while self.waiting.len() < 256 {
            match rx.try_recv() {
                Ok(p) => self.waiting.push(p),
                Err(_) => break,
            }
        }
        if self.waiting.len() >= 256 || self.last_push.elapsed() >= GROUP_COMMIT {
            self.commit();
        }
    }

    /// Writes the waiting publications' events to the queue (one fsync) and their states to the retained list.
    fn commit(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.waiting);
        self.last_push = Instant::now();
        let mut items = Vec::with_capacity(batch.len());
        for mut p in batch {
            // `<camera>` or `<camera>/<region>`: the topic, the retained state and `seq` are the region's.
            let camera = p.event.path();
            p.event.seq = self.queue.next_seq(&camera);
            if let Some(state) = p.state
                && let Ok(json) = serde_json::to_vec(&state)
            {
                self.states.insert(camera.clone(), json.clone());
                self.set_retained(self.settings.topics.state(&camera), json);
            }
            if let Some(jpeg) = p.snapshot.take() {
                self.set_retained(self.settings.topics.snapshot(&camera), jpeg);
            }
            match serde_json::to_vec(&p.event) {
                Ok(payload) => items.push((self.settings.topics.event(&camera), payload)),
                Err(e) => tracing::error!("cannot encode an event: {e}"),
            }
        }
        // An fsync: keep it off the async worker's back.
        // Records below the cursor went to the broker (a subscriber has them, or will on a re-send): the
        // queue drops them last, so its `dropped` count is the gap subscribers see in `seq`.
        let cursor = self.cursor;
        let pushed = tokio::task::block_in_place(|| self.queue.push_keeping(&items, cursor));
        match pushed {
            Ok(_) => {
                self.live.events_queued.fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!("{e}; {} event(s) lost", items.len()),
        }
    }

    /// Queues a retained message, replacing an older one for the same topic.
    fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        self.delivery.set_retained(topic, payload);
    }

    fn on_notice(&mut self, id: u64, notice: Notice) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == id) else {
            return; // From a connection already given up.
        };
        match notice {
            Notice::Connected => {
                conn.connected = Some(Instant::now());
                self.live.connected.store(true, std::sync::atomic::Ordering::Relaxed);
                match self.down_since.take() {
                    Some(t) => tracing::info!(
                        queued = self.queue.len(),
                        "MQTT connected again after {:.0?}; sending queued events",
                        t.elapsed()
                    ),
                    None => tracing::info!("MQTT connected"),
                }
                // Acknowledged events leave the queue before it is re-sent from its oldest event.
                self.flush_acks(true);
                self.cursor = self.queue.first_id();
                self.on_connected();
            }
            Notice::Sent(pkid) => match self.delivery.sent(pkid, Instant::now()) {
                Sent::Done(id) => self.acked.push(id),
                Sent::Waiting | Sent::Unknown => {}
                // The next acknowledgement could not be matched: start over on a new connection.
                Sent::Reused => self.lose("a packet id was reused before its acknowledgement".into()),
            },
            Notice::Acked(pkid) => {
                if let Some(id) = self.delivery.acked(pkid) {
                    self.acked.push(id);
                }
            }
            Notice::Message(publish) => self.on_message(publish),
            Notice::Lost(reason) => self.lose(reason),
            Notice::Oversize(reason) => {
                self.retried_at = None;
                let paused = self.shield.oversize_loss(Instant::now());
                tracing::error!(
                    "{reason}. MQTT 3.1.1 cannot refuse one message, so camclassd leaves out {} from now on \
                     (and tries again in {:.0?}); events keep flowing{}",
                    paused.filters.join(", "),
                    paused.retry_in,
                    if self.settings.commands && !self.shield.allows(&self.settings.topics.command()) {
                        "; commands are off meanwhile"
                    } else {
                        ""
                    }
                );
                self.lose(reason);
            }
            Notice::Closed => self.lose("closed".into()),
        }
    }

    /// Gives the current connection up and schedules the next one. Whatever it had not had acknowledged is
    /// sent again on the next: events from the queue, retained messages from the list.
    fn lose(&mut self, reason: String) {
        let Some(conn) = self.conn.take() else { return };
        self.live.connected.store(false, std::sync::atomic::Ordering::Relaxed);
        self.delivery.lost();
        // A connection that lasted is a healthy one: the backoff starts again from 1 s. (Reset on CONNACK or on
        // the first PUBACK, a broker that accepts and then drops us — a duplicate client id — is hammered.)
        let lasted = conn.connected.map(|t| t.elapsed());
        match lasted {
            Some(d) if d >= STABLE => {
                self.backoff.reset();
                self.short_connections = 0;
            }
            Some(d) => {
                self.short_connections += 1;
                if self.short_connections.is_power_of_two() && self.short_connections >= 2 {
                    tracing::warn!(
                        times = self.short_connections,
                        "the broker keeps closing the connection soon after accepting it ({reason}, after {d:.1?}): \
                         another client with the same client id ({}) is the likely cause (a cloned SD card keeps \
                         the hostname, the default node_id): set [mqtt] client_id or node_id on one of them",
                        self.settings.options.client_id()
                    );
                }
            }
            None => {}
        }
        let delay = self.backoff.next_delay_jittered();
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            let what = if conn.connected.is_some() { "lost" } else { "refused" };
            tracing::warn!(
                "MQTT connection {what}: {reason}; events are kept in the queue; retrying with backoff up to {:.0?}",
                self.settings.reconnect_max
            );
        } else {
            tracing::debug!("MQTT still unreachable: {reason}; next try in {delay:.1?}");
        }
        self.reconnect_at = Some(tokio::time::Instant::now() + delay);
    }

    /// A broker that keeps the connection alive but stops acknowledging would hold the window full for
    /// ever: after two keepalive periods without the oldest acknowledgement, reconnect and send again.
    fn check_ack_timeout(&mut self) {
        let limit = self.settings.options.keep_alive() * 2;
        let stale =
            self.conn.is_some() && self.delivery.oldest_unacknowledged(Instant::now()).is_some_and(|w| w > limit);
        if stale {
            self.lose(format!("no acknowledgement for {limit:?}"));
        }
    }

    /// Subscriptions left out after an oversized packet are tried again once their wait is over, on a
    /// connection that is up; one that then holds for [`STABLE`] ends the trouble.
    fn retry_left_out(&mut self) {
        let Some(conn) = self.conn.as_ref().filter(|c| c.connected.is_some()) else { return };
        let now = Instant::now();
        if self.retried_at.is_some_and(|t| now.duration_since(t) >= STABLE) {
            self.retried_at = None;
            self.shield.settled();
            tracing::info!("the left-out MQTT subscriptions work again");
        }
        let again = self.shield.due(now);
        if again.is_empty() {
            return;
        }
        tracing::info!("subscribing again to {}", again.join(", "));
        self.retried_at = Some(now);
        for f in again {
            if let Err(e) = conn.client.try_subscribe(f, QoS::AtLeastOnce) {
                tracing::warn!("MQTT subscribe failed: {e}");
            }
        }
    }

    /// A new connection is up: subscribe to what we listen to, and restate every retained message.
    fn on_connected(&mut self) {
        let Some(conn) = &self.conn else { return };
        let mut filters = Vec::new();
        if let Some(d) = &self.settings.discovery {
            filters.push(d.status_topic());
            filters.push(d.own_configs_filter());
        }
        if self.settings.commands {
            filters.push(self.settings.topics.command());
        }
        for f in filters.into_iter().filter(|f| self.shield.allows(f)) {
            if let Err(e) = conn.client.try_subscribe(f, QoS::AtLeastOnce) {
                tracing::warn!("MQTT subscribe failed: {e}");
            }
        }
        // The status first: a Last Will `offline` may be standing from the last outage.
        self.delivery.set_retained_first(self.settings.topics.status(), b"online".to_vec());
        self.restate();
    }

    /// Discovery configs, states and health, as after a Home Assistant restart.
    fn restate(&mut self) {
        if let Some(d) = &self.settings.discovery {
            for c in d.configs(&self.targets) {
                self.set_retained(c.topic, c.payload);
            }
        }
        let states: Vec<(String, Vec<u8>)> = self
            .targets
            .iter()
            .map(Target::path)
            .filter_map(|c| self.states.get(&c).map(|s| (self.settings.topics.state(&c), s.clone())))
            .collect();
        for (topic, payload) in states {
            self.set_retained(topic, payload);
        }
        self.publish_health();
    }

    fn on_message(&mut self, publish: rumqttc::Publish) {
        let topic = publish.topic.as_str();
        if let Some(d) = &self.settings.discovery {
            if topic == d.status_topic() {
                if publish.payload.as_ref() == b"online" {
                    tracing::info!("Home Assistant is online: re-sending discovery configs");
                    self.restate();
                }
                return;
            }
            if d.is_own_config(topic) {
                let current = d.all_topics(&self.targets).iter().any(|t| t == topic)
                    || d.node_topics().iter().any(|t| t == topic);
                if !current && !publish.payload.is_empty() {
                    tracing::info!(topic, "clearing the discovery config of a camera no longer configured");
                    self.set_retained(topic.to_string(), Vec::new());
                }
                return;
            }
        }
        if self.settings.commands && topic == self.settings.topics.command() {
            if publish.retain {
                // A retained command would run again at every reconnection.
                tracing::warn!("retained command on {topic} ignored; publish commands without the retain flag");
                return;
            }
            match command::parse(&publish.payload) {
                Ok(c) => {
                    let logged = self.command_lines.allow(Instant::now());
                    let unlogged = match logged {
                        Some(0) | None => String::new(),
                        Some(n) => format!(" ({n} more since the last line)"),
                    };
                    if logged.is_some() {
                        tracing::info!(command = ?c, "command received{unlogged}");
                    }
                    if self.commands.try_send(c).is_err() && logged.is_some() {
                        tracing::warn!("command ignored: the previous one is still being handled");
                    }
                }
                Err(e) => {
                    self.refused_commands += 1;
                    if self.refused_commands.is_power_of_two() {
                        tracing::warn!(refused = self.refused_commands, "command refused: {e}");
                    }
                }
            }
        }
    }

    fn new_pipeline(&mut self, targets: Vec<Target>, health: Arc<Health>) {
        if let Some(d) = &self.settings.discovery {
            let keep = d.all_topics(&targets);
            let removed: Vec<String> = d.all_topics(&self.targets).into_iter().filter(|t| !keep.contains(t)).collect();
            for topic in removed {
                self.set_retained(topic, Vec::new());
            }
        }
        let paths: Vec<String> = targets.iter().map(Target::path).collect();
        let removed: Vec<String> = self.targets.iter().map(Target::path).filter(|c| !paths.contains(c)).collect();
        for old in removed {
            // Its retained state would otherwise describe a camera (or region) that is gone.
            self.states.remove(&old);
            self.set_retained(self.settings.topics.state(&old), Vec::new());
            self.set_retained(self.settings.topics.snapshot(&old), Vec::new());
        }
        self.targets = targets;
        self.reporter.rebase(&health);
        self.health = health;
        self.restate();
    }

    fn publish_health(&mut self) {
        let queue = QueueHealth { depth: self.queue.len(), bytes: self.queue.bytes(), dropped: self.queue.dropped() };
        let report = self.reporter.report(&self.health, &self.settings.node, queue, self.stats.events);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&report.status_line())]);
        if let Ok(json) = serde_json::to_vec(&report) {
            self.set_retained(self.settings.topics.health(), json);
        }
    }

    /// Removes acknowledged events from the queue; `durable`: also make earlier removals durable.
    fn flush_acks(&mut self, durable: bool) {
        // Removal is a redb commit: batched (a full window, or 100 ms), it costs a few per second instead of
        // one per event. An acknowledged event still on disk is only re-sent if the daemon dies meanwhile.
        let due = durable || self.acked.len() >= WINDOW || self.last_removal.elapsed() >= ACK_BATCH;
        if due && !self.acked.is_empty() {
            self.last_removal = Instant::now();
            self.stats.events += self.acked.len() as u64;
            self.live.events_published.fetch_add(self.acked.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let acked = std::mem::take(&mut self.acked);
            if let Err(e) = tokio::task::block_in_place(|| self.queue.remove(&acked)) {
                tracing::error!("{e}");
            }
            self.acked = acked;
            self.acked.clear();
        }
        if (durable || self.queue.flush_due())
            && let Err(e) = tokio::task::block_in_place(|| self.queue.flush())
        {
            tracing::error!("{e}");
        }
    }

    /// Fills the window: retained messages first, then queued events in order.
    fn pump(&mut self) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.connected.is_some()) else { return };
        while self.delivery.outstanding() < WINDOW
            && let Some(r) = self.delivery.next_retained()
        {
            // Retained messages go at QoS 1 whatever the events use: they must not be lost either.
            match conn.client.try_publish(r.topic.clone(), QoS::AtLeastOnce, true, r.payload.clone()) {
                Ok(()) => self.delivery.retained_requested(),
                Err(e) => {
                    tracing::debug!("MQTT request refused: {e}");
                    return;
                }
            }
        }
        let room = WINDOW.saturating_sub(self.delivery.outstanding());
        if room == 0 {
            return;
        }
        let records = match self.queue.read_from(self.cursor, room) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let now = std::time::SystemTime::now();
        for mut r in records {
            if let Some(latency) = crate::events::stamp_capture_to_publish(&mut r.payload, now) {
                self.live.capture_to_publish.observe(latency.as_secs_f64());
            }
            match conn.client.try_publish(r.topic, self.settings.qos, false, r.payload) {
                Ok(()) => {
                    self.delivery.event_requested(r.id);
                    self.cursor = r.id + 1;
                }
                Err(e) => {
                    tracing::debug!("MQTT request refused: {e}");
                    return;
                }
            }
        }
    }

    /// Notices a queue file deleted or replaced under the daemon (and writes the events again), once a
    /// second; a failure to do so is logged at powers of two.
    fn check_queue_file(&mut self) {
        match tokio::task::block_in_place(|| self.queue.ensure_file()) {
            Ok(()) => self.queue_file_errors = 0,
            Err(e) => {
                self.queue_file_errors += 1;
                if self.queue_file_errors.is_power_of_two() {
                    tracing::error!("{e}; the waiting events are only in memory until this is fixed");
                }
            }
        }
    }

    /// Publishes `offline` and disconnects cleanly (no Last Will), waiting briefly for the broker.
    async fn goodbye(&mut self, notices: &mut mpsc::Receiver<(u64, Notice)>) {
        let Some(conn) = self.conn.as_ref().filter(|c| c.connected.is_some()) else {
            self.conn = None; // a connection still being set up is abandoned, not left to connect later
            if self.stats.queued > 0 && self.queue_file_errors > 0 {
                tracing::error!(
                    queued = self.stats.queued,
                    "MQTT broker unreachable at shutdown and the event queue {} could not be written again: \
                     these events are lost",
                    self.queue.path().display()
                );
            } else if self.stats.queued > 0 {
                tracing::warn!(
                    queued = self.stats.queued,
                    "MQTT broker unreachable at shutdown: events stay queued in {} for the next start",
                    self.queue.path().display()
                );
            } else {
                tracing::warn!("MQTT broker unreachable at shutdown: the Last Will will say offline");
            }
            return;
        };
        let id = conn.id;
        let _ = conn.client.try_publish(self.settings.topics.status(), QoS::AtLeastOnce, true, "offline");
        let _ = conn.client.try_disconnect();
        let closed = async {
            while let Some((conn, notice)) = notices.recv().await {
                if conn == id && matches!(notice, Notice::Closed | Notice::Lost(_)) {
                    break;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), closed).await {
            Ok(()) => tracing::info!(events = self.stats.events, queued = self.stats.queued, "MQTT disconnected"),
            Err(_) => tracing::warn!("MQTT broker did not answer the disconnect; the Last Will will say offline"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_budget_writes_five_lines_a_minute_and_counts_the_rest() {
        let mut b = LineBudget::new();
        let t = b.window;
        for _ in 0..LineBudget::LINES {
            assert_eq!(b.allow(t), Some(0));
        }
        for _ in 0..495 {
            assert_eq!(b.allow(t + Duration::from_secs(1)), None);
        }
        assert_eq!(b.allow(t + LineBudget::WINDOW), Some(495), "the next window's first line says how many");
        assert_eq!(b.allow(t + LineBudget::WINDOW), Some(0));
    }
}
