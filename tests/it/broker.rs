//! A real mosquitto on a free loopback port, and `mosquitto_sub` witnesses. Nothing is mocked.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    /// Username and password every client must give, when the broker requires them.
    pub credentials: Option<(String, String)>,
    /// The CA file clients must trust, when the broker speaks TLS.
    pub tls_ca: Option<PathBuf>,
    child: Option<Child>,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

/// TLS files for a broker (PEM): its certificate and key, and the CA that signs client certificates
/// (set to require one).
pub struct BrokerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub require_client_cert: bool,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(None, false, None)
    }

    /// A broker that refuses anonymous clients and knows one user (mosquitto_passwd writes its password file).
    pub fn start_with_user(user: &str, password: &str) -> Broker {
        Broker::start_with(Some((user.to_string(), password.to_string())), false, None)
    }

    /// A broker that keeps sessions and queued messages on disk (saved every second), so persistent-session
    /// subscribers survive its restart.
    pub fn start_persistent() -> Broker {
        Broker::start_with(None, true, None)
    }

    /// A broker with one TLS listener and nothing in plain text.
    pub fn start_tls(tls: BrokerTls) -> Broker {
        Broker::start_with(None, false, Some(tls))
    }

    fn start_with(credentials: Option<(String, String)>, persistent: bool, tls: Option<BrokerTls>) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let tls_ca = tls.as_ref().map(|t| t.ca.clone());
        let mut broker = Broker { port: 0, credentials, tls_ca, child: None, conf, dir };
        // A port found free here may be taken by another test's server before mosquitto binds it: mosquitto
        // then exits ("Address already in use") and is started again on another port. Connecting to the port
        // is no proof of a start: it may reach that other server (a daemon and a witness once talked to
        // another test's broker, which then went away, and no event came for 60 s).
        for _ in 0..5 {
            broker.port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            broker.write_config(persistent, tls.as_ref());
            if broker.try_start() {
                return broker;
            }
        }
        panic!("mosquitto did not start on five free ports; its log:\n{}", broker.log());
    }

    fn write_config(&self, persistent: bool, tls: Option<&BrokerTls>) {
        let dir = self.dir.path();
        // Started as root, mosquitto would drop to the `mosquitto` user and then be unable to read or write
        // files in this root-owned temp dir: keep it root.
        let mut text = format!("user root\nlistener {} 127.0.0.1\n", self.port);
        if persistent {
            text.push_str(&format!("persistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display()));
        } else {
            text.push_str("persistence false\n");
        }
        if let Some(tls) = tls {
            text.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                tls.require_client_cert
            ));
        }
        match &self.credentials {
            None => text.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let pw = dir.join("passwd");
                let ok = Command::new("mosquitto_passwd").arg("-b").arg("-c").arg(&pw).args([user, password]).status();
                assert!(ok.is_ok_and(|s| s.success()), "mosquitto_passwd");
                text.push_str(&format!("allow_anonymous false\npassword_file {}\n", pw.display()));
            }
        }
        std::fs::write(&self.conf, text).expect("conf");
    }

    /// Starts the broker (again) on the same port with the same configuration and storage.
    pub fn start_again(&mut self) {
        assert!(self.try_start(), "mosquitto did not start again on port {}; its log:\n{}", self.port, self.log());
    }

    /// What mosquitto has logged so far (every start of this broker).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts mosquitto and waits until it says it runs and the port answers; false when it exited instead
    /// (its port was taken).
    fn try_start(&mut self) -> bool {
        let runs = |log: &str| log.lines().filter(|l| l.ends_with(" running")).count();
        let before = runs(&self.log());
        // Debian installs the broker in /usr/sbin, which a non-root PATH may lack.
        let program = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log file");
        let mut child = Command::new(program)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (installed by scripts/setup) starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().expect("wait").is_some() {
                return false;
            }
            if runs(&self.log()) > before && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not listen on {} within 10 s; its log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to anyone, nothing saved since the last autosave.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Arguments a mosquitto client needs to reach this broker.
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec!["-h".into(), "127.0.0.1".into(), "-p".into(), self.port.to_string()];
        if let Some((user, password)) = &self.credentials {
            args.extend(["-u".into(), user.clone(), "-P".into(), password.clone()]);
        }
        if let Some(ca) = &self.tls_ca {
            args.extend(["--cafile".into(), ca.display().to_string()]);
        }
        args
    }

    /// Publishes one message with `mosquitto_pub`.
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.client_args()).args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        assert!(cmd.status().is_ok_and(|s| s.success()), "mosquitto_pub {topic}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One received message: topic, retain flag, payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub retained: bool,
    pub payload: String,
}

/// A `mosquitto_sub` collecting everything under a topic filter.
pub struct Witness {
    child: Child,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Witness {
    pub fn start(broker: &Broker, filter: &str) -> Witness {
        Witness::start_with(broker, filter, &[])
    }

    /// A witness with a persistent session (client id `id`, clean session off): the broker keeps its
    /// subscription and queues QoS 1 messages for it while it is away, and it reconnects by itself.
    pub fn start_persistent(broker: &Broker, filter: &str, id: &str) -> Witness {
        Witness::start_with(broker, filter, &["-c", "-i", id])
    }

    fn start_with(broker: &Broker, filter: &str, extra: &[&str]) -> Witness {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(broker.client_args()).args(["-q", "1", "-t", filter, "-F", "%r %t %p"]).args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("mosquitto_sub starts");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, ' ');
                let (Some(r), Some(t), Some(p)) = (parts.next(), parts.next(), parts.next()) else { continue };
                sink.lock().expect("lock").push(Message { topic: t.into(), retained: r == "1", payload: p.into() });
            }
        });
        // mosquitto_sub has no "subscribed" signal: give it a moment to connect and subscribe.
        std::thread::sleep(Duration::from_millis(300));
        Witness { child, messages }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for the messages so far.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if pred(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got {m:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The retained messages under `filter` right now (a fresh subscriber gets only those).
pub fn retained(broker: &Broker, filter: &str) -> Vec<Message> {
    let w = Witness::start(broker, filter);
    std::thread::sleep(Duration::from_millis(300));
    w.messages().into_iter().filter(|m| m.retained).collect()
}

/// A daemon config for tests.
pub fn daemon_config(dir: &Path, broker: &Broker, cameras: &str) -> std::path::PathBuf {
    let model = super::model("int8");
    let text = format!(
        "version = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nnode_id = \"testnode\"\nkeepalive = 5\n\
         [queue]\npath = {:?}\n[model]\npath = {:?}\nthreads = 1\n{cameras}",
        broker.port,
        dir.join("queue.redb").display().to_string(),
        model.display().to_string()
    );
    let path = dir.join("camclassd.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// The harness itself: a broker whose port another server took first is not taken for started, although
/// connecting to that port works (the other server answers), and `Broker::start` moves to another port.
#[test]
fn a_taken_port_is_not_mistaken_for_a_started_broker() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mosquitto.conf");
    let port = taken.local_addr().expect("address").port();
    let mut broker = Broker { port, credentials: None, tls_ca: None, child: None, conf, dir };
    broker.write_config(false, None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(!broker.try_start(), "{}", broker.log());
    assert!(broker.log().contains("Address already in use"), "{}", broker.log());
    let started = Broker::start();
    assert_ne!(started.port, port);
    assert!(started.log().lines().any(|l| l.ends_with(" running")), "{}", started.log());
}
