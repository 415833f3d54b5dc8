//! A labelled image set in the ImageFolder layout every tool reads (`DIR/<class>/*.jpg|png`): class names
//! are the folder names, sorted; hidden folders and files (`.camclassd/`, `.DS_Store`) are not classes or
//! images.

use std::path::{Path, PathBuf};

use super::TeachError;

/// The extensions read as images (any case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The classes and their images.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub classes: Vec<String>,
    /// Each image with its class index, by class then by file name.
    pub images: Vec<(PathBuf, usize)>,
}

fn hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl Dataset {
    /// Reads `dir`. Refused: not a folder, fewer than two classes, a class without images.
    pub fn read(dir: &Path) -> Result<Dataset, TeachError> {
        Dataset::read_classes(dir, None)
    }

    /// [`Dataset::read`], with only the folders of `only` as classes when given (a taught model's classes:
    /// a folder left from a class the config no longer names is not learnt).
    pub fn read_classes(dir: &Path, only: Option<&[String]>) -> Result<Dataset, TeachError> {
        let io = |e: std::io::Error| TeachError::Dataset(format!("{}: {e}", dir.display()));
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() && !hidden(&path) {
                let name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
                let name = name.ok_or_else(|| {
                    TeachError::Dataset(format!("{}: a class folder's name must be UTF-8", path.display()))
                })?;
                if only.is_none_or(|only| only.contains(&name)) {
                    classes.push((name, path));
                }
            }
        }
        classes.sort();
        if classes.len() < 2 {
            return Err(TeachError::Dataset(format!(
                "{}: {} class folder{} found; a model tells classes apart, so it needs at least two (DIR/<class>/*.jpg)",
                dir.display(),
                classes.len(),
                if classes.len() == 1 { "" } else { "s" }
            )));
        }
        let mut images = Vec::new();
        for (index, (name, path)) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| TeachError::Dataset(format!("{}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !hidden(p) && is_image(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(TeachError::Dataset(format!(
                    "class {name:?} ({}) has no images (.jpg, .jpeg or .png): add some, or remove the folder",
                    path.display()
                )));
            }
            images.extend(files.into_iter().map(|f| (f, index)));
        }
        Ok(Dataset { classes: classes.into_iter().map(|(n, _)| n).collect(), images })
    }
}
