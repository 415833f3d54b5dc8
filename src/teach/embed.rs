//! Embedding pictures with a base model's frozen trunk: the base cut at its feature tensor (declared in its
//! metadata, `camclassd.features`), run with the base's own recipe except the crop, which is `none` — the
//! whole picture stretched to the input — because a region's crop must reach the model whole: a centre crop
//! would cut off the edge where the door is. The taught model reads its input the same way.
//!
//! Embeddings are cached by the picture's content (sha256) per trunk, in one append-only file under
//! camclassd's cache folder, so a retrain embeds only the pictures it has not seen.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::TeachError;
use crate::config::model::{Crop, ModelOptions};
use crate::model::onnx_edit;
use crate::model::{Input, Model, runtime::Runtime};
use crate::pipeline::Classifier;
use crate::preprocess::{Frame, Preprocessor};

/// The metadata key naming a base model's feature tensor (`[batch, width]` floats, e.g. the pooled output
/// before the classifier).
pub const FEATURES_KEY: &str = "camclassd.features";

/// The metadata of the base that the trunk drops (its classes and its check are the base's, not the
/// trunk's).
fn trunk_drops(key: &str) -> bool {
    matches!(key, "camclassd.labels" | "camclassd.check" | "camclassd.output" | "camclassd.crop")
}

/// A base model and its trunk, ready to embed pictures.
#[derive(Debug)]
pub struct Trunk {
    /// The base model's file, as read.
    pub base_bytes: Vec<u8>,
    pub base_sha256: String,
    /// The feature tensor's name.
    pub features: String,
    /// The trunk's session; `None` once closed ([`Trunk::close`]).
    model: Option<Model>,
    width: usize,
    pre: Preprocessor,
    input: Input,
    cache: EmbeddingCache,
}

impl Trunk {
    /// Opens `base`'s trunk with `threads` intra-op threads; the trunk file and the embedding cache live in
    /// `cache_dir`.
    pub fn open(runtime: &Runtime, base: &Path, cache_dir: &Path, threads: usize) -> Result<Trunk, TeachError> {
        let base_bytes = std::fs::read(base).map_err(|e| TeachError::Base(format!("{}: {e}", base.display())))?;
        let base_sha256 = hex(&Sha256::digest(&base_bytes));
        let meta =
            onnx_edit::metadata(&base_bytes).map_err(|e| TeachError::Base(format!("{}: {e}", base.display())))?;
        let features = meta.iter().find(|(k, _)| k == FEATURES_KEY).map(|(_, v)| v.clone()).ok_or_else(|| {
            TeachError::Base(format!(
                "{} declares no feature tensor: add the metadata {FEATURES_KEY} = <the name of its [batch, width] \
                 float tensor before the classifier> (README: \"Your own base model\")",
                base.display()
            ))
        })?;
        let trunk = onnx_edit::cut_at(&base_bytes, &features)
            .and_then(|m| onnx_edit::set_metadata(&m, trunk_drops, &[("camclassd.output", "logits")]))
            .map_err(|e| TeachError::Base(format!("{}: {e}", base.display())))?;
        // A user without a writable cache folder (no $HOME, /var/cache/camclassd not theirs) still trains:
        // in a folder of the system's temporary one, said once, without a cache that outlives the boot.
        let fallback = std::env::temp_dir().join("camclassd-teach");
        let cache_dir = match std::fs::create_dir_all(cache_dir) {
            Ok(()) => cache_dir,
            Err(e) => {
                tracing::warn!(
                    "cannot use {} for the embedding cache ({e}); using {} (set XDG_CACHE_HOME to keep it)",
                    cache_dir.display(),
                    fallback.display()
                );
                std::fs::create_dir_all(&fallback)
                    .map_err(|e| TeachError::Cache(format!("{}: {e}", fallback.display())))?;
                fallback.as_path()
            }
        };
        let key = &base_sha256[..16];
        let trunk_path = cache_dir.join(format!("trunk-{key}.onnx"));
        if std::fs::read(&trunk_path).ok().as_deref() != Some(trunk.as_slice()) {
            write_atomically(&trunk_path, &trunk)?;
        }
        let mut options = ModelOptions { threads: Some(threads), record_placement: false, ..ModelOptions::default() };
        options.overrides.crop = Some(Crop::None);
        let model = Model::load(runtime, &trunk_path, &options).map_err(|e| TeachError::Base(e.to_string()))?;
        let pre = Preprocessor::new(model.spec());
        let input = model.new_input().map_err(|e| TeachError::Base(e.to_string()))?;
        let cache = EmbeddingCache::open(cache_dir.join(format!("embeddings-{key}.bin")), model.num_classes())?;
        let width = model.num_classes();
        Ok(Trunk { base_bytes, base_sha256, features, model: Some(model), width, pre, input, cache })
    }

    /// The features' width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Drops the trunk's session (its memory goes before the taught model is written and checked); the
    /// base's bytes and names stay.
    pub fn close(&mut self) {
        self.model = None;
    }

    /// The features of a picture (its file's bytes), from the cache when it has seen them. `cached`: whether
    /// it had.
    pub fn embed(&mut self, bytes: &[u8]) -> Result<(Vec<f32>, bool), String> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(v) = self.cache.get(&key) {
            return Ok((v.to_vec(), true));
        }
        self.pre.decode(Frame::Encoded(bytes)).map_err(|e| e.to_string())?;
        self.pre.write_tensor(self.input.slot_mut(0)).map_err(|e| e.to_string())?;
        let model = self.model.as_mut().ok_or("the trunk is closed")?;
        let features = model.run(&self.input).map_err(|e| e.to_string())?.to_vec();
        if features.iter().any(|v| !v.is_finite()) {
            return Err("the base model's features for it are not numbers".into());
        }
        self.cache.put(key, &features);
        Ok((features, false))
    }

    /// Writes the embeddings computed since the last flush to the cache file.
    pub fn flush(&mut self) -> Result<(), TeachError> {
        self.cache.flush()
    }

    /// The taught model as a classifier over the trunk's recipe, for the model check.
    pub fn classifier(runtime: &Runtime, model: &Path) -> Result<Classifier, TeachError> {
        let options = ModelOptions { threads: Some(1), record_placement: false, ..ModelOptions::default() };
        Model::load(runtime, model, &options)
            .and_then(|m| Classifier::new(m, 1, 0.0))
            .map_err(|e| TeachError::Write(e.to_string()))
    }
}

/// Embeddings by picture content: `[sha256 (32 bytes)][width f32, little-endian]` records, appended.
#[derive(Debug)]
struct EmbeddingCache {
    path: PathBuf,
    width: usize,
    known: HashMap<[u8; 32], Vec<f32>>,
    pending: Vec<u8>,
}

impl EmbeddingCache {
    fn open(path: PathBuf, width: usize) -> Result<EmbeddingCache, TeachError> {
        let mut known = HashMap::new();
        let record = 32 + 4 * width;
        if let Ok(bytes) = std::fs::read(&path) {
            // A record cut short (a write interrupted) ends what is read; the rest is embedded again.
            for chunk in bytes.chunks_exact(record) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&chunk[..32]);
                let values =
                    chunk[32..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                known.insert(key, values);
            }
            if bytes.len() % record != 0 {
                let whole = bytes.len() - bytes.len() % record;
                std::fs::write(&path, &bytes[..whole])
                    .map_err(|e| TeachError::Cache(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(EmbeddingCache { path, width, known, pending: Vec::new() })
    }

    fn get(&self, key: &[u8; 32]) -> Option<&[f32]> {
        self.known.get(key).map(Vec::as_slice).filter(|v| v.len() == self.width)
    }

    fn put(&mut self, key: [u8; 32], values: &[f32]) {
        self.pending.extend_from_slice(&key);
        for v in values {
            self.pending.extend_from_slice(&v.to_le_bytes());
        }
        self.known.insert(key, values.to_vec());
    }

    fn flush(&mut self) -> Result<(), TeachError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let fail = |e: std::io::Error| TeachError::Cache(format!("{}: {e}", self.path.display()));
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(fail)?;
        file.write_all(&self.pending).map_err(fail)?;
        self.pending.clear();
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TeachError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TeachError::Write(format!("{}: {e}", path.display()))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
