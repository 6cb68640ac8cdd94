//! The search as one step, shared by `scalpel search` and `scalpel run`: from a probe's output
//! folder (or directions file) to a finished search folder with its report.

use super::objective::Validation;
use super::report::write_search_report;
use super::run::{run_search, SearchInputs, SearchOutcome, SearchSettings};
use super::space::{SearchSpace, TrialParams};
use crate::checkpoint::ModelDir;
use crate::directions::DirectionsFile;
use crate::model::Decoder;
use crate::probe::default_candidates;
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use indicatif::ProgressBar;
use std::path::Path;

/// Run a search from the probe's `directions` (its `metrics.json` beside it, when present,
/// gives the candidate layers and each ranking's pick as starting trials) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn search_step(
    decoder: &Decoder,
    model: &ModelDir,
    encoder: &PromptEncoder,
    directions_path: &Path,
    validation: &Validation,
    settings: &SearchSettings,
    out: &Path,
    progress: &ProgressBar,
) -> Result<SearchOutcome> {
    let directions = DirectionsFile::load(directions_path)?;
    let n = model.spec.num_layers;
    let metrics = directions_path.parent().map(|d| d.join("metrics.json")).and_then(|p| std::fs::read(p).ok());
    let metrics: Option<serde_json::Value> = metrics.and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let candidates: Vec<usize> = metrics
        .as_ref()
        .and_then(|m| serde_json::from_value(m["candidates"].clone()).ok())
        .filter(|c: &Vec<usize>| !c.is_empty())
        .unwrap_or_else(|| default_candidates(n));
    let space = SearchSpace::new(&directions, n, &candidates)?;
    let starts = starting_trials(&space, &directions, metrics.as_ref());
    if validation.harmful.is_empty() || validation.harmless.is_empty() {
        return Err(Error::Invalid("the search needs harmful and harmless validation prompts".into()));
    }
    let inputs = SearchInputs { decoder, model, encoder, directions: &directions, space, starts, validation };
    let outcome = run_search(&inputs, settings, out, progress)?;
    write_search_report(out, &outcome, settings.target_refusal_rate)?;
    Ok(outcome)
}

/// The starting trials: the probe's recommendation, then each ranking's pick of the same
/// stream, each at full strength on every writer (the edit the research note's recipe makes),
/// without repeats.
pub fn starting_trials(
    space: &SearchSpace,
    directions: &DirectionsFile,
    metrics: Option<&serde_json::Value>,
) -> Vec<(String, TrialParams)> {
    let mut picks: Vec<(String, String, usize)> = Vec::new();
    let recommended = directions.recommended();
    if let Some((stream, layer)) = &recommended {
        picks.push(("probe's recommendation".into(), stream.clone(), *layer));
    }
    let rankings = metrics.and_then(|m| m["rankings"].as_array()).cloned().unwrap_or_default();
    for entry in rankings {
        let (Some(stream), Some(rule)) = (entry[0].as_str(), entry[1]["rule"].as_str()) else { continue };
        if recommended.as_ref().is_some_and(|(s, _)| s != stream) {
            continue;
        }
        if let Some(layer) = entry[1]["order"][0][0].as_u64() {
            picks.push((format!("{rule} pick of {stream}"), stream.to_string(), layer as usize));
        }
    }
    let mut starts: Vec<(String, TrialParams)> = Vec::new();
    for (origin, stream, layer) in picks {
        let params = space.full_strength(&stream, layer);
        if !starts.iter().any(|(_, p)| *p == params) {
            starts.push((origin, params));
        }
    }
    starts
}

/// A search trial ready to be written: its directions file, its surgery, and its record.
#[derive(Debug, Clone)]
pub struct TrialEdit {
    /// The search folder's directions file (holding `trial.N`).
    pub directions: DirectionsFile,
    /// The trial's surgery.
    pub options: crate::surgery::SurgeryOptions,
    /// The trial (parameters, scores, answers).
    pub trial: super::store::TrialRecord,
}

/// Trial `number` of the search in `dir` (None: the chosen one, `chosen.json`), for `ablate --trial`.
pub fn trial_edit(dir: &Path, number: Option<usize>, num_layers: usize) -> Result<TrialEdit> {
    let trial = match number {
        None => chosen_trial(dir)?,
        Some(number) => {
            let mut trials = super::store::load_trials(dir)?;
            if number >= trials.len() {
                let held = trials.len();
                return Err(Error::Invalid(format!("{} has no trial {number} (it holds {held})", dir.display())));
            }
            trials.swap_remove(number)
        }
    };
    let number = trial.number;
    let directions = DirectionsFile::load(&dir.join("directions.safetensors"))?;
    let name = super::run::trial_direction_name(number);
    let options = trial.params.surgery_options(num_layers, &name);
    Ok(TrialEdit { directions, options, trial })
}

impl TrialEdit {
    /// What the edit record and the model card keep of the trial: where it comes from, its
    /// parameters and its scores.
    pub fn summary(&self, search_dir: &Path) -> serde_json::Value {
        serde_json::json!({
            "search": search_dir.display().to_string(),
            "number": self.trial.number,
            "params": self.trial.params,
            "scores": self.trial.scores,
        })
    }
}

/// The chosen trial of the finished search in `dir` (`chosen.json`).
pub fn chosen_trial(dir: &Path) -> Result<super::store::TrialRecord> {
    let path = dir.join(super::report::CHOSEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Parse `DIR[:N]` (a search folder and an optional trial number).
pub fn parse_trial_ref(text: &str) -> (std::path::PathBuf, Option<usize>) {
    match text.rsplit_once(':') {
        Some((dir, n)) if n.parse::<usize>().is_ok() => (dir.into(), n.parse().ok()),
        _ => (text.into(), None),
    }
}
