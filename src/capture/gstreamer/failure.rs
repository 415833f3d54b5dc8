//! What went wrong with a GStreamer session, in the user's terms: GStreamer's errors and missing-plugin
//! messages classified by what the user can do (check the credentials, the URL, install a package, wait for
//! the camera).

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

use super::packages::{decoder_package, missing_element};
use crate::capture::supervisor::{Failure, FailureKind};

/// A pipeline description GStreamer cannot build: a missing element names its Debian package.
pub(super) fn parse_failure(e: &glib::Error) -> Failure {
    let text = e.message();
    if e.matches(gst::ParseError::NoSuchElement)
        && let Some(name) = text.split('"').nth(1)
    {
        return Failure::new(FailureKind::MissingPlugin, format!("pipeline: {}", missing_element(name)));
    }
    Failure::new(FailureKind::Unsupported, format!("pipeline: {text}"))
}

/// The first error waiting on the bus, as a failure of the source `shown`.
pub(super) fn bus_failure(bus: &gst::Bus, shown: &str) -> Option<Failure> {
    let mut missing = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(err) => return Some(error_failure(err, &missing, shown)),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "missing-plugin") {
                    missing.push(s.get::<String>("detail").unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    None
}

/// A GStreamer error from the source `shown` in the user's terms: what happened and what to check
/// (`missing`: the caps of the `missing-plugin` messages that came before it).
pub(super) fn error_failure(err: &gst::message::Error, missing: &[String], shown: &str) -> Failure {
    let e = err.error();
    let detail = err.debug().map(|d| d.to_string()).unwrap_or_default();
    let detail_line = detail.lines().last().unwrap_or("").trim().to_string();
    if let Some(caps) = missing.first() {
        let advice = match decoder_package(caps) {
            Some(p) => format!("install the Debian package {p}"),
            None => "unknown codec: no GStreamer decoder for it is known".into(),
        };
        return Failure::new(FailureKind::MissingPlugin, format!("{shown}: no decoder for {caps}: {advice}"));
    }
    // souphttpsrc with automatic-redirect off (credentials set, `configure_source`).
    if detail.lines().any(|l| l.contains("Redirect to:")) {
        return Failure::new(
            FailureKind::NotFound,
            format!(
                "{shown} redirects elsewhere ({}): with credentials, camclassd follows no redirect (the \
                     password would go wherever it points); set source to the URL the camera redirects to",
                e.message()
            ),
        );
    }
    // The status as souphttpsrc ("Unauthorized (401), URL: …") and rtspsrc word it, not any "401" (a port).
    if e.matches(gst::ResourceError::NotAuthorized)
        || detail.contains("(401)")
        || detail.contains("401 Unauthorized")
        || e.message().contains("Unauthorized")
    {
        return Failure::new(
            FailureKind::Auth,
            format!(
                "{shown} refused the credentials (401 Unauthorized): check the user name in source and password_file"
            ),
        );
    }
    if e.matches(gst::ResourceError::NotFound) || detail.contains("(404)") || detail.contains("404 Not Found") {
        return Failure::new(
            FailureKind::NotFound,
            format!("{shown}: not found ({}): check the URL or path", e.message()),
        );
    }
    if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
        return Failure::new(
            FailureKind::MissingPlugin,
            format!("{shown}: {} ({detail_line}): unknown codec or a missing plugin", e.message()),
        );
    }
    if e.matches(gst::CoreError::Negotiation) || detail.contains("not-negotiated") {
        return Failure::new(
            FailureKind::Unsupported,
            format!(
                "{shown}: {} ({detail_line}); a pipeline must give raw video or JPEG: end it with `videoconvert ! appsink name=camclassd` (or `image/jpeg ! appsink name=camclassd`)",
                e.message()
            ),
        );
    }
    // souphttpsrc reports a refused, reset or timed-out connection only as its streaming task stopping
    // ("Internal data stream error"): the camera is unreachable, not undecodable.
    let from_network_source = err
        .src()
        .and_then(|s| s.downcast_ref::<gst::Element>())
        .and_then(|e| e.factory())
        .is_some_and(|f| f.klass().contains("Source/Network"));
    if from_network_source && e.matches(gst::StreamError::Failed) {
        return Failure::new(
            FailureKind::Unreachable,
            format!(
                "{shown}: no connection, or the connection was lost ({detail_line}): is the camera on, and the \
                     host and port right?"
            ),
        );
    }
    if e.kind::<gst::StreamError>().is_some() {
        return Failure::new(
            FailureKind::Unsupported,
            format!("{shown}: cannot decode the stream: {} ({detail_line})", e.message()),
        );
    }
    Failure::new(FailureKind::Unreachable, format!("{shown}: {} ({detail_line})", e.message()))
}
