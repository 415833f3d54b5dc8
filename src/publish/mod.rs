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
pub mod discovery;
pub mod queue;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::config::{Config, MqttConfig, TlsConfig};
use crate::events::{Event, State};
use crate::health::{Health, QueueHealth, Reporter};
pub use command::Command;
use discovery::Discovery;
pub use queue::{Limits, Queue, QueueError};

/// The topic names of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    prefix: String,
    node: String,
}

impl Topics {
    pub fn new(prefix: &str, node: &str) -> Topics {
        Topics { prefix: prefix.trim_end_matches('/').to_string(), node: node.to_string() }
    }
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.node)
    }
    pub fn health(&self) -> String {
        format!("{}/{}/health", self.prefix, self.node)
    }
    pub fn command(&self) -> String {
        format!("{}/{}/command", self.prefix, self.node)
    }
    pub fn event(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/event", self.prefix, self.node)
    }
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/state", self.prefix, self.node)
    }
}

/// What the pipeline hands to the publisher: an event, and the camera's new state when it changed.
#[derive(Debug)]
pub struct Publication {
    pub event: Event,
    pub state: Option<State>,
}

/// What the daemon tells a running publisher.
#[derive(Debug)]
pub enum Control {
    /// The pipeline was rebuilt (config reload): these cameras and counters from now on.
    Pipeline { cameras: Vec<String>, health: Arc<Health> },
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

/// MQTT settings resolved from the config: everything that needs a new connection when it changes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub options: MqttOptions,
    pub qos: QoS,
    pub topics: Topics,
    pub node: String,
    pub reconnect_max: Duration,
    pub commands: bool,
    pub discovery: Option<Discovery>,
    pub health_interval: Duration,
    /// The config sections these settings came from, and a digest of the secrets read from files (password,
    /// TLS certificates and key): a reload with the same keeps the connection; a rotated key does not.
    pub source: (MqttConfig, Option<crate::config::HomeAssistantConfig>, crate::config::HealthConfig, [u8; 32]),
}

/// Acknowledged-or-not publishes in flight at once; PUBACKs are matched to events through this window.
const WINDOW: usize = 32;

/// Events are committed to the queue at most this often (one fsync per commit): at every_frame rates a
/// commit per event cost 5 % of the frame rate on this machine's disk; sparse events are not delayed.
const GROUP_COMMIT: Duration = Duration::from_millis(20);

/// Acknowledged events are removed from the queue at least this often.
const ACK_BATCH: Duration = Duration::from_millis(100);

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings, PublishError> {
        let Some(mqtt) = config.mqtt.as_ref() else {
            return Err(PublishError::Tls("no [mqtt] section".into()));
        };
        let node = config.node_id();
        let topics = Topics::new(&mqtt.topic_prefix, &node);
        let client_id = mqtt.client_id.clone().unwrap_or_else(|| format!("camclassd-{node}"));
        let mut options = MqttOptions::new(client_id, mqtt.host.clone(), mqtt.port());
        options
            .set_keep_alive(Duration::from_secs(mqtt.keepalive))
            .set_clean_session(true)
            .set_inflight((2 * WINDOW) as u16)
            // Incoming messages are commands, Home Assistant's status and our discovery configs: small, and
            // anything over 1 KiB is refused where it is read. The packet limit is far above that, because
            // a packet over it ends the connection, and a retained one (a stray 100 kB on
            // homeassistant/status) would then end every connection as the broker sends it again.
            .set_max_packet_size(INCOMING_MAX, 16 * 1024 * 1024)
            .set_last_will(LastWill::new(topics.status(), "offline", QoS::AtLeastOnce, true));
        let password = match &mqtt.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| PublishError::PasswordFile { path: path.clone(), source })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => mqtt.password.clone(),
        };
        if let Some(user) = &mqtt.username {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        if let Some(tls) = &mqtt.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls_config(tls)?))));
        }
        let qos = match mqtt.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        let discovery = config
            .homeassistant
            .as_ref()
            .filter(|ha| ha.enabled)
            .map(|ha| Discovery::new(&ha.discovery_prefix, &node, topics.clone()));
        Ok(Settings {
            options,
            qos,
            topics,
            node,
            reconnect_max: Duration::from_secs_f64(mqtt.reconnect_max),
            commands: mqtt.commands,
            discovery,
            health_interval: Duration::from_secs_f64(config.health.interval),
            source: (
                mqtt.clone(),
                config.homeassistant.clone(),
                config.health.clone(),
                secrets_digest(mqtt, &password),
            ),
        })
    }
}

/// SHA-256 over the password and the TLS files' contents: what a reload must notice even when the config
/// file itself did not change.
fn secrets_digest(mqtt: &MqttConfig, password: &Option<String>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(password.as_deref().unwrap_or_default());
    if let Some(tls) = &mqtt.tls {
        for f in [Some(&tls.ca_file), tls.cert_file.as_ref(), tls.key_file.as_ref()].into_iter().flatten() {
            h.update(std::fs::read(f).unwrap_or_default());
        }
    }
    h.finalize().into()
}

/// A rustls client config from PEM files: the CA bundle, and the client certificate and key if given.
/// Checked here, at start-up, so a bad file is a config error rather than a reconnect loop.
fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, PublishError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| PublishError::Tls(format!("{}: {e}", p.display())));
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&tls.ca_file)?;
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&ca).filter_map(Result::ok).collect();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(PublishError::Tls(format!("{}: no PEM certificate in it", tls.ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| PublishError::Tls(format!("{}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(PublishError::Tls(format!("{}: no PEM certificate in it", cert.display())));
            }
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| PublishError::Tls(format!("{}: no usable private key: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| PublishError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

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

/// What a publish request stands for, to act on its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Event(u64),
    /// A retained message: put back in the list if its connection drops before the PUBACK.
    Retained(u64),
}

/// What a connection's driver task reports, tagged with the connection's number.
#[derive(Debug)]
enum Notice {
    Connected,
    /// A publish request was written, with this packet id (0 for QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    Acked(u16),
    Message(rumqttc::Publish),
    Lost(String),
    Closed,
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
    /// Requests made, waiting for their `Sent` notice (in order).
    requested: VecDeque<Tag>,
    /// Sent, waiting for their acknowledgement, by packet id, with when they were sent.
    inflight: HashMap<u16, (Tag, Instant)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    fn outstanding(&self) -> usize {
        self.requested.len() + self.inflight.len()
    }
}

/// A retained "latest value" message waiting for the broker.
#[derive(Debug)]
struct Retained {
    topic: String,
    payload: Vec<u8>,
}

/// The publisher's own state.
struct Publisher {
    settings: Settings,
    queue: Queue,
    cameras: Vec<String>,
    health: Arc<Health>,
    reporter: Reporter,
    commands: mpsc::Sender<Command>,
    notices: mpsc::Sender<(u64, Notice)>,
    conn: Option<Connection>,
    next_conn: u64,
    /// The next queued event id to send on this connection.
    cursor: u64,
    /// Retained messages to (re)send, newest per topic, in order.
    retained: VecDeque<Retained>,
    /// Each camera's last state payload, re-stated on reconnection.
    states: HashMap<String, Vec<u8>>,
    acked: Vec<u64>,
    /// Retained messages sent and not yet acknowledged, by their tag number.
    in_flight_retained: HashMap<u64, Retained>,
    retained_sent: u64,
    last_removal: Instant,
    /// Publications received but not yet committed to the queue.
    waiting: Vec<Publication>,
    last_push: Instant,
    stats: PublishStats,
    backoff: Backoff,
    reconnect_at: Option<tokio::time::Instant>,
    down_since: Option<Instant>,
    refused_commands: u64,
    /// Failed attempts to rewrite a deleted queue file (logged at powers of two).
    queue_file_errors: u64,
}

/// Runs the publisher until every sender of `rx` is gone, then drains the queue (a few seconds at most),
/// says `offline` and disconnects. Events not yet acknowledged stay in the queue for the next start.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: Settings,
    queue: Queue,
    cameras: Vec<String>,
    health: Arc<Health>,
    mut rx: mpsc::Receiver<Publication>,
    mut control: mpsc::Receiver<Control>,
    commands: mpsc::Sender<Command>,
) -> (PublishStats, Queue) {
    let (notice_tx, mut notice_rx) = mpsc::channel::<(u64, Notice)>(1024);
    let reporter = Reporter::new(&health);
    let backoff = Backoff::with_max(settings.reconnect_max);
    let mut p = Publisher {
        settings,
        cursor: queue.first_id(),
        queue,
        cameras,
        health,
        reporter,
        commands,
        notices: notice_tx,
        conn: None,
        next_conn: 0,
        retained: VecDeque::new(),
        states: HashMap::new(),
        acked: Vec::new(),
        in_flight_retained: HashMap::new(),
        retained_sent: 0,
        last_removal: Instant::now(),
        waiting: Vec::new(),
        last_push: Instant::now(),
        stats: PublishStats::default(),
        backoff,
        reconnect_at: None,
        down_since: None,
        refused_commands: 0,
        queue_file_errors: 0,
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
                Some(Control::Pipeline { cameras, health }) => {
                    // The old pipeline's last publications are all in `rx` by now (it was stopped before
                    // this was sent, the new one starts after): they go first, under the old camera list.
                    while let Ok(publication) = rx.try_recv() {
                        p.waiting.push(publication);
                    }
                    p.commit();
                    p.new_pipeline(cameras, health);
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
            }
        }
        p.flush_acks(false);
        p.pump();
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
        // Room for the window, subscriptions and the final DISCONNECT: requests never wait for space.
        let (client, eventloop) = AsyncClient::new(self.settings.options.clone(), WINDOW + 16);
        let task = tokio::spawn(drive(id, eventloop, self.notices.clone()));
        self.conn = Some(Connection {
            id,
            client,
            task,
            connected: None,
            requested: VecDeque::new(),
            inflight: HashMap::new(),
        });
    }

    fn has_outstanding(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.outstanding() > 0)
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
            let camera = p.event.camera.clone();
            p.event.seq = self.queue.next_seq(&camera);
            if let Some(state) = p.state
                && let Ok(json) = serde_json::to_vec(&state)
            {
                self.states.insert(camera.clone(), json.clone());
                self.set_retained(self.settings.topics.state(&camera), json);
            }
            match serde_json::to_vec(&p.event) {
                Ok(payload) => items.push((self.settings.topics.event(&camera), payload)),
                Err(e) => tracing::error!("cannot encode an event: {e}"),
            }
        }
        // An fsync: keep it off the async worker's back.
        let pushed = tokio::task::block_in_place(|| self.queue.push(&items));
        if let Err(e) = pushed {
            tracing::error!("{e}; {} event(s) lost", items.len());
        }
    }

    /// Queues a retained message, replacing an older one for the same topic.
    fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        if let Some(r) = self.retained.iter_mut().find(|r| r.topic == topic) {
            r.payload = payload;
        } else {
            self.retained.push_back(Retained { topic, payload });
        }
    }

    fn on_notice(&mut self, id: u64, notice: Notice) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == id) else {
            return; // From a connection already given up.
        };
        match notice {
            Notice::Connected => {
                conn.connected = Some(Instant::now());
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
            Notice::Sent(pkid) => {
                let Some(tag) = conn.requested.pop_front() else { return };
                if pkid == 0 {
                    // QoS 0: nothing will acknowledge it.
                    if let Tag::Event(e) = tag {
                        self.acked.push(e);
                    }
                } else if conn.inflight.insert(pkid, (tag, Instant::now())).is_some() {
                    // rumqttc reused a packet id still waiting for its acknowledgement (QoS 2 frees ids at
                    // PUBREC): the next acknowledgement could not be matched. Start over on a new connection.
                    self.lose("a packet id was reused before its acknowledgement".into());
                }
            }
            Notice::Acked(pkid) => {
                match conn.inflight.remove(&pkid) {
                    Some((Tag::Event(e), _)) => self.acked.push(e),
                    Some((Tag::Retained(n), _)) => {
                        self.in_flight_retained.remove(&n);
                    }
                    None => {}
                }
                // A connection that delivers is a healthy one: the backoff starts again from 1 s. (Reset on
                // CONNACK, a broker that accepts and then drops us — a duplicate client id — would be hammered.)
                self.backoff.reset();
            }
            Notice::Message(publish) => self.on_message(publish),
            Notice::Lost(reason) => self.lose(reason),
            Notice::Closed => self.lose("closed".into()),
        }
    }

    /// Gives the current connection up and schedules the next one. Whatever it had not had acknowledged is
    /// sent again on the next: events from the queue, retained messages from the list.
    fn lose(&mut self, reason: String) {
        let Some(conn) = self.conn.take() else { return };
        let unacknowledged: Vec<u64> = conn
            .requested
            .iter()
            .chain(conn.inflight.values().map(|(t, _)| t))
            .filter_map(|t| match t {
                Tag::Retained(n) => Some(*n),
                Tag::Event(_) => None,
            })
            .collect();
        for n in unacknowledged {
            if let Some(r) = self.in_flight_retained.remove(&n)
                && !self.retained.iter().any(|q| q.topic == r.topic)
            {
                self.retained.push_back(r);
            }
        }
        self.in_flight_retained.clear();
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
        let stale = self.conn.as_ref().is_some_and(|c| c.inflight.values().any(|(_, sent)| sent.elapsed() > limit));
        if stale {
            self.lose(format!("no acknowledgement for {limit:?}"));
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
        for f in filters {
            if let Err(e) = conn.client.try_subscribe(f, QoS::AtLeastOnce) {
                tracing::warn!("MQTT subscribe failed: {e}");
            }
        }
        // The status first: a Last Will `offline` may be standing from the last outage.
        self.retained.retain(|r| r.topic != self.settings.topics.status());
        self.retained.push_front(Retained { topic: self.settings.topics.status(), payload: b"online".to_vec() });
        self.restate();
    }

    /// Discovery configs, states and health, as after a Home Assistant restart.
    fn restate(&mut self) {
        if let Some(d) = &self.settings.discovery {
            for c in d.configs(&self.cameras) {
                self.set_retained(c.topic, c.payload);
            }
        }
        let states: Vec<(String, Vec<u8>)> = self
            .cameras
            .iter()
            .filter_map(|c| self.states.get(c).map(|s| (self.settings.topics.state(c), s.clone())))
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
                let current = self.cameras.iter().flat_map(|c| d.camera_topics(c)).any(|t| t == topic)
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
                    tracing::info!(command = ?c, "command received");
                    if self.commands.try_send(c).is_err() {
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

    fn new_pipeline(&mut self, cameras: Vec<String>, health: Arc<Health>) {
        if let Some(d) = &self.settings.discovery {
            let removed: Vec<String> =
                self.cameras.iter().filter(|c| !cameras.contains(c)).flat_map(|c| d.camera_topics(c)).collect();
            for topic in removed {
                self.set_retained(topic, Vec::new());
            }
        }
        let removed: Vec<String> = self.cameras.iter().filter(|c| !cameras.contains(c)).cloned().collect();
        for old in removed {
            // Its retained state would otherwise describe a camera that is gone.
            self.states.remove(&old);
            self.set_retained(self.settings.topics.state(&old), Vec::new());
        }
        self.cameras = cameras;
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
        while conn.outstanding() < WINDOW
            && let Some(r) = self.retained.pop_front()
        {
            // Retained messages go at QoS 1 whatever the events use: they must not be lost either.
            match conn.client.try_publish(r.topic.clone(), QoS::AtLeastOnce, true, r.payload.clone()) {
                Ok(()) => {
                    self.retained_sent += 1;
                    conn.requested.push_back(Tag::Retained(self.retained_sent));
                    self.in_flight_retained.insert(self.retained_sent, r);
                }
                Err(e) => {
                    tracing::debug!("MQTT request refused: {e}");
                    self.retained.push_front(r);
                    return;
                }
            }
        }
        let room = WINDOW.saturating_sub(conn.outstanding());
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
            crate::events::stamp_capture_to_publish(&mut r.payload, now);
            match conn.client.try_publish(r.topic, self.settings.qos, false, r.payload) {
                Ok(()) => {
                    conn.requested.push_back(Tag::Event(r.id));
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

/// Drives one connection's event loop until it fails or is closed; the only place that touches the network.
async fn drive(id: u64, mut eventloop: EventLoop, notices: mpsc::Sender<(u64, Notice)>) {
    loop {
        let notice = match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => Notice::Connected,
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => Notice::Acked(ack.pkid),
            Ok(MqttEvent::Incoming(Packet::PubComp(ack))) => Notice::Acked(ack.pkid),
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => Notice::Message(p),
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => Notice::Sent(pkid),
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                // Let the DISCONNECT reach the socket before the event loop is dropped.
                let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                let _ = notices.send((id, Notice::Closed)).await;
                return;
            }
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => Notice::Closed,
            Err(e) => Notice::Lost(describe(&e)),
        };
        let last = matches!(notice, Notice::Lost(_) | Notice::Closed);
        if notices.send((id, notice)).await.is_err() || last {
            return;
        }
    }
}

/// The largest packet accepted from the broker.
const INCOMING_MAX: usize = 1024 * 1024;

/// A connection error in words a user can act on.
fn describe(e: &ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as Code;
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                Code::BadUserNamePassword => "check mqtt.username and the password file",
                // mosquitto answers a wrong password with this code, not BadUserNamePassword.
                Code::NotAuthorized => {
                    "check mqtt.username and the password file, or the broker's access rules for this client"
                }
                Code::BadClientId => {
                    "the broker rejects the client id (mqtt.client_id; some brokers limit its \
                                     length or characters)"
                }
                Code::RefusedProtocolVersion => "the broker does not speak MQTT 3.1.1",
                Code::ServiceUnavailable => "the broker is not accepting connections now",
                Code::Success => "no reason given",
            };
            format!("the broker refused the connection ({code:?}): {why}")
        }
        ConnectionError::Tls(t) => format!("TLS: {t} (check mqtt.tls.ca_file and the broker's certificate)"),
        other if other.to_string().to_ascii_lowercase().contains("payload size limit") => format!(
            "{other}: the broker sent a message over {} KiB on a subscribed topic; a retained one comes again at \
             every connection: clear it (mosquitto_pub -r -n -t TOPIC)",
            INCOMING_MAX / 1024
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_broker_refusal_names_its_own_cause() {
        use rumqttc::ConnectReturnCode as Code;
        let text = |c| describe(&ConnectionError::ConnectionRefused(c));
        assert!(text(Code::BadUserNamePassword).contains("password"));
        assert!(text(Code::BadClientId).contains("client id") && !text(Code::BadClientId).contains("password"));
        assert!(text(Code::NotAuthorized).contains("access rules") && text(Code::NotAuthorized).contains("password"));
        assert!(text(Code::ServiceUnavailable).contains("not accepting"));
    }

    #[test]
    fn topics_follow_the_documented_layout() {
        let t = Topics::new("camclassd/", "pi4");
        assert_eq!(t.status(), "camclassd/pi4/status");
        assert_eq!(t.health(), "camclassd/pi4/health");
        assert_eq!(t.command(), "camclassd/pi4/command");
        assert_eq!(t.event("porch"), "camclassd/pi4/porch/event");
        assert_eq!(t.state("porch"), "camclassd/pi4/porch/state");
    }
}
