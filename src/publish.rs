//! Publishing over MQTT (rumqttc): topics, the retained status with its Last Will, events and states.
//!
//! One task drives rumqttc's event loop (and owns reconnection with capped exponential backoff); the
//! publisher task holds only the client handle. On every (re)connection the retained `online` status and
//! each camera's last state are published again, because a broker restart or the Last Will may have
//! replaced them. Events that arrive while the client's queue is full are dropped and counted (the disk
//! queue of the reliability work will keep them).

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::capture::Backoff;
use crate::config::MqttConfig;
use crate::events::{Event, State, millis};

/// The topic names of one node.
#[derive(Debug, Clone)]
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
    pub camera: usize,
    pub event: Event,
    pub state: Option<State>,
    /// When the frame was captured: `capture_to_publish` is measured from here.
    pub captured: std::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("mqtt.password_file {}: {source}", path.display())]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
}

/// MQTT settings resolved from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub options: MqttOptions,
    pub qos: QoS,
    pub topics: Topics,
}

impl Settings {
    pub fn from_config(mqtt: &MqttConfig, node: &str) -> Result<Settings, PublishError> {
        let topics = Topics::new(&mqtt.topic_prefix, node);
        let client_id = mqtt.client_id.clone().unwrap_or_else(|| format!("camclassd-{node}"));
        let mut options = MqttOptions::new(client_id, mqtt.host.clone(), mqtt.port);
        options.set_keep_alive(Duration::from_secs(mqtt.keepalive)).set_last_will(LastWill::new(
            topics.status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
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
            options.set_credentials(user.clone(), password.unwrap_or_default());
        }
        let qos = match mqtt.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        Ok(Settings { options, qos, topics })
    }
}

/// Counters the publisher reports when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    pub events: u64,
    pub dropped: u64,
}

/// Publishes until every sender of `rx` is gone, then says `offline` and disconnects.
pub async fn run(settings: Settings, cameras: Vec<String>, mut rx: mpsc::Receiver<Publication>) -> PublishStats {
    let (client, eventloop) = AsyncClient::new(settings.options.clone(), 64);
    let (connected_tx, mut connected) = watch::channel(0u64);
    let driver = tokio::spawn(drive(eventloop, connected_tx));
    let topics = &settings.topics;
    let mut states: Vec<Option<Vec<u8>>> = vec![None; cameras.len()];
    let mut stats = PublishStats::default();

    loop {
        tokio::select! {
            publication = rx.recv() => {
                let Some(mut p) = publication else { break };
                p.event.timing_ms.capture_to_publish = millis(p.captured.elapsed());
                let camera = &cameras[p.camera];
                // The state first, and kept even when the event cannot be queued: it is re-stated on reconnect.
                if let Some(state) = p.state
                    && let Ok(json) = serde_json::to_vec(&state)
                {
                    let _ = client.try_publish(topics.state(camera), settings.qos, true, json.clone());
                    states[p.camera] = Some(json);
                }
                let payload = match serde_json::to_vec(&p.event) {
                    Ok(v) => v,
                    Err(e) => { tracing::error!("cannot encode an event: {e}"); continue }
                };
                if client.try_publish(topics.event(camera), settings.qos, false, payload).is_err() {
                    stats.dropped += 1;
                    if stats.dropped.is_power_of_two() {
                        tracing::warn!(dropped = stats.dropped, "MQTT client queue full (broker unreachable?): events dropped");
                    }
                    continue;
                }
                stats.events += 1;
            }
            Ok(()) = connected.changed() => {
                // (Re)connected: restate what a Last Will or a broker restart may have replaced.
                let _ = client.publish(topics.status(), QoS::AtLeastOnce, true, "online").await;
                for (camera, state) in cameras.iter().zip(&states) {
                    if let Some(json) = state {
                        let _ = client.try_publish(topics.state(camera), settings.qos, true, json.clone());
                    }
                }
            }
        }
    }

    // Clean shutdown: the last events are queued ahead of `offline`, then DISCONNECT (no Last Will).
    let goodbye = async {
        let _ = client.publish(topics.status(), QoS::AtLeastOnce, true, "offline").await;
        let _ = client.disconnect().await;
        driver.await
    };
    match tokio::time::timeout(Duration::from_secs(3), goodbye).await {
        Ok(_) => tracing::info!(events = stats.events, "MQTT disconnected"),
        Err(_) if *connected.borrow() > 0 => {
            tracing::warn!("MQTT broker unreachable at shutdown: the Last Will will say offline")
        }
        Err(_) => tracing::warn!("MQTT broker never reachable: nothing was published"),
    }
    stats
}

/// Drives the event loop: the only place that talks to the network. Returns after a clean disconnect.
async fn drive(mut eventloop: EventLoop, connected: watch::Sender<u64>) {
    let mut backoff = Backoff::default();
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                match down_since.take() {
                    Some(t) => tracing::info!("MQTT connected again after {:.0?}", t.elapsed()),
                    None => tracing::info!("MQTT connected"),
                }
                backoff.reset();
                connected.send_modify(|n| *n += 1);
            }
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                if down_since.is_none() {
                    tracing::warn!(
                        "MQTT connection lost or refused: {e}; reconnecting with backoff up to {}s",
                        Backoff::MAX.as_secs()
                    );
                    down_since = Some(std::time::Instant::now());
                } else {
                    tracing::debug!("MQTT still unreachable: {e}; next try in {delay:?}");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_layout() {
        let t = Topics::new("camclassd/", "pi4");
        assert_eq!(t.status(), "camclassd/pi4/status");
        assert_eq!(t.event("porch"), "camclassd/pi4/porch/event");
        assert_eq!(t.state("porch"), "camclassd/pi4/porch/state");
    }
}
