//! `DIR/trials.jsonl`: one finished trial per line, appended and synced as each trial ends,
//! so that a stopped search resumes where it stopped.

use super::objective::{Scores, ShortAnswer};
use super::space::TrialParams;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The trials file's name.
pub const TRIALS_FILE: &str = "trials.jsonl";

/// One finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Its number (0-based, in the order trials ran).
    pub number: usize,
    /// Where its parameters came from (`start: …`, `random`, `tpe`).
    pub origin: String,
    /// The edit.
    pub params: TrialParams,
    /// What it measured.
    pub scores: Scores,
    /// The short answers it was scored on.
    pub answers: Vec<ShortAnswer>,
}

/// Every trial recorded in `dir` (none when the file does not exist). A last line cut short by
/// a crash is dropped; any other unreadable line is an error naming it.
pub fn load_trials(dir: &Path) -> Result<Vec<TrialRecord>> {
    let path = dir.join(TRIALS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut trials = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<TrialRecord>(line) {
            Ok(t) if t.number == trials.len() => trials.push(t),
            Ok(t) => {
                return Err(Error::Invalid(format!(
                    "{}: line {} holds trial {} where trial {} was expected",
                    path.display(),
                    i + 1,
                    t.number,
                    trials.len()
                )))
            }
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                // Cut the torn line off so that the next append starts on a line of its own.
                let keep = text.rfind('\n').map_or(0, |p| p + 1) as u64;
                let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| Error::io(&path, e))?;
                file.set_len(keep).map_err(|e| Error::io(&path, e))?;
                break;
            }
            Err(e) => return Err(Error::Invalid(format!("{}: line {}: {e}", path.display(), i + 1))),
        }
    }
    Ok(trials)
}

/// Append `trial` to `dir/trials.jsonl` and sync it to disk.
pub fn append_trial(dir: &Path, trial: &TrialRecord) -> Result<()> {
    let path = dir.join(TRIALS_FILE);
    let line = serde_json::to_string(trial).map_err(|e| Error::Other(e.to_string()))?;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{line}").and_then(|()| file.sync_data()).map_err(|e| Error::io(&path, e))
}
