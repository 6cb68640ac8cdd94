//! Output folders written atomically: into a temporary folder beside the target, renamed at the end.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A temporary folder that becomes the output folder on [`StagedOutput::commit`].
///
/// Dropped without committing, it is removed, so a failed run leaves nothing behind.
#[derive(Debug)]
pub struct StagedOutput {
    target: PathBuf,
    temp: tempfile::TempDir,
    force: bool,
}

impl StagedOutput {
    /// Prepare to write `target`. Refuses when `target` is (or is inside) one of `inputs`,
    /// or already exists and `force` is false.
    pub fn new(target: &Path, inputs: &[&Path], force: bool) -> Result<StagedOutput> {
        let absolute = absolute(target)?;
        for input in inputs {
            let input = absolute_existing(input)?;
            if absolute.starts_with(&input) || input.starts_with(&absolute) {
                return Err(Error::Invalid(format!(
                    "output folder {} overlaps the input folder {}; scalpel never modifies its input — choose another --out",
                    target.display(),
                    input.display()
                )));
            }
        }
        if absolute.exists() && !force {
            return Err(Error::Invalid(format!(
                "output folder {} already exists; pass --force to replace it",
                target.display()
            )));
        }
        let parent =
            absolute.parent().ok_or_else(|| Error::Invalid(format!("{} has no parent folder", target.display())))?;
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let temp =
            tempfile::Builder::new().prefix(".scalpel-tmp-").tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        Ok(StagedOutput { target: absolute, temp, force })
    }

    /// The temporary folder to write into.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// The final folder.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Move the finished folder into place (replacing an existing one only with `force`).
    ///
    /// Every file is synced to disk first and the parent folder after the rename, so a crash
    /// leaves either no output or a complete one. (Syncing once here, rather than per file as it
    /// is written, lets the kernel write earlier shards back while later ones are computed.)
    pub fn commit(self) -> Result<PathBuf> {
        sync_files(self.temp.path())?;
        if self.target.exists() {
            if !self.force {
                return Err(Error::Invalid(format!(
                    "{} appeared while writing; not replacing it",
                    self.target.display()
                )));
            }
            if self.target.is_dir() {
                std::fs::remove_dir_all(&self.target).map_err(|e| Error::io(&self.target, e))?;
            } else {
                std::fs::remove_file(&self.target).map_err(|e| Error::io(&self.target, e))?;
            }
        }
        let temp = self.temp.keep();
        std::fs::rename(&temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        if let Some(parent) = self.target.parent() {
            sync_folder(parent)?;
        }
        Ok(self.target)
    }
}

/// `fsync` every regular file in `dir` (not recursive: outputs are flat) and `dir` itself.
fn sync_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_folder(dir)
}

/// `fsync` a folder so renames and new entries in it are durable (a no-op where folders cannot
/// be opened, as on Windows).
fn sync_folder(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        return absolute_existing(path);
    }
    let base = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    // Resolve symlinks in the existing part so overlap checks compare real paths.
    match (base.parent(), base.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => Ok(absolute_existing(parent)?.join(name)),
        _ => Ok(base),
    }
}

fn absolute_existing(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io(path, e))
}
