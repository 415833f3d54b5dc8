//! The connection driver: polls one connection's rumqttc event loop and reports what happens to the
//! publisher as [`Notice`]s; the only place that touches the network. Errors are put in words a user can
//! act on.

use std::time::Duration;

use rumqttc::{ConnectionError, Event as MqttEvent, EventLoop, Outgoing, Packet};
use tokio::sync::mpsc;

/// What a connection's driver task reports, tagged with the connection's number.
#[derive(Debug)]
pub(super) enum Notice {
    Connected,
    /// A publish request was written, with this packet id (0 for QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    Acked(u16),
    Message(rumqttc::Publish),
    Lost(String),
    /// Lost because the broker sent a packet over [`INCOMING_MAX`] (see `oversize`).
    Oversize(String),
    Closed,
}

/// Drives one connection's event loop until it fails or is closed; the only place that touches the network.
pub(super) async fn drive(id: u64, mut eventloop: EventLoop, notices: mpsc::Sender<(u64, Notice)>) {
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
            Err(e) if is_oversize(&e) => Notice::Oversize(describe(&e)),
            Err(e) => Notice::Lost(describe(&e)),
        };
        let last = matches!(notice, Notice::Lost(_) | Notice::Oversize(_) | Notice::Closed);
        if notices.send((id, notice)).await.is_err() || last {
            return;
        }
    }
}

/// The largest packet accepted from the broker.
pub(super) const INCOMING_MAX: usize = 1024 * 1024;

/// Whether the connection ended on an incoming packet over [`INCOMING_MAX`].
fn is_oversize(e: &ConnectionError) -> bool {
    e.to_string().to_ascii_lowercase().contains("payload size limit")
}

/// A connection error in words a user can act on.
pub(super) fn describe(e: &ConnectionError) -> String {
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
        other if is_oversize(other) => format!(
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
}
