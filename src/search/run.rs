//! The search loop: start-up trials, then TPE; each trial edits the running model in memory,
//! measures it, and is appended to `trials.jsonl`.

use super::finals::{full_answers, run_stage2, FullAnswers, Stage2, Stage2Inputs};
use super::objective::{measure, AnswerSettings, Measurement, Scores, Validation, DEFAULT_ANSWERED_HARMLESS};
use super::pareto::Point;
use super::prune::{measure_trial, ModelScorer, PruneBounds, TrialMeasurement};
use super::space::{SearchSpace, TrialParams};
use super::store::{append_final, append_trial, load_finals, load_trials, TrialRecord};
use super::tpe::{random_point, suggest};
use crate::checkpoint::ModelDir;
use crate::directions::{Direction, DirectionsFile};
use crate::eval::Judge;
use crate::model::Decoder;
use crate::progress::Progress;
use crate::prompts::PromptEncoder;
use crate::surgery::{plan, ExpertChoice};
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The settings file of a search folder; a resumed search must match it.
pub const SETTINGS_FILE: &str = "search.json";

/// How to search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// Stage-1 trials in all (start-up trials included).
    pub trials: usize,
    /// Trials before the model-based sampler takes over (the starting trials, then random ones).
    pub startup: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Candidates the sampler scores per trial.
    pub candidates: usize,
    /// Share of the trials that form the "good" group of the sampler.
    pub gamma: f64,
    /// Refusal rate that the chosen trial must reach (see [`choose`]).
    pub target_refusal_rate: f64,
    /// How answers are generated.
    pub answers: AnswerSettings,
    /// Harmful prompts per chunk of a trial's stage 1; pruning is decided after each.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// Stop a trial early once it cannot be chosen ([`super::prune`]).
    #[serde(default = "default_prune")]
    pub prune: bool,
    /// Stage-2 trials: re-answered at full length and judged ([`super::finals`]); 0: none,
    /// the stage-1 choice stands.
    #[serde(default = "default_finalists")]
    pub finalists: usize,
    /// New tokens per stage-2 answer at most (an answer stops at the end of its turn).
    #[serde(default = "default_final_max_tokens")]
    pub final_max_tokens: usize,
    /// The largest mean first-token KL (harmless validation prompts) a chosen trial may have
    /// (None: no cap). Trials above it are chosen only when no complete trial keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kl: Option<f64>,
    /// The choices of experts searched on a model with experts; the first one is the starting
    /// trials'. Default: every expert only.
    #[serde(default = "default_experts")]
    pub experts: Vec<ExpertChoice>,
}

/// [`SearchSettings::max_kl`]'s default. The held-out KL of a chosen edit runs above its
/// validation KL (the choice favours trials whose validation prompts were lucky; on the demo
/// model 0.175 became 0.254), so the cap leaves room below the 0.15 at which answers to
/// harmless prompts start to read differently.
pub const DEFAULT_MAX_KL: f64 = 0.1;

/// What the choice aims at: the refusal rate to reach and the KL a chosen trial may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The refusal rate (stage 2: refusal-plus-evasion rate) the chosen trial must reach.
    pub refusal_rate: f64,
    /// The largest mean KL a chosen trial may have (None: no cap).
    pub max_kl: Option<f64>,
}

impl Goal {
    /// A goal without a KL cap.
    pub fn rate(refusal_rate: f64) -> Goal {
        Goal { refusal_rate, max_kl: None }
    }

    /// Whether a mean KL keeps the cap (a NaN never does).
    pub fn kl_ok(&self, kl: f64) -> bool {
        self.max_kl.is_none_or(|cap| kl <= cap)
    }
}

impl SearchSettings {
    /// The goal these settings choose by.
    pub fn goal(&self) -> Goal {
        Goal { refusal_rate: self.target_refusal_rate, max_kl: self.max_kl }
    }
}

/// The items that `keep` accepts, when any does; else all of them. How the choices set aside
/// pruned, stopped and over-cap trials unless nothing else is left.
pub(super) fn preferring<T: Copy>(items: Vec<T>, keep: impl Fn(T) -> bool) -> Vec<T> {
    let kept: Vec<T> = items.iter().copied().filter(|&x| keep(x)).collect();
    if kept.is_empty() {
        items
    } else {
        kept
    }
}

/// [`SearchSettings::chunk`]'s default.
pub const DEFAULT_CHUNK: usize = 16;
/// [`SearchSettings::finalists`]'s default.
pub const DEFAULT_FINALISTS: usize = 6;
/// [`SearchSettings::final_max_tokens`]'s default.
pub const DEFAULT_FINAL_MAX_TOKENS: usize = 128;

fn default_chunk() -> usize {
    DEFAULT_CHUNK
}
fn default_prune() -> bool {
    true
}
fn default_finalists() -> usize {
    DEFAULT_FINALISTS
}
fn default_final_max_tokens() -> usize {
    DEFAULT_FINAL_MAX_TOKENS
}
fn default_experts() -> Vec<ExpertChoice> {
    vec![ExpertChoice::All]
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            trials: 60,
            startup: 16,
            seed: 0,
            candidates: 24,
            gamma: 0.1,
            target_refusal_rate: 0.05,
            answers: AnswerSettings { max_tokens: 16, batch: 32, answered_harmless: DEFAULT_ANSWERED_HARMLESS },
            chunk: DEFAULT_CHUNK,
            prune: true,
            finalists: DEFAULT_FINALISTS,
            final_max_tokens: DEFAULT_FINAL_MAX_TOKENS,
            max_kl: Some(DEFAULT_MAX_KL),
            experts: default_experts(),
        }
    }
}

/// What a search folder records about its inputs, so a resumed search can check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// The settings.
    pub settings: SearchSettings,
    /// The space searched.
    pub space: SearchSpace,
    /// The probe's directions file.
    pub directions: PathBuf,
    /// Its content hash (every entry's short hash).
    pub directions_hash: String,
    /// The validation prompts' count and hash.
    pub validation: (usize, usize, String),
    /// The original model measured on the validation prompts.
    pub baseline: Scores,
}

/// Everything a search needs.
pub struct SearchInputs<'a> {
    /// The model as it runs.
    pub decoder: &'a Decoder,
    /// Its checkpoint (for surgery plans: shapes, post-norms).
    pub model: &'a ModelDir,
    /// Its prompt encoder.
    pub encoder: &'a PromptEncoder,
    /// The probe's directions.
    pub directions: &'a DirectionsFile,
    /// The space.
    pub space: SearchSpace,
    /// Starting trials, with where each comes from (e.g. the probe's rankings).
    pub starts: Vec<(String, TrialParams)>,
    /// Validation prompts.
    pub validation: &'a Validation,
}

/// The result of a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// Every stage-1 trial, in order.
    pub trials: Vec<TrialRecord>,
    /// The original model's scores.
    pub baseline: Scores,
    /// The chosen trial's number: stage 2's choice when it ran, else stage 1's.
    pub chosen: usize,
    /// Stage 1's choice ([`choose`]).
    pub stage1_chosen: usize,
    /// Stage 2, when it ran.
    pub stage2: Option<Stage2>,
}

/// The name of trial `number`'s direction in the search's directions file.
pub fn trial_direction_name(number: usize) -> String {
    format!("trial.{number}")
}

/// The validation prompts in the order every trial answers them: the harmful ones shuffled
/// once by the search's seed (so that a pruned trial's first chunks are a fair sample and
/// partial counts of different trials are comparable), the harmless ones as given (the first
/// ones are the answered ones).
pub fn seeded_order(validation: &Validation, seed: u64) -> Validation {
    let mut harmful = validation.harmful.clone();
    harmful.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x005E_ED0F_0DE5));
    Validation { harmful, harmless: validation.harmless.clone() }
}

/// Run (or resume) a search into `out`: stage 1 for every trial, then stage 2 for the
/// finalists, judged by `judge`; `progress` counts trials and shows the best so far.
pub fn run_search(
    inputs: &SearchInputs<'_>,
    settings: &SearchSettings,
    judge: &dyn Judge,
    out: &Path,
    progress: &dyn Progress,
) -> Result<SearchOutcome> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ordered = seeded_order(inputs.validation, settings.seed);
    let validation = &ordered;
    let reference = measure(inputs.decoder, inputs.encoder, validation, None, &settings.answers)?;
    let record = SearchRecord {
        settings: settings.clone(),
        space: inputs.space.clone(),
        directions: inputs.directions.path.clone(),
        directions_hash: directions_hash(inputs.directions),
        validation: validation_id(inputs.validation),
        baseline: Scores { seconds: 0.0, ..reference.scores.clone() },
    };
    check_or_write_record(out, &record)?;
    let mut trials = load_trials(out)?;
    progress.set_length(settings.trials as u64);
    progress.set_position(trials.len().min(settings.trials) as u64);
    let mut this_run: Vec<f64> = Vec::new();
    while trials.len() < settings.trials {
        let number = trials.len();
        let (origin, params) = next_params(inputs, settings, &trials, number, &record.baseline);
        let bounds = settings.prune.then(|| prune_bounds(&trials, &record.baseline, &settings.goal()));
        let measured = run_trial(inputs, validation, &params, &reference, settings, bounds.as_ref(), number)?;
        let trial = TrialRecord {
            number,
            origin,
            params,
            scores: measured.scores,
            answers: measured.answers,
            pruned: measured.pruned,
        };
        append_trial(out, &trial)?;
        this_run.push(trial.scores.seconds);
        let line = trial_line(&trial, settings.trials);
        trials.push(trial);
        let message = progress_message(&trials, &record.baseline, settings, &this_run);
        progress.set_position(trials.len() as u64);
        progress.set_message(message.clone());
        progress.finished_item(&format!("{line}; {message}"));
    }
    write_directions(inputs, &trials, out)?;
    let stage1_chosen = choose(&trials, &record.baseline, &settings.goal())
        .ok_or_else(|| Error::Other("the search has no trials".into()))?;
    let stage2 = if settings.finalists > 0 {
        progress.set_length((settings.trials + settings.finalists.min(trials.len()) + 1) as u64);
        progress.set_message(format!("stage 2: the original and {} finalists at full length", settings.finalists));
        let stage2_inputs = Stage2Inputs {
            trials: &trials,
            baseline: &record.baseline,
            validation,
            answered: settings.answers.answered_harmless,
            goal: settings.goal(),
            finalists: settings.finalists,
            chunk: settings.chunk,
            max_tokens: settings.final_max_tokens,
        };
        let mut answerer = ModelAnswers { inputs, batch: settings.answers.batch };
        let done = load_finals(out)?;
        run_stage2(&stage2_inputs, &mut answerer, judge, &done, &mut |f| append_final(out, f), progress)?
    } else {
        None
    };
    let chosen = stage2.as_ref().map_or(stage1_chosen, |s| s.chosen);
    Ok(SearchOutcome { trials, baseline: record.baseline, chosen, stage1_chosen, stage2 })
}

/// One line about a finished trial (what a log shows per trial).
pub fn trial_line(trial: &TrialRecord, total: usize) -> String {
    let s = &trial.scores;
    match &trial.pruned {
        None => format!(
            "trial {}/{total}: refusals {}/{}, over-refusals {}/{}, KL {:.3}, {:.0} s",
            trial.number, s.refusals, s.harmful, s.over_refusals, s.harmless, s.kl_mean, s.seconds
        ),
        Some(p) => format!(
            "trial {}/{total}: pruned ({}) after {}/{} harmful prompts, refusals {}, {:.0} s",
            trial.number,
            match p.stage {
                super::prune::PruneStage::Refusals => "refusals",
                super::prune::PruneStage::Kl => "KL",
            },
            p.harmful_asked,
            p.harmful_total,
            s.refusals,
            s.seconds
        ),
    }
}

/// What pruning compares the next trial with: the goal; the smallest KL of a complete trial
/// within the target with [`CHOICE_CONFIDENCE_Z`]'s confidence that keeps the constraint and
/// the KL cap; and the fewest refusals of a complete trial that keeps the constraint and the cap.
pub fn prune_bounds(trials: &[TrialRecord], baseline: &Scores, goal: &Goal) -> PruneBounds {
    let feasible: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.complete() && point(&t.scores, baseline).violation == 0.0 && goal.kl_ok(t.scores.kl_mean))
        .collect();
    let best_kl = feasible
        .iter()
        .filter(|t| refusal_rate_bound(t.scores.refusals, t.scores.harmful) <= goal.refusal_rate + 1e-12)
        .map(|t| t.scores.kl_mean)
        .filter(|kl| kl.is_finite())
        .min_by(f64::total_cmp);
    let fewest_refusals = feasible.iter().map(|t| t.scores.refusals).min();
    PruneBounds { target_rate: goal.refusal_rate, best_kl, max_kl: goal.max_kl, fewest_refusals }
}

/// The search's model with trial `number`'s edit applied in memory.
fn edited_decoder(inputs: &SearchInputs<'_>, params: &TrialParams, number: usize) -> Result<Decoder> {
    let name = trial_direction_name(number);
    let directions = trial_directions(inputs.directions, &[(name.clone(), params)], &inputs.directions.path)?;
    let options = params.surgery_options(inputs.space.num_layers, &name);
    let plan = plan(inputs.model, &directions, &options)?;
    inputs.decoder.with_edits(&plan)
}

/// Measure one trial's stage 1: its edit applied to the running model in memory.
fn run_trial(
    inputs: &SearchInputs<'_>,
    validation: &Validation,
    params: &TrialParams,
    reference: &Measurement,
    settings: &SearchSettings,
    bounds: Option<&PruneBounds>,
    number: usize,
) -> Result<TrialMeasurement> {
    let edited = edited_decoder(inputs, params, number)?;
    let mut scorer = ModelScorer {
        decoder: &edited,
        encoder: inputs.encoder,
        validation,
        reference: &reference.harmless_logits,
        settings: &settings.answers,
    };
    measure_trial(&mut scorer, validation, settings.answers.answered_harmless, settings.chunk, bounds)
}

/// Stage 2's answers from the search's model, edited by each finalist.
struct ModelAnswers<'a, 'b> {
    inputs: &'a SearchInputs<'b>,
    batch: usize,
}

impl FullAnswers for ModelAnswers<'_, '_> {
    fn answers(&mut self, trial: Option<&TrialRecord>, prompts: &[String], max_tokens: usize) -> Result<Vec<String>> {
        let edited = trial.map(|t| edited_decoder(self.inputs, &t.params, t.number)).transpose()?;
        let decoder = edited.as_ref().unwrap_or(self.inputs.decoder);
        full_answers(decoder, self.inputs.encoder, prompts, max_tokens, self.batch)
    }
}

/// A directions file holding each named trial's blended direction.
pub fn trial_directions(
    probe: &DirectionsFile,
    trials: &[(String, &TrialParams)],
    path: &Path,
) -> Result<DirectionsFile> {
    let entries = trials
        .iter()
        .map(|(name, p)| Ok((name.clone(), p.direction(probe, name)?)))
        .collect::<Result<BTreeMap<String, Direction>>>()?;
    Ok(DirectionsFile { path: path.to_path_buf(), entries, metadata: BTreeMap::new() })
}

fn write_directions(inputs: &SearchInputs<'_>, trials: &[TrialRecord], out: &Path) -> Result<()> {
    let path = out.join("directions.safetensors");
    let named: Vec<(String, &TrialParams)> =
        trials.iter().map(|t| (trial_direction_name(t.number), &t.params)).collect();
    let file = trial_directions(inputs.directions, &named, &path)?;
    let entries: Vec<Direction> = file.entries.into_values().collect();
    let metadata = BTreeMap::from([("source".to_string(), inputs.directions.path.display().to_string())]);
    DirectionsFile::save(&path, &entries, &metadata)
}

/// The parameters of trial `number`: a starting trial, a random one, or the sampler's.
fn next_params(
    inputs: &SearchInputs<'_>,
    settings: &SearchSettings,
    trials: &[TrialRecord],
    number: usize,
    baseline: &Scores,
) -> (String, TrialParams) {
    if let Some((origin, params)) = inputs.starts.get(number) {
        return (format!("start: {origin}"), params.clone());
    }
    // One generator per trial, seeded by (seed, number): a resumed search draws what an
    // uninterrupted one would have drawn.
    let mut rng = StdRng::seed_from_u64(settings.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ number as u64);
    let dims = inputs.space.dims();
    if number < settings.startup.max(inputs.starts.len()) || trials.len() < 2 {
        return ("random".into(), inputs.space.decode(&random_point(&dims, &mut rng)));
    }
    // A pruned trial ranks after every complete one: its scores are partial, and it was
    // stopped because it cannot be chosen.
    let key = |t: &TrialRecord| {
        let (excess, kl) = good_key(&t.scores, baseline, &settings.goal());
        (!t.complete(), excess, kl)
    };
    let mut order: Vec<usize> = (0..trials.len()).collect();
    order.sort_by(|&a, &b| key(&trials[a]).partial_cmp(&key(&trials[b])).unwrap_or(std::cmp::Ordering::Equal));
    let n_good = ((settings.gamma * trials.len() as f64).ceil() as usize).clamp(1, 25.min(trials.len() - 1));
    let encoded = |i: &usize| inputs.space.encode(&trials[*i].params).unwrap_or_else(|_| vec![0.0; dims.len()]);
    let good: Vec<Vec<f64>> = order[..n_good].iter().map(encoded).collect();
    let bad: Vec<Vec<f64>> = order[n_good..].iter().map(encoded).collect();
    ("tpe".into(), inputs.space.decode(&suggest(&dims, &good, &bad, settings.candidates, &mut rng)))
}

/// How close a trial comes to what [`choose`] picks, best first: refusals above the target
/// (less a slack of a quarter of the allowed count, at least 1) plus over-refusals above the
/// original's, plus every harmful prompt when the trial breaks the KL cap (so that it ranks
/// after every trial that keeps it), then the smallest KL. The slack keeps the low-KL trials
/// just above the target in the sampler's good group: they mark where the refusal boundary runs
/// at low KL, which is where the chosen trial lies. Without it, every trial at the target,
/// however damaging, ranks before them, and on the demo model the sampler spent its trials on
/// edits with no refusals and KL 0.4–0.9.
pub fn good_key(scores: &Scores, baseline: &Scores, goal: &Goal) -> (usize, f64) {
    let allowed = (goal.refusal_rate * scores.harmful as f64 + 1e-9).floor() as usize;
    let slack = (allowed / 4).max(1);
    let over_cap = if goal.kl_ok(scores.kl_mean) { 0 } else { scores.harmful.max(1) };
    let excess = scores.refusals.saturating_sub(allowed + slack)
        + scores.over_refusals.saturating_sub(baseline.over_refusals)
        + over_cap;
    (excess, scores.kl_or_max())
}

/// A trial as a point to rank: minimize (refusals, KL); the constraint is no more broken
/// harmless answers (over-refusals, loops included) than the original had.
pub fn point(scores: &Scores, baseline: &Scores) -> Point<2> {
    Point {
        objectives: [scores.refusals as f64, scores.kl_or_max()],
        violation: scores.over_refusals.saturating_sub(baseline.over_refusals) as f64,
    }
}

/// The one-sided confidence with which the chosen trial's refusal rate must be at most the
/// target: the z of an 80 % one-sided normal quantile.
pub const CHOICE_CONFIDENCE_Z: f64 = 0.8416;

/// An upper bound on the refusal rate behind `refusals` of `asked` prompts, at
/// [`CHOICE_CONFIDENCE_Z`] (the Wilson score bound, sound at counts near 0): what a trial
/// refusing 4 of 80 validation prompts may refuse on new ones. The trial [`choose`] picks is
/// the least damaging of those near the target, so its measured rate is likely a lucky one;
/// asking for the bound, not the count, to be at the target leaves that margin (on 80 prompts
/// and a 5 % target: at most 2 refusals, not 4).
pub fn refusal_rate_bound(refusals: usize, asked: usize) -> f64 {
    if asked == 0 {
        return 1.0;
    }
    let (n, z) = (asked as f64, CHOICE_CONFIDENCE_Z);
    let p = refusals as f64 / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z * z / n)).min(1.0)
}

/// The trial to use: among trials that keep the constraint and whose refusal rate is at most
/// the goal's with [`CHOICE_CONFIDENCE_Z`]'s confidence ([`refusal_rate_bound`]), the one
/// with the smallest KL; if none, the same among those whose measured rate is at most the
/// target; if none reaches the target, the one that keeps the constraint with the fewest
/// refusals (then smallest KL); if none keeps it, the best by rank.
/// Pruned trials take part only when no trial is complete, and trials above the KL cap only
/// when no trial keeps it.
pub fn choose(trials: &[TrialRecord], baseline: &Scores, goal: &Goal) -> Option<usize> {
    let complete = preferring((0..trials.len()).collect(), |i| trials[i].complete());
    let at = preferring(complete, |i| goal.kl_ok(trials[i].scores.kl_mean));
    let points: Vec<Point<2>> = trials.iter().map(|t| point(&t.scores, baseline)).collect();
    let bound = |t: &TrialRecord| refusal_rate_bound(t.scores.refusals, t.scores.harmful);
    let measured = |t: &TrialRecord| t.scores.refusal_rate();
    for rate in [&bound as &dyn Fn(&TrialRecord) -> f64, &measured] {
        let reaching =
            at.iter().copied().filter(|&i| points[i].violation == 0.0 && rate(&trials[i]) <= goal.refusal_rate + 1e-12);
        if let Some(best) = reaching.min_by(|&a, &b| points[a].objectives[1].total_cmp(&points[b].objectives[1])) {
            return Some(best);
        }
    }
    let key = |i: usize| (points[i].violation, points[i].objectives[0], points[i].objectives[1]);
    at.into_iter().min_by(|&a, &b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
}

/// The progress message: the trial [`choose`] would pick now (its refusals and KL), the pruned
/// trials so far, and the time left for stage 1 at this run's mean seconds per trial
/// (`this_run`).
fn progress_message(trials: &[TrialRecord], baseline: &Scores, settings: &SearchSettings, this_run: &[f64]) -> String {
    let pruned = trials.iter().filter(|t| !t.complete()).count();
    let per_trial = this_run.iter().sum::<f64>() / this_run.len().max(1) as f64;
    let left = settings.trials.saturating_sub(trials.len()) as f64 * per_trial;
    let eta = if left >= 90.0 { format!("{:.0} min", left / 60.0) } else { format!("{left:.0} s") };
    let best = match choose(trials, baseline, &settings.goal()).map(|i| &trials[i]) {
        Some(b) if b.complete() => {
            format!(
                "best #{}: refusals {}/{}, KL {:.3}",
                b.number, b.scores.refusals, b.scores.harmful, b.scores.kl_mean
            )
        }
        _ => "no complete trial yet".into(),
    };
    format!("{best}; {pruned} pruned; {per_trial:.0} s/trial; ETA {eta}")
}

fn directions_hash(d: &DirectionsFile) -> String {
    d.entries.values().map(Direction::short_hash).collect::<Vec<_>>().join("")
}

fn validation_id(v: &Validation) -> (usize, usize, String) {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in v.harmful.iter().chain(&v.harmless) {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    (v.harmful.len(), v.harmless.len(), hex)
}

/// Write `search.json`, or check that the folder's own matches (a resumed search must search
/// the same space with the same inputs; only the number of trials may grow). The directions
/// are compared by content (their hash), not by the path they were given as: the same file
/// named relatively, absolutely or after a move is the same input.
fn check_or_write_record(out: &Path, record: &SearchRecord) -> Result<()> {
    let path = out.join(SETTINGS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: SearchRecord =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let same = SearchRecord {
            settings: SearchSettings {
                trials: record.settings.trials,
                finalists: record.settings.finalists,
                final_max_tokens: record.settings.final_max_tokens,
                ..old.settings.clone()
            },
            directions: record.directions.clone(),
            ..old
        };
        if same != *record {
            return Err(Error::Invalid(format!(
                "{} holds a search with other settings, inputs or model measurements; choose another --out or remove it",
                out.display()
            )));
        }
    }
    let text = serde_json::to_string_pretty(record).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_bound_leaves_a_margin_that_shrinks_with_more_prompts() {
        assert!((refusal_rate_bound(2, 80) - 0.0444).abs() < 1e-3);
        assert!(refusal_rate_bound(3, 80) > 0.05 && refusal_rate_bound(0, 80) > 0.0);
        assert!(refusal_rate_bound(30, 800) < refusal_rate_bound(3, 80), "more prompts, a tighter bound");
        assert_eq!(refusal_rate_bound(0, 0), 1.0);
        for r in 0..=80 {
            assert!(refusal_rate_bound(r, 80) >= r as f64 / 80.0);
        }
    }
}
