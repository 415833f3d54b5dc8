//! The daemon as an MQTT citizen: no event lost across broker and daemon restarts, a damaged queue,
//! Home Assistant discovery, TLS, the health topic, commands, SIGHUP reload and the systemd watchdog.
//! Real mosquitto, real binary, `mosquitto_sub` witnesses; nothing mocked.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::broker::{Broker, BrokerTls, Message, Witness, daemon_config, retained};
use super::daemon::Daemon;
use super::ha;
use super::*;

fn replay_camera(image: &str, fps: f64, publish: &str) -> String {
    format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = {fps}\npublish = {publish:?}\n",
        generated(image).display().to_string()
    )
}

/// A config with `extra` lines added to `[mqtt]`, and `tail` (sections) at the end.
fn config_with(dir: &Path, broker: &Broker, mqtt_extra: &str, cameras: &str, tail: &str) -> PathBuf {
    let path = daemon_config(dir, broker, cameras);
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replacen("keepalive = 5\n", &format!("keepalive = 5\nreconnect_max = 2\n{mqtt_extra}"), 1);
    std::fs::write(&path, format!("{text}{tail}")).expect("config");
    path
}

/// The `seq` of every event the witness saw, in arrival order.
fn seqs(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m.topic.ends_with("/event"))
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).expect("event JSON")["seq"].as_u64().expect("seq")
        })
        .collect()
}

/// Every seq from 1 to the highest seen arrived, first arrivals in order (a re-sent event may repeat).
fn assert_complete_and_in_order(seqs: &[u64]) -> u64 {
    let mut seen = BTreeSet::new();
    let mut last_new = 0;
    for &s in seqs {
        if seen.insert(s) {
            assert!(s > last_new, "seq {s} arrived after {last_new} for the first time: {seqs:?}");
            last_new = s;
        }
    }
    let max = seen.last().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=max).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "lost events {missing:?} of 1..={max}");
    max
}

fn max_seq(witness: &Witness) -> u64 {
    seqs(&witness.messages()).into_iter().max().unwrap_or(0)
}

/// A persistent broker, a persistent-session witness of the events, and a daemon publishing every frame of
/// a 10 fps replay camera, once the first events arrived.
struct Outage {
    broker: Broker,
    witness: Witness,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Outage {
    fn start(witness_id: &str) -> (Outage, Daemon) {
        let broker = Broker::start_persistent();
        let witness = Witness::start_persistent(&broker, "camclassd/testnode/+/event", witness_id);
        // Let the broker save the witness's session before it is killed.
        std::thread::sleep(Duration::from_millis(1500));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_with(dir.path(), &broker, "", &replay_camera("coffee.jpg", 10.0, "every_frame"), "");
        let daemon = Daemon::start(&config);
        witness.wait_for("events", Duration::from_secs(20), |m| seqs(m).len() >= 10);
        (Outage { broker, witness, config, _dir: dir }, daemon)
    }

    /// Waits for events up to `seq`, stops the daemon (which must have emptied its queue), and checks that
    /// every event arrived, in order.
    fn finish(&self, daemon: Daemon, seq: u64) -> String {
        self.witness.wait_for("the outage's events", Duration::from_secs(30), |m| {
            seqs(m).into_iter().max().unwrap_or(0) >= seq
        });
        let (code, log) = daemon.stop();
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("queued_events=0"), "every event was acknowledged before exit:\n{log}");
        std::thread::sleep(Duration::from_millis(500));
        let max = assert_complete_and_in_order(&seqs(&self.witness.messages()));
        assert!(max >= seq, "{max} events");
        log
    }
}

#[test]
fn a_broker_killed_for_10_s_loses_no_event() {
    let (mut outage, daemon) = Outage::start("witness-restart");
    outage.broker.kill();
    let at_kill = max_seq(&outage.witness);
    std::thread::sleep(Duration::from_secs(10));
    outage.broker.start_again();
    // ~100 events were made during the outage: all of them must come, after the ones from before.
    let log = outage.finish(daemon, at_kill + 80);
    assert!(log.contains("MQTT connection lost"), "{log}");
    // capture_to_publish is measured when an event leaves for the broker: those captured during the outage
    // say they waited for it (it read ~0-20 ms before, the time to the queue).
    let waited: Vec<f64> = outage
        .witness
        .messages()
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).ok())
        .filter(|e| e["seq"].as_u64().is_some_and(|s| (at_kill + 15..at_kill + 20).contains(&s)))
        .map(|e| e["timing_ms"]["capture_to_publish"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(!waited.is_empty() && waited.iter().all(|&ms| ms >= 4000.0), "{waited:?}");
}

#[test]
fn a_daemon_killed_during_the_outage_delivers_its_queue_after_restart() {
    let (mut outage, daemon) = Outage::start("witness-both");
    outage.broker.kill();
    let at_kill = max_seq(&outage.witness);
    std::thread::sleep(Duration::from_secs(4));
    daemon.kill(); // SIGKILL: the queue on disk is all that is left of the outage's events
    let daemon = Daemon::start(&outage.config);
    daemon.wait_log("delivering events from before", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    outage.broker.start_again();
    // seq kept counting across the restart (it is stored with the queue): one unbroken sequence.
    outage.finish(daemon, at_kill + 60);
}

#[test]
fn a_damaged_queue_file_is_logged_and_the_daemon_carries_on() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(dir.path(), &broker, "", &replay_camera("coffee.jpg", 10.0, "every_frame"), "");
    let queue = dir.path().join("queue.redb");

    // Random bytes are not a queue (no redb header): someone's file, never moved aside or replaced.
    let noise: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&queue, &noise).expect("write");
    let mut daemon = Daemon::start(&config);
    let code = daemon.wait_exit(Duration::from_secs(20));
    let log = daemon.log();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("not a camclassd event queue") && log.contains("queue.path"), "{log}");
    assert_eq!(std::fs::read(&queue).expect("still there"), noise, "left exactly as it was");
    std::fs::remove_file(&queue).expect("remove");

    // A real queue, damaged past its header: moved aside, a fresh queue, events flow.
    let daemon = Daemon::start(&config);
    witness.wait_for("events", Duration::from_secs(20), |m| !seqs(m).is_empty());
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut bytes = std::fs::read(&queue).expect("queue");
    for b in &mut bytes[64..] {
        *b ^= 0x5a;
    }
    std::fs::write(&queue, &bytes).expect("damage");
    let before = witness.messages().len();
    let daemon = Daemon::start(&config);
    witness.wait_for("events after the damage", Duration::from_secs(20), |m| m.len() > before + 3);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(".corrupt-"), "{log}");

    // A real queue, truncated as a power cut mid-write could leave it.
    let len = std::fs::metadata(&queue).expect("queue").len();
    let file = std::fs::OpenOptions::new().write(true).open(&queue).expect("open");
    file.set_len(len / 2).expect("truncate");
    drop(file);
    let before = witness.messages().len();
    let daemon = Daemon::start(&config);
    witness.wait_for("events after the truncation", Duration::from_secs(20), |m| m.len() > before + 3);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.matches("moved it to").count() + log.matches("moved the file to").count() >= 1, "{log}");
}

/// The queue's folder removed while the broker is down: the daemon notices within a second, writes the
/// waiting events into a new file, says so, and the next start delivers every one of them.
#[test]
fn a_queue_file_deleted_while_running_loses_no_event() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(dir.path(), &broker, "", &replay_camera("coffee.jpg", 10.0, "every_frame"), "");
    let folder = dir.path().join("qdel");
    let text = std::fs::read_to_string(&config).expect("config");
    let queue = dir.path().join("queue.redb").display().to_string();
    let moved = folder.join("q.redb").display().to_string();
    std::fs::write(&config, text.replace(&format!("{queue:?}"), &format!("{moved:?}"))).expect("config");
    broker.kill();

    let daemon = Daemon::start(&config);
    daemon.wait_log("camclassd running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_dir_all(&folder).expect("remove the queue's folder");
    daemon.wait_log("was deleted while camclassd ran", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(Path::new(&moved).is_file(), "the queue file is there again:\n{log}");
    let made: u64 = log
        .lines()
        .find_map(|l| l.split("queued=").nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .expect("the number of queued events in the log");
    assert!(made > 20, "{made} events queued:\n{log}");

    // The witness subscribes before the daemon starts again: it sees every event the queue delivers.
    broker.start_again();
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let daemon = Daemon::start(&config);
    let messages =
        witness.wait_for("every queued event", Duration::from_secs(20), |m| (1..=made).all(|s| seqs(m).contains(&s)));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(seqs(&messages).contains(&made), "{log}");
}

/// A stray retained 100 kB message on a topic camclassd subscribes to (homeassistant/status) is dropped;
/// the connection stays up and events keep flowing (before: every connection ended on it, each second).
#[test]
fn an_oversize_retained_message_does_not_end_every_connection() {
    let broker = Broker::start();
    broker.publish("homeassistant/status", &"x".repeat(100_000), true);
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        config_with(dir.path(), &broker, "", &replay_camera("coffee.jpg", 5.0, "every_frame"), "[homeassistant]\n");
    let daemon = Daemon::start(&config);
    daemon.wait_log("camclassd running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(6));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("connection lost"), "{log}");
    let n = seqs(&witness.messages()).len();
    assert!(n >= 20, "{n} events in 6 s at 5 fps:\n{log}");
}

/// What camclassd's configs need beyond Home Assistant accepting them (`ha::assert_accepted`): the node's
/// availability topic, and the event entity fed by the camera's event topic with camclassd's reasons.
fn assert_camclassd_discovery(m: &Message) {
    let v: serde_json::Value = serde_json::from_str(&m.payload).expect("discovery payload is JSON");
    assert_eq!(v["availability_topic"], "camclassd/testnode/status", "{}", m.topic);
    assert_eq!(v["device"]["identifiers"][0], "camclassd_testnode", "{}", m.topic);
    if m.topic.split('/').nth(1) == Some("event") {
        assert!(v["event_types"].as_array().is_some_and(|t| t.iter().any(|t| t == "change")));
        assert_eq!(v["state_topic"], "camclassd/testnode/porch/event");
    }
}

#[test]
fn home_assistant_discovery_is_retained_resent_and_cleaned_up() {
    let broker = Broker::start();
    // A camera this node no longer has, left over from an earlier config.
    broker.publish("homeassistant/sensor/testnode/oldcam_label/config", "{\"name\":\"old\"}", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(
        dir.path(),
        &broker,
        "",
        &replay_camera("coffee.jpg", 5.0, "on_change"),
        "[homeassistant]\n[health]\ninterval = 1\n",
    );
    let daemon = Daemon::start(&config);
    let witness = Witness::start(&broker, "homeassistant/#");
    witness.wait_for("discovery configs", Duration::from_secs(20), |m| {
        m.iter().filter(|m| m.topic.contains("/testnode/porch_")).count() >= 7
    });

    // The stale config is cleared once the daemon has seen it (retained, on its subscription).
    let deadline = Instant::now() + Duration::from_secs(10);
    let configs = loop {
        let configs = retained(&broker, "homeassistant/+/testnode/+/config");
        if !configs.iter().any(|m| m.topic.contains("oldcam")) || Instant::now() > deadline {
            break configs;
        }
    };
    let topics: BTreeSet<&str> = configs.iter().map(|m| m.topic.as_str()).collect();
    for t in [
        "homeassistant/sensor/testnode/porch_label/config",
        "homeassistant/sensor/testnode/porch_score/config",
        "homeassistant/event/testnode/porch_classification/config",
        "homeassistant/sensor/testnode/porch_fps/config",
        "homeassistant/sensor/testnode/porch_frames_dropped/config",
        "homeassistant/sensor/testnode/porch_infer_ms/config",
        "homeassistant/binary_sensor/testnode/porch_connected/config",
        "homeassistant/sensor/testnode/model_check/config",
    ] {
        assert!(topics.contains(t), "{t} not retained: {topics:?}");
    }
    assert!(!topics.iter().any(|t| t.contains("oldcam")), "the stale config was cleared: {topics:?}\n{}", daemon.log());
    ha::assert_accepted(&configs);
    configs.iter().for_each(assert_camclassd_discovery);

    // The state and health topics the entities read are there and carry what the templates read.
    let state = retained(&broker, "camclassd/testnode/porch/state");
    let s: serde_json::Value = serde_json::from_str(&state[0].payload).expect("state JSON");
    assert!(s["label"].is_string() && s["score"].is_f64(), "{s}");
    let health = retained(&broker, "camclassd/testnode/health");
    let h: serde_json::Value = serde_json::from_str(&health[0].payload).expect("health JSON");
    assert_eq!(h["schema"], "camclassd.health/1");
    for key in ["fps", "frames", "frames_dropped", "last_frame_age_s"] {
        assert!(h["cameras"]["porch"][key].is_number(), "{key} in {h}");
    }
    assert_eq!(h["cameras"]["porch"]["connected"], true, "{h}");
    for key in ["uptime_s", "rss_bytes"] {
        assert!(h[key].as_u64().is_some(), "{key} in {h}");
    }
    assert!(h["queue"]["depth"].is_u64(), "{h}");
    // The shipped INT8 model carries its check, and it passed at load on this CPU.
    assert_eq!(h["model_check"]["status"], "passed", "{h}");
    assert!(h["model_check"]["detail"].as_str().is_some_and(|d| d.contains("mean cosine")), "{h}");

    // Home Assistant restarts: it says `online`, and gets every config again.
    let before = witness.messages().iter().filter(|m| m.topic.ends_with("porch_label/config")).count();
    broker.publish("homeassistant/status", "online", false);
    witness.wait_for("configs re-sent", Duration::from_secs(10), |m| {
        m.iter().filter(|m| m.topic.ends_with("porch_label/config")).count() > before
    });

    // The camera is renamed (config reload): the old camera's configs are cleared, the new one's appear.
    let text = std::fs::read_to_string(&config).expect("config").replace("name = \"porch\"", "name = \"gate\"");
    std::fs::write(&config, text).expect("config");
    daemon.signal("-HUP");
    daemon.wait_log("config reloaded", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let configs = retained(&broker, "homeassistant/+/testnode/+/config");
    let topics: BTreeSet<&str> = configs.iter().map(|m| m.topic.as_str()).collect();
    assert!(topics.contains("homeassistant/sensor/testnode/gate_label/config"), "{topics:?}");
    assert!(!topics.iter().any(|t| t.contains("porch")), "{topics:?}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn sighup_reloads_cameras_without_dropping_the_mqtt_session() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(dir.path(), &broker, "", &replay_camera("coffee.jpg", 5.0, "every_frame"), "");
    let daemon = Daemon::start(&config);
    witness.wait_for("porch events", Duration::from_secs(20), |m| m.iter().any(|m| m.topic.ends_with("porch/event")));

    // A bad edit is refused with the line, and the running config stays.
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, good.replace("fps = 5", "fps = \"fast\"")).expect("config");
    daemon.signal("-HUP");
    let log = daemon.wait_log("reload refused", Duration::from_secs(10));
    assert!(log.contains("camclassd.toml:") && log.contains("cameras[0].fps"), "{log}");

    let garage = format!(
        "[[cameras]]\nname = \"garage\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\n",
        generated("rocket.jpg").display().to_string()
    );
    std::fs::write(&config, format!("{good}{garage}")).expect("config");
    daemon.signal("-HUP");
    daemon.wait_log("config reloaded", Duration::from_secs(20));
    witness.wait_for("garage events", Duration::from_secs(20), |m| m.iter().any(|m| m.topic.ends_with("garage/event")));
    let messages = witness.messages();
    let status: Vec<&str> =
        messages.iter().filter(|m| m.topic == "camclassd/testnode/status").map(|m| m.payload.as_str()).collect();
    assert_eq!(status, ["online"], "the session was kept: no offline/online in between");
    // seq goes on for porch across the reload.
    let porch: Vec<u64> =
        seqs(&messages.iter().filter(|m| m.topic.ends_with("porch/event")).cloned().collect::<Vec<_>>());
    assert!(porch.windows(2).all(|w| w[1] == w[0] + 1), "{porch:?}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn commands_are_validated_and_snapshot_publishes_the_next_frame() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let dir = tempfile::tempdir().expect("tempdir");
    // on_change with a steady scene: after the first change event, nothing more unless asked.
    let cameras = format!("{}interval = 0\n", replay_camera("coffee.jpg", 5.0, "on_change"));
    let config = config_with(dir.path(), &broker, "commands = true\n", &cameras, "");
    // A retained command would run at every reconnection: it is refused.
    broker.publish("camclassd/testnode/command", "reload", true);
    let daemon = Daemon::start(&config);
    witness.wait_for("the change event", Duration::from_secs(20), |m| !seqs(m).is_empty());

    for junk in ["rm -rf /", "{\"command\": 5}", &"x".repeat(5000), "snapshot a/b", "reload please"] {
        broker.publish("camclassd/testnode/command", junk, false);
    }
    broker.publish("camclassd/testnode/command", "snapshot porch", false);
    let m = witness.wait_for("the snapshot event", Duration::from_secs(10), |m| {
        m.iter().any(|m| m.topic.ends_with("/event") && m.payload.contains("\"reason\":\"snapshot\""))
    });
    assert_eq!(seqs(&m).len(), 2, "one change event, one snapshot: {m:#?}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("command refused"), "{log}");
    assert!(log.contains("retained command") && !log.contains("config reloaded"), "{log}");
}

/// A retained message over the incoming limit on the command topic (anyone allowed to publish there can
/// leave one) ended every connection as the broker sent it again: 0 events in 30 s. Now the command topic is
/// left out after the first such loss, with an error line that says so, and events keep flowing.
#[test]
fn an_oversized_retained_command_does_not_stop_delivery() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 2 << 20]).expect("2 MiB");
    let mut publish = Command::new("mosquitto_pub");
    publish.args(broker.client_args()).args(["-q", "1", "-r", "-t", "camclassd/testnode/command", "-f"]).arg(&big);
    assert!(publish.status().is_ok_and(|s| s.success()), "mosquitto_pub -f");
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let config = config_with(
        dir.path(),
        &broker,
        "commands = true
",
        &replay_camera("coffee.jpg", 5.0, "every_frame"),
        "[homeassistant]
",
    );
    let daemon = Daemon::start(&config);
    witness.wait_for("20 events", Duration::from_secs(40), |m| m.len() >= 20);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("leaves out camclassd/testnode/command") && log.contains("commands are off"), "{log}");
    assert_eq!(log.matches("leaves out").count(), 1, "one loss, then a connection that holds:\n{log}");
}

/// `snapshot` on an every_frame camera answers with a `reason: "snapshot"` event (before: none), and a
/// flood of commands writes a few lines a minute, not one (or two) per command.
#[test]
fn snapshot_on_every_frame_says_snapshot_and_a_command_flood_is_not_logged_line_by_line() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/testnode/+/event");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(
        dir.path(),
        &broker,
        "commands = true
",
        &replay_camera("coffee.jpg", 5.0, "every_frame"),
        "",
    );
    let daemon = Daemon::start(&config);
    witness.wait_for("the first events", Duration::from_secs(20), |m| m.len() >= 2);
    broker.publish("camclassd/testnode/command", "snapshot porch", false);
    witness.wait_for("the snapshot event", Duration::from_secs(10), |m| {
        m.iter().any(|m| m.payload.contains("\"reason\":\"snapshot\""))
    });
    // 300 commands from one client, as fast as mosquitto_pub sends them (-l: one message per stdin line).
    let mut flood = Command::new("mosquitto_pub")
        .args(broker.client_args())
        .args(["-q", "0", "-t", "camclassd/testnode/command", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub -l");
    {
        use std::io::Write;
        let mut stdin = flood.stdin.take().expect("stdin");
        for _ in 0..300 {
            writeln!(stdin, "snapshot").expect("write");
        }
    }
    assert!(flood.wait().is_ok_and(|s| s.success()));
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let lines = log.lines().filter(|l| l.contains("command received") || l.contains("command ignored")).count();
    assert!((1..=12).contains(&lines), "{lines} command lines:\n{log}");
}

/// A test CA, a broker certificate for 127.0.0.1 and a client certificate, made with openssl.
pub(super) struct Pki {
    pub(super) ca: PathBuf,
    pub(super) server_cert: PathBuf,
    pub(super) server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub(super) fn make_pki(dir: &Path) -> Pki {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=camclassd test {ca}"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &args);
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let mut args = vec!["req"];
        args.extend(ec);
        let (key, csr, subj) = (format!("{name}.key"), format!("{name}.csr"), format!("/CN={name}"));
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        let pem = format!("{name}.pem");
        let mut sign = vec!["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key"];
        // With an extension file openssl writes X.509 v3, the only version rustls accepts.
        sign.extend(["-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", ext]);
        openssl(dir, &sign);
    }
    // Started as root with `user root`, mosquitto reads these directly.
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

#[test]
fn tls_with_a_client_certificate_works_and_a_wrong_ca_is_refused_without_fallback() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(pki_dir.path());
    let broker = Broker::start_tls(BrokerTls {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        require_client_cert: true,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = replay_camera("coffee.jpg", 5.0, "every_frame");
    let tls = |ca: &Path| {
        format!(
            "[mqtt.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            ca.display().to_string(),
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string()
        )
    };
    // mosquitto_sub needs the client certificate too.
    let witness_cmd = |filter: &str| {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(broker.client_args()).args(["--cert", &pki.client_cert.display().to_string()]);
        cmd.args(["--key", &pki.client_key.display().to_string(), "-t", filter, "-C", "3", "-W", "20", "-F", "%t"]);
        cmd
    };

    // The right CA: events arrive over TLS.
    let config = config_with(dir.path(), &broker, "", &cameras, &tls(&pki.ca));
    let daemon = Daemon::start(&config);
    let out = witness_cmd("camclassd/testnode/porch/event").output().expect("mosquitto_sub");
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 3, "{}", daemon.log());
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");

    // A CA that did not sign the broker's certificate: a clear error, retries, and never plain text.
    let config = config_with(dir.path(), &broker, "", &cameras, &tls(&pki.other_ca));
    let daemon = Daemon::start(&config);
    let log = daemon.wait_log("MQTT connection refused", Duration::from_secs(15));
    assert!(log.contains("TLS") && log.contains("mqtt.tls.ca_file"), "{log}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    // Nothing went out, not even in plain text: the events wait on disk.
    assert!(log.contains("events stay queued"), "{log}");
    assert_eq!(log.matches("MQTT connection refused").count(), 1, "said once, retried quietly: {log}");
}

#[test]
fn check_config_warns_about_a_password_file_everyone_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").expect("write");
    let cameras = replay_camera("coffee.jpg", 5.0, "every_frame");
    let mqtt = format!("username = \"u\"\npassword_file = {:?}\n", secret.display().to_string());
    let config = config_with(dir.path(), &broker, &mqtt, &cameras, "");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("readable by every user") && stderr(&out).contains("chmod o-rwx"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cret"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run(camclassd().arg("check-config").arg(&config));
    assert!(!stderr(&out).contains("readable by every user"), "{}", stderr(&out));
}

#[test]
fn the_watchdog_is_fed_while_frames_flow_and_starves_when_inference_sticks() {
    use std::os::unix::net::UnixDatagram;
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let config = config_with(
        dir.path(),
        &broker,
        "",
        &replay_camera("coffee.jpg", 5.0, "every_frame"),
        "[health]\ninterval = 0.5\n",
    );
    let socket_env = socket_path.display().to_string();
    let daemon = Daemon::start_env(
        &config,
        &[
            ("NOTIFY_SOCKET", &socket_env),
            ("WATCHDOG_USEC", "600000"),
            ("CAMCLASSD_TEST_HOOKS", "stall-inference-after=10"),
        ],
    );
    let mut received: Vec<(Instant, String)> = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(12) {
        if let Ok(n) = socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                received.push((Instant::now(), line.to_string()));
            }
        }
    }
    let log = daemon.wait_log("inference is stuck", Duration::from_secs(5));
    daemon.kill();
    let lines: Vec<&str> = received.iter().map(|(_, l)| l.as_str()).collect();
    assert!(lines.contains(&"READY=1"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("STATUS=porch ") && l.contains("fps")), "{lines:?}");
    let pings: Vec<Instant> = received.iter().filter(|(_, l)| l == "WATCHDOG=1").map(|(t, _)| *t).collect();
    assert!(pings.len() >= 2, "pings while frames flowed: {lines:?}\n{log}");
    // After the stall (10 frames at 5 fps ≈ 2 s), the pings stop for good.
    let last = *pings.last().expect("a ping");
    assert!(last.elapsed() > Duration::from_secs(4), "pings went on after inference stuck: {lines:?}");
}
