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
