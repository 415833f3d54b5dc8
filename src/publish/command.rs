//! Commands received on `<prefix>/<node>/command`. Nothing that arrives over the network is trusted: the
//! payload is size-limited, must be UTF-8, and must be one of a few known forms; anything else is refused
//! with a reason (logged by the caller, rate-limited).
//!
//! Accepted: `reload`, `snapshot`, `snapshot <camera>`, or JSON `{"command": "reload"}` /
//! `{"command": "snapshot", "camera": "porch"}`.

use serde::Deserialize;

/// Larger payloads are refused unread.
pub const MAX_PAYLOAD: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Re-read the config file, as SIGHUP does.
    Reload,
    /// Publish an event for the next classified frame of one camera (or all), whatever the policy says.
    Snapshot { camera: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("unknown command {0:?} (expected reload or snapshot)")]
    Unknown(String),
    #[error("bad camera name")]
    BadCamera,
    #[error("malformed JSON command: {0}")]
    Json(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand {
    command: String,
    camera: Option<String>,
}

/// Parses a command payload.
pub fn parse(payload: &[u8]) -> Result<Command, CommandError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(CommandError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| CommandError::NotUtf8)?.trim();
    let (word, camera) = if text.starts_with('{') {
        let c: JsonCommand = serde_json::from_str(text).map_err(|e| CommandError::Json(e.to_string()))?;
        (c.command, c.camera)
    } else {
        let mut parts = text.splitn(2, char::is_whitespace);
        let word = parts.next().unwrap_or_default().to_string();
        (word, parts.next().map(|c| c.trim().to_string()))
    };
    let command = match word.as_str() {
        "reload" if camera.is_none() => Command::Reload,
        "snapshot" => Command::Snapshot { camera: None },
        _ => return Err(CommandError::Unknown(word.chars().take(32).collect())),
    };
    match (command, camera) {
        (Command::Snapshot { .. }, Some(c)) => {
            if c.is_empty() || c.len() > 64 || c.chars().any(|ch| ch.is_control() || matches!(ch, '/' | '+' | '#')) {
                return Err(CommandError::BadCamera);
            }
            Ok(Command::Snapshot { camera: Some(c) })
        }
        (command, _) => Ok(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse(b"reload"), Ok(Command::Reload));
        assert_eq!(parse(b" snapshot \n"), Ok(Command::Snapshot { camera: None }));
        assert_eq!(parse(b"snapshot porch"), Ok(Command::Snapshot { camera: Some("porch".into()) }));
        assert_eq!(
            parse(br#"{"command":"snapshot","camera":"porch"}"#),
            Ok(Command::Snapshot { camera: Some("porch".into()) })
        );
        assert_eq!(parse(br#"{"command":"reload"}"#), Ok(Command::Reload));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(parse(&[b'a'; 2000]), Err(CommandError::TooLarge(2000)));
        assert_eq!(parse(&[0xff, 0xfe]), Err(CommandError::NotUtf8));
        assert!(matches!(parse(b"rm -rf /"), Err(CommandError::Unknown(_))));
        assert!(matches!(parse(b"reload now"), Err(CommandError::Unknown(_))));
        assert!(matches!(parse(br#"{"command":"reload","x":1}"#), Err(CommandError::Json(_))));
        assert_eq!(parse(b"snapshot a/b"), Err(CommandError::BadCamera));
        assert!(matches!(parse(b""), Err(CommandError::Unknown(_))));
    }
}
