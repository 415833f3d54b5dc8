//! MQTT settings resolved from the config: the broker, credentials, TLS (rustls), QoS, topics, Home
//! Assistant discovery. Everything here needs a new connection when it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::discovery::Discovery;
use super::driver::INCOMING_MAX;
use super::{PublishError, Topics, WINDOW};
use crate::config::{Config, MqttConfig, TlsConfig};

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
