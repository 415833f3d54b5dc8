//! Home Assistant MQTT discovery: the retained `config` messages that make each camera appear in Home
//! Assistant by itself — a label sensor, a score sensor, an `event` entity fed by the event topic, and
//! diagnostic sensors (fps, dropped frames, inference time) fed by the health topic. Every entity's
//! availability follows the node's retained status (Last Will `offline`).
//!
//! Topic layout: `<discovery prefix>/<component>/<node>/<object>/config`, object = `<camera>_<what>`, or
//! `<camera>_<region>_<what>` for a region; a two-class region with `on_class` also gets a `binary_sensor`
//! (object `<camera>_<region>`).

use serde_json::{Value, json};

use super::Topics;
use crate::region::Binary;

/// What speaks on its own topics: a camera's whole frame (`region: None`, the camera's topics) or one of
/// its regions.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub camera: String,
    pub region: Option<String>,
    /// A two-class region's `binary_sensor`.
    pub binary: Option<Binary>,
    /// The region publishes snapshots: an `image` entity.
    pub snapshot: bool,
}

impl Target {
    /// A camera's whole frame.
    pub fn camera(name: &str) -> Target {
        Target { camera: name.to_string(), region: None, binary: None, snapshot: false }
    }

    /// The topic level(s) under the node: `<camera>` or `<camera>/<region>`.
    pub fn path(&self) -> String {
        match &self.region {
            Some(r) => format!("{}/{r}", self.camera),
            None => self.camera.clone(),
        }
    }

    /// Its discovery object id: `<camera>` or `<camera>_<region>`.
    pub fn object(&self) -> String {
        self.path().replace('/', "_")
    }
}

/// The distinct cameras of `targets`, in order.
pub fn cameras(targets: &[Target]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        if !out.contains(&t.camera) {
            out.push(t.camera.clone());
        }
    }
    out
}

pub use crate::config::BINARY_SENSOR_DEVICE_CLASSES;

/// The `reason` values an event can carry: the event entity's `event_types`.
pub const EVENT_TYPES: [&str; 4] = ["change", "heartbeat", "frame", "snapshot"];

/// Discovery settings for one node.
#[derive(Debug, Clone)]
pub struct Discovery {
    prefix: String,
    node: String,
    topics: Topics,
    /// The HTTP status page, when `[http]` is on: the device's `configuration_url`.
    configuration_url: Option<String>,
}

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Discovery {
    pub fn new(prefix: &str, node: &str, topics: Topics) -> Discovery {
        Discovery {
            prefix: prefix.trim_end_matches('/').to_string(),
            node: node.to_string(),
            topics,
            configuration_url: None,
        }
    }

    /// Links the device to the HTTP status page ("Visit" in Home Assistant's device view).
    pub fn set_configuration_url(&mut self, url: &str) {
        self.configuration_url = Some(url.to_string());
    }

    /// Where Home Assistant announces itself (`online` after a restart).
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// The filter matching every config this node may have published, to find stale ones.
    pub fn own_configs_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.prefix, self.node)
    }

    /// Whether `topic` is a config topic of this node.
    pub fn is_own_config(&self, topic: &str) -> bool {
        let parts: Vec<&str> = topic.split('/').collect();
        let prefix: Vec<&str> = self.prefix.split('/').collect();
        parts.len() == prefix.len() + 4
            && parts[..prefix.len()] == prefix[..]
            && parts[prefix.len() + 1] == self.node
            && parts[prefix.len() + 3] == "config"
    }

    fn topic(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{object}/config", self.prefix, self.node)
    }

    fn device(&self) -> Value {
        let mut device = json!({
            "identifiers": [format!("camclassd_{}", self.node)],
            "name": format!("camclassd {}", self.node),
            "manufacturer": "camclassd",
            "model": "camera classification daemon",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        if let (Some(url), Some(map)) = (&self.configuration_url, device.as_object_mut()) {
            map.insert("configuration_url".into(), json!(url));
        }
        device
    }

    /// Fields every entity shares: availability, device, origin and ids.
    fn entity(&self, object: &str, name: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(name));
        m.insert("unique_id".into(), json!(format!("camclassd_{}_{object}", self.node)));
        m.insert("object_id".into(), json!(format!("{}_{object}", self.node)));
        m.insert("availability_topic".into(), json!(self.topics.status()));
        m.insert("payload_available".into(), json!("online"));
        m.insert("payload_not_available".into(), json!("offline"));
        m.insert("device".into(), self.device());
        m.insert("origin".into(), json!({"name": "camclassd", "sw_version": env!("CARGO_PKG_VERSION")}));
        m
    }

    /// The config topics of `camera`'s diagnostics, whatever their payloads.
    pub fn camera_topics(&self, camera: &str) -> Vec<String> {
        [("sensor", "fps"), ("sensor", "frames_dropped"), ("sensor", "infer_ms"), ("binary_sensor", "connected")]
            .iter()
            .map(|(component, what)| self.topic(component, &format!("{camera}_{what}")))
            .collect()
    }

    /// The config topics of a region's entities (label, score, event, and the binary_sensor of a two-class
    /// region).
    pub fn target_topics(&self, target: &Target) -> Vec<String> {
        let object = target.object();
        let mut out: Vec<String> = [("sensor", "label"), ("sensor", "score"), ("event", "classification")]
            .iter()
            .map(|(component, what)| self.topic(component, &format!("{object}_{what}")))
            .collect();
        if target.binary.is_some() {
            out.push(self.topic("binary_sensor", &object));
        }
        if target.snapshot {
            out.push(self.topic("image", &format!("{object}_snapshot")));
        }
        out
    }

    /// The config topics of the node's own entities (not tied to a camera).
    pub fn node_topics(&self) -> [String; 2] {
        [self.topic("sensor", "queue_depth"), self.topic("sensor", "model_check")]
    }

    /// Every config topic of these targets and their cameras.
    pub fn all_topics(&self, targets: &[Target]) -> Vec<String> {
        let mut out: Vec<String> = cameras(targets).iter().flat_map(|c| self.camera_topics(c)).collect();
        out.extend(targets.iter().flat_map(|t| self.target_topics(t)));
        out
    }

    /// Every config message for these targets (a camera's whole frame, or a region) and their cameras, plus
    /// the node's own diagnostics.
    pub fn configs(&self, targets: &[Target]) -> Vec<ConfigMessage> {
        let mut out = Vec::new();
        let health = self.topics.health();
        for target in targets {
            // Camera, region and node names are validated topic levels ([A-Za-z0-9_-]), which is also what
            // discovery allows in ids: they are used as they are.
            let object = target.object();
            let path = target.path();
            let title = match &target.region {
                Some(r) => format!("{} {r}", target.camera),
                None => target.camera.clone(),
            };
            let state = self.topics.state(&path);

            let mut label = self.entity(&format!("{object}_label"), &format!("{title} label"));
            label.insert("state_topic".into(), json!(state));
            label.insert("value_template".into(), json!("{{ value_json.label if value_json.label else 'none' }}"));
            label.insert("json_attributes_topic".into(), json!(state));
            label.insert("icon".into(), json!("mdi:cctv"));

            let mut score = self.entity(&format!("{object}_score"), &format!("{title} score"));
            score.insert("state_topic".into(), json!(state));
            score.insert("value_template".into(), json!("{{ (value_json.score * 100) | round(1) }}"));
            score.insert("unit_of_measurement".into(), json!("%"));
            score.insert("state_class".into(), json!("measurement"));
            score.insert("icon".into(), json!("mdi:percent"));

            let mut event = self.entity(&format!("{object}_classification"), &format!("{title} classification"));
            event.insert("state_topic".into(), json!(self.topics.event(&path)));
            event.insert("event_types".into(), json!(EVENT_TYPES));
            // HA's event entity wants {"event_type": …, attributes…}; ours says `reason` and `top`.
            event.insert(
                "value_template".into(),
                json!(
                    "{% set t = value_json.top[0] if value_json.top else none %}\
                     {{ {'event_type': value_json.reason, 'label': t.label if t else none, \
                     'class_id': t.class_id if t else none, 'score': t.score if t else 0, \
                     'seq': value_json.seq, 'captured_at': value_json.captured_at, \
                     'top': value_json.top} | tojson }}"
                ),
            );
            let mut bodies = vec![label, score, event];
            if let Some(binary) = &target.binary {
                let mut b = self.entity(&object, &title);
                b.insert("state_topic".into(), json!(state));
                let on = serde_json::to_string(&binary.on).unwrap_or_default();
                // No class over its threshold (the model is not sure, or a taught model's answer is under the
                // score its training proposed): unknown, not OFF ("None" is Home Assistant's unknown).
                b.insert(
                    "value_template".into(),
                    json!(format!(
                        "{{{{ 'None' if value_json.label is none else ('ON' if value_json.label == {on} else 'OFF') }}}}"
                    )),
                );
                b.insert("payload_on".into(), json!("ON"));
                b.insert("payload_off".into(), json!("OFF"));
                if let Some(class) = &binary.device_class {
                    b.insert("device_class".into(), json!(class));
                }
                bodies.push(b);
            }
            if target.snapshot {
                let mut image = self.entity(&format!("{object}_snapshot"), &format!("{title} snapshot"));
                image.insert("image_topic".into(), json!(self.topics.snapshot(&path)));
                image.insert("content_type".into(), json!("image/jpeg"));
                bodies.push(image);
            }
            for (topic, body) in self.target_topics(target).into_iter().zip(bodies) {
                out.push(ConfigMessage { topic, payload: Value::Object(body).to_string().into_bytes() });
            }
        }
        for camera in cameras(targets) {
            let cam = &camera;
            let cam_key = serde_json::to_string(&camera).unwrap_or_default();
            let diag = |object: &str, name: &str, field: &str, unit: Option<&str>, class: &str| {
                let mut d = self.entity(&format!("{cam}_{object}"), &format!("{camera} {name}"));
                d.insert("state_topic".into(), json!(health));
                d.insert("value_template".into(), json!(format!("{{{{ value_json.cameras[{cam_key}].{field} }}}}")));
                d.insert("entity_category".into(), json!("diagnostic"));
                d.insert("state_class".into(), json!(class));
                if let Some(unit) = unit {
                    d.insert("unit_of_measurement".into(), json!(unit));
                }
                d
            };
            let fps = diag("fps", "fps", "fps", Some("fps"), "measurement");
            let dropped = diag("frames_dropped", "dropped frames", "frames_dropped", None, "total_increasing");
            let infer = diag("infer_ms", "inference time", "infer_ms", Some("ms"), "measurement");
            // Off while the camera is stale (no frame for ten frame periods, at least 10 s).
            let mut connected = self.entity(&format!("{cam}_connected"), &format!("{camera} connected"));
            connected.insert("state_topic".into(), json!(health));
            connected.insert(
                "value_template".into(),
                json!(format!("{{{{ 'ON' if value_json.cameras[{cam_key}].connected else 'OFF' }}}}")),
            );
            connected.insert("device_class".into(), json!("connectivity"));
            connected.insert("entity_category".into(), json!("diagnostic"));

            for (topic, body) in self.camera_topics(&camera).into_iter().zip([fps, dropped, infer, connected]) {
                out.push(ConfigMessage { topic, payload: Value::Object(body).to_string().into_bytes() });
            }
        }
        let mut queue = self.entity("queue_depth", "queue depth");
        queue.insert("state_topic".into(), json!(health));
        queue.insert("value_template".into(), json!("{{ value_json.queue.depth }}"));
        queue.insert("entity_category".into(), json!("diagnostic"));
        queue.insert("state_class".into(), json!("measurement"));
        let [queue_topic, check_topic] = self.node_topics();
        out.push(ConfigMessage { topic: queue_topic, payload: Value::Object(queue).to_string().into_bytes() });
        // The model's own check at load (camclassd verify): passed / failed / fallback / unchecked.
        let mut check = self.entity("model_check", "model check");
        check.insert("state_topic".into(), json!(health));
        check.insert(
            "value_template".into(),
            json!("{{ value_json.model_check.status if value_json.model_check else 'unchecked' }}"),
        );
        check.insert("json_attributes_topic".into(), json!(health));
        check.insert("json_attributes_template".into(), json!("{{ (value_json.model_check or {}) | tojson }}"));
        check.insert("entity_category".into(), json!("diagnostic"));
        check.insert("icon".into(), json!("mdi:check-decagram"));
        out.push(ConfigMessage { topic: check_topic, payload: Value::Object(check).to_string().into_bytes() });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        Discovery::new("homeassistant", "pi4", Topics::new("camclassd", "pi4"))
    }

    #[test]
    fn every_camera_gets_its_entities_and_valid_json() {
        let d = discovery();
        let configs = d.configs(&[Target::camera("porch"), Target::camera("back_door")]);
        assert_eq!(configs.len(), 16);
        for c in &configs {
            assert!(d.is_own_config(&c.topic), "{}", c.topic);
            let v: Value = serde_json::from_slice(&c.payload).unwrap();
            assert_eq!(v["availability_topic"], "camclassd/pi4/status");
            assert_eq!(v["device"]["identifiers"][0], "camclassd_pi4");
            assert!(v["state_topic"].as_str().unwrap().starts_with("camclassd/pi4/"));
        }
        let topics: Vec<&str> = configs.iter().map(|c| c.topic.as_str()).collect();
        assert!(topics.contains(&"homeassistant/event/pi4/back_door_classification/config"));
        assert!(topics.contains(&"homeassistant/sensor/pi4/porch_label/config"));
        let connected = configs.iter().find(|c| c.topic == "homeassistant/binary_sensor/pi4/porch_connected/config");
        let v: Value = serde_json::from_slice(&connected.expect("a connectivity sensor").payload).unwrap();
        assert_eq!(
            (v["device_class"].as_str(), v["state_topic"].as_str()),
            (Some("connectivity"), Some("camclassd/pi4/health"))
        );
        assert_eq!(v["value_template"], "{{ 'ON' if value_json.cameras[\"porch\"].connected else 'OFF' }}");
        let check = configs.iter().find(|c| c.topic == "homeassistant/sensor/pi4/model_check/config").unwrap();
        let v: Value = serde_json::from_slice(&check.payload).unwrap();
        assert_eq!(v["state_topic"], "camclassd/pi4/health");
        assert_eq!(v["entity_category"], "diagnostic");
    }

    #[test]
    fn recognises_only_its_own_config_topics() {
        let d = discovery();
        assert!(d.is_own_config("homeassistant/sensor/pi4/old_label/config"));
        assert!(!d.is_own_config("homeassistant/sensor/other/old_label/config"));
        assert!(!d.is_own_config("homeassistant/sensor/pi4/old_label/state"));
        assert!(!d.is_own_config("homeassistant/status"));
        assert_eq!(d.own_configs_filter(), "homeassistant/+/pi4/+/config");
    }
}
