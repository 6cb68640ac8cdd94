//! Token batches: tokenizer loading, encoding, left padding, position ids and the additive
//! causal + padding (+ sliding window) attention mask, with a KV-cache offset.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;
use tokenizers::Tokenizer;

/// The additive mask value of a blocked key: large and finite, so that a query whose keys are all
/// blocked (a padding position) gets a uniform softmax instead of NaN, and so that adding it to a
/// score cannot overflow to −∞. It is representable in bf16 but not in f16: build masks in f32.
pub const MASK_BLOCKED: f32 = -1e30;

/// A left-padded batch: every row has the same length; real tokens are right-aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids `[batch][tokens]`, padding first.
    pub ids: Vec<Vec<u32>>,
    /// Attention mask `[batch][tokens]`: 1 for a real token, 0 for padding.
    pub mask: Vec<Vec<u8>>,
    /// Position ids `[batch][tokens]`: the index of each real token among its row's real tokens
    /// (0 at the first real token); padding gets 0.
    pub positions: Vec<Vec<u32>>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

/// Left-pad `sequences` with `pad` to the longest one.
pub fn left_pad(sequences: &[Vec<u32>], pad: u32) -> Batch {
    let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut batch = Batch { ids: Vec::new(), mask: Vec::new(), positions: Vec::new(), lengths: Vec::new() };
    for s in sequences {
        let padding = width - s.len();
        batch.ids.push([vec![pad; padding], s.clone()].concat());
        batch.mask.push([vec![0u8; padding], vec![1u8; s.len()]].concat());
        batch.positions.push([vec![0u32; padding], (0..s.len() as u32).collect()].concat());
        batch.lengths.push(s.len());
    }
    batch
}

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

impl Batch {
    /// Left-pad `sequences` with `pad`; an empty sequence is an error (it has no last token).
    pub fn from_sequences(sequences: &[Vec<u32>], pad: u32) -> Result<Batch> {
        if let Some(i) = sequences.iter().position(Vec::is_empty) {
            return Err(Error::Invalid(format!("sequence {i} of the batch has no tokens")));
        }
        Ok(left_pad(sequences, pad))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens per row (padding included).
    pub fn width(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    /// Token ids as a `[batch, tokens]` u32 tensor.
    pub fn input_ids(&self, device: &Device) -> Result<Tensor> {
        rows_to_tensor(&self.ids, device)
    }

    /// The attention mask as a `[batch, tokens]` u32 tensor (1 = real token).
    pub fn attention_mask(&self, device: &Device) -> Result<Tensor> {
        let rows: Vec<Vec<u32>> = self.mask.iter().map(|r| r.iter().map(|&m| u32::from(m)).collect()).collect();
        rows_to_tensor(&rows, device)
    }

    /// Position ids as a `[batch, tokens]` u32 tensor.
    pub fn position_ids(&self, device: &Device) -> Result<Tensor> {
        rows_to_tensor(&self.positions, device)
    }

    /// The additive causal + padding mask of this batch as a prefill (no past):
    /// `[batch, 1, tokens, tokens]`, see [`attention_bias`].
    pub fn attention_bias(&self, window: Option<usize>, device: &Device) -> Result<Tensor> {
        attention_bias(&self.mask, self.width(), window, device)
    }

    /// Position ids of the token generated `step` tokens after this batch (step 0 = the first
    /// new token): each row's real length plus `step`.
    pub fn next_positions(&self, step: usize) -> Vec<u32> {
        self.lengths.iter().map(|&n| (n + step) as u32).collect()
    }
}

fn rows_to_tensor(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// Load `dir/tokenizer.json` (the Hugging Face fast-tokenizer file).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "{}: not found; scalpel needs the Hugging Face fast-tokenizer file tokenizer.json \
             (models with only a sentencepiece tokenizer.model can be converted with transformers: \
             AutoTokenizer.from_pretrained(dir).save_pretrained(dir))",
            path.display()
        )));
    }
    Tokenizer::from_file(&path).map_err(|e| Error::Invalid(format!("{}: not a usable tokenizer: {e}", path.display())))
}

/// Encode `texts` with `tokenizer`. `add_special_tokens` lets the tokenizer add its BOS/EOS;
/// pass false for chat-template output, which already holds them. A text that encodes to no
/// tokens is an error.
pub fn encode_texts(tokenizer: &Tokenizer, texts: &[String], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
    texts
        .iter()
        .map(|text| {
            let encoding = tokenizer
                .encode(text.as_str(), add_special_tokens)
                .map_err(|e| Error::Other(format!("tokenizer failed on {text:?}: {e}")))?;
            if encoding.is_empty() {
                return Err(Error::Invalid(format!("prompt {text:?} encodes to no tokens")));
            }
            Ok(encoding.get_ids().to_vec())
        })
        .collect()
}

/// Encode `texts` and left-pad them with `pad_id` into one batch.
pub fn encode_batch(tokenizer: &Tokenizer, texts: &[String], add_special_tokens: bool, pad_id: u32) -> Result<Batch> {
    Batch::from_sequences(&encode_texts(tokenizer, texts, add_special_tokens)?, pad_id)
}

/// Length-bucketed batches: the indices `0..lengths.len()` sorted by length (stable, so equal
/// lengths keep their order) and cut into groups of at most `batch_size`. Prompts of similar
/// length share a batch, so left padding (which costs as much compute as a real token) stays
/// small; callers put each result back at its original index.
pub fn length_buckets(lengths: &[usize], batch_size: usize) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    Ok(order.chunks(batch_size).map(<[usize]>::to_vec).collect())
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
        let batch = left_pad(sequences, pad);
        return PrefixBatch { prefix: None, ids: batch.ids, mask: batch.mask };
    }
    let suffixes: Vec<Vec<u32>> = sequences.iter().map(|s| s[shared..].to_vec()).collect();
    let batch = left_pad(&suffixes, pad);
    let mask = batch.mask.iter().map(|row| [vec![1u8; shared], row.clone()].concat()).collect();
    PrefixBatch { prefix: Some(sequences[0][..shared].to_vec()), ids: batch.ids, mask }
}

/// Consecutive chunks of at most `batch_size` items (the last may be shorter).
pub fn chunks<T>(items: &[T], batch_size: usize) -> Result<std::slice::Chunks<'_, T>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    Ok(items.chunks(batch_size))
}
