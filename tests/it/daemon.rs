//! `camclassd run` end to end: replay cameras, the real binary, a real mosquitto, `mosquitto_sub` witnesses.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::broker::{Broker, Message, Witness, daemon_config, retained};
use super::*;

/// A running daemon whose log is collected as it is written (a full pipe would stall it).
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_env(config, &[])
    }

    /// The daemon with an open-file limit of `nofile` (soft and hard), through `prlimit` (which execs it:
    /// the pid is the daemon's).
    pub fn start_nofile(config: &Path, nofile: u64) -> Daemon {
        let daemon = camclassd();
        let mut cmd = Command::new("prlimit");
        cmd.current_dir(root()).env_remove("ORT_DYLIB_PATH").env_remove("RUST_LOG");
        cmd.arg(format!("--nofile={nofile}:{nofile}")).arg("--").arg(daemon.get_program());
        cmd.args(["--log-level", "info", "run", "--config"]).arg(config);
        Daemon::spawn(cmd, false)
    }

    /// The daemon pinned to `cpus` (`taskset -c`, which execs it: the pid is the daemon's).
    pub fn start_pinned(config: &Path, cpus: &str) -> Daemon {
        let daemon = camclassd();
        let mut cmd = Command::new("taskset");
        cmd.current_dir(root()).env_remove("ORT_DYLIB_PATH").env_remove("RUST_LOG");
        cmd.args(["-c", cpus]).arg(daemon.get_program());
        cmd.args(["--log-level", "info", "run", "--config"]).arg(config);
        Daemon::spawn(cmd, false)
    }

    pub fn start_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(config, env, "info")
    }

    /// At `--log-level debug`, its stdout collected in the log with its stderr: every line it writes.
    pub fn start_debug(config: &Path) -> Daemon {
        Daemon::launch(config, &[], "debug")
    }

    fn launch(config: &Path, env: &[(&str, &str)], level: &str) -> Daemon {
        let mut cmd = camclassd();
        if env.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
            // systemd names the watched process in WATCHDOG_PID; a shell that execs keeps its pid.
            let program = cmd.get_program().to_owned();
            cmd = Command::new("sh");
            cmd.current_dir(root()).env_remove("RUST_LOG").arg("-c").arg("export WATCHDOG_PID=$$; exec \"$0\" \"$@\"");
            cmd.arg(program);
        }
        cmd.args(["--log-level", level, "run", "--config"]).arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(cmd, level == "debug")
    }

    /// Starts `cmd`, collecting its stderr (and its stdout too when `stdout`) as the log.
    fn spawn(mut cmd: Command, stdout: bool) -> Daemon {
        let out = if stdout { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd.stdout(out).stderr(Stdio::piped()).spawn().expect("daemon starts");
        let log = Arc::new(Mutex::new(String::new()));
        let out: Option<Box<dyn std::io::Read + Send>> = child.stdout.take().map(|o| Box::new(o) as _);
        let err: Option<Box<dyn std::io::Read + Send>> = child.stderr.take().map(|e| Box::new(e) as _);
        for stream in [out, err].into_iter().flatten() {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = sink.lock().expect("lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).expect("kB") / 1024
    }

    /// CPU time (user + system) the daemon has used so far, from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("/proc stat");
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    pub fn wait_log(&self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(what) {
                return log;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig}");
    }

    /// Whether the daemon has exited, and its exit code (`Some(None)`: ended by a signal).
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        let status = self.child.try_wait().expect("wait")?;
        // Let the log reader take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        Some(status.code())
    }

    /// The exit code once the daemon exits within `timeout` (`None`: still running, then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the log reader take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit code (within 10 s) and the whole log.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let code = self.wait_exit(Duration::from_secs(10));
        (code, self.log())
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    /// A failed assertion must not leave a daemon running; it shows what the daemon said (a test that timed out
    /// waiting for MQTT messages would otherwise fail without the daemon's side of the story).
    fn drop(&mut self) {
        let stacks = if std::thread::panicking() { capture_stacks(self.child.id()) } else { String::new() };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            eprintln!("--- the daemon's log (pid {}) ---\n{log}--- end of the daemon's log ---", self.child.id());
            eprintln!("{stacks}");
        }
    }
}

/// The stacks of a daemon's capture threads, read with gdb (scripts/setup installs it) when a test failed: a
/// camera silent without an error is a thread blocked in a library call, and this says which.
fn capture_stacks(pid: u32) -> String {
    let out = Command::new("timeout")
        .args(["30", "gdb", "-p", &pid.to_string(), "-batch", "-nx", "-ex", "set pagination off"])
        .args(["-ex", "thread apply all bt 25"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else { return "(gdb is not installed: no stacks of the daemon's threads)".into() };
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted: Vec<&str> =
        text.split("\nThread ").filter(|t| t.contains("\"capture-") || t.contains("\"stop-")).collect();
    if wanted.is_empty() {
        return format!("(no capture thread in gdb's answer: {})", String::from_utf8_lossy(&out.stderr).trim());
    }
    format!(
        "--- the daemon's capture threads ---\nThread {}--- end of the capture threads ---",
        wanted.join("\nThread ")
    )
}

/// Runs the daemon on replays with `loop = false`: it must end by itself, cleanly (exit 0), and say offline.
fn run_until_replay_ends(config: &Path, witness: &Witness) -> Vec<Message> {
    let mut daemon = Daemon::start(config);
    let code = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(code, Some(0), "{log}");
    witness.wait_for("offline", Duration::from_secs(5), |m| m.iter().any(|m| m.payload == "offline"))
}

fn events(messages: &[Message], camera: &str) -> Vec<serde_json::Value> {
    let topic = format!("camclassd/testnode/{camera}/event");
    messages
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| serde_json::from_str(&m.payload).expect("event JSON"))
        .collect()
}

/// A folder of copies of the named fixtures, in order (names sort as given).
fn replay_folder(dir: &Path, images: &[&str]) -> PathBuf {
    let folder = dir.join("frames");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for (i, name) in images.iter().enumerate() {
        let ext = name.rsplit('.').next().unwrap_or("jpg");
        std::fs::copy(generated(name), folder.join(format!("{i:03}.{ext}"))).expect("copy");
    }
    folder
}

fn assert_schema(e: &serde_json::Value) {
    assert_eq!(e["schema"], "camclassd.event/1");
    assert_eq!(e["node"], "testnode");
    for key in ["camera", "captured_at", "reason"] {
        assert!(e[key].is_string(), "{key} in {e}");
    }
    assert!(humantime::parse_rfc3339(e["captured_at"].as_str().unwrap_or_default()).is_ok(), "{e}");
    assert!(e["seq"].as_u64().is_some_and(|s| s >= 1));
    assert!(e["frames_dropped"].is_u64());
    assert_eq!(e["model"]["name"], "efficientnet-lite0");
    assert_eq!(e["model"]["sha256"].as_str().map(str::len), Some(64));
    for key in ["capture_to_publish", "preprocess", "infer"] {
        assert!(e["timing_ms"][key].as_f64().is_some_and(|v| v >= 0.0), "timing_ms.{key} in {e}");
    }
    let top = e["top"].as_array().expect("top");
    assert!(!top.is_empty() && top.len() <= 5);
    for c in top {
        assert!(c["class_id"].is_u64() && c["label"].is_string() && c["score"].is_f64(), "{c}");
    }
}

#[test]
fn replayed_images_become_events_that_match_classify() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let images = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "motorcycle.png"];
    let folder = replay_folder(dir.path(), &images);
    // 5 fps: 200 ms a frame leaves room for a loaded machine (at 20 fps a parallel test run under a cross
    // build once made the hub replace a frame, newest wins, and an image went unclassified).
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\nloop = false\n",
        folder.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);

    let messages = run_until_replay_ends(&config, &witness);
    let got = events(&messages, "porch");
    assert_eq!(got.len(), images.len(), "{messages:#?}");
    let reference =
        classify_json(&model("int8"), &images.iter().map(|n| generated(n)).collect::<Vec<_>>(), &["--top", "1"], 0);
    for (i, (e, r)) in got.iter().zip(&reference).enumerate() {
        assert_schema(e);
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["reason"], "frame");
        assert_eq!(e["camera"], "porch");
        assert_eq!(e["top"][0]["class_id"], r.top[0].class_id as u64, "{}: {e}", r.image);
    }
    let status: Vec<_> =
        messages.iter().filter(|m| m.topic == "camclassd/testnode/status").map(|m| m.payload.as_str()).collect();
    assert_eq!(status.first(), Some(&"online"));
    assert_eq!(status.last(), Some(&"offline"));

    // The state topic is retained: a subscriber arriving later still sees the last top-1 (motorcycle).
    let state = retained(&broker, "camclassd/testnode/porch/state");
    assert_eq!(state.len(), 1, "{state:#?}");
    let s: serde_json::Value = serde_json::from_str(&state[0].payload).expect("state JSON");
    assert_eq!(s["schema"], "camclassd.state/1");
    assert_eq!(s["class_id"], reference[3].top[0].class_id as u64);
    let status = retained(&broker, "camclassd/testnode/status");
    assert_eq!(status.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(), ["offline"]);
}

#[test]
fn on_change_publishes_only_changes() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    // Five coffee frames, one stray rocket (shorter than the debounce), then five cat frames.
    let mut frames = vec!["coffee.jpg"; 5];
    frames.push("rocket.jpg");
    frames.extend(["coffee.png"; 2]);
    frames.extend(["chelsea.png"; 5]);
    let folder = replay_folder(dir.path(), &frames);
    let cameras = format!(
        "[[cameras]]\nname = \"kitchen\"\nsource = {:?}\nfps = 20\npublish = \"on_change\"\ndebounce = 3\ninterval = 0\nloop = false\n",
        folder.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let messages = run_until_replay_ends(&config, &witness);
    let got = events(&messages, "kitchen");
    let classes: Vec<u64> = got.iter().map(|e| e["top"][0]["class_id"].as_u64().unwrap_or(0)).collect();
    assert_eq!(got.len(), 2, "espresso, then a cat; the rocket was too brief: {classes:?}");
    assert!(got.iter().all(|e| e["reason"] == "change"));
    assert_eq!(classes[0], 967);
    assert!((281..=285).contains(&classes[1]), "{classes:?}");
    assert_eq!(got.iter().map(|e| e["seq"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
}

#[test]
fn a_crash_leaves_the_last_will_and_sigterm_says_offline_and_exits_0() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\n",
        generated("coffee.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);

    // kill -9: the broker publishes the Last Will, retained.
    let witness = Witness::start(&broker, "camclassd/testnode/status");
    let daemon = Daemon::start(&config);
    witness.wait_for("online", Duration::from_secs(20), |m| m.iter().any(|m| m.payload == "online"));
    daemon.kill();
    witness.wait_for("the Last Will", Duration::from_secs(10), |m| m.last().is_some_and(|m| m.payload == "offline"));
    assert_eq!(
        retained(&broker, "camclassd/testnode/status").last().map(|m| m.payload.clone()).as_deref(),
        Some("offline")
    );
    drop(witness);

    // SIGTERM: online again on restart, then offline and exit 0 well within 5 s.
    let witness = Witness::start(&broker, "camclassd/testnode/#");
    let mut daemon = Daemon::start(&config);
    witness.wait_for("online", Duration::from_secs(20), |m| m.iter().any(|m| m.payload == "online"));
    witness.wait_for("an event", Duration::from_secs(10), |m| m.iter().any(|m| m.topic.ends_with("/event")));
    let t = Instant::now();
    daemon.signal("-TERM");
    let code = daemon.wait_exit(Duration::from_secs(5));
    let elapsed = t.elapsed();
    let log = daemon.log();
    assert_eq!(code, Some(0), "exit after SIGTERM within 5 s (took {elapsed:?}): {log}");
    witness.wait_for("offline", Duration::from_secs(5), |m| m.last().is_some_and(|m| m.payload == "offline"));
}

#[test]
fn a_missing_camera_is_retried_while_the_other_keeps_publishing() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"good\"\nsource = {:?}\nfps = 10\npublish = \"every_frame\"\n[[cameras]]\nname = \"gone\"\nsource = \"/dev/video97\"\n",
        generated("coffee.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let mut daemon = Daemon::start(&config);
    witness.wait_for("20 events from the good camera", Duration::from_secs(30), |m| events(m, "good").len() >= 20);
    std::thread::sleep(Duration::from_secs(3)); // long enough for several retries (1 s, 2 s backoff)
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(0));
    let log = daemon.log();
    let warnings = log.lines().filter(|l| l.contains("cannot open camera") && l.contains("gone")).count();
    assert_eq!(warnings, 1, "the failure is logged once, not on every retry:\n{log}");
    assert!(events(&witness.messages(), "gone").is_empty());
}

#[test]
fn bad_daemon_configs_exit_2_with_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model("int8").display().to_string();
    let head = format!("version = 1\n[mqtt]\nhost = \"127.0.0.1\"\n[model]\npath = {model:?}\n");
    let cases = [
        (
            format!("{head}[[cameras]]\nname = \"a\"\nsource = \"0\"\nzoom = 2\n"),
            "9:1: cameras[0].zoom: unknown field `zoom`",
        ),
        (
            format!("{head}[[cameras]]\nname = \"a\"\nsource = \"0\"\nfps = \"fast\"\n"),
            "9:7: cameras[0].fps: invalid type: string \"fast\", expected f64",
        ),
        (
            head.replace(&model, "/nope/model.onnx") + "[[cameras]]\nname = \"a\"\nsource = \"0\"\n",
            "5:1: model.path: model file /nope/model.onnx not found",
        ),
        (
            format!("{head}[[cameras]]\nname = \"a\"\nsource = \"0\"\n[[cameras]]\nname = \"a\"\nsource = \"1\"\n"),
            "10:1: cameras[1].name: duplicate camera name \"a\"",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        for cmd in ["check-config", "run"] {
            let mut c = camclassd();
            c.arg(cmd);
            if cmd == "run" {
                c.arg("--config");
            }
            let out = run(c.arg(&path));
            assert_eq!(out.status.code(), Some(2), "{cmd} {text}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!("bad{i}.toml:{expected}")),
                "{cmd}: want {expected}\n got: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn the_minimal_config_from_the_docs_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("minimal.toml");
    let text = format!(
        "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n[model]\npath = {:?}\n[[cameras]]\nname = \"porch\"\nsource = \"/dev/video0\"\nfps = 5\npublish = \"every_frame\"\n",
        model("int8").display().to_string()
    );
    std::fs::write(&path, text).expect("write");
    let out = run(camclassd().arg("check-config").arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed here: unit not verified");
        return;
    }
    // Verify a copy that points at the binary under test (the packaged path does not exist here).
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = std::fs::read_to_string(root().join("systemd/camclassd.service")).expect("unit");
    let unit = unit.replace("/usr/bin/camclassd", env!("CARGO_BIN_EXE_camclassd"));
    let path = dir.path().join("camclassd.service");
    std::fs::write(&path, unit).expect("write");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(out.status.success(), "systemd-analyze verify: {}{}", stdout(&out), stderr(&out));
    let out = run(Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path));
    let text = stdout(&out) + &stderr(&out);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for camclassd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score} is above 2.0 (OK):\n{text}");
}

#[test]
fn an_mjpeg_stream_file_replays_frame_by_frame() {
    let broker = Broker::start();
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let images = ["coffee.jpg", "chelsea.jpg", "rocket.jpg"];
    let mut stream = Vec::new();
    for name in images {
        stream.extend(std::fs::read(generated(name)).expect("read"));
    }
    let file = dir.path().join("clip.mjpeg");
    std::fs::write(&file, stream).expect("write");
    let cameras = format!(
        "[[cameras]]\nname = \"clip\"\nsource = {:?}\nfps = 20\npublish = \"every_frame\"\nloop = false\n",
        file.display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let messages = run_until_replay_ends(&config, &witness);
    let classes: Vec<u64> =
        events(&messages, "clip").iter().map(|e| e["top"][0]["class_id"].as_u64().unwrap_or(0)).collect();
    assert_eq!(classes.len(), 3, "{classes:?}");
    assert_eq!(classes[0], 967);
    assert!((281..=285).contains(&classes[1]) && classes[2] == 657, "{classes:?}");
}

#[test]
fn sigterm_with_the_broker_down_still_exits_0_within_5_s() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\n",
        generated("coffee.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    drop(broker); // nothing listens on that port any more
    let mut daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    daemon.signal("-TERM");
    let code = daemon.wait_exit(Duration::from_secs(5));
    let log = daemon.log();
    assert_eq!(code, Some(0), "took {:?}: {log}", t.elapsed());
    assert!(log.contains("MQTT connection refused"), "{log}");
    // Nothing reached a broker: the events wait on disk for the next start.
    assert!(log.contains("events stay queued in"), "{log}");
}

#[test]
fn a_broker_that_requires_a_password_gets_it_from_the_password_file() {
    let broker = Broker::start_with_user("camclassd", "s3cret-pw");
    let witness = Witness::start(&broker, "camclassd/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\npublish = \"every_frame\"\n",
        generated("coffee.jpg").display().to_string()
    );
    let with_password = |name: &str, password: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        let config = daemon_config(dir.path(), &broker, &cameras);
        let text = std::fs::read_to_string(&config).expect("config").replace(
            "keepalive = 5\n",
            &format!("keepalive = 5\nusername = \"camclassd\"\npassword_file = {:?}\n", file.display().to_string()),
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config");
        path
    };

    // The right password: events flow.
    let mut daemon = Daemon::start(&with_password("good", "s3cret-pw"));
    witness.wait_for("an event", Duration::from_secs(20), |m| !events(m, "porch").is_empty());
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(0));
    let log = daemon.log();
    assert!(!log.contains("s3cret-pw"), "the password must never be logged:\n{log}");

    // A wrong one: refused, said once, retried, and the daemon still stops cleanly.
    let mut daemon = Daemon::start(&with_password("bad", "wrong-pw"));
    std::thread::sleep(Duration::from_secs(4));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(0));
    let log = daemon.log();
    assert_eq!(log.matches("MQTT connection refused").count(), 1, "{log}");
    assert!(log.contains("check mqtt.username and the password"), "{log}");
    assert!(!log.contains("wrong-pw"), "{log}");
}

/// A looping replay whose only file gives no frame (an empty `.mjpeg`) waits with backoff instead of
/// spinning: it costs almost no CPU, says so once, and stops at once on SIGTERM.
#[test]
fn a_replay_without_frames_waits_instead_of_spinning() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("frames");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("x.mjpeg"), b"").expect("empty stream");
    let cameras = format!("[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 5\n", folder.display().to_string());
    let config = daemon_config(dir.path(), &broker, &cameras);
    let daemon = Daemon::start(&config);
    daemon.wait_log("camclassd running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let before = daemon.cpu_time();
    std::thread::sleep(Duration::from_secs(3));
    let used = daemon.cpu_time() - before;
    let started = Instant::now();
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    // Spinning used ~2 s of CPU in these 3 s; waiting uses next to none.
    assert!(used < Duration::from_millis(500), "{used:?} of CPU in 3 s:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(3), "SIGTERM took {:?}", started.elapsed());
    assert_eq!(log.matches("gave no frame").count(), 1, "{log}");
    assert!(log.matches("skipping").count() <= 1, "{log}");
    assert!(!log.contains("did not stop"), "{log}");
}

/// A replayed file that does not decode (garbage in place of a JPEG) is logged at the first frame and at
/// powers of two, not at every frame (before: 10 lines a second at 10 fps, for ever).
#[test]
fn undecodable_frames_are_logged_at_powers_of_two() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cameras = format!(
        "[[cameras]]\nname = \"porch\"\nsource = {:?}\nfps = 10\n",
        generated("not_an_image.jpg").display().to_string()
    );
    let config = daemon_config(dir.path(), &broker, &cameras);
    let daemon = Daemon::start(&config);
    daemon.wait_log("frame skipped", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let lines = log.matches("frame skipped").count();
    // ~40 frames: skipped = 1, 2, 4, 8, 16, 32.
    assert!((2..=7).contains(&lines), "{lines} lines:\n{log}");
    assert!(log.contains("skipped=32") || log.contains("skipped=16"), "the count is in the line:\n{log}");
}

/// scripts/demo stopped as a terminal's Ctrl-C stops it (SIGINT to its whole process group): the daemon
/// says `offline` to a broker that is still up, and nothing complains that the broker vanished first.
#[test]
fn the_demo_stops_cleanly_on_ctrl_c() {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("bash")
        .arg(root().join("scripts/demo"))
        .env("DEMO_NO_SETUP", "1")
        .env_remove("RUST_LOG")
        .current_dir(root())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo starts");
    let out = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut o = sink.lock().expect("lock");
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.lock().expect("lock").contains("camclassd/demo/porch/event") {
        assert!(Instant::now() < deadline, "no event from the demo:\n{}", out.lock().expect("lock"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-INT", "--", &group]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop:\n{}", out.lock().expect("lock"));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let text = out.lock().expect("lock").clone();
    assert!(text.contains("camclassd/demo/status offline"), "the witness saw the goodbye:\n{text}");
    assert!(!text.contains("unreachable at shutdown") && !text.contains("connection lost"), "{text}");
}
