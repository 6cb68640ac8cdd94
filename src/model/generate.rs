//! Generation with a KV cache, for one prompt or a batch (shared prefix computed once, see
//! [`super::prefill`]).

use super::decoder::{Decoder, ForwardRequest, LogitsMode};
use super::interventions::Interventions;
use super::prefill::{prefill, Prefilled};
use super::sampling::{Sampler, Sampling};
use crate::{Error, Result};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// New tokens at most.
    pub max_tokens: usize,
    /// Sampling settings (greedy by default).
    pub sampling: Sampling,
    /// Token ids that end an answer (not included in it).
    pub stop_ids: Vec<u32>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens (without the stop token).
    pub ids: Vec<u32>,
    /// Logits of the first generated position (f32), e.g. for KL divergence.
    pub first_logits: Vec<f32>,
    /// Whether a stop token ended it (false: the token limit did).
    pub stopped: bool,
}

/// Generate for every prompt of a batch. `on_token(row, id)` is called for each new token and
/// returns `true` to stop that row (e.g. when a stop string appeared). Finished rows leave the
/// running batch (their cached keys and values are dropped), so the remaining rows run alone.
pub fn generate(
    decoder: &Decoder,
    prompts: &[Vec<u32>],
    pad: u32,
    options: &GenerateOptions,
    interventions: &Interventions,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    let request = ForwardRequest { capture: None, interventions, logits: LogitsMode::Last };
    let mut out: Vec<Generation> =
        prompts.iter().map(|_| Generation { ids: Vec::new(), first_logits: Vec::new(), stopped: false }).collect();
    if prompts.is_empty() || options.max_tokens == 0 {
        return Ok(out);
    }
    let Prefilled { output, mut cache, mut mask } = prefill(decoder, prompts, pad, &request, 1)?;
    // Generation stops at the context length.
    let context = decoder.spec().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_tokens = options.max_tokens.min(context.saturating_sub(longest));
    if max_tokens == 0 {
        return Ok(out);
    }
    let mut logits = output.logits.expect("logits requested");
    // Room for the tokens to come (at most 512 ahead: the cache doubles past that), so that each
    // step writes its keys and values in place.
    cache.reserve(max_tokens.saturating_sub(1).min(512))?;
    let mut samplers: Vec<Sampler> = (0..prompts.len())
        .map(|i| {
            Sampler::new(Sampling { seed: options.sampling.seed.wrapping_add(i as u64), ..options.sampling.clone() })
        })
        .collect();
    // `running[r]`: the prompt index of running row r.
    let mut running: Vec<usize> = (0..prompts.len()).collect();
    for step in 0..max_tokens {
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut next = Vec::with_capacity(rows.len());
        let mut keep = Vec::with_capacity(rows.len());
        for (r, row) in rows.into_iter().enumerate() {
            let i = running[r];
            if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
                return Err(Error::Prompt {
                    row: i,
                    message: format!(
                        "the model's logits are not finite ({bad}) at generated token {step}: the model is broken (NaN or infinite weights?)"
                    ),
                });
            }
            let history: Vec<u32> = prompts[i].iter().chain(&out[i].ids).copied().collect();
            let token = samplers[i].next(&row, &history);
            if step == 0 {
                out[i].first_logits = row;
            }
            let done = if options.stop_ids.contains(&token) {
                true
            } else {
                out[i].ids.push(token);
                on_token(i, token)
            };
            out[i].stopped = done;
            if !done {
                keep.push(r);
                next.push(vec![token]);
            }
        }
        if keep.is_empty() || step + 1 == max_tokens {
            break;
        }
        if keep.len() < running.len() {
            cache.keep_rows(&keep)?;
            running = keep.iter().map(|&r| running[r]).collect();
            mask = keep.iter().map(|&r| std::mem::take(&mut mask[r])).collect();
        }
        for row in &mut mask {
            row.push(1);
        }
        logits = decoder.forward(&next, &mask, Some(&mut cache), &request)?.logits.expect("logits requested");
    }
    Ok(out)
}

/// Refuse a batch with a prompt longer than the model's context (`max_position_embeddings`),
/// before anything the size of the prompt squared is allocated; the error names its row.
pub fn check_context(decoder: &Decoder, prompts: &[Vec<u32>]) -> Result<()> {
    let context = decoder.spec().max_position_embeddings;
    match prompts.iter().position(|p| p.len() > context) {
        Some(row) => Err(Error::Prompt {
            row,
            message: format!("{} tokens, longer than the model's context of {context} tokens", prompts[row].len()),
        }),
        None => Ok(()),
    }
}
