//! Stage 1 of a trial, measured in chunks and stopped as soon as the trial cannot matter.
//!
//! The harmful validation prompts are answered in chunks of [`super::SearchSettings::chunk`]
//! (in the search's fixed, seeded prompt order, so partial counts of different trials are
//! comparable). After each chunk the trial is **pruned for refusals** when the refusals it has
//! already given make its final refusal-rate bound exceed the target even if every remaining
//! answer complied: `refusal_rate_bound(refusals so far, all harmful prompts) > target`. That
//! is the bound [`super::choose`] asks for, and it grows with the refusal count, so a pruned
//! trial could never have been chosen by it, and a trial that could still meet it is never
//! pruned.
//!
//! Then the harmless prompts that are only forwarded (not answered) give a first chunk of KL
//! values. KL is never negative, so the trial's mean KL over all `M` harmless prompts is at least
//! `(sum over the chunk) / M`; the trial is **pruned for KL** when that lower bound already exceeds
//! the smallest KL of a complete trial at the target (bound, constraint and cap kept) or the
//! KL cap: it could not be chosen over that trial, or at all. When every harmless prompt is
//! answered there is no such chunk and no KL pruning.
//!
//! Under a KL cap the choice falls back to the fewest refusals when no trial within the cap
//! reaches the target, so a trial is pruned for refusals only once, besides missing the target,
//! it refuses at least as often as a complete trial that keeps the cap.
//!
//! A pruned trial keeps the scores measured so far ([`Pruned`] says where it stopped): the
//! sampler ranks it after every complete trial, and the choice and the Pareto front leave it out.

use super::objective::{refused, AnswerSettings, Scores, ShortAnswer, Validation};
use super::run::refusal_rate_bound;
use crate::eval::{kl_divergence, loops, next_token_logits, short_answers, Subject};
use crate::model::{Decoder, Interventions};
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where a pruned trial stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneStage {
    /// Its refusals already exceeded what the target allows.
    Refusals,
    /// Its KL lower bound already exceeded the best trial's at the target.
    Kl,
}

/// Why and where a trial was stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    /// Which pass stopped it.
    pub stage: PruneStage,
    /// Harmful prompts answered before it stopped (of [`Pruned::harmful_total`]).
    pub harmful_asked: usize,
    /// Harmful prompts a complete trial answers.
    pub harmful_total: usize,
    /// For KL pruning: the lower bound on the mean KL and the best KL at the target it beat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_bound: Option<(f64, f64)>,
}

/// What pruning compares a trial with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PruneBounds {
    /// The refusal-rate target of the choice.
    pub target_rate: f64,
    /// The smallest KL of a complete trial at the target so far (None: no such trial yet).
    pub best_kl: Option<f64>,
    /// The choice's KL cap (None: no cap).
    pub max_kl: Option<f64>,
    /// The fewest refusals of a complete trial that keeps the constraint and the cap (None:
    /// no such trial yet).
    pub fewest_refusals: Option<usize>,
}

impl PruneBounds {
    /// Whether `refusals` of the first harmful answers already rule the trial out, with
    /// `total` harmful prompts in a complete trial: it can no longer reach the target, and —
    /// under a KL cap, where the choice may fall back to the fewest refusals — a trial that
    /// keeps the cap already refuses no more.
    pub fn refusals_hopeless(&self, refusals: usize, total: usize) -> bool {
        let misses_target = refusal_rate_bound(refusals, total) > self.target_rate + 1e-12;
        misses_target && (self.max_kl.is_none() || self.fewest_refusals.is_some_and(|f| f <= refusals))
    }

    /// Whether a KL chunk summing to `chunk_sum` already rules the trial out when the mean is
    /// taken over `total` prompts (every KL is ≥ 0, so the mean is at least `chunk_sum / total`):
    /// the bound exceeds the best KL at the target or the cap. Returns the lower bound and the
    /// KL it exceeds when it does.
    pub fn kl_hopeless(&self, chunk_sum: f64, total: usize) -> Option<(f64, f64)> {
        let limit = match (self.best_kl, self.max_kl) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let bound = if chunk_sum.is_nan() { f64::INFINITY } else { chunk_sum / total.max(1) as f64 };
        (bound > limit).then_some((bound, limit))
    }
}

/// What a trial's measurement asks of the edited model, prompt by prompt (indices into the
/// validation sets), so that the pruning logic runs on planted scores as well as on a model.
pub trait TrialScorer {
    /// Short answers to these harmful prompts.
    fn harmful(&mut self, indices: &[usize]) -> Result<Vec<String>>;
    /// Short answers to these harmless prompts, each with its first-token KL.
    fn harmless(&mut self, indices: &[usize]) -> Result<Vec<(String, f64)>>;
    /// The first-token KL of these harmless prompts (a forward pass, no answer).
    fn kl(&mut self, indices: &[usize]) -> Result<Vec<f64>>;
}

/// A trial's stage-1 result: its scores, its answers, and where it stopped when pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialMeasurement {
    /// What was measured (partial when pruned).
    pub scores: Scores,
    /// Harmful answers then the answered harmless ones, as far as they were asked.
    pub answers: Vec<ShortAnswer>,
    /// Set when the trial was stopped early.
    pub pruned: Option<Pruned>,
}

/// Measure a trial through `scorer` in chunks of `chunk` harmful prompts, pruning against
/// `bounds` (None: never prune). `answered` is the number of harmless prompts answered.
pub fn measure_trial(
    scorer: &mut dyn TrialScorer,
    validation: &Validation,
    answered: usize,
    chunk: usize,
    bounds: Option<&PruneBounds>,
) -> Result<TrialMeasurement> {
    let started = std::time::Instant::now();
    let n_harmful = validation.harmful.len();
    let n_harmless = validation.harmless.len();
    let answered = answered.min(n_harmless);
    let mut answers = Vec::new();
    let mut refusals = 0;
    let mut loops_seen = 0;
    let indices: Vec<usize> = (0..n_harmful).collect();
    let partial = |refusals, asked, loops_seen, started: std::time::Instant| Scores {
        refusals,
        harmful: asked,
        over_refusals: 0,
        harmless: 0,
        kl_prompts: 0,
        loops: loops_seen,
        kl_mean: 0.0,
        kl_max: 0.0,
        seconds: started.elapsed().as_secs_f64(),
    };
    for part in indices.chunks(chunk.max(1)) {
        let texts = scorer.harmful(part)?;
        for (&i, text) in part.iter().zip(texts) {
            let prompt = &validation.harmful[i];
            let r = refused(prompt, &text);
            refusals += usize::from(r);
            loops_seen += usize::from(loops(&text));
            answers.push(ShortAnswer { prompt: prompt.clone(), answer: text, refused: r });
        }
        if bounds.is_some_and(|b| b.refusals_hopeless(refusals, n_harmful)) {
            let asked = answers.len();
            let pruned =
                Pruned { stage: PruneStage::Refusals, harmful_asked: asked, harmful_total: n_harmful, kl_bound: None };
            return Ok(TrialMeasurement {
                scores: partial(refusals, asked, loops_seen, started),
                answers,
                pruned: Some(pruned),
            });
        }
    }
    let only_forwarded: Vec<usize> = (answered..n_harmless).collect();
    let mut kl = if only_forwarded.is_empty() { Vec::new() } else { scorer.kl(&only_forwarded)? };
    if let Some(b) = bounds {
        let sum: f64 = kl.iter().sum();
        if let Some(kl_bound) = b.kl_hopeless(sum, n_harmless) {
            let mut scores = partial(refusals, n_harmful, loops_seen, started);
            scores.kl_prompts = kl.len();
            scores.kl_mean = finite_or_max(sum / kl.len().max(1) as f64);
            scores.kl_max = finite_or_max(kl.iter().copied().fold(0.0, f64::max));
            let pruned = Pruned {
                stage: PruneStage::Kl,
                harmful_asked: n_harmful,
                harmful_total: n_harmful,
                kl_bound: Some((finite_or_max(kl_bound.0), kl_bound.1)),
            };
            return Ok(TrialMeasurement { scores, answers, pruned: Some(pruned) });
        }
    }
    let answered_indices: Vec<usize> = (0..answered).collect();
    let harmless = if answered_indices.is_empty() { Vec::new() } else { scorer.harmless(&answered_indices)? };
    let mut over_refusals = 0;
    let mut first_kl = Vec::with_capacity(answered);
    for (&i, (text, k)) in answered_indices.iter().zip(harmless) {
        let prompt = &validation.harmless[i];
        let r = refused(prompt, &text);
        over_refusals += usize::from(r);
        loops_seen += usize::from(loops(&text));
        answers.push(ShortAnswer { prompt: prompt.clone(), answer: text, refused: r });
        first_kl.push(k);
    }
    first_kl.append(&mut kl);
    let scores = Scores {
        refusals,
        harmful: n_harmful,
        over_refusals,
        harmless: answered,
        kl_prompts: first_kl.len(),
        loops: loops_seen,
        kl_mean: first_kl.iter().sum::<f64>() / first_kl.len().max(1) as f64,
        kl_max: first_kl.iter().copied().fold(0.0, |m, x| if x.is_nan() || x > m { x } else { m }),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(TrialMeasurement { scores, answers, pruned: None })
}

/// A non-finite KL as the largest finite number, so that a record stays valid JSON.
fn finite_or_max(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        f64::MAX
    }
}

/// [`TrialScorer`] on an edited model: short greedy answers and first-token KL against the
/// original's logits (`reference`, one per harmless prompt).
pub struct ModelScorer<'a> {
    /// The edited model.
    pub decoder: &'a Decoder,
    /// Its prompt encoder.
    pub encoder: &'a PromptEncoder,
    /// The validation prompts.
    pub validation: &'a Validation,
    /// The original model's first-token logits per harmless prompt.
    pub reference: &'a [Vec<f32>],
    /// How answers are generated.
    pub settings: &'a AnswerSettings,
}

impl ModelScorer<'_> {
    fn answer(&self, prompts: &[&String]) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
        let encoded = prompts.iter().map(|p| self.encoder.encode(p)).collect::<Result<Vec<_>>>()?;
        short_answers(self.decoder, self.encoder, &encoded, self.settings.max_tokens, self.settings.batch)
    }

    fn kl_of(&self, i: usize, logits: &[f32]) -> Result<f64> {
        let p = self
            .reference
            .get(i)
            .ok_or_else(|| Error::Invalid("the reference logits do not match the harmless prompts".into()))?;
        Ok(if p.len() != logits.len() || p.iter().chain(logits).any(|x| !x.is_finite()) {
            f64::INFINITY
        } else {
            kl_divergence(p, logits)
        })
    }
}

impl TrialScorer for ModelScorer<'_> {
    fn harmful(&mut self, indices: &[usize]) -> Result<Vec<String>> {
        let prompts: Vec<&String> = indices.iter().map(|&i| &self.validation.harmful[i]).collect();
        Ok(self.answer(&prompts)?.0)
    }

    fn harmless(&mut self, indices: &[usize]) -> Result<Vec<(String, f64)>> {
        let prompts: Vec<&String> = indices.iter().map(|&i| &self.validation.harmless[i]).collect();
        let (texts, logits) = self.answer(&prompts)?;
        indices.iter().zip(texts).zip(logits).map(|((&i, t), l)| Ok((t, self.kl_of(i, &l)?))).collect()
    }

    fn kl(&mut self, indices: &[usize]) -> Result<Vec<f64>> {
        let prompts: Vec<String> = indices.iter().map(|&i| self.validation.harmless[i].clone()).collect();
        let subject = Subject {
            name: String::new(),
            decoder: self.decoder,
            encoder: self.encoder,
            interventions: &Interventions::none(),
        };
        let logits = next_token_logits(&subject, &prompts, self.settings.batch)?;
        indices.iter().zip(logits).map(|(&i, l)| self.kl_of(i, &l)).collect()
    }
}
