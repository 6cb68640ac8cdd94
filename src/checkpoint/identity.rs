//! What an output records of its inputs: a name, a size and a cheap content hash, and the
//! local path only when the user asks for it, so that a published checkpoint does not carry
//! the folder layout of the machine that made it, yet a reader can still tell whether a model
//! or file it is given is the one that was used.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much of each end of a large file the hashes read.
const SAMPLE: u64 = 1 << 20;

/// One input of an output: a model folder or a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// The folder's or file's name (a hub model: `owner/name`).
    pub name: String,
    /// Bytes: a file's size; a model's weight files together.
    pub bytes: u64,
    /// [`model_hash`] of a model folder, [`file_hash`] of a file.
    pub hash: String,
    /// The absolute local path, only when asked for (`--record-paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl InputRecord {
    /// The record of the model folder `root` (its path only with `with_path`).
    pub fn of_model(root: &Path, with_path: bool) -> Result<InputRecord> {
        Ok(InputRecord {
            name: display_name(root),
            bytes: weight_files(root)?.iter().map(|(_, size)| size).sum(),
            hash: model_hash(root)?,
            path: with_path.then(|| absolute(root)).transpose()?,
        })
    }

    /// The record of the file `path` (its path only with `with_path`).
    pub fn of_file(path: &Path, with_path: bool) -> Result<InputRecord> {
        Ok(InputRecord {
            name: file_name(path),
            bytes: std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len(),
            hash: file_hash(path)?,
            path: with_path.then(|| absolute(path)).transpose()?,
        })
    }

    /// Check that the model folder `root` is the one recorded (same weight bytes and hash; the
    /// name may differ, a copy is as good as the original).
    pub fn check_model(&self, root: &Path, role: &str) -> Result<()> {
        self.check(&InputRecord::of_model(root, false)?, root, role)
    }

    /// Check that the file `path` is the one recorded (same size and hash).
    pub fn check_file(&self, path: &Path, role: &str) -> Result<()> {
        self.check(&InputRecord::of_file(path, false)?, path, role)
    }

    fn check(&self, found: &InputRecord, path: &Path, role: &str) -> Result<()> {
        if found.bytes == self.bytes && found.hash == self.hash {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{} is not the {role} the edit record names: it records `{}` ({} bytes, hash {}), this is `{}` ({} bytes, hash {})",
            path.display(),
            self.name,
            self.bytes,
            self.hash,
            found.name,
            found.bytes,
            found.hash
        )))
    }
}

/// A hash that identifies a model folder's contents: `config.json`, `tokenizer.json`, and for
/// every `.safetensors` file its name, size and first and last MiB (the header and a sample of
/// the weights), so that an edited copy hashes differently without reading gigabytes.
pub fn model_hash(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for name in ["config.json", "tokenizer.json"] {
        let path = dir.join(name);
        if path.is_file() {
            h.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        h.update([0]);
    }
    for (path, size) in weight_files(dir)? {
        h.update(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        h.update(size.to_le_bytes());
        h.update(ends(&path, size)?);
    }
    Ok(short(h))
}

/// A hash of a file: its size and its first and last MiB (the whole of a file up to 2 MiB).
pub fn file_hash(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    h.update(ends(path, size)?);
    Ok(short(h))
}

/// The name a model folder is known by: `owner/name` for a Hugging Face cache snapshot
/// (`…/models--owner--name/snapshots/REV`), else the folder's own name.
pub fn display_name(root: &Path) -> String {
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let parent = real.parent();
    let hub = parent
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .and_then(|p| p.file_name()?.to_str()?.strip_prefix("models--").map(|id| id.replacen("--", "/", 1)));
    hub.unwrap_or_else(|| file_name(&real))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

fn absolute(path: &Path) -> Result<String> {
    std::fs::canonicalize(path).map(|p| p.display().to_string()).map_err(|e| Error::io(path, e))
}

/// The `.safetensors` files of `dir` with their sizes, sorted by path.
fn weight_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::metadata(&p).map(|m| (p.clone(), m.len())).map_err(|e| Error::io(&p, e)))
        .collect()
}

/// The first and last [`SAMPLE`] bytes of a file of `size` bytes (overlapping for small files,
/// as the original judge hash reads them).
fn ends(path: &Path, size: u64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    (&mut f).take(SAMPLE).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(size.saturating_sub(SAMPLE))).map_err(|e| Error::io(path, e))?;
    f.take(SAMPLE).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

fn short(h: Sha256) -> String {
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_snapshot_is_named_by_its_id_and_a_folder_by_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("models--owner--some--name").join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        assert_eq!(display_name(&snap), "owner/some--name");
        let plain = tmp.path().join("my-model");
        std::fs::create_dir_all(&plain).unwrap();
        assert_eq!(display_name(&plain), "my-model");
    }

    #[test]
    fn a_changed_byte_at_either_end_changes_the_file_hash_and_fails_the_check() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.bin");
        let bytes: Vec<u8> = (0..3 * SAMPLE as usize).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let record = InputRecord::of_file(&path, false).unwrap();
        assert_eq!(record.path, None);
        assert!(record.check_file(&path, "file").is_ok());
        for at in [0, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            std::fs::write(&path, &changed).unwrap();
            let err = record.check_file(&path, "directions file").unwrap_err().to_string();
            assert!(err.contains("is not the directions file the edit record names"), "{err}");
        }
        let with_path = InputRecord::of_file(&path, true).unwrap();
        assert!(with_path.path.is_some_and(|p| Path::new(&p).is_absolute()));
    }
}
