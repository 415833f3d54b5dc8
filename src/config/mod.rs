//! Configuration: one TOML file, parsed and validated in one place.
//!
//! Unknown keys are rejected, values are checked, and every problem is reported as
//! `file:line:column: key: message`, all at once, so a user fixes the file in one pass.
//! Relative paths in the file are taken from the working directory, as on the command line.
//!
//! - this module: loading and parsing, the problems and their rendering;
//! - [`schema`]: every section and key with its default;
//! - `validate`: the checks of a parsed config;
//! - `spans`: where a key is in the file (`line:column`), and TOML's own errors in those terms;
//! - [`url`]: camera URLs' user info, split off and redacted, and malformed URLs.

use std::path::{Path, PathBuf};

pub mod files;
pub mod model;
pub mod schema;
pub mod source;
mod spans;
pub mod url;
mod validate;

pub use schema::*;
pub use source::{SourceKind, VIDEO_EXTENSIONS};
use spans::toml_problem;
pub use spans::{key_position, line_col};
use validate::sanitize_topic_level;
pub use validate::{
    MAX_CLIENT_ID, MAX_INPUT_SIDE, MAX_REGIONS, MAX_RESIZE, MAX_TAUGHT_CLASSES, MAX_TOPIC_LEVEL, MAX_TOPIC_PREFIX,
    crop_problem, input_size_too_large, taught_classes_problem,
};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line and column; `None` when the problem has no place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `model.preprocess.mean` or `cameras[1].fps`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let name = path.display();
    problems
        .iter()
        .map(|p| {
            let key = if p.key.is_empty() { String::new() } else { format!("{}: ", p.key) };
            match p.position {
                Some((line, col)) => format!("{name}:{line}:{col}: {key}{}", p.message),
                None => format!("{name}: {key}{}", p.message),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text).map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
    }

    /// Reads a config for `camclassd run`: as [`Config::load`], and `[mqtt]` and a camera are required.
    pub fn load_for_daemon(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let invalid = |problems| ConfigError::Invalid { path: path.to_path_buf(), problems };
        let config = Config::parse(&text).map_err(invalid)?;
        let mut problems = Vec::new();
        if config.mqtt.is_none() {
            problems.push(Problem {
                position: None,
                key: "mqtt".into(),
                message: "missing [mqtt] section (host, port, …)".into(),
            });
        }
        if config.cameras.is_empty() {
            problems.push(Problem {
                position: None,
                key: "cameras".into(),
                message: "no [[cameras]] configured".into(),
            });
        }
        if problems.is_empty() { Ok(config) } else { Err(invalid(problems)) }
    }

    /// Things that work but should be fixed: a secret readable by every user of the machine.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let secrets =
            self.mqtt
                .iter()
                .flat_map(|m| {
                    [
                        ("mqtt.password_file", m.password_file.as_ref()),
                        ("mqtt.tls.key_file", m.tls.as_ref().and_then(|t| t.key_file.as_ref())),
                    ]
                })
                .chain(self.http.iter().flat_map(|h| {
                    [("http.token_file", h.token_file.as_ref()), ("http.key_file", h.key_file.as_ref())]
                }));
        for (key, path) in secrets {
            if let Some(path) = path
                && let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o004 != 0
            {
                out.push(format!(
                    "{key}: {} is readable by every user (mode {:o}); run: chmod o-rwx {}",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                ));
            }
        }
        for (i, cam) in self.cameras.iter().enumerate() {
            if cam.pipeline.is_none() && url::has_password(cam.source.trim()) {
                out.push(format!(
                    "cameras[{i}].source: the password is in the URL (so in the config file); password_file keeps it out"
                ));
            }
            if let Some(path) = &cam.password_file
                && let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o004 != 0
            {
                out.push(format!(
                    "cameras[{i}].password_file: {} is readable by every user (mode {:o}); run: chmod o-rwx {}",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                ));
            }
        }
        if self.mqtt.as_ref().is_some_and(|m| m.qos == 0) {
            out.push("mqtt.qos = 0: events leave the queue when written to the socket, unacknowledged; an outage can lose the last ones (use 1)".into());
        }
        if self.mqtt.as_ref().is_some_and(|m| m.password.is_some()) {
            out.push("mqtt.password: the password is in the config file; password_file keeps it out".into());
        }
        out
    }

    /// This node's name in topics: `[mqtt] node_id`, else the hostname.
    pub fn node_id(&self) -> String {
        self.mqtt
            .as_ref()
            .and_then(|m| m.node_id.clone())
            .unwrap_or_else(|| sanitize_topic_level(&gethostname::gethostname().to_string_lossy()))
    }

    /// Parses and validates config text; on failure, every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let de = toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(text, String::new(), &e)])?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            vec![toml_problem(text, key, e.inner())]
        })?;
        let problems = config.validate(text);
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Optimization, Provider};

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text).expect_err("invalid").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn lists_longer_than_expected_are_refused_not_cut() {
        for (section, key, value, want) in [
            ("[model.preprocess]", "mean", "[1.0, 2.0, 3.0, 4.0]", "model.preprocess.mean: expected 3 values, got 4"),
            (
                "[model.preprocess]",
                "input_size",
                "[224, 224, 3]",
                "model.preprocess.input_size: expected 2 values, got 3",
            ),
            ("[model.preprocess]", "std", "[1.0]", "model.preprocess.std: expected 3 values, got 1"),
            (
                "[[cameras]]\nname = \"c\"\nsource = \"0\"",
                "resolution",
                "[640, 480, 3]",
                "cameras[0].resolution: expected 2 values, got 3",
            ),
        ] {
            let text = format!("version = 1\n[model]\npath = \"Cargo.toml\"\n{section}\n{key} = {value}\n");
            let got = problems(&text);
            assert!(got.iter().any(|p| p.contains(want)), "{key}: {got:?}");
        }
    }

    /// A source that is no URL but has `://` in it (a password before a query's URL): refused without
    /// quoting what comes before the `://`.
    #[test]
    fn a_mistyped_source_is_refused_without_its_password() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\n[[cameras]]\nname = \"c\"\n\
                    source = \"admin:S3cr3t@cam/x?next=http://y\"\n";
        let got = problems(text);
        assert!(got.iter().any(|p| p.contains("cameras[0].source")), "{got:?}");
        assert!(got.iter().all(|p| !p.contains("S3cr3t")), "{got:?}");
    }

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let c = Config::parse("version = 1\n[model]\npath = \"Cargo.toml\"\n").expect("valid");
        assert_eq!(c.model.execution_providers, vec![Provider::Cpu]);
        assert_eq!(c.model.top_k, 5);
        assert_eq!(c.model.optimization, Optimization::All);
        assert!(c.onnxruntime.library.is_none());
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\ntop_k = \"five\"\n",
                "4:9: model.top_k: invalid type: string \"five\", expected usize",
            ),
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\ncolour = 3\n",
                "4:1: model.colour: unknown field `colour`, expected one of `path`",
            ),
            (
                "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"cpu\", \"gpu\"]\n",
                "4:31: model.execution_providers[1]: unknown variant `gpu`",
            ),
            ("version = 1\n[model\n", "2:7: "),
        ];
        for (text, expected) in cases {
            let got = problems(text);
            assert!(got[0].starts_with(expected), "{text:?}\n got: {got:?}\nwant: {expected}");
        }
    }

    #[test]
    fn http_problems_name_line_column_and_key() {
        let base = "version = 1\n[model]\npath = \"Cargo.toml\"\n[http]\n";
        let got = problems(&format!("{base}listen = \"0.0.0.0:8080\"\nmax_body_mb = 0\ncert_file = \"Cargo.toml\"\n"));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("5:1: http.listen: 0.0.0.0:8080 is reachable from other machines: set http.token_file")
        );
        assert!(got[1].starts_with("7:1: http.cert_file: needs key_file"), "{got:?}");
        assert!(got[2].starts_with("6:1: http.max_body_mb: expected 1 to 256 MiB, got 0"), "{got:?}");
        let got = problems(&format!("{base}listen = \"localhost\"\n"));
        assert!(got[0].starts_with("5:1: http.listen: \"localhost\" is not address:port"), "{got:?}");
        // Loopback needs no token; the defaults are loopback.
        for listen in ["127.0.0.1:9000", "[::1]:9000"] {
            let c = Config::parse(&format!("{base}listen = \"{listen}\"\n")).expect("valid");
            assert_eq!(c.http.map(|h| h.max_body_mb), Some(10));
        }
        let c = Config::parse(base).expect("valid");
        assert_eq!(c.http.map(|h| h.listen), Some("127.0.0.1:8080".to_string()));
    }

    #[test]
    fn http_deadlines_and_the_connection_cap_have_defaults_and_bounds() {
        let base = "version = 1\n[model]\npath = \"Cargo.toml\"\n[http]\n";
        let http = Config::parse(base).expect("valid").http.expect("[http]");
        let got = (http.header_timeout_s, http.idle_timeout_s, http.body_timeout_s, http.max_connections);
        assert_eq!(got, (10, 5, 30, 256));
        let text = "header_timeout_s = 0\nidle_timeout_s = 20\nbody_timeout_s = 0\nmax_connections = 0\n";
        let got = problems(&format!("{base}{text}"));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("5:1: http.header_timeout_s: expected 1 to 300 s, got 0"), "{got:?}");
        assert!(got[1].starts_with("6:1: http.idle_timeout_s: expected 1 s to header_timeout_s (0 s), got 20"));
        assert!(got[2].starts_with("7:1: http.body_timeout_s: expected 1 to 3600 s, got 0"), "{got:?}");
        assert!(got[3].starts_with("8:1: http.max_connections: expected 1 to 65536, got 0"), "{got:?}");
        // The kept-alive wait may not outlast the header deadline (which runs during it too).
        let got = problems(&format!("{base}header_timeout_s = 4\nidle_timeout_s = 5\n"));
        assert!(got[0].starts_with("6:1: http.idle_timeout_s: expected 1 s to header_timeout_s (4 s), got 5"));
        assert!(Config::parse(&format!("{base}header_timeout_s = 4\nidle_timeout_s = 4\n")).is_ok());
    }

    #[test]
    fn a_taught_model_names_its_classes_and_no_file() {
        let base = "version = 1\n[model]\npath = \"Cargo.toml\"\n[[models]]\nname = \"door\"\n";
        let c = Config::parse(&format!("{base}teach = [\"closed\", \"open\"]\n[teach]\ndir = \"/srv/t\"\n"))
            .expect("valid");
        let door = c.named_models().into_iter().find(|m| m.name == "door").expect("door");
        let taught = door.taught.expect("taught");
        assert_eq!(door.path, PathBuf::from("/srv/t/door/model.onnx"));
        assert_eq!((taught.base, taught.dir), (PathBuf::from("Cargo.toml"), PathBuf::from("/srv/t/door")));
        assert_eq!((c.teach.max_samples, c.teach.max_mb, c.teach.sample_every), (500, 200, 2.0));
        for (lines, want) in [
            ("teach = [\"closed\"]\n", "6:1: models[0].teach: expected 2 to 16 classes, got 1"),
            ("teach = [\"a\", \"b/c\"]\n", "6:1: models[0].teach: class \"b/c\" must be 1 to 64 letters"),
            ("teach = [\"a\", \"a\"]\n", "6:1: models[0].teach: class \"a\" is named twice"),
            ("teach = [\"a\", \"b\"]\npath = \"Cargo.toml\"\n", "7:1: models[0].path: a taught model"),
            ("labels = \"Cargo.toml\"\n", "4:1: models[0]: no path: name the model file"),
            ("path = \"Cargo.toml\"\nbase = \"Cargo.toml\"\n", "7:1: models[0].base: only a taught model"),
            ("teach = [\"a\", \"b\"]\nbase = \"no.onnx\"\n", "7:1: models[0].base: base model no.onnx not found"),
            ("teach = [\"a\", \"b\"]\n[teach]\nmax_samples = 1\n", "8:1: teach.max_samples: expected 10 to"),
            ("teach = [\"a\", \"b\"]\n[teach]\ndiversity = 2\n", "8:1: teach.diversity: expected a fraction"),
        ] {
            let got = problems(&format!("{base}{lines}"));
            assert!(got.iter().any(|p| p.starts_with(want)), "{lines:?}: {got:?}");
        }
    }

    #[test]
    fn validation_collects_every_problem() {
        let text = "version = 2\n[model]\npath = \"no/such.onnx\"\ntop_k = 0\nmin_score = 1.5\n[model.preprocess]\nstd = [1.0, 0.0, 1.0]\n";
        let got = problems(text);
        assert_eq!(
            got,
            vec![
                "1:1: version: unsupported config version 2; this camclassd reads version 1",
                "3:1: model.path: model file no/such.onnx not found",
                "4:1: model.top_k: must be at least 1",
                "5:1: model.min_score: must be between 0 and 1, got 1.5",
                "7:1: model.preprocess.std: every value must be positive, got [1.0, 0.0, 1.0]",
            ]
        );
    }

    #[test]
    fn camera_values_out_of_range_are_refused() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\n[[cameras]]\nname = \"a b\"\nsource = \"0\"\nfps = 1e-30\ninterval = 1e20\ndebounce = 0\n";
        let got = problems(text);
        assert_eq!(
            got,
            vec![
                "5:1: cameras[0].name: \"a b\" must be letters, digits, '-' or '_' (it is a topic level)",
                "7:1: cameras[0].fps: expected a number from 0.01 to 120, got 0.000000000000000000000000000001",
                "9:1: cameras[0].debounce: must be at least 1 frame",
                "8:1: cameras[0].interval: expected seconds up to a week (0 for no heartbeat), got 100000000000000000000",
            ]
        );
    }

    #[test]
    fn gpu_sections_default_to_jetson_friendly_settings() {
        let c = Config::parse("version = 1\n[model]\npath = \"Cargo.toml\"\n").expect("valid");
        let (trt, cuda) = (&c.model.tensorrt, &c.model.cuda);
        assert!(trt.fp16 && trt.engine_cache && trt.timing_cache);
        assert_eq!((trt.int8, trt.engine_cache_dir.as_ref(), trt.max_workspace_mb), (None, None, 1024));
        assert_eq!((trt.device_id, trt.min_subgraph_size, trt.dla_core), (0, 1, None));
        assert_eq!(cuda.conv_algo_search, crate::config::model::ConvAlgoSearch::Heuristic);
        assert_eq!(cuda.arena_extend_strategy, crate::config::model::ArenaExtendStrategy::SameAsRequested);
        assert_eq!((cuda.device_id, cuda.memory_limit_mb), (0, 0));
    }

    #[test]
    fn gpu_sections_parse_and_reach_the_model_options() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\n\
                    [model.tensorrt]\nfp16 = false\nint8 = true\nengine_cache_dir = \"/tmp/trt\"\ntiming_cache = false\n\
                    max_workspace_mb = 256\nmin_subgraph_size = 3\ndla_core = 1\ndevice_id = 1\nengine_cache = true\n\
                    [model.cuda]\ndevice_id = 1\nconv_algo_search = \"exhaustive\"\narena_extend_strategy = \"next_power_of_two\"\n\
                    memory_limit_mb = 2048\n";
        let c = Config::parse(text).expect("valid");
        let o = c.model.model_options();
        assert_eq!(o.providers, vec![Provider::Tensorrt, Provider::Cuda, Provider::Cpu]);
        assert!(!o.tensorrt.fp16 && !o.tensorrt.timing_cache && o.tensorrt.engine_cache);
        assert_eq!(o.tensorrt.int8, Some(true));
        assert_eq!(o.tensorrt.engine_cache_dir.as_deref(), Some(Path::new("/tmp/trt")));
        assert_eq!((o.tensorrt.max_workspace_mb, o.tensorrt.min_subgraph_size, o.tensorrt.dla_core), (256, 3, Some(1)));
        assert_eq!((o.tensorrt.device_id, o.cuda.device_id, o.cuda.memory_limit_mb), (1, 1, 2048));
        assert_eq!(o.cuda.conv_algo_search, crate::config::model::ConvAlgoSearch::Exhaustive);
        assert_eq!(o.cuda.arena_extend_strategy, crate::config::model::ArenaExtendStrategy::NextPowerOfTwo);
        assert!(o.record_placement);
    }

    #[test]
    fn gpu_key_errors_name_line_column_and_key() {
        let head = "version = 1\n[model]\npath = \"Cargo.toml\"\n";
        let cases: &[(&str, &str)] = &[
            ("[model.tensorrt]\nfp61 = true\n", "5:1: model.tensorrt.fp61: unknown field `fp61`, expected one of"),
            (
                "[model.tensorrt]\nfp16 = \"yes\"\n",
                "5:8: model.tensorrt.fp16: invalid type: string \"yes\", expected a boolean",
            ),
            ("[model.tensorrt]\nmax_workspace_mb = -1\n", "5:20: model.tensorrt.max_workspace_mb: invalid value"),
            (
                "[model.cuda]\nconv_algo_search = \"fast\"\n",
                "5:20: model.cuda.conv_algo_search: unknown variant `fast`",
            ),
        ];
        for (tail, expected) in cases {
            let got = problems(&format!("{head}{tail}"));
            assert!(got[0].starts_with(expected), "{tail:?}\n got: {got:?}\nwant: {expected}");
        }
    }

    #[test]
    fn batching_values_out_of_range_name_key_and_line() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\nmax_batch = 0\nmax_batch_delay_ms = 5000\n";
        assert_eq!(
            problems(text),
            [
                "4:1: model.max_batch: must be between 1 and 32, got 0",
                "5:1: model.max_batch_delay_ms: must be at most 1000 (a frame waits this long for a batch), got 5000"
            ]
        );
        assert!(problems(&text.replace("max_batch = 0", "max_batch = 33"))[0].contains("got 33"));
        let fine = "version = 1\n[model]\npath = \"Cargo.toml\"\nmax_batch = 32\nmax_batch_delay_ms = 1000\n";
        assert!(Config::parse(fine).is_ok());
    }

    #[test]
    fn gpu_values_out_of_range_are_all_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("write");
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.tensorrt]\ndevice_id = 99\nmax_workspace_mb = 4294967296\n\
             min_subgraph_size = 0\ndla_core = 2\nengine_cache_dir = {:?}\n[model.cuda]\nmemory_limit_mb = 9999999999\n",
            file.display().to_string()
        );
        let got = problems(&text);
        let keys: Vec<&str> = got.iter().map(|p| p.split(": ").next().unwrap_or_default()).collect();
        assert_eq!(keys, ["5:1", "6:1", "7:1", "8:1", "9:1", "11:1"], "{got:#?}");
        assert!(got[0].contains("model.tensorrt.device_id: must be a GPU ordinal from 0 to 63, got 99"), "{got:#?}");
        assert!(got[1].contains("model.tensorrt.max_workspace_mb: 4294967296 MiB is more than 1 TiB"), "{got:#?}");
        assert!(got[2].contains("model.tensorrt.min_subgraph_size: must be at least 1"), "{got:#?}");
        assert!(got[3].contains("model.tensorrt.dla_core: Jetson boards have DLA cores 0 and 1, got 2"), "{got:#?}");
        assert!(
            got[4].contains("model.tensorrt.engine_cache_dir:") && got[4].contains("is not a directory"),
            "{got:#?}"
        );
        assert!(got[5].contains("model.cuda.memory_limit_mb: 9999999999 MiB"), "{got:#?}");

        let two_gpus = "version = 1\n[model]\npath = \"Cargo.toml\"\nexecution_providers = [\"tensorrt\", \"cuda\"]\n\
                        [model.tensorrt]\ndevice_id = 1\n[model.cuda]\ndevice_id = 0\n";
        assert_eq!(
            problems(two_gpus),
            [
                "8:1: model.cuda.device_id: 0 differs from model.tensorrt.device_id 1; with both providers they share one GPU"
            ]
        );
        // Different ordinals are fine when only one of the two providers is used.
        assert!(Config::parse(&two_gpus.replace("\"tensorrt\", ", "")).is_ok());

        let dla_fp32 = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.tensorrt]\nfp16 = false\ndla_core = 0\n";
        assert_eq!(
            problems(dla_fp32),
            ["6:1: model.tensorrt.dla_core: the DLA runs FP16 or INT8 only: set fp16 = true or int8 = true"]
        );
    }

    #[test]
    fn names_and_ids_longer_than_a_topic_can_hold_are_refused() {
        let long = "a".repeat(100_000);
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nnode_id = \"{n}\"\nclient_id = \"{n}\"\n\
             topic_prefix = \"{n}\"\n[homeassistant]\ndiscovery_prefix = \"{n}\"\n[[cameras]]\nname = \"{n}\"\nsource = \"0\"\n",
            n = long
        );
        let got = problems(&text);
        for want in [
            "6:1: mqtt.node_id: is 100000 bytes long; at most 128 bytes",
            "7:1: mqtt.client_id: must be 1 to 256 bytes, got 100000",
            "8:1: mqtt.topic_prefix: is 100000 bytes long; at most 256 bytes",
            "10:1: homeassistant.discovery_prefix: is 100000 bytes long; at most 256 bytes",
            "12:1: cameras[0].name: is 100000 bytes long; at most 128 bytes",
        ] {
            assert!(got.iter().any(|p| p.starts_with(want)), "{want}\n{got:#?}");
        }
        // Nothing quotes the 100 000 characters back.
        assert!(got.iter().all(|p| p.len() < 300), "{got:#?}");
        // At the limits, every topic camclassd builds fits MQTT's 65 535 bytes with room to spare.
        let longest = MAX_TOPIC_PREFIX + "/binary_sensor/".len() + MAX_TOPIC_LEVEL + 1 + MAX_TOPIC_LEVEL + 64;
        assert!(longest < 65_535);
        let ok = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nnode_id = \"{}\"\nclient_id = \"{}\"\n",
            "n".repeat(MAX_TOPIC_LEVEL),
            "c".repeat(MAX_CLIENT_ID)
        );
        assert!(Config::parse(&ok).is_ok());
    }

    #[test]
    fn a_host_with_a_port_or_a_scheme_is_refused_with_advice() {
        let host = |h: &str| {
            let text = format!("version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = {h:?}\n");
            Config::parse(&text).err().map(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        };
        let err = host("127.0.0.1:1883").expect("refused");
        assert!(err.starts_with("5:1: mqtt.host:") && err.contains("host = \"127.0.0.1\" and port = 1883"), "{err}");
        let err = host("mqtt://broker.lan:1883").expect("refused");
        assert!(err.contains("has a scheme") && err.contains("host = \"broker.lan\""), "{err}");
        let err = host("mqtts://broker.lan").expect("refused");
        assert!(err.contains("[mqtt.tls]"), "{err}");
        assert!(host("broker lan").is_some());
        for fine in ["127.0.0.1", "broker.lan", "::1", "fe80::1", "localhost"] {
            assert_eq!(host(fine), None, "{fine}");
        }
    }

    #[test]
    fn an_input_size_beyond_4096_is_refused() {
        let text = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.preprocess]\ninput_size = [20000, 20000]\nresize = 20000\n";
        let got = problems(text);
        assert!(
            got[0].starts_with("5:1: model.preprocess.input_size: 20000x20000 is larger than 4096x4096"),
            "{got:?}"
        );
        assert!(got.iter().any(|p| p.starts_with("6:1: model.preprocess.resize: 20000 is more than 8192")), "{got:?}");
        let ok = "version = 1\n[model]\npath = \"Cargo.toml\"\n[model.preprocess]\ninput_size = [4096, 4096]\n";
        assert!(Config::parse(ok).is_ok());
    }

    #[test]
    fn secrets_and_sources_that_are_not_files_say_what_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let loop_link = dir.path().join("loop");
        std::os::unix::fs::symlink(&loop_link, &loop_link).expect("symlink");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let text = format!(
            "version = 1\n[model]\npath = \"Cargo.toml\"\n[mqtt]\nhost = \"h\"\nusername = \"u\"\npassword_file = {d:?}\n\
             [mqtt.tls]\nca_file = {d:?}\n[[cameras]]\nname = \"a\"\nsource = \"/dev/null\"\n\
             [[cameras]]\nname = \"b\"\nsource = {:?}\n[[cameras]]\nname = \"c\"\nsource = {:?}\n\
             [[cameras]]\nname = \"d\"\nsource = \"/nonexistent/later/*.jpg\"\n[[cameras]]\nname = \"e\"\nsource = \"/dev/video7\"\n",
            fifo.display().to_string(),
            loop_link.display().to_string(),
        );
        let got = problems(&text);
        let want = [
            format!("7:1: mqtt.password_file: {d} is a directory, not a file"),
            format!("9:1: mqtt.tls.ca_file: {d} is a directory, not a file"),
            "cameras[0].source: /dev/null is a device node: a camera source is".into(),
            // cameras[1], the FIFO, is fine: a live MJPEG stream.
            format!("cameras[2].source: {} is a symbolic link loop", loop_link.display()),
        ];
        for w in &want {
            assert!(got.iter().any(|p| p.contains(w.as_str())), "{w}\n{got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn a_duplicate_key_or_table_is_named() {
        let got = problems("version = 1\n[model]\npath = \"Cargo.toml\"\npath = \"x\"\n");
        assert_eq!(got, ["4:1: model.path: duplicate key \"path\": each key may appear once in a table; remove one"]);
        let got = problems("version = 1\n[model]\npath = \"Cargo.toml\"\n[model]\ntop_k = 1\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("duplicate table [model]"), "{got:?}");
    }

    #[test]
    fn keys_are_located_after_validation() {
        let text = "version = 1\n[model]\npath = \"m.onnx\"\n[mqtt]\nhost = \"h\"\n[mqtt.tls]\nca_file = \"x\"\n";
        assert_eq!(key_position(text, "model.path"), Some((3, 1)));
        assert_eq!(key_position(text, "mqtt.tls.ca_file"), Some((7, 1)));
        assert_eq!(key_position(text, "mqtt.password_file"), None);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
