//! Token batches: tokenizer loading, encoding, left padding. The position ids and attention masks
//! a batch needs are the model's ([`crate::model::masks`]), re-exported here.

pub use crate::model::masks::{
    attention_bias, position_ids, shared_prefix_len, split_shared_prefix, PrefixBatch, MASK_BLOCKED, MIN_SHARED_PREFIX,
};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;
use tokenizers::Tokenizer;

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

/// Consecutive chunks of at most `batch_size` items (the last may be shorter).
pub fn chunks<T>(items: &[T], batch_size: usize) -> Result<std::slice::Chunks<'_, T>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    Ok(items.chunks(batch_size))
}
