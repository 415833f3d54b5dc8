//! Home Assistant's own check of discovery configs: tests/fixtures/ha_discovery_check.py runs each message
//! through Home Assistant's MQTT discovery handler and its platform's `DISCOVERY_SCHEMA` (the release pinned
//! in tests/fixtures/ha-requirements.txt, in `.cache/ha-venv` from `scripts/setup`), and fails on a config it
//! refuses or a key it would drop. Here too: the checker's own test, that it can fail.

use std::process::Command;

use super::broker::Message;
use super::root;

/// Runs the checker over `(topic, payload)` pairs: its exit code and its output.
fn check(configs: &[(&str, &str)]) -> (Option<i32>, String) {
    let python = root().join(".cache/ha-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup first", python.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("discovery.jsonl");
    let lines: String = configs
        .iter()
        .map(|(topic, payload)| serde_json::json!({"topic": topic, "payload": payload}).to_string() + "\n")
        .collect();
    std::fs::write(&input, lines).expect("write the configs");
    let out = Command::new(python)
        .arg(root().join("tests/fixtures/ha_discovery_check.py"))
        .arg(&input)
        .output()
        .expect("the Home Assistant check runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Every non-empty message of `configs` (retained discovery configs; empty ones are clears) is a config Home
/// Assistant accepts whole. Returns the checker's output.
pub fn assert_accepted(configs: &[Message]) -> String {
    let pairs: Vec<(&str, &str)> =
        configs.iter().filter(|m| !m.payload.is_empty()).map(|m| (m.topic.as_str(), m.payload.as_str())).collect();
    assert!(!pairs.is_empty(), "no discovery config to check");
    let (code, out) = check(&pairs);
    assert_eq!(code, Some(0), "Home Assistant's discovery refuses or drops part of camclassd's configs:\n{out}");
    eprintln!("{}", out.trim_end());
    out
}

#[test]
fn home_assistants_check_passes_a_good_config_and_fails_a_dropped_key_or_a_bad_device_class() {
    let device = r#""device":{"identifiers":["camclassd_n"],"name":"camclassd n"},"origin":{"name":"camclassd"}"#;
    let good =
        format!(r#"{{"name":"door","unique_id":"u1","state_topic":"c/n/door/state","device_class":"door",{device}}}"#);
    // Abbreviations are expanded as Home Assistant does: `stat_t` and `dev`/`ids` are known keys.
    let short = r#"{"name":"label","uniq_id":"u2","stat_t":"c/n/cam/state","dev":{"ids":["camclassd_n"]}}"#;
    let (code, out) = check(&[
        ("homeassistant/binary_sensor/n/door/config", &good),
        ("homeassistant/sensor/n/cam_label/config", short),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Home Assistant 2024.3.3: 2 config(s), all valid"), "{out}");

    let bogus = good.replace(r#""name":"door""#, r#""name":"door","bogus_key":1"#);
    let bad_class = good.replace(r#""device_class":"door""#, r#""device_class":"doorbell""#);
    let bad_device = good.replace(r#""name":"camclassd n""#, r#""name":"camclassd n","colour":"red""#);
    let (code, out) = check(&[
        ("homeassistant/binary_sensor/n/bogus/config", &bogus),
        ("homeassistant/binary_sensor/n/bad_class/config", &bad_class),
        ("homeassistant/binary_sensor/n/bad_device/config", &bad_device),
        ("homeassistant/binary_sensor/n/good/config", &good),
        ("homeassistant/thermostat/n/unknown/config", &good),
    ]);
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let about = |object: &str| -> Vec<&str> {
        lines.iter().copied().filter(|l| l.contains(&format!("/n/{object}/config: "))).collect()
    };
    assert_eq!(about("bogus"), ["homeassistant/binary_sensor/n/bogus/config: Home Assistant drops `bogus_key`"]);
    assert!(
        matches!(about("bad_class")[..], [l] if l.contains("binary_sensor schema: expected BinarySensorDeviceClass")
            && l.contains("@ data['device_class']")),
        "{out}"
    );
    assert!(
        matches!(about("bad_device")[..], [l] if l.contains("extra keys not allowed @ data['device']['colour']")),
        "{out}"
    );
    assert!(about("good").is_empty(), "{out}");
    assert!(matches!(about("unknown")[..], [l] if l.contains("Integration thermostat is not supported")), "{out}");
    assert!(out.contains("5 config(s), 4 problem(s)"), "{out}");
}
