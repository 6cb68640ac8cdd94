//! Evaluation runs: answers (greedy, batched) judged refusal, evasion or compliance, and the KL
//! divergence of the next-token distribution on harmless prompts against a baseline.

use super::cross_entropy::CrossEntropy;
use super::fluency::loops;
use super::judge::rules::judge_answer;
use super::kl::kl_divergence;
use super::refusal::refusal_marker;
use super::thinking;
use super::verdict::{Exchange, Judge, Verdict, VerdictCounts};
use crate::model::{generate, prefill, Decoder, ForwardRequest, GenerateOptions, Interventions, LogitsMode, Sampling};
use crate::progress::Progress;
use crate::prompts::batch::length_buckets;
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use serde::Serialize;

/// A model (with optional runtime interventions) and its tokenizer/template.
pub struct Subject<'a> {
    /// Display name.
    pub name: String,
    /// The decoder.
    pub decoder: &'a Decoder,
    /// The prompt encoder.
    pub encoder: &'a PromptEncoder,
    /// Interventions applied while it runs.
    pub interventions: &'a Interventions,
}

/// One judged answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Answer {
    /// The instruction.
    pub prompt: String,
    /// The answer (greedy; after the thinking block for a thinking model).
    pub answer: String,
    /// The refusal marker found (`""` for an empty answer), if any: one input of the rules.
    pub refusal: Option<String>,
    /// Whether the answer ends in a loop ([`super::fluency::loops`]).
    #[serde(default)]
    pub loops: bool,
    /// The judge's verdict (None in reports written before verdicts: see [`Answer::verdict`]).
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Why the judge said so.
    #[serde(default)]
    pub reason: String,
    /// The thinking block before the answer, for a thinking model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
}

impl Answer {
    /// The verdict (the rules' for an answer read from a report that has none).
    pub fn verdict(&self) -> Verdict {
        self.verdict.unwrap_or_else(|| judge_answer(&self.prompt, &self.answer).verdict)
    }
}

/// Verdicts over a prompt set.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RefusalScore {
    /// Answers judged refusals.
    pub refused: usize,
    /// All answers.
    pub total: usize,
    /// Every answer with its verdict.
    pub answers: Vec<Answer>,
    /// Answers that end in a loop (a sign of a damaged model), refusals or not.
    #[serde(default)]
    pub loops: usize,
    /// Answers by verdict.
    #[serde(default)]
    pub verdicts: VerdictCounts,
    /// The judge that gave the verdicts.
    #[serde(default)]
    pub judge: String,
    /// How a thinking model's answers were judged (None for a model that does not think).
    #[serde(default)]
    pub thinking: Option<String>,
}

impl RefusalScore {
    /// Answers by verdict (counted from the answers for a report written before verdicts).
    pub fn counts(&self) -> VerdictCounts {
        if self.verdicts.total() == self.total {
            self.verdicts
        } else {
            VerdictCounts::of(self.answers.iter().map(Answer::verdict))
        }
    }

    /// Judge every answer again with `judge`.
    pub fn rejudge(&mut self, judge: &dyn Judge) -> Result<()> {
        let exchanges: Vec<Exchange<'_>> =
            self.answers.iter().map(|a| Exchange { request: &a.prompt, answer: &a.answer }).collect();
        let judgements = judge.judge(&exchanges)?;
        if judgements.len() != self.answers.len() {
            return Err(Error::Other(format!("judge {} skipped answers", judge.name())));
        }
        for (a, j) in self.answers.iter_mut().zip(judgements) {
            a.verdict = Some(j.verdict);
            a.reason = j.reason;
        }
        self.verdicts = VerdictCounts::of(self.answers.iter().map(Answer::verdict));
        self.refused = self.verdicts.refusal;
        self.judge = judge.name();
        Ok(())
    }

    /// Fraction refused.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.refused as f64 / self.total as f64
        }
    }

    /// The prompts that were refused.
    pub fn refused_prompts(&self) -> Vec<&str> {
        self.answers.iter().filter(|a| a.verdict() == Verdict::Refusal).map(|a| a.prompt.as_str()).collect()
    }
}

/// KL divergence statistics.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct KlScore {
    /// Mean over prompts.
    pub mean: f64,
    /// Max over prompts.
    pub max: f64,
    /// Per prompt, in order.
    pub per_prompt: Vec<f64>,
}

/// Greedy answers to `prompts`, generated in batches.
pub fn greedy_answers(
    subject: &Subject<'_>,
    prompts: &[String],
    max_tokens: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let options =
        GenerateOptions { max_tokens, sampling: Sampling::default(), stop_ids: subject.encoder.eos_ids().to_vec() };
    let mut answers = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch.max(1)) {
        let ids = chunk.iter().map(|p| subject.encoder.encode(p)).collect::<Result<Vec<_>>>()?;
        let out =
            generate(subject.decoder, &ids, subject.encoder.pad_id(), &options, subject.interventions, &mut |_, _| {
                false
            })
            .map_err(|e| e.for_prompt(chunk))?;
        for g in out {
            answers.push(subject.encoder.decode(&g.ids)?.trim().to_string());
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(answers)
}

/// Greedy answers to `prompts` (batched), judged by the rules ([`super::judge::rules`]); see
/// [`RefusalScore::rejudge`] for another judge. A thinking model ([`thinking::detect`]) gets
/// [`thinking::THINKING_BUDGET`] more tokens, and is judged on the text after its block.
pub fn refusals(
    subject: &Subject<'_>,
    prompts: &[String],
    max_tokens: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<RefusalScore> {
    let thinks = thinking::detect(subject.encoder)?;
    let budget = max_tokens + if thinks.is_some() { thinking::THINKING_BUDGET } else { 0 };
    let opened = thinks.is_some_and(|t| t.opened_by_template);
    let answers: Vec<Answer> = greedy_answers(subject, prompts, budget, batch, progress)?
        .into_iter()
        .zip(prompts)
        .map(|(full, prompt)| {
            let (answer, thought) = match thinks {
                Some(_) => {
                    let answer = thinking::strip_thinking(&full, opened).to_string();
                    let thought = full.strip_suffix(answer.as_str()).unwrap_or(&full).trim().to_string();
                    (answer, (!thought.is_empty()).then_some(thought))
                }
                None => (full, None),
            };
            let judgement = judge_answer(prompt, &answer);
            Answer {
                prompt: prompt.clone(),
                refusal: refusal_marker(&answer).map(String::from),
                loops: loops(&answer),
                verdict: Some(judgement.verdict),
                reason: judgement.reason,
                thinking: thought,
                answer,
            }
        })
        .collect();
    let verdicts = VerdictCounts::of(answers.iter().map(Answer::verdict));
    let looping = answers.iter().filter(|a| a.loops).count();
    Ok(RefusalScore {
        refused: verdicts.refusal,
        total: answers.len(),
        answers,
        loops: looping,
        verdicts,
        judge: "rules".into(),
        thinking: thinking::describe(subject.encoder)?,
    })
}

/// The next-token logits at the end of each prompt (the distribution of the first generated token).
pub fn next_token_logits(subject: &Subject<'_>, prompts: &[String], batch: usize) -> Result<Vec<Vec<f32>>> {
    let request = ForwardRequest { capture: None, interventions: subject.interventions, logits: LogitsMode::Last };
    let encoded = prompts.iter().map(|p| subject.encoder.encode(p)).collect::<Result<Vec<_>>>()?;
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let mut out = vec![Vec::new(); prompts.len()];
    for group in length_buckets(&lengths, batch.max(1))? {
        let ids: Vec<Vec<u32>> = group.iter().map(|&i| encoded[i].clone()).collect();
        let pad = subject.encoder.pad_id();
        let logits = prefill(subject.decoder, &ids, pad, &request, 1)?.output.logits.expect("logits requested");
        for (&i, row) in group.iter().zip(logits.to_vec2::<f32>()?) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// `KL(baseline ‖ model)` of the first generated token's distribution on `prompts`.
pub fn first_token_kl(
    baseline: &Subject<'_>,
    model: &Subject<'_>,
    prompts: &[String],
    batch: usize,
) -> Result<KlScore> {
    let p = next_token_logits(baseline, prompts, batch)?;
    let q = next_token_logits(model, prompts, batch)?;
    kl_of_logits(&p, &q, prompts, &baseline.name, &model.name)
}

/// `KL(p ‖ q)` per prompt from next-token logits `p` (of `baseline`) and `q` (of `model`),
/// measured on `prompts`.
pub fn kl_of_logits(
    p: &[Vec<f32>],
    q: &[Vec<f32>],
    prompts: &[String],
    baseline: &str,
    model: &str,
) -> Result<KlScore> {
    let per_prompt: Vec<f64> = p
        .iter()
        .zip(q)
        .map(|(a, b)| {
            if a.len() != b.len() {
                return Err(Error::Invalid(format!("vocabularies differ ({} vs {})", a.len(), b.len())));
            }
            Ok(kl_divergence(a, b))
        })
        .collect::<Result<_>>()?;
    if let Some(i) = per_prompt.iter().position(|k| !k.is_finite()) {
        return Err(Error::Invalid(format!(
            "KL is not finite for prompt #{i} {:?}: the logits of {} or {} hold a NaN or infinity",
            prompts[i], baseline, model
        )));
    }
    let mean = per_prompt.iter().sum::<f64>() / per_prompt.len().max(1) as f64;
    let max = per_prompt.iter().copied().fold(0.0, f64::max);
    Ok(KlScore { mean, max, per_prompt })
}

/// Everything `scalpel eval` measures for one model (and its baseline).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalReport {
    /// Refusals on held-out harmful prompts.
    pub refusals: RefusalScore,
    /// Refusals on held-out harmless prompts (over-refusal).
    pub over_refusals: RefusalScore,
    /// The baseline's refusals, when a baseline was given.
    pub baseline_refusals: Option<RefusalScore>,
    /// The baseline's over-refusals.
    pub baseline_over_refusals: Option<RefusalScore>,
    /// KL(baseline ‖ model) on harmless prompts.
    pub kl: Option<KlScore>,
    /// Cross-entropy of a text set under the model, when one was given.
    #[serde(default)]
    pub cross_entropy: Option<CrossEntropy>,
    /// The same under the baseline.
    #[serde(default)]
    pub baseline_cross_entropy: Option<CrossEntropy>,
}

impl EvalReport {
    /// Judge every answer (the model's and the baseline's) again with `judge`.
    pub fn rejudge(&mut self, judge: &dyn Judge) -> Result<()> {
        for score in [&mut self.refusals, &mut self.over_refusals] {
            score.rejudge(judge)?;
        }
        for score in [&mut self.baseline_refusals, &mut self.baseline_over_refusals].into_iter().flatten() {
            score.rejudge(judge)?;
        }
        Ok(())
    }

    /// A markdown table of the numbers: refusal / evasion / compliance on the harmful and the
    /// harmless prompts, "not compliant" (refusal + evasion) beside the refusals, and below the
    /// table the judge and, for a thinking model, how its answers were judged.
    pub fn markdown(&self, model: &str, baseline: Option<&str>) -> String {
        let pct =
            |n: usize, s: &RefusalScore| format!("{n}/{} ({:.0}%)", s.total, 100.0 * n as f64 / s.total.max(1) as f64);
        let three = |s: &RefusalScore| {
            let c = s.counts();
            format!("{} / {} / {}", c.refusal, c.evasion, c.compliance)
        };
        let looping = |a: &RefusalScore, b: &RefusalScore| format!("{}/{}", a.loops + b.loops, a.total + b.total);
        type Row<'r> = (&'r str, Box<dyn Fn(&RefusalScore, &RefusalScore) -> String + 'r>);
        let rows: Vec<Row<'_>> = vec![
            ("harmful prompts: refusal / evasion / compliance", Box::new(|h, _| three(h))),
            ("refusals on held-out harmful prompts", Box::new(|h, _| pct(h.counts().refusal, h))),
            ("not compliant (refusal + evasion), harmful", Box::new(|h, _| pct(h.counts().not_compliant(), h))),
            ("harmless prompts: refusal / evasion / compliance", Box::new(|_, l| three(l))),
            ("over-refusals (refusal + evasion), harmless", Box::new(|_, l| pct(l.counts().not_compliant(), l))),
            ("answers that loop (harmful + harmless)", Box::new(|h, l| looping(h, l))),
        ];
        let mut out = String::new();
        let paired = match (baseline, &self.baseline_refusals, &self.baseline_over_refusals) {
            (Some(b), Some(br), Some(bo)) => Some((b, br, bo)),
            _ => None,
        };
        match paired {
            Some((b, br, bo)) => {
                out += &format!("| | {b} (before) | {model} (after) |\n|---|---|---|\n");
                for (label, f) in &rows {
                    out += &format!("| {label} | {} | {} |\n", f(br, bo), f(&self.refusals, &self.over_refusals));
                }
            }
            None => {
                out += &format!("| | {model} |\n|---|---|\n");
                for (label, f) in &rows {
                    out += &format!("| {label} | {} |\n", f(&self.refusals, &self.over_refusals));
                }
            }
        }
        if let Some(kl) = &self.kl {
            let cols = if self.baseline_refusals.is_some() { " — |" } else { "" };
            out += &format!(
                "| KL(before ‖ after), first token, harmless | {cols} mean {:.4}, max {:.4} |\n",
                kl.mean, kl.max
            );
        }
        if let Some(ce) = &self.cross_entropy {
            let show = |c: &CrossEntropy| format!("{:.4} (perplexity {:.2})", c.nats_per_token, c.perplexity());
            let before = match &self.baseline_cross_entropy {
                Some(b) => format!(" {} |", show(b)),
                None if self.baseline_refusals.is_some() => " — |".to_string(),
                None => String::new(),
            };
            out += &format!(
                "| cross-entropy of the text set, nats/token ({} tokens) |{before} {} |\n",
                ce.tokens,
                show(ce)
            );
        }
        let judge = if self.refusals.judge.is_empty() { "rules" } else { self.refusals.judge.as_str() };
        out += &format!("\nVerdicts by the `{judge}` judge.");
        if let Some(t) = &self.refusals.thinking {
            out += &format!(" Thinking model: {t}.");
        }
        out.push('\n');
        out
    }
}
