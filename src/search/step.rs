//! The search as one step, shared by `scalpel search` and `scalpel run`: from a probe's output
//! folder (or directions file) to a finished search folder with its report.

use super::objective::Validation;
use super::report::write_search_report;
use super::run::{run_search, SearchInputs, SearchOutcome, SearchSettings};
use super::space::{SearchSpace, TrialParams};
use crate::checkpoint::ModelDir;
use crate::directions::DirectionsFile;
use crate::eval::Judge;
use crate::model::Decoder;
use crate::probe::default_candidates;
use crate::progress::Progress;
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use std::path::Path;

/// Run a search from the probe's `directions` (its `metrics.json` beside it, when present,
/// gives the candidate layers and each ranking's pick as starting trials) into `out`; stage 2
/// judges its finalists with `judge`.
#[allow(clippy::too_many_arguments)]
pub fn search_step(
    decoder: &Decoder,
    model: &ModelDir,
    encoder: &PromptEncoder,
    directions_path: &Path,
    validation: &Validation,
    settings: &SearchSettings,
    judge: &dyn Judge,
    out: &Path,
    progress: &dyn Progress,
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
    let space =
        SearchSpace::new(&directions, n, &candidates)?.with_experts(&settings.experts, model.spec.moe.is_some())?;
    let starts = starting_trials(&space, &directions, metrics.as_ref());
    if validation.harmful.is_empty() || validation.harmless.is_empty() {
        return Err(Error::Invalid("the search needs harmful and harmless validation prompts".into()));
    }
    let inputs = SearchInputs { decoder, model, encoder, directions: &directions, space, starts, validation };
    let outcome = run_search(&inputs, settings, judge, out, progress)?;
    write_search_report(out, &outcome, &settings.goal())?;
    Ok(outcome)
}

/// Layers of the starting sweep: the edits a person tries by hand (one layer's direction at
/// full strength on every writer), at this many layers evenly spread over the direction range.
pub const LAYER_SWEEP: usize = 8;

/// The starting trials, each at full strength on every writer (the edit the research note's
/// recipe makes): the probe's recommendation, each ranking's pick of the same stream, then a
/// sweep of [`LAYER_SWEEP`] layers evenly spread over the direction range — so the search
/// measures the hand-picked edits first and the sampler starts from the best of them; without
/// repeats.
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
    let stream = recommended.map_or_else(|| space.streams[0].clone(), |(s, _)| s);
    for layer in sweep_layers(space.direction_layers, LAYER_SWEEP) {
        picks.push((format!("layer sweep of {stream}"), stream.clone(), layer));
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

/// `count` integer layers evenly spread over `[lo, hi]`, both ends included, without repeats.
fn sweep_layers((lo, hi): (f64, f64), count: usize) -> Vec<usize> {
    let mut layers: Vec<usize> = (0..count)
        .map(|i| if count > 1 { lo + (hi - lo) * i as f64 / (count - 1) as f64 } else { (lo + hi) / 2.0 })
        .map(|x| x.round().max(0.0) as usize)
        .collect();
    layers.dedup();
    layers
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directions::Direction;
    use std::collections::BTreeMap;

    fn probe_directions(layers: usize) -> DirectionsFile {
        let entries = (0..layers)
            .map(|l| {
                let name = crate::directions::entry_name("resid_pre", l);
                let mut row = vec![0.0f32; 4];
                row[l % 4] = 1.0;
                (name.clone(), Direction { name, rows: vec![row] })
            })
            .collect();
        let metadata = BTreeMap::from([
            ("recommended_layer".to_string(), "6".to_string()),
            ("recommended_stream".to_string(), "resid_pre".to_string()),
        ]);
        DirectionsFile { path: "probe/directions.safetensors".into(), entries, metadata }
    }

    #[test]
    fn the_sweep_spreads_over_the_range_with_both_ends() {
        assert_eq!(sweep_layers((4.0, 19.0), 8), [4, 6, 8, 10, 13, 15, 17, 19]);
        assert_eq!(sweep_layers((2.0, 4.0), 8), [2, 3, 4]);
        assert_eq!(sweep_layers((3.0, 3.0), 8), [3]);
        assert_eq!(sweep_layers((3.0, 9.0), 1), [6]);
    }

    #[test]
    fn starting_trials_are_the_picks_then_the_sweep_at_full_strength_without_repeats() {
        let directions = probe_directions(12);
        let candidates: Vec<usize> = (2..=9).collect();
        let space = SearchSpace::new(&directions, 12, &candidates).unwrap();
        let metrics = serde_json::json!({
            "rankings": [["resid_pre", {"rule": "mean-similarity", "order": [[5, 0.9]]}],
                         ["resid_mid", {"rule": "max-norm", "order": [[7, 0.9]]}]]
        });
        let starts = starting_trials(&space, &directions, Some(&metrics));
        let layers: Vec<f64> = starts.iter().map(|(_, p)| p.direction_layer).collect();
        // Recommendation 6, the resid_pre ranking's 5 (resid_mid's pick is another stream), then
        // the sweep 2..=9 less the repeated 5 and 6.
        assert_eq!(layers, [6.0, 5.0, 2.0, 3.0, 4.0, 7.0, 8.0, 9.0]);
        assert_eq!(starts[0].0, "probe's recommendation");
        assert!(starts[2].0.starts_with("layer sweep"));
        for (_, p) in &starts {
            assert_eq!(*p, space.full_strength("resid_pre", p.direction_layer as usize));
        }
    }
}
