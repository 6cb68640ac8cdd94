//! Output folders written atomically: into a temporary folder beside the target, renamed at the end.
//!
//! Every folder scalpel writes carries a small stamp, [`MARKER_FILE`]; `force` replaces only a
//! folder that has one (or an edit record), and never the current folder, a home folder, a git
//! work tree or a folder that holds an input. A staging folder's stamp names the process that
//! made it, so a later run can remove the staging folders of processes that died.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The stamp file in every folder scalpel writes.
pub const MARKER_FILE: &str = ".scalpel";

/// Files that prove a folder was written by scalpel: the stamp, or (for folders written before
/// the stamp existed) an edit record or the stamps of `scalpel run`.
const OWNERSHIP_FILES: [&str; 3] = [MARKER_FILE, "scalpel_edit.json", ".scalpel-steps.json"];

const STAGING_PREFIX: &str = ".scalpel-tmp-";
const OLD_PREFIX: &str = ".scalpel-old-";

/// Staging folders of this process that are not committed yet (removed on a signal).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary folder that becomes the output folder on [`StagedOutput::commit`].
///
/// Dropped without committing, it is removed, so a failed run leaves nothing behind.
#[derive(Debug)]
pub struct StagedOutput {
    target: PathBuf,
    temp: Option<tempfile::TempDir>,
    force: bool,
}

impl StagedOutput {
    /// Prepare to write `target`. Refuses when `target` overlaps one of `inputs` (files or
    /// folders: it is one, holds one, or lies inside one), or already exists and `force` is
    /// false, or exists and is not a folder scalpel wrote (see [`replaceable`]).
    pub fn new(target: &Path, inputs: &[&Path], force: bool) -> Result<StagedOutput> {
        let absolute = absolute(target)?;
        check_overlap(target, inputs)?;
        if exists(&absolute) {
            if !force {
                return Err(Error::Invalid(format!(
                    "output folder {} already exists; pass --force to replace it",
                    target.display()
                )));
            }
            replaceable(&absolute, target)?;
        }
        let parent =
            absolute.parent().ok_or_else(|| Error::Invalid(format!("{} has no parent folder", target.display())))?;
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        remove_stale_staging(parent);
        let temp =
            tempfile::Builder::new().prefix(STAGING_PREFIX).tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        write_marker(temp.path())?;
        fix_folder_mode(temp.path());
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(temp.path().to_path_buf());
        Ok(StagedOutput { target: absolute, temp: Some(temp), force })
    }

    /// The temporary folder to write into.
    pub fn path(&self) -> &Path {
        self.temp.as_ref().expect("present until commit").path()
    }

    /// The final folder.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Move the finished folder into place (replacing an existing one only with `force`, and
    /// only one scalpel wrote).
    ///
    /// Every file is synced to disk first and the parent folder after the rename, so a crash
    /// leaves either no output or a complete one. (Syncing once here, rather than per file as it
    /// is written, lets the kernel write earlier shards back while later ones are computed.)
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_files(self.path())?;
        let parent = self.target.parent().map(Path::to_path_buf);
        let mut old = None;
        if exists(&self.target) {
            if !self.force {
                return Err(Error::Invalid(format!(
                    "{} appeared while writing; not replacing it",
                    self.target.display()
                )));
            }
            replaceable(&self.target, &self.target)?;
            // Moved aside first, so the target is never missing while the new one is not ready.
            let aside = parent.as_deref().unwrap_or(Path::new(".")).join(format!("{OLD_PREFIX}{}", std::process::id()));
            std::fs::rename(&self.target, &aside).map_err(|e| Error::io(&self.target, e))?;
            old = Some(aside);
        }
        let temp = self.temp.take().expect("present until commit").keep();
        forget_live(&temp);
        if let Err(e) = std::fs::rename(&temp, &self.target) {
            if let Some(aside) = &old {
                let _ = std::fs::rename(aside, &self.target);
            }
            let _ = std::fs::remove_dir_all(&temp);
            return Err(Error::io(&self.target, e));
        }
        if let Some(aside) = old {
            std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        if let Some(parent) = parent {
            sync_folder(&parent)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for StagedOutput {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            forget_live(temp.path());
        }
    }
}

fn forget_live(path: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != path);
}

/// Refuse an output `target` that overlaps one of `inputs` (files or folders): it is one,
/// holds one, or lies inside one.
pub fn check_overlap(target: &Path, inputs: &[&Path]) -> Result<()> {
    let absolute = absolute(target)?;
    for input in inputs {
        let input = absolute_existing(input)?;
        if absolute.starts_with(&input) || input.starts_with(&absolute) {
            return Err(Error::Invalid(format!(
                "output folder {} overlaps the input {}; scalpel never modifies its input — choose another --out",
                target.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Remove the staging folders this process has not committed (for a signal handler: the
/// process is about to exit, and `Drop` will not run).
pub fn remove_live_staging() {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for path in live {
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Whether scalpel may replace the existing `path` (`shown`: the name the user gave): a folder
/// holding scalpel's stamp or edit record that is not the current folder or one above it, not a
/// home folder and not a git work tree.
pub fn replaceable(path: &Path, shown: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::Invalid(format!(
            "refusing to replace {}: {why}; scalpel replaces only folders it wrote — remove it yourself or choose another --out",
            shown.display()
        )))
    };
    let real = absolute_existing(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if cwd.starts_with(&real) {
            return refuse("it is the current folder or holds it");
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).and_then(|h| std::fs::canonicalize(h).ok());
    if home.is_some_and(|h| h.starts_with(&real)) {
        return refuse("it is a home folder or holds one");
    }
    if !real.is_dir() {
        return refuse("it is not a folder");
    }
    if real.join(".git").exists() {
        return refuse("it is a git work tree");
    }
    if !written_by_scalpel(&real) {
        return refuse(&format!("it has no {MARKER_FILE} stamp, so scalpel did not write it"));
    }
    Ok(())
}

/// Whether `dir` holds scalpel's stamp or edit record.
pub fn written_by_scalpel(dir: &Path) -> bool {
    OWNERSHIP_FILES.iter().any(|f| dir.join(f).is_file())
}

/// Write the stamp into a folder scalpel is creating: the version and the process that made it.
pub fn write_marker(dir: &Path) -> Result<()> {
    let path = dir.join(MARKER_FILE);
    let text = serde_json::json!({
        "written_by": format!("scalpel {}", env!("CARGO_PKG_VERSION")),
        "pid": std::process::id(),
    });
    std::fs::write(&path, format!("{text:#}\n")).map_err(|e| Error::io(&path, e))
}

/// Remove `.scalpel-tmp-*` folders in `parent` whose stamp names a process that no longer runs
/// (left by a run that was killed). Folders without a readable stamp are left alone.
pub fn remove_stale_staging(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = entry.path();
        let pid = std::fs::read_to_string(path.join(MARKER_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64());
        if let Some(pid) = pid {
            if pid != u64::from(std::process::id()) && process_gone(pid) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Whether no process `pid` runs (answered only where it can be known: Linux's /proc).
fn process_gone(pid: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
}

/// tempfile creates folders 0700; outputs follow the umask like every other folder.
fn fix_folder_mode(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let probe = dir.join(".scalpel-mode");
        // The mode a new folder gets under the current umask.
        if std::fs::create_dir(&probe).is_ok() {
            if let Ok(meta) = std::fs::metadata(&probe) {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.permissions().mode()));
            }
            let _ = std::fs::remove_dir(&probe);
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
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
