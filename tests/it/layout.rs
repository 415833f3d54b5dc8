//! The module maps stay true to the tree: every top-level module of the library is in `src/lib.rs`'s
//! `# Layout` map, and every file and folder under `src/` is named in the README's *Layout* section. A
//! module added without its line fails here (issue 27: the maps had drifted by ~3.3k lines).

use super::*;

/// The README's `## Layout` code block.
fn readme_layout() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("\n## Layout\n").expect("a ## Layout section in the README");
    let block = &readme[start..];
    let open = block.find("```text\n").expect("its code block") + "```text\n".len();
    let close = block[open..].find("```").expect("the block's end");
    block[open..open + close].to_string()
}

/// Every `.rs` file and folder below `dir`, as paths relative to `src/`.
fn entries(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.push(path.clone());
            entries(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "html") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_is_in_the_module_maps() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 10, "{modules:?}");
    let missing: Vec<&&str> = modules.iter().filter(|m| !lib.contains(&format!("//! - [`{m}`]"))).collect();
    assert!(missing.is_empty(), "modules missing from src/lib.rs's # Layout map: {missing:?}");

    let layout = readme_layout();
    let src = root().join("src");
    let mut all = Vec::new();
    entries(&src, &mut all);
    let mut missing = Vec::new();
    for path in &all {
        let relative = path.strip_prefix(&src).expect("below src/");
        let name = relative.file_name().and_then(|n| n.to_str()).expect("a name");
        // Top-level entries stand at the start of their line (`  http/`); files inside a folder are named in
        // their folder's lines.
        let named = if relative.components().count() == 1 {
            let shown = if path.is_dir() { format!("  {name}/ ") } else { format!("  {name} ") };
            layout.contains(&shown)
        } else {
            name == "mod.rs" || layout.contains(name)
        };
        if !named {
            missing.push(relative.display().to_string());
        }
    }
    assert!(missing.is_empty(), "src/ entries missing from the README's Layout section: {missing:?}");
}

/// The library's layers, lowest first: what each top-level module may use of the crate. A module may only
/// name modules above it in this table (checked below), so the table is also the proof that no import
/// circle exists: dependencies point one way, from the binary's side down to `config`.
const LAYERS: &[(&str, &[&str])] = &[
    // The config file's schema, validation, spans and vocabulary types: nothing of the crate.
    ("config", &[]),
    // Pure helpers.
    ("backoff", &["config"]),
    ("postprocess", &["config"]),
    ("events", &["config", "postprocess"]),
    // ONNX Runtime, sessions, providers, the recipe a model carries (`ModelSpec`), ONNX reading.
    ("model", &["config", "postprocess"]),
    // Decode, crop, resize, normalise into a model's input tensor (as its `ModelSpec` says).
    ("preprocess", &["config", "model"]),
    // Cameras: sources under one supervisor, the frame hub.
    ("capture", &["config", "backoff", "preprocess"]),
    // The stage chain every user of a model shares, and the model's own check (run through it).
    ("pipeline", &["config", "model", "preprocess", "postprocess"]),
    ("check", &["config", "model", "preprocess", "postprocess", "pipeline"]),
    ("region", &["config", "events", "model", "preprocess", "postprocess", "pipeline"]),
    // The one model-loading policy: load → check → fallback → region plan.
    ("load", &["config", "model", "preprocess", "postprocess", "pipeline", "check", "region"]),
    // Teaching: embeddings with a base's trunk, the fitted head, the taught model written and checked.
    ("teach", &["config", "model", "preprocess", "postprocess", "pipeline", "check"]),
    // Counters and the read-only view of what the daemon does now.
    ("health", &["config", "check"]),
    ("live", &["config", "capture", "check", "health", "model", "postprocess", "preprocess", "region"]),
    // The MQTT side.
    ("publish", &["config", "backoff", "events", "health", "live", "region"]),
    // The status page, metrics and API: never the CLI layer.
    (
        "http",
        &[
            "config",
            "capture",
            "check",
            "health",
            "live",
            "load",
            "model",
            "pipeline",
            "postprocess",
            "preprocess",
            "region",
            "teach",
        ],
    ),
    // Wiring: everything but the tools.
    (
        "daemon",
        &[
            "config",
            "backoff",
            "postprocess",
            "events",
            "model",
            "preprocess",
            "capture",
            "pipeline",
            "check",
            "region",
            "load",
            "health",
            "live",
            "publish",
            "http",
            "teach",
        ],
    ),
    (
        "tools",
        &[
            "config",
            "backoff",
            "postprocess",
            "events",
            "model",
            "preprocess",
            "capture",
            "pipeline",
            "check",
            "region",
            "load",
            "teach",
            "health",
            "live",
            "publish",
            "http",
            "daemon",
        ],
    ),
];

/// The top-level modules a source text names through `crate::` paths, in code (comments left out):
/// `crate::model::Model`, and each item of a group, `use crate::{config::Config, live::Live}`.
fn crate_references(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at the group's own depth.
            let (mut depth, mut start) = (1, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if start && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                        found.push(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(rest));
        }
    }
    found
}

#[test]
fn crate_references_are_read_from_paths_and_groups() {
    let text = "use crate::config::Config;\n// crate::tools in a comment\nuse crate::{live::Live, model::{self, Model},\n    region};\nlet x = $crate::foo; let y = crate::backoff::Backoff::default();";
    assert_eq!(crate_references(text), ["config", "live", "model", "region", "backoff"]);
}

/// Every `use crate::…` (and every `crate::…` path) of every file under `src/` points down [`LAYERS`]: no
/// import circle, no upward arrow (the daemon's server into the CLI layer, config into anything).
#[test]
fn modules_only_use_the_layers_below_them() {
    // The table itself points one way: each module names only modules listed before it.
    for (i, (module, allowed)) in LAYERS.iter().enumerate() {
        for used in *allowed {
            assert!(
                LAYERS[..i].iter().any(|(m, _)| m == used),
                "LAYERS: {module} may use {used}, which is not listed before it"
            );
        }
    }
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let modules: Vec<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';')).collect();
    for module in &modules {
        assert!(LAYERS.iter().any(|(m, _)| m == module), "{module} is missing from LAYERS: give it its layer");
    }
    // The binary's own modules (`mod cli;` in main.rs): glue over the library, outside its layers.
    let main = std::fs::read_to_string(root().join("src/main.rs")).expect("src/main.rs");
    let binary: Vec<&str> =
        main.lines().filter_map(|l| l.strip_prefix("mod ")).map(|l| l.trim_end_matches(';')).collect();
    let src = root().join("src");
    let mut files = Vec::new();
    entries(&src, &mut files);
    let mut upward = Vec::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let relative = path.strip_prefix(&src).expect("below src/");
        let top = relative.components().next().expect("a first component").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "main" || top == "lib" || binary.contains(&top) {
            continue; // the binary uses the library by its name; lib.rs declares the modules
        }
        let (_, allowed) = LAYERS.iter().find(|(m, _)| *m == top).unwrap_or_else(|| panic!("{top} not in LAYERS"));
        let text = std::fs::read_to_string(path).expect("read a source file");
        for used in crate_references(&text) {
            if used != top && !allowed.contains(&used.as_str()) && modules.contains(&used.as_str()) {
                upward.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports against the layers (see LAYERS in tests/it/layout.rs):\n{}", upward.join("\n"));
}
