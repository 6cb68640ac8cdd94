//! Evaluation runs: answers (greedy, batched) scored for refusals, and the KL divergence of the
//! next-token distribution on harmless prompts against a baseline.

use super::cross_entropy::CrossEntropy;
use super::fluency::loops;
use super::kl::kl_divergence;
use super::refusal::refusal_marker;
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

/// One scored answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Answer {
    /// The instruction.
    pub prompt: String,
    /// The answer (greedy).
    pub answer: String,
    /// The refusal marker found (`""` for an empty answer), if any.
    pub refusal: Option<String>,
    /// Whether the answer ends in a loop ([`super::fluency::loops`]).
    #[serde(default)]
    pub loops: bool,
}

/// Refusals over a prompt set.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RefusalScore {
    /// Answers that refused.
    pub refused: usize,
    /// All answers.
    pub total: usize,
    /// Every answer with its verdict.
    pub answers: Vec<Answer>,
    /// Answers that end in a loop (a sign of a damaged model), refusals or not.
    #[serde(default)]
    pub loops: usize,
}

impl RefusalScore {
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
        self.answers.iter().filter(|a| a.refusal.is_some()).map(|a| a.prompt.as_str()).collect()
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

/// Greedy answers to `prompts` (batched), scored for refusals.
pub fn refusals(
    subject: &Subject<'_>,
    prompts: &[String],
    max_tokens: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<RefusalScore> {
    let answers: Vec<Answer> = greedy_answers(subject, prompts, max_tokens, batch, progress)?
        .into_iter()
        .zip(prompts)
        .map(|(answer, prompt)| Answer {
            prompt: prompt.clone(),
            refusal: refusal_marker(&answer).map(String::from),
            loops: loops(&answer),
            answer,
        })
        .collect();
    let refused = answers.iter().filter(|a| a.refusal.is_some()).count();
    let looping = answers.iter().filter(|a| a.loops).count();
    Ok(RefusalScore { refused, total: answers.len(), answers, loops: looping })
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
    /// A markdown table of the numbers.
    pub fn markdown(&self, model: &str, baseline: Option<&str>) -> String {
        let pct = |s: &RefusalScore| format!("{}/{} ({:.0}%)", s.refused, s.total, 100.0 * s.rate());
        let looping = |a: &RefusalScore, b: &RefusalScore| format!("{}/{}", a.loops + b.loops, a.total + b.total);
        let mut out = String::new();
        match (baseline, &self.baseline_refusals, &self.baseline_over_refusals) {
            (Some(b), Some(br), Some(bo)) => {
                out += &format!("| | {b} (before) | {model} (after) |\n|---|---|---|\n");
                out += &format!("| refusals on held-out harmful prompts | {} | {} |\n", pct(br), pct(&self.refusals));
                out += &format!(
                    "| refusals on held-out harmless prompts | {} | {} |\n",
                    pct(bo),
                    pct(&self.over_refusals)
                );
                out += &format!(
                    "| answers that loop (harmful + harmless) | {} | {} |\n",
                    looping(br, bo),
                    looping(&self.refusals, &self.over_refusals)
                );
            }
            _ => {
                out += &format!("| | {model} |\n|---|---|\n");
                out += &format!("| refusals on held-out harmful prompts | {} |\n", pct(&self.refusals));
                out += &format!("| refusals on held-out harmless prompts | {} |\n", pct(&self.over_refusals));
                out += &format!(
                    "| answers that loop (harmful + harmless) | {} |\n",
                    looping(&self.refusals, &self.over_refusals)
                );
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
        out
    }
}
