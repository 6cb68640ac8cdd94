//! A Hugging Face model folder: config, spec and weights together.

use super::reader::Checkpoint;
use crate::arch::{self, ModelSpec};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// An opened model folder: its config.json, the [`ModelSpec`] built from it, and its weights.
#[derive(Debug)]
pub struct ModelDir {
    /// The folder.
    pub root: PathBuf,
    /// config.json as parsed JSON (kept whole so it can be copied and patched).
    pub config: serde_json::Value,
    /// What scalpel knows about the model.
    pub spec: ModelSpec,
    /// The memory-mapped weights.
    pub checkpoint: Checkpoint,
}

impl ModelDir {
    /// Open a model folder: parse config.json, build the spec, open and validate the weights,
    /// and check that the embedding and every layer's writers are present.
    pub fn open(root: &Path) -> Result<ModelDir> {
        if !root.is_dir() {
            return Err(Error::Invalid(format!("{} is not a model folder", root.display())));
        }
        let config_path = root.join("config.json");
        let text = super::read_capped(&config_path, super::JSON_CAP)?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: config_path.clone(), source })?;
        let mut spec = arch::spec_from_config(&config, &config_path)?;
        let checkpoint = Checkpoint::open(root)?;
        // config.json does not say whether the experts are stored one by one or stacked.
        spec.detect_expert_storage(|name| checkpoint.contains(name));
        let model = ModelDir { root: root.to_path_buf(), config, spec, checkpoint };
        model.check_writers_present()?;
        super::check_shapes(&model)?;
        let unused = super::unused_tensors(&model);
        if !unused.is_empty() {
            tracing::warn!(
                "{}: {} tensor(s) that config.json ({}) does not use: {}",
                root.display(),
                unused.len(),
                model.spec.family,
                unused.join(", ")
            );
        }
        Ok(model)
    }

    fn check_writers_present(&self) -> Result<()> {
        let layers: Vec<usize> = (0..self.spec.num_layers).collect();
        for writer in self.spec.writers(&layers, &arch::WriterKind::ALL) {
            for name in std::iter::once(&writer.weight).chain(&writer.bias).chain(&writer.post_norm) {
                if !self.checkpoint.contains(name) {
                    return Err(Error::MissingTensor { name: name.clone(), path: self.root.clone() });
                }
            }
        }
        Ok(())
    }

    /// Whether the output head is the embedding matrix (configured tied, or no head tensor stored).
    pub fn head_is_tied(&self) -> bool {
        self.spec.tie_word_embeddings || !self.checkpoint.contains(&self.spec.lm_head_name())
    }

    /// The model's `tokenizer.json`, if present.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        Some(self.root.join("tokenizer.json")).filter(|p| p.is_file())
    }

    /// Parameter count (elements of every stored tensor).
    pub fn parameter_count(&self) -> u64 {
        self.checkpoint.names().iter().filter_map(|n| self.checkpoint.tensor(n).ok()).map(|t| t.numel() as u64).sum()
    }
}
