//! Where a key is in the config file: spans from the TOML document, turned into `line:column` for every
//! problem, and the messages of TOML's own errors.

use std::fmt;
use std::ops::Range;

use super::Problem;

pub(super) fn toml_problem(text: &str, key: String, e: &toml::de::Error) -> Problem {
    let mut message = e.message().trim().to_string();
    let mut key = key;
    // The parser says "duplicate key" without naming it: the key is the text its span covers.
    if message == "duplicate key" && key.is_empty() {
        if let Some(name) = e.span().and_then(|s| text.get(s)).map(str::trim).filter(|n| !n.is_empty()) {
            let line_start = e.span().map_or(0, |s| text[..s.start].rfind('\n').map_or(0, |i| i + 1));
            let header = text[line_start..].trim_start().starts_with('[');
            key = name.trim_matches(['[', ']']).trim().to_string();
            let table = text[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .map(|l| l.trim_matches(['[', ']']).trim().to_string());
            let name = key.clone();
            if let Some(table) = table.filter(|_| !header) {
                key = format!("{table}.{key}");
            }
            message = if header {
                format!("duplicate table [{key}]: each table may appear once; merge the two")
            } else {
                format!("duplicate key {name:?}: each key may appear once in a table; remove one")
            };
        }
    }
    Problem { position: e.span().map(|s| line_col(text, s.start)), key, message }
}

/// 1-based (line, column) of a dotted key (`mqtt.tls.ca_file`, `cameras[1].name`) in config text, for
/// problems found after validation (loading the model, reading the TLS files).
pub fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    locate(doc.get_ref(), key).map(|span| line_col(text, span.start))
}

/// 1-based (line, column) of a byte offset; the column counts characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds the span of a dotted key path (`a.b[2].c`) in the parsed document.
pub(super) fn locate(root: &toml::de::DeTable<'_>, path: &str) -> Option<Range<usize>> {
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
