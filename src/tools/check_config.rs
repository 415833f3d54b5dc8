//! `camclassd check-config`: everything `run` checks before it starts, without starting anything: the
//! config, the MQTT and HTTP secrets and TLS files as `run` reads them, each camera's pipeline parsed, and
//! the models by the one loading policy ([`crate::load`], opened on the CPU): whatever `run` refuses at
//! start, this refuses too, each problem at its key's file:line:col.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::load::{self, Purpose};
use crate::model::runtime;
use crate::publish::PublishError;

/// What the check found. `problems` empty: `run` would start.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Worth knowing, not refused (a secret readable by every user, a model no region uses, …).
    pub warnings: Vec<String>,
    /// Each `file:line:col: key: message`.
    pub problems: Vec<String>,
    /// The one line printed when nothing is wrong.
    pub summary: String,
}

/// Checks the config at `path` as `run` would start it. An `Err` is the config's own error (it does not
/// parse or validate); everything after is collected in [`Preflight::problems`].
pub fn check_config(path: &Path, ort_lib: Option<&Path>) -> Result<Preflight, ConfigError> {
    let config = Config::load_for_daemon(path)?;
    let mut out = Preflight { warnings: config.warnings(), ..Preflight::default() };
    for (key, name) in load::unused_models(&config) {
        out.warnings.push(format!("{key}: model {name:?} is used by no region; it is not loaded"));
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let at = |key: &str, message: &dyn std::fmt::Display| load::locate(&text, path, key, &message.to_string());
    // The HTTP and MQTT errors name their key themselves.
    let at_key = |key: &str, e: &dyn std::fmt::Display| format!("{}: {e}", load::place(&text, path, key).0);
    secrets(&config, path, &text, &mut out);
    if let Some(http) = &config.http {
        use crate::http::HttpError;
        match crate::http::Settings::from_config(http) {
            Err(
                e @ (HttpError::TokenFile { .. }
                | HttpError::EmptyToken { .. }
                | HttpError::ShortToken { .. }
                | HttpError::TokenCharacters { .. }),
            ) => out.problems.push(at_key("http.token_file", &e)),
            Err(e) => out.problems.push(at_key(if http.cert_file.is_some() { "http.cert_file" } else { "http" }, &e)),
            Ok(_) => {}
        }
    }
    // Each camera's pipeline parsed as `run` builds it, without starting it: a syntax error, an element not
    // installed, no appsink named camclassd.
    #[cfg(feature = "gstreamer")]
    for (i, cam) in config.cameras.iter().enumerate() {
        if let Some(pipeline) = &cam.pipeline
            && let Err(why) = crate::capture::gstreamer::check_pipeline(pipeline)
        {
            out.problems.push(at(&format!("cameras[{i}].pipeline"), &why));
        }
    }
    let runtime = match runtime::load(ort_lib.or(config.onnxruntime.library.as_deref())) {
        Ok(runtime) => runtime,
        Err(e) => {
            // The models cannot be opened without it; what was found so far is reported with it.
            out.problems.push(format!("{}: onnxruntime.library: {e}", path.display()));
            return Ok(out);
        }
    };
    match load::load(runtime, &config, Purpose::Preflight) {
        Err(e) => out.problems.extend(e.problems.iter().map(|(key, message)| at(key, message))),
        Ok(loaded) => {
            let regions = loaded.plan.iter().flatten().filter(|r| r.name.is_some()).count();
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            out.summary = format!(
                "{}: ok ({} model{}: {}, [model] being \"default\"; {} camera{}, {regions} named region{})",
                path.display(),
                loaded.names.len(),
                plural(loaded.names.len()),
                loaded.names.join(", "),
                config.cameras.len(),
                plural(config.cameras.len()),
                plural(regions)
            );
        }
    }
    Ok(out)
}

/// The MQTT password and TLS files, read as `run` reads them. A secret the service user may read and this
/// user may not (a 0600 password file, checked without sudo) is not a problem of the config: a warning says
/// how to check it instead.
fn secrets(config: &Config, path: &Path, text: &str, out: &mut Preflight) {
    let unreadable = |e: &PublishError| match e {
        PublishError::PasswordFile { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
        PublishError::Tls(why) => why.contains("(os error 13)"),
        _ => false,
    };
    match crate::publish::Settings::from_config(config) {
        Err(e) if unreadable(&e) => out.warnings.push(format!(
            "{e}: not readable by this user; run `sudo -u camclassd camclassd check-config {}` to check it as \
             the service reads it",
            path.display()
        )),
        Err(e) => {
            let key = match &e {
                PublishError::PasswordFile { .. } => "mqtt.password_file",
                PublishError::Tls(why) if why.contains(&*tls_file(config, "cert")) => "mqtt.tls.cert_file",
                PublishError::Tls(why) if why.contains(&*tls_file(config, "key")) => "mqtt.tls.key_file",
                PublishError::Tls(_) => "mqtt.tls.ca_file",
                _ => "mqtt",
            };
            let key = if crate::config::key_position(text, key).is_some() { key } else { "mqtt.tls" };
            out.problems.push(format!("{}: {e}", load::place(text, path, key).0));
        }
        Ok(_) => {}
    }
}

/// The `cert` or `key` file of `[mqtt.tls]` as the TLS errors print it; a name no error contains when unset.
fn tls_file(config: &Config, which: &str) -> String {
    let tls = config.mqtt.as_ref().and_then(|m| m.tls.as_ref());
    let file = tls.and_then(|t| if which == "cert" { t.cert_file.as_ref() } else { t.key_file.as_ref() });
    file.map_or_else(|| "\0".into(), |f| format!("{}:", f.display()))
}
