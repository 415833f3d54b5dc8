//! Configuration: one TOML file, parsed and validated in one place.
//!
//! Unknown keys are rejected, values are checked, and every problem is reported as
//! `file:line:column: key: message`, all at once, so a user fixes the file in one pass.
//! Relative paths in the file are taken from the working directory, as on the command line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{ModelOptions, Optimization, Overrides, Provider};

/// The configuration format version this build reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub onnxruntime: OnnxRuntimeConfig,
    pub model: ModelConfig,
}

/// `[onnxruntime]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Path of `libonnxruntime.so`; when unset, the standard search applies (see `model::runtime`).
    pub library: Option<PathBuf>,
}

/// `[model]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    /// A labels file (one per line) replacing the model's own labels.
    pub labels: Option<PathBuf>,
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<Provider>,
    /// Intra-op threads; 0 = all cores.
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub optimization: Optimization,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default)]
    pub min_score: f32,
    #[serde(default)]
    pub preprocess: Overrides,
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}
const fn default_top_k() -> usize {
    5
}

impl ModelConfig {
    /// The options [`crate::model::Model::load`] takes.
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            providers: self.execution_providers.clone(),
            threads: (self.threads > 0).then_some(self.threads),
            optimization: self.optimization,
            overrides: self.preprocess.clone(),
            labels: self.labels.clone(),
            ..ModelOptions::default()
        }
    }
}

/// The most intra-op threads accepted: 4 per core. More only thrashes, and a typo must not spawn thousands.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

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

    fn validate(&self, text: &str) -> Vec<Problem> {
        let doc = toml::de::DeTable::parse(text).ok();
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            let position = doc.as_ref().and_then(|d| locate(d.get_ref(), key)).map(|span| line_col(text, span.start));
            problems.push(Problem { position, key: key.to_string(), message });
        };
        if self.version != VERSION {
            problem(
                "version",
                format!("unsupported config version {}; this camclassd reads version {VERSION}", self.version),
            );
        }
        if self.model.path.is_dir() {
            problem("model.path", format!("{} is a directory, not a model file", self.model.path.display()));
        } else if !self.model.path.is_file() {
            problem("model.path", format!("model file {} not found", self.model.path.display()));
        }
        if self.model.threads > max_threads() {
            problem(
                "model.threads",
                format!("{} is more than {} (4 per core); 0 means all cores", self.model.threads, max_threads()),
            );
        }
        if let Some(labels) = self.model.labels.as_ref().filter(|p| !p.is_file()) {
            problem("model.labels", format!("labels file {} not found", labels.display()));
        }
        if let Some(lib) = self.onnxruntime.library.as_ref().filter(|p| !p.is_file()) {
            problem("onnxruntime.library", format!("{} not found", lib.display()));
        }
        if self.model.execution_providers.is_empty() {
            problem("model.execution_providers", "must name at least one provider (e.g. [\"cpu\"])".into());
        }
        if self.model.top_k == 0 {
            problem("model.top_k", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.model.min_score) {
            problem("model.min_score", format!("must be between 0 and 1, got {}", self.model.min_score));
        }
        let pre = &self.model.preprocess;
        if let Some(std) = pre.std.filter(|s| s.iter().any(|v| !v.is_finite() || *v <= 0.0)) {
            problem("model.preprocess.std", format!("every value must be positive, got {std:?}"));
        }
        if let Some(mean) = pre.mean.filter(|m| m.iter().any(|v| !v.is_finite())) {
            problem("model.preprocess.mean", format!("every value must be a finite number, got {mean:?}"));
        }
        if let (Some(resize), Some([h, w])) = (pre.resize, pre.input_size)
            && resize < h.max(w)
        {
            problem("model.preprocess.resize", format!("{resize} is smaller than the input size {h}x{w}"));
        }
        if pre.input_size.is_some_and(|[h, w]| h == 0 || w == 0) {
            problem("model.preprocess.input_size", "must be [height, width], both positive".into());
        }
        problems
    }
}

fn toml_problem(text: &str, key: String, e: &toml::de::Error) -> Problem {
    Problem { position: e.span().map(|s| line_col(text, s.start)), key, message: e.message().trim().to_string() }
}

/// 1-based (line, column) of a byte offset; the column counts characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds the span of a dotted key path (`a.b[2].c`) in the parsed document.
fn locate(root: &toml::de::DeTable<'_>, path: &str) -> Option<Range<usize>> {
    use toml::de::DeValue;
    let mut table = root;
    let mut span = None;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*seg, None),
        };
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        span = Some(key.span());
        let mut value = value;
        if let Some(idx) = index {
            let DeValue::Array(items) = value.get_ref() else { return span };
            value = items.get(idx)?;
            span = Some(value.span());
        }
        if i + 1 < segments.len() {
            let DeValue::Table(t) = value.get_ref() else { return span };
            table = t;
        }
    }
    span
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((l, c)) = self.position {
            write!(f, "{l}:{c}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text).expect_err("invalid").iter().map(ToString::to_string).collect()
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
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
