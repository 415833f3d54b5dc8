//! `/metrics`: the Prometheus text exposition of [`Live`], encoded on scrape (nothing is counted twice: the
//! pipeline's own atomics and histograms are read as they are).
//!
//! Written in the classic text format (version 0.0.4) that Prometheus and `promtool check metrics` read:
//! a counter's `# TYPE` line names it with its `_total` suffix, as its samples are named. Label values
//! (camera names, model names and paths) are escaped as that format requires: prometheus-client 0.24 writes
//! them as they are, so a model path with a quote would break the whole scrape, and a model name with a line
//! feed in its metadata could add series of its own.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::live::Live;

/// The content type of what [`encode`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug)]
struct LiveCollector(std::sync::Arc<Live>);

/// A registry with every metric of `live` registered once.
pub fn registry(live: std::sync::Arc<Live>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(LiveCollector(live)));
    registry
}

/// The exposition text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode_registry(&mut out, registry)?;
    Ok(out)
}

/// A label value escaped for the text format: `\`, `"` and line feed become `\\`, `\"` and `\n`.
#[derive(Debug, Clone, Copy)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

/// `labels` with their values escaped.
fn escaped<'a>(labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, Escaped<'a>)> {
    labels.iter().map(|&(key, value)| (key, Escaped(value))).collect()
}

/// One sample value per label set, under one descriptor. Counters are written as plain values so that the
/// `_total` name of the `# TYPE` line is the samples' name.
fn family<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(&[(&str, &str)], V)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            m.encode_gauge(value)?;
        } else {
            m.encode_family(&escaped(labels))?.encode_gauge(value)?;
        }
    }
    Ok(())
}

fn one<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: V,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, kind, &[(&[], value)])
}

impl Collector for LiveCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let live = &self.0;
        let version = env!("CARGO_PKG_VERSION");
        family(
            &mut enc,
            "camclassd_build_info",
            "camclassd's version (always 1)",
            MetricType::Gauge,
            &[(&[("version", version)], 1u64)],
        )?;
        if let Some(p) = live.pipeline() {
            let mut captured = Vec::new();
            let mut classified = Vec::new();
            let mut dropped = Vec::new();
            let mut undecodable = Vec::new();
            let mut connected = Vec::new();
            for (i, c) in p.cameras.iter().enumerate() {
                let (frames, drops, up) = p.health.camera_totals(i).unwrap_or_default();
                captured.push((c.name.as_str(), p.hub.counts(i).0));
                classified.push((c.name.as_str(), frames));
                dropped.push((c.name.as_str(), drops));
                undecodable.push((c.name.as_str(), p.health.undecodable(i)));
                connected.push((c.name.as_str(), u64::from(up)));
            }
            let per_camera = |enc: &mut DescriptorEncoder, name: &str, help: &str, kind, values: &[(&str, u64)]| {
                let mut m = enc.encode_descriptor(name, help, None, kind)?;
                for (camera, value) in values {
                    m.encode_family(&[("camera", Escaped(camera))])?.encode_gauge(value)?;
                }
                Ok::<(), std::fmt::Error>(())
            };
            per_camera(
                &mut enc,
                "camclassd_frames_captured_total",
                "Frames the camera delivered (since the daemon started or its config was reloaded)",
                MetricType::Counter,
                &captured,
            )?;
            per_camera(
                &mut enc,
                "camclassd_frames_classified_total",
                "Frames classified",
                MetricType::Counter,
                &classified,
            )?;
            per_camera(
                &mut enc,
                "camclassd_frames_dropped_total",
                "Frames not classified: replaced by a newer one while inference was busy, finished late, or undecodable",
                MetricType::Counter,
                &dropped,
            )?;
            per_camera(
                &mut enc,
                "camclassd_frames_undecodable_total",
                "Frames the camera delivered that could not be decoded (corrupt or oversized pictures)",
                MetricType::Counter,
                &undecodable,
            )?;
            per_camera(
                &mut enc,
                "camclassd_camera_connected",
                "1 while the camera delivers frames that decode, 0 while it is stale or its frames all fail",
                MetricType::Gauge,
                &connected,
            )?;
            let (runs, images) = p.health.runs();
            one(
                &mut enc,
                "camclassd_inference_runs_total",
                "Model runs (one run takes a batch of region images from the frames ready together)",
                MetricType::Counter,
                runs,
            )?;
            one(
                &mut enc,
                "camclassd_inference_images_total",
                "Region images the model runs took (divided by the runs: the mean batch)",
                MetricType::Counter,
                images,
            )?;
            let (workers, threads) = p.health.parallelism();
            one(
                &mut enc,
                "camclassd_inference_workers",
                "Inference workers running (chosen from the load with [model] workers = 0)",
                MetricType::Gauge,
                workers,
            )?;
            one(
                &mut enc,
                "camclassd_inference_threads",
                "Intra-op threads of each inference worker's sessions",
                MetricType::Gauge,
                threads,
            )?;
            if let Some(check) = &p.model_check {
                family(
                    &mut enc,
                    "camclassd_model_check",
                    "The model's own check at load, by outcome (passed, failed, fallback, unchecked): always 1",
                    MetricType::Gauge,
                    &[(&[("model", check.model.as_str()), ("status", check.status.as_str())], 1u64)],
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "camclassd_inference_duration_seconds",
                "Time of one inference run, by model",
                None,
                MetricType::Histogram,
            )?;
            for (model, histogram) in live.inference_histograms() {
                histogram.encode(m.encode_family(&[("model", Escaped(&model))])?)?;
            }
        }
        let broker = &live.broker;
        let m = enc.encode_descriptor(
            "camclassd_capture_to_publish_seconds",
            "From a frame's capture to its event's hand-over to the MQTT client",
            None,
            MetricType::Histogram,
        )?;
        broker.capture_to_publish.encode(m)?;
        let counters = [
            ("camclassd_events_published_total", "Events the MQTT broker acknowledged", &broker.events_published),
            ("camclassd_events_queued_total", "Events written to the on-disk queue", &broker.events_queued),
            (
                "camclassd_events_dropped_total",
                "Events the full on-disk queue dropped (oldest first)",
                &broker.events_dropped,
            ),
            ("camclassd_broker_reconnects_total", "MQTT connections opened after the first", &broker.reconnects),
        ];
        for (name, help, value) in counters {
            one(&mut enc, name, help, MetricType::Counter, value.load(Relaxed))?;
        }
        one(
            &mut enc,
            "camclassd_queue_depth",
            "Events waiting in the on-disk queue for the broker's acknowledgement",
            MetricType::Gauge,
            broker.queue_depth.load(Relaxed),
        )?;
        one(
            &mut enc,
            "camclassd_queue_bytes",
            "Bytes of the events waiting in the on-disk queue",
            MetricType::Gauge,
            broker.queue_bytes.load(Relaxed),
        )?;
        one(
            &mut enc,
            "camclassd_broker_connected",
            "1 while connected to the MQTT broker",
            MetricType::Gauge,
            u64::from(broker.connected.load(Relaxed)),
        )?;
        one(
            &mut enc,
            "camclassd_uptime_seconds",
            "Seconds since the daemon started",
            MetricType::Gauge,
            live.uptime().as_secs_f64(),
        )?;
        if let Some(rss) = crate::health::rss_bytes() {
            one(&mut enc, "process_resident_memory_bytes", "Resident memory size", MetricType::Gauge, rss)?;
        }
        if let Some(cpu) = cpu_seconds() {
            one(&mut enc, "process_cpu_seconds_total", "User and system CPU time", MetricType::Counter, cpu)?;
        }
        Ok(())
    }
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_counters_are_typed_by_their_total_name() {
        let live = std::sync::Arc::new(Live::new("n", false));
        live.broker.capture_to_publish.observe(0.02);
        let text = encode(&registry(live)).expect("encodes");
        assert!(text.contains("# TYPE camclassd_events_published_total counter\ncamclassd_events_published_total 0\n"));
        assert!(text.contains("camclassd_capture_to_publish_seconds_count 1\n"), "{text}");
        assert!(text.contains("camclassd_build_info{version=\""), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let parts: Vec<&str> = line.split(' ').collect();
            let (name, kind) = (parts[2], parts[3]);
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
        }
    }

    #[test]
    fn hostile_camera_and_model_names_are_escaped_and_add_no_series() {
        use crate::check::{CheckStatus, ModelCheck};
        use crate::live::RegionInfo;
        let hostile = "x\"} 1\ninjected{a=\"b";
        let path = "/models/we\"ird\\dir/model.onnx";
        let live = std::sync::Arc::new(Live::new("n", false));
        let check = ModelCheck { status: CheckStatus::Passed, model: path.into(), detail: String::new() };
        let health = std::sync::Arc::new(crate::health::Health::new(&[hostile.to_string()]).with_model_check(check));
        let hub = std::sync::Arc::new(crate::capture::FrameHub::new(1));
        let spec = crate::model::ModelSpec { name: hostile.into(), ..crate::model::ModelSpec::plain() };
        let region = RegionInfo { name: None, model: hostile.into(), labels: Vec::new().into() };
        let pipeline = live.pipeline_view(vec![(hostile.to_string(), vec![region])], &health, &hub, &spec);
        live.set_pipeline(pipeline);
        let text = encode(&registry(live)).expect("encodes");
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.iter().all(|l| l.starts_with("camclassd_") || l.starts_with("process_")), "{text}");
        let value = r#"x\"} 1\ninjected{a=\"b"#;
        assert!(text.contains(&format!("camclassd_frames_captured_total{{camera=\"{value}\"}} 0\n")), "{text}");
        assert!(
            text.contains(&format!("camclassd_inference_duration_seconds_count{{model=\"{value}\"}} 0\n")),
            "{text}"
        );
        let path = r#"/models/we\"ird\\dir/model.onnx"#;
        assert!(text.contains(&format!("camclassd_model_check{{model=\"{path}\",status=\"passed\"}} 1\n")), "{text}");
    }
}
