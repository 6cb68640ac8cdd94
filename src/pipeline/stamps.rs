//! Resume stamps: a step is up to date when its output exists and the hash of everything it
//! depends on (recipe sections, and the model files' identity) is the one recorded.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The stamps file of a run's output folder.
pub const STAMPS: &str = ".scalpel-steps.json";

/// A short hash of the JSON of every part; a part that cannot be serialized is an error.
pub fn hash_of(parts: &[serde_json::Value]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.to_string().as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A value's JSON for [`hash_of`].
pub fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Other(format!("hashing the recipe: {e}")))
}

/// The identity of a model folder's files: name, size, modification time (ns) and inode of
/// every regular file at its top level (weights, index, config, tokenizer). Re-importing or
/// replacing a model at the same path changes it; a file that cannot be read is an error.
pub fn model_identity(root: &Path) -> Result<serde_json::Value> {
    let mut files = BTreeMap::new();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().map_err(|e| Error::io(&path, e))?;
        let ns = modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0u64;
        files.insert(entry.file_name().to_string_lossy().into_owned(), (meta.len(), ns.to_string(), inode));
    }
    if files.is_empty() {
        return Err(Error::Invalid(format!("{} holds no files", root.display())));
    }
    json(&files)
}

/// The stamps of one output folder.
pub struct Stamps {
    path: PathBuf,
    map: BTreeMap<String, String>,
}

impl Stamps {
    /// Read the stamps of `out` (none if the file is missing or unreadable).
    pub fn load(out: &Path) -> Stamps {
        let path = out.join(STAMPS);
        let map = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Stamps { path, map }
    }

    /// Whether `step` is up to date: `output` exists and its recorded hash is `hash`.
    pub fn fresh(&self, step: &str, hash: &str, output: &Path) -> bool {
        output.exists() && self.map.get(step).is_some_and(|h| h == hash)
    }

    /// Whether the stamps record `step` as the writer of its output (it ran, or started to).
    pub fn owns(&self, step: &str) -> bool {
        self.map.contains_key(step)
    }

    /// Record that `step` is about to write its output (no hash yet: not up to date), so that
    /// an output it leaves behind when interrupted is still known to be its own.
    pub fn claim(&mut self, step: &str) -> Result<()> {
        if self.owns(step) {
            return Ok(());
        }
        self.set(step, "")
    }

    /// Record that `step` ran with `hash`.
    pub fn set(&mut self, step: &str, hash: &str) -> Result<()> {
        self.map.insert(step.to_string(), hash.to_string());
        let text = serde_json::to_string_pretty(&self.map).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&self.path, text).map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_when_a_file_is_replaced_and_fails_on_a_missing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), b"one").unwrap();
        let a = model_identity(tmp.path()).unwrap();
        assert_eq!(a, model_identity(tmp.path()).unwrap());
        let staged = tmp.path().join("new");
        std::fs::write(&staged, b"two").unwrap();
        std::fs::rename(&staged, tmp.path().join("model.safetensors")).unwrap();
        assert_ne!(a, model_identity(tmp.path()).unwrap(), "same size and name, another file");
        assert!(model_identity(&tmp.path().join("missing")).is_err());
        assert_ne!(hash_of(std::slice::from_ref(&a)), hash_of(&[a, serde_json::Value::Null]));
    }
}
