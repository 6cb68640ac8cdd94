//! Cross-entropy of plain text under a model (nats per token; `exp` of it is the perplexity):
//! a check that an edit left the model's language ability alone.

use super::kl::log_sum_exp;
use super::run::Subject;
use crate::model::{ForwardRequest, LogitsMode};
use crate::prompts::{encode_texts, left_pad};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Tokens per text at most (longer texts are cut), which bounds the `[batch, tokens, vocab]` logits.
pub const MAX_TEXT_TOKENS: usize = 256;

/// Cross-entropy over a text set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrossEntropy {
    /// Mean over every predicted token of every text, in nats.
    pub nats_per_token: f64,
    /// Tokens predicted (each text's tokens after the first).
    pub tokens: usize,
    /// Per text, in order: mean nats per predicted token.
    pub per_text: Vec<f64>,
}

impl CrossEntropy {
    /// `exp(nats_per_token)`.
    pub fn perplexity(&self) -> f64 {
        self.nats_per_token.exp()
    }
}

/// The cross-entropy of `texts` (tokenized as they are, with the tokenizer's usual special
/// tokens, no chat template; cut to [`MAX_TEXT_TOKENS`]) under `subject`, in batches.
pub fn cross_entropy(subject: &Subject<'_>, texts: &[String], batch: usize) -> Result<CrossEntropy> {
    let request = ForwardRequest { capture: None, interventions: subject.interventions, logits: LogitsMode::All };
    let (mut total, mut tokens, mut per_text) = (0f64, 0usize, Vec::with_capacity(texts.len()));
    for chunk in texts.chunks(batch.max(1)) {
        let mut ids = encode_texts(subject.encoder.tokenizer(), chunk, true)?;
        for (sequence, text) in ids.iter_mut().zip(chunk) {
            sequence.truncate(MAX_TEXT_TOKENS);
            if sequence.len() < 2 {
                return Err(Error::Invalid(format!("text {text:?} is too short: it needs at least two tokens")));
            }
        }
        let b = left_pad(&ids, subject.encoder.pad_id());
        let logits = subject.decoder.forward(&b.ids, &b.mask, None, &request)?.logits.expect("logits requested");
        let logits: Vec<Vec<Vec<f32>>> = logits.to_vec3()?;
        for (row, (sequence, length)) in logits.iter().zip(b.ids.iter().zip(&b.lengths)) {
            let start = sequence.len() - length;
            let nats: f64 = (start..sequence.len() - 1)
                .map(|t| log_sum_exp(&row[t]) - f64::from(row[t][sequence[t + 1] as usize]))
                .sum();
            per_text.push(nats / (length - 1) as f64);
            total += nats;
            tokens += length - 1;
        }
    }
    Ok(CrossEntropy { nats_per_token: total / tokens.max(1) as f64, tokens, per_text })
}
