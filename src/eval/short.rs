//! Short greedy answers that stop as soon as their refusal verdict is known: a row ends at the
//! first refusal marker (nothing it says afterwards can change the verdict) or after
//! `max_tokens`. Used where only the verdict matters — the search's trials and the probe's
//! choice of prompts — so that a refusal costs a few tokens instead of a whole answer.

use super::refusal::refusal_marker;
use crate::model::{generate, Decoder, GenerateOptions, Interventions, Sampling};
use crate::prompts::PromptEncoder;
use crate::Result;

/// Greedy answers to `encoded` prompts (sorted by length into batches of `batch`, so little
/// padding is computed; returned in the prompts' order) and each prompt's first-token logits.
pub fn short_answers(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    encoded: &[Vec<u32>],
    max_tokens: usize,
    batch: usize,
) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let options = GenerateOptions {
        max_tokens: max_tokens.max(1),
        sampling: Sampling::default(),
        stop_ids: encoder.eos_ids().to_vec(),
    };
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let mut texts = vec![String::new(); encoded.len()];
    let mut logits = vec![Vec::new(); encoded.len()];
    for chunk in order.chunks(batch.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let mut so_far: Vec<Vec<u32>> = vec![Vec::new(); chunk.len()];
        let mut decode_error = None;
        let out = generate(decoder, &ids, encoder.pad_id(), &options, &Interventions::none(), &mut |row, id| {
            so_far[row].push(id);
            match encoder.decode(&so_far[row]) {
                Ok(text) => refusal_marker(&text).is_some_and(|m| !m.is_empty()),
                Err(e) => {
                    decode_error.get_or_insert(e);
                    true
                }
            }
        })?;
        if let Some(e) = decode_error {
            return Err(e);
        }
        for (&i, g) in chunk.iter().zip(out) {
            texts[i] = encoder.decode(&g.ids)?.trim().to_string();
            logits[i] = g.first_logits;
        }
    }
    Ok((texts, logits))
}
