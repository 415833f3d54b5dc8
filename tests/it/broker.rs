//! A real mosquitto on a free loopback port, and `mosquitto_sub` witnesses. Nothing is mocked.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    /// Username and password every client must give, when the broker requires them.
    pub credentials: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(None)
    }

    /// A broker that refuses anonymous clients and knows one user (mosquitto_passwd writes its password file).
    pub fn start_with_user(user: &str, password: &str) -> Broker {
        Broker::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(credentials: Option<(String, String)>) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!("listener {port} 127.0.0.1\npersistence false\n");
        match &credentials {
            None => text.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                use std::os::unix::fs::PermissionsExt;
                let pw = dir.path().join("passwd");
                let ok = Command::new("mosquitto_passwd").arg("-b").arg("-c").arg(&pw).args([user, password]).status();
                assert!(ok.is_ok_and(|s| s.success()), "mosquitto_passwd");
                // Started as root, mosquitto reads its files after dropping to the `mosquitto` user.
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
                std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
                text.push_str(&format!("allow_anonymous false\npassword_file {}\n", pw.display()));
            }
        }
        std::fs::write(&conf, text).expect("conf");
        // Debian installs the broker in /usr/sbin, which a non-root PATH may lack.
        let program = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (installed by scripts/setup) starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { port, credentials, child, _dir: dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", filter, "-F", "%r %t %p"]);
        if let Some((user, password)) = &broker.credentials {
            cmd.args(["-u", user, "-P", password]);
        }
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
