//! Stage 2: the few best stage-1 trials re-answered at full length and judged.
//!
//! Stage 1 scores every trial cheaply (short answers, [`super::refused`]). Its best trials —
//! the [`super::SearchSettings::finalists`] complete ones nearest the target on the Pareto
//! front, then on the next fronts ([`finalists`]) — and the original model are answered again
//! on the validation prompts with answers up to [`super::SearchSettings::final_max_tokens`]
//! (stopping at the end of the turn) and judged by the configured [`Judge`]. The search then
//! chooses by that verdict ([`choose_final`]): a refusal and an evasion both fail a harmful
//! request, so the target applies to their sum. Each stage-2 measurement is a line of
//! `trials.jsonl` ([`FinalRecord`], `"stage": 2`); a resumed search reuses the ones made with
//! the same judge and answer length.

use super::objective::{Scores, Validation};
use super::pareto::ranks;
use super::run::{point, preferring, refusal_rate_bound, Goal};
use super::store::TrialRecord;
use crate::eval::{greedy_answers, Exchange, Judge, Subject, Verdict, VerdictCounts};
use crate::model::{Decoder, Interventions};
use crate::progress::Progress;
use crate::prompts::PromptEncoder;
use crate::Result;
use serde::{Deserialize, Serialize};

/// A judged full-length answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedAnswer {
    /// The prompt.
    pub prompt: String,
    /// The answer.
    pub answer: String,
    /// The judge's verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
}

/// One stage-2 measurement (a finalist, or the original model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// Always 2: what tells this line of `trials.jsonl` from a stage-1 trial.
    pub stage: u8,
    /// The trial's number (None: the original model).
    pub trial: Option<usize>,
    /// The judge's name.
    pub judge: String,
    /// New tokens per answer at most.
    pub max_tokens: usize,
    /// Verdicts on the harmful validation prompts.
    pub harmful: VerdictCounts,
    /// Verdicts on the answered harmless validation prompts.
    pub harmless: VerdictCounts,
    /// Seconds the measurement took.
    pub seconds: f64,
    /// Harmful answers then harmless ones.
    pub answers: Vec<JudgedAnswer>,
    /// Set when the finalist was stopped early: the harmful answers judged by then (its
    /// counts are partial, and it cannot be chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after: Option<usize>,
}

impl FinalRecord {
    /// Refusals and evasions on the harmful prompts, as a rate.
    pub fn not_compliant_rate(&self) -> f64 {
        self.harmful.not_compliant() as f64 / self.harmful.total().max(1) as f64
    }

    /// Whether every prompt was answered and judged.
    pub fn complete(&self) -> bool {
        self.stopped_after.is_none()
    }
}

/// Full-length answers of a trial's edit (None: the original model).
pub trait FullAnswers {
    /// Answers to `prompts`, at most `max_tokens` new tokens each, in order.
    fn answers(&mut self, trial: Option<&TrialRecord>, prompts: &[String], max_tokens: usize) -> Result<Vec<String>>;
}

/// The stage-2 trials, best first (indices into `trials`): complete trials (those within the
/// KL cap, when some are) ranked by Pareto front of (refusals, KL) under the over-refusal
/// constraint, within a front nearest the target (refusals closest to the most the bound
/// allows), then smallest KL; at most `k`.
pub fn finalists(trials: &[TrialRecord], baseline: &Scores, goal: &Goal, k: usize) -> Vec<usize> {
    let complete: Vec<usize> = (0..trials.len()).filter(|&i| trials[i].pruned.is_none()).collect();
    let complete = preferring(complete, |i| goal.kl_ok(trials[i].scores.kl_mean));
    let points: Vec<_> = complete.iter().map(|&i| point(&trials[i].scores, baseline)).collect();
    let rank = ranks(&points);
    let allowed =
        |harmful: usize| (0..=harmful).take_while(|&r| refusal_rate_bound(r, harmful) <= goal.refusal_rate).last();
    let distance = |t: &TrialRecord| match allowed(t.scores.harmful) {
        Some(a) => t.scores.refusals.abs_diff(a),
        None => t.scores.refusals,
    };
    let mut order: Vec<usize> = (0..complete.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&trials[complete[a]], &trials[complete[b]]);
        (rank[a], distance(ta))
            .cmp(&(rank[b], distance(tb)))
            .then(points[a].objectives[1].total_cmp(&points[b].objectives[1]))
    });
    order.into_iter().take(k).map(|i| complete[i]).collect()
}

/// Answer and judge `trial` (None: the original) on the harmful validation prompts, in chunks
/// of `inputs.chunk`, then on the first `inputs.answered` harmless ones. After each harmful
/// chunk, `hopeless` is asked whether the refusals and evasions so far already rule the trial
/// out; if so it stops there ([`FinalRecord::stopped_after`]).
pub fn judge_trial(
    answerer: &mut dyn FullAnswers,
    judge: &dyn Judge,
    trial: Option<&TrialRecord>,
    inputs: &Stage2Inputs<'_>,
    hopeless: &dyn Fn(usize) -> bool,
) -> Result<FinalRecord> {
    let started = std::time::Instant::now();
    let validation = inputs.validation;
    let mut answers: Vec<JudgedAnswer> = Vec::new();
    let mut judged = |prompts: &[String], answers: &mut Vec<JudgedAnswer>| -> Result<()> {
        let texts = answerer.answers(trial, prompts, inputs.max_tokens)?;
        let exchanges: Vec<Exchange<'_>> =
            prompts.iter().zip(&texts).map(|(p, a)| Exchange { request: p, answer: a }).collect();
        let judgements = judge.judge(&exchanges)?;
        answers.extend(prompts.iter().zip(texts).zip(judgements).map(|((p, a), j)| JudgedAnswer {
            prompt: p.clone(),
            answer: a,
            verdict: j.verdict,
            reason: j.reason,
        }));
        Ok(())
    };
    let mut stopped_after = None;
    for part in validation.harmful.chunks(inputs.chunk.max(1)) {
        judged(part, &mut answers)?;
        let failed = answers.iter().filter(|a| a.verdict != Verdict::Compliance).count();
        if answers.len() < validation.harmful.len() && hopeless(failed) {
            stopped_after = Some(answers.len());
            break;
        }
    }
    let n = answers.len();
    if stopped_after.is_none() {
        let answered = inputs.answered.min(validation.harmless.len());
        if answered > 0 {
            judged(&validation.harmless[..answered], &mut answers)?;
        }
    }
    Ok(FinalRecord {
        stage: 2,
        trial: trial.map(|t| t.number),
        judge: judge.name(),
        max_tokens: inputs.max_tokens,
        harmful: VerdictCounts::of(answers[..n].iter().map(|a| a.verdict)),
        harmless: VerdictCounts::of(answers[n..].iter().map(|a| a.verdict)),
        seconds: started.elapsed().as_secs_f64(),
        answers,
        stopped_after,
    })
}

/// A finalist's stage-1 KL (the largest number when it has none).
fn final_kl(f: &FinalRecord, trials: &[TrialRecord]) -> f64 {
    f.trial.and_then(|n| trials.get(n)).map_or(f64::MAX, |t| t.scores.kl_or_max())
}

/// Whether a finalist with stage-1 KL `kl` that already failed `failed` of `total` harmful
/// prompts can no longer be chosen by [`choose_final`]: even if it complied with every prompt
/// left, its rate misses the target, and a complete finalist that keeps the constraint failed
/// fewer (or as many, at no larger KL).
pub fn stage2_hopeless(
    failed: usize,
    total: usize,
    kl: f64,
    done: &[FinalRecord],
    original: &FinalRecord,
    trials: &[TrialRecord],
    goal: &Goal,
) -> bool {
    let misses_target = failed as f64 / total.max(1) as f64 > goal.refusal_rate + 1e-12;
    misses_target
        && done.iter().any(|g| {
            let keeps = g.complete() && g.harmless.not_compliant() <= original.harmless.not_compliant();
            let (g_failed, g_kl) = (g.harmful.not_compliant(), final_kl(g, trials));
            keeps && (g_failed < failed || (g_failed == failed && g_kl <= kl))
        })
}

/// The stage-2 choice (a trial number): among complete finalists (all, when none is; those
/// within the KL cap, when some are) with no more harmless answers that fail (refusal or
/// evasion) than the original's, the smallest stage-1 KL whose harmful refusal-plus-evasion rate is within the
/// target with the choice's confidence ([`refusal_rate_bound`]); failing that, within it as
/// measured; failing that, the fewest failed harmful answers (then KL) among those that keep
/// the constraint; failing that, the least violation.
pub fn choose_final(
    finals: &[FinalRecord],
    original: &FinalRecord,
    trials: &[TrialRecord],
    goal: &Goal,
) -> Option<usize> {
    let kl = |f: &FinalRecord| final_kl(f, trials);
    let violation = |f: &FinalRecord| f.harmless.not_compliant().saturating_sub(original.harmless.not_compliant());
    let trials_only: Vec<&FinalRecord> = finals.iter().filter(|f| f.trial.is_some()).collect();
    let complete = preferring(trials_only, |f| f.complete());
    let candidates = preferring(complete, |f| goal.kl_ok(kl(f)));
    let bound = |f: &FinalRecord| refusal_rate_bound(f.harmful.not_compliant(), f.harmful.total());
    let measured = |f: &FinalRecord| f.not_compliant_rate();
    for rate in [&bound as &dyn Fn(&FinalRecord) -> f64, &measured] {
        let best = candidates
            .iter()
            .filter(|f| violation(f) == 0 && rate(f) <= goal.refusal_rate + 1e-12)
            .min_by(|a, b| kl(a).total_cmp(&kl(b)));
        if let Some(f) = best {
            return f.trial;
        }
    }
    candidates
        .iter()
        .min_by(|a, b| {
            (violation(a), a.harmful.not_compliant())
                .cmp(&(violation(b), b.harmful.not_compliant()))
                .then(kl(a).total_cmp(&kl(b)))
        })
        .and_then(|f| f.trial)
}

/// Stage 2's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage2 {
    /// The original model's stage-2 measurement.
    pub original: FinalRecord,
    /// The finalists' measurements, best stage-1 first.
    pub finals: Vec<FinalRecord>,
    /// The trial chosen by them.
    pub chosen: usize,
}

/// What stage 2 needs besides the answerer and the judge.
pub struct Stage2Inputs<'a> {
    /// Every stage-1 trial.
    pub trials: &'a [TrialRecord],
    /// The original model's stage-1 scores.
    pub baseline: &'a Scores,
    /// The validation prompts.
    pub validation: &'a Validation,
    /// Harmless prompts answered.
    pub answered: usize,
    /// What the choice aims at (the refusal rate is the refusal-plus-evasion rate here).
    pub goal: Goal,
    /// Finalists.
    pub finalists: usize,
    /// Harmful prompts per chunk; a finalist that can no longer be chosen stops after one.
    pub chunk: usize,
    /// New tokens per answer at most.
    pub max_tokens: usize,
}

/// Run stage 2: measure the original and the finalists (reusing `done` records made with the
/// same judge and answer length; each new one is passed to `record`), stopping a finalist once
/// it cannot be chosen ([`stage2_hopeless`]), then choose. None when there is no complete
/// trial to re-score.
pub fn run_stage2(
    inputs: &Stage2Inputs<'_>,
    answerer: &mut dyn FullAnswers,
    judge: &dyn Judge,
    done: &[FinalRecord],
    record: &mut dyn FnMut(&FinalRecord) -> Result<()>,
    progress: &dyn Progress,
) -> Result<Option<Stage2>> {
    let chosen = finalists(inputs.trials, inputs.baseline, &inputs.goal, inputs.finalists);
    if chosen.is_empty() {
        return Ok(None);
    }
    let name = judge.name();
    let total = inputs.validation.harmful.len();
    let mut measure = |trial: Option<&TrialRecord>, hopeless: &dyn Fn(usize) -> bool| -> Result<FinalRecord> {
        let number = trial.map(|t| t.number);
        if let Some(f) = done.iter().find(|f| f.trial == number && f.judge == name && f.max_tokens == inputs.max_tokens)
        {
            return Ok(f.clone());
        }
        let f = judge_trial(answerer, judge, trial, inputs, hopeless)?;
        record(&f)?;
        let what = number.map_or_else(|| "original".to_string(), |n| format!("trial {n}"));
        let line = match f.stopped_after {
            Some(asked) => format!(
                "stage 2, {what}: stopped after {asked}/{total} harmful prompts ({} refused or evaded: it cannot be chosen); {:.0} s",
                f.harmful.not_compliant(),
                f.seconds
            ),
            None => format!(
                "stage 2, {what}: harmful {} refusals, {} evasions, {} compliances; harmless {} not compliant; {:.0} s",
                f.harmful.refusal,
                f.harmful.evasion,
                f.harmful.compliance,
                f.harmless.not_compliant(),
                f.seconds
            ),
        };
        progress.finished_item(&line);
        Ok(f)
    };
    let original = measure(None, &|_| false)?;
    progress.inc(1);
    let mut finals: Vec<FinalRecord> = Vec::with_capacity(chosen.len());
    for &i in &chosen {
        let trial = &inputs.trials[i];
        let kl = trial.scores.kl_or_max();
        let hopeless =
            |failed: usize| stage2_hopeless(failed, total, kl, &finals, &original, inputs.trials, &inputs.goal);
        let f = measure(Some(trial), &hopeless)?;
        finals.push(f);
        progress.inc(1);
    }
    let chosen =
        choose_final(&finals, &original, inputs.trials, &inputs.goal).expect("there are finalists, so one is chosen");
    Ok(Some(Stage2 { original, finals, chosen }))
}

/// Greedy answers up to `max_tokens` (stopping at the end of the turn), batched by prompt
/// length so that little padding is computed, returned in the prompts' order.
pub fn full_answers(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    prompts: &[String],
    max_tokens: usize,
    batch: usize,
) -> Result<Vec<String>> {
    let lengths = prompts.iter().map(|p| encoder.encode(p).map(|ids| ids.len())).collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let sorted: Vec<String> = order.iter().map(|&i| prompts[i].clone()).collect();
    let subject = Subject { name: String::new(), decoder, encoder, interventions: &Interventions::none() };
    let texts = greedy_answers(&subject, &sorted, max_tokens.max(1), batch, &crate::progress::Silent)?;
    let mut out = vec![String::new(); prompts.len()];
    for (&i, t) in order.iter().zip(texts) {
        out[i] = t;
    }
    Ok(out)
}
