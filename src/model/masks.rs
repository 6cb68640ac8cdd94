//! Attention masks and position ids of a batch of token rows: the causal + padding (+ sliding
//! window) additive mask with a KV-cache offset, positions that count real tokens, and the split
//! of a batch at its shared prefix. The model owns them because its layers read them;
//! [`crate::prompts`] re-exports them for batches built from prompts.

use crate::{Error, Result};
use candle_core::{Device, Tensor};

/// The additive mask value of a blocked key: large and finite, so that a query whose keys are all
/// blocked (a padding position) gets a uniform softmax instead of NaN, and so that adding it to a
/// score cannot overflow to −∞. It is representable in bf16 but not in f16: build masks in f32.
pub const MASK_BLOCKED: f32 = -1e30;

/// Position ids of the last `new_tokens` columns of a key mask `[batch][past + new]`: each real
/// token's index among the real tokens of its row; padding gets 0.
pub fn position_ids(key_mask: &[Vec<u8>], new_tokens: usize) -> Result<Vec<Vec<u32>>> {
    let total = check_key_mask(key_mask, new_tokens)?;
    Ok(key_mask
        .iter()
        .map(|row| {
            let mut seen = 0u32;
            let all: Vec<u32> = row
                .iter()
                .map(|&real| {
                    if real == 0 {
                        return 0;
                    }
                    seen += 1;
                    seen - 1
                })
                .collect();
            all[total - new_tokens..].to_vec()
        })
        .collect())
}

/// Check that a key mask is rectangular and holds at least `new_tokens` columns; its width.
fn check_key_mask(key_mask: &[Vec<u8>], new_tokens: usize) -> Result<usize> {
    let total = key_mask.first().map_or(0, Vec::len);
    if let Some((b, row)) = key_mask.iter().enumerate().find(|(_, r)| r.len() != total) {
        return Err(Error::Invalid(format!(
            "attention mask rows differ in length (row 0 has {total}, row {b} has {})",
            row.len()
        )));
    }
    if new_tokens > total {
        return Err(Error::Invalid(format!("{new_tokens} new tokens but the attention mask has only {total} columns")));
    }
    Ok(total)
}

/// The additive attention mask `[batch, 1, new_tokens, past + new_tokens]` (f32) for a key mask
/// `[batch][past + new_tokens]` (1 = real token; the past columns are the KV cache's, padding
/// included). The query `q` sits at sequence index `i = past + q`; key `j` is allowed (0.0)
/// iff it is a real token, `j ≤ i`, and, with a sliding `window` `w` (Gemma 2/3 local layers,
/// Mistral), its position (the number of real tokens before it in the row) is within `w − 1` of
/// the query's. Every other entry is [`MASK_BLOCKED`]. Counting positions rather than indices
/// is the same for left padding (where `transformers` counts indices) and stays right when
/// padding sits in the middle of a row (a shared prefix, then a left-padded suffix).
pub fn attention_bias(
    key_mask: &[Vec<u8>],
    new_tokens: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let total = check_key_mask(key_mask, new_tokens)?;
    if window == Some(0) {
        return Err(Error::Invalid("a sliding window of 0 tokens lets no query see any key".into()));
    }
    let past = total - new_tokens;
    let mut values = Vec::with_capacity(key_mask.len() * new_tokens * total);
    for row in key_mask {
        // `before[j]`: real tokens before index j (a real token's position).
        let before: Vec<usize> = row
            .iter()
            .scan(0usize, |seen, &real| {
                let here = *seen;
                *seen += usize::from(real != 0);
                Some(here)
            })
            .collect();
        for q in 0..new_tokens {
            let i = past + q;
            for (j, &real) in row.iter().enumerate() {
                let allowed = real != 0 && j <= i && window.is_none_or(|w| before[i] - before[j] < w);
                values.push(if allowed { 0.0 } else { MASK_BLOCKED });
            }
        }
    }
    Ok(Tensor::from_vec(values, (key_mask.len(), 1, new_tokens, total), device)?)
}

/// The number of leading tokens that every sequence of `sequences` shares, capped so that each
/// keeps at least `min_suffix` tokens after it (0 for fewer than two sequences).
pub fn shared_prefix_len(sequences: &[Vec<u32>], min_suffix: usize) -> usize {
    let (Some(first), true) = (sequences.first(), sequences.len() > 1) else {
        return 0;
    };
    let shortest = sequences.iter().map(Vec::len).min().unwrap_or(0);
    let common = (0..shortest).take_while(|&i| sequences.iter().all(|s| s[i] == first[i])).count();
    common.min(shortest.saturating_sub(min_suffix))
}

/// A shared prefix shorter than this is not worth a separate pass.
pub const MIN_SHARED_PREFIX: usize = 4;

/// A batch split into its shared prefix (run once) and left-padded suffixes (run as the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixBatch {
    /// The shared leading tokens, when at least [`MIN_SHARED_PREFIX`] long (else the whole
    /// prompts are the suffixes).
    pub prefix: Option<Vec<u32>>,
    /// The left-padded suffixes `[batch][tokens]`.
    pub ids: Vec<Vec<u32>>,
    /// Each row's key mask over prefix and suffix: `[1; prefix] ++ [0; pad] ++ [1; suffix]`.
    pub mask: Vec<Vec<u8>>,
}

/// Split `sequences` into their shared prefix (leaving each at least `min_suffix` tokens, at
/// least 1) and left-padded suffixes; see [`PrefixBatch`].
pub fn split_shared_prefix(sequences: &[Vec<u32>], pad: u32, min_suffix: usize) -> PrefixBatch {
    let shared = shared_prefix_len(sequences, min_suffix.max(1));
    if shared < MIN_SHARED_PREFIX {
        let (ids, mask) = left_pad(sequences, pad);
        return PrefixBatch { prefix: None, ids, mask };
    }
    let suffixes: Vec<Vec<u32>> = sequences.iter().map(|s| s[shared..].to_vec()).collect();
    let (ids, suffix_mask) = left_pad(&suffixes, pad);
    let mask = suffix_mask.iter().map(|row| [vec![1u8; shared], row.clone()].concat()).collect();
    PrefixBatch { prefix: Some(sequences[0][..shared].to_vec()), ids, mask }
}

/// `sequences` left-padded with `pad` to the longest one, and their key masks (1 = real token).
fn left_pad(sequences: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u8>>) {
    let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
    sequences
        .iter()
        .map(|s| {
            let padding = width - s.len();
            ([vec![pad; padding], s.clone()].concat(), [vec![0u8; padding], vec![1u8; s.len()]].concat())
        })
        .unzip()
}
