//! `DIR/trials.jsonl`: one finished trial per line, appended and synced as each trial ends,
//! so that a stopped search resumes where it stopped. Stage-2 measurements
//! ([`super::FinalRecord`], `"stage": 2`) are lines of the same file.

use super::finals::FinalRecord;
use super::objective::{Scores, ShortAnswer};
use super::prune::Pruned;
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
    /// Set when the trial was stopped early (its scores are then partial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<Pruned>,
}

impl TrialRecord {
    /// Whether every score was measured (the trial was not pruned).
    pub fn complete(&self) -> bool {
        self.pruned.is_none()
    }
}

/// Every trial recorded in `dir` (none when the file does not exist). A last line cut short by
/// a crash is dropped; any other unreadable line is an error naming it.
pub fn load_trials(dir: &Path) -> Result<Vec<TrialRecord>> {
    Ok(load_all(dir)?.0)
}

/// Every stage-2 measurement recorded in `dir`, in the order they were made.
pub fn load_finals(dir: &Path) -> Result<Vec<FinalRecord>> {
    Ok(load_all(dir)?.1)
}

fn load_all(dir: &Path) -> Result<(Vec<TrialRecord>, Vec<FinalRecord>)> {
    let path = dir.join(TRIALS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut trials = Vec::with_capacity(lines.len());
    let mut finals = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let parsed = serde_json::from_str::<serde_json::Value>(line);
        if let Ok(value) = &parsed {
            if value.get("stage").and_then(serde_json::Value::as_u64) == Some(2) {
                let f = serde_json::from_value(value.clone())
                    .map_err(|e| Error::Invalid(format!("{}: line {}: {e}", path.display(), i + 1)))?;
                finals.push(f);
                continue;
            }
        }
        match parsed.and_then(serde_json::from_value::<TrialRecord>) {
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
    Ok((trials, finals))
}

/// Append `trial` to `dir/trials.jsonl` and sync it to disk.
pub fn append_trial(dir: &Path, trial: &TrialRecord) -> Result<()> {
    append_line(dir, trial)
}

/// Append a stage-2 measurement to `dir/trials.jsonl` and sync it to disk.
pub fn append_final(dir: &Path, record: &FinalRecord) -> Result<()> {
    append_line(dir, record)
}

fn append_line(dir: &Path, value: &impl Serialize) -> Result<()> {
    let path = dir.join(TRIALS_FILE);
    let line = serde_json::to_string(value).map_err(|e| Error::Other(e.to_string()))?;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{line}").and_then(|()| file.sync_data()).map_err(|e| Error::io(&path, e))
}
