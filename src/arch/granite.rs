//! Granite 3: the Llama layout with four scalar multipliers — on the embedding, on each block's
//! output before the residual add, on the attention scores (in place of `head_dim^-0.5`), and a
//! divisor of the logits. Each is a scalar, so the writers are edited as in Llama.

use super::{Family, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Granite's config, with Hugging Face's defaults (every multiplier 1, so a config without
/// `attention_multiplier` scales the scores by 1, not by `head_dim^-0.5`).
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Granite, raw, path)?;
    let attention_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_proj_bias = attention_bias;
    spec.mlp_bias = raw.mlp_bias.unwrap_or(false);
    spec.embedding_scale = Some(raw.embedding_multiplier.unwrap_or(1.0));
    spec.residual_multiplier = Some(raw.residual_multiplier.unwrap_or(1.0));
    spec.query_scale = Some(raw.attention_multiplier.unwrap_or(1.0));
    spec.logits_scaling = Some(raw.logits_scaling.unwrap_or(1.0));
    Ok(spec)
}
