//! Gemma 1: the Llama layout with `sqrt(hidden)`-scaled embeddings, `1 + w` norms, GELU and tied head.

use super::{Activation, Family, ModelSpec, NormKind, RawConfig};
use crate::Result;
use std::path::Path;

/// Gemma's config. Its activation defaults to the tanh GELU that the released models use.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Gemma, raw, path)?;
    apply_gemma_common(&mut spec, raw);
    Ok(spec)
}

/// What every Gemma generation shares: norms, embedding scale, tied head, GELU.
pub(super) fn apply_gemma_common(spec: &mut ModelSpec, raw: &RawConfig) {
    spec.norm_kind = NormKind::RmsOnePlus;
    spec.embedding_scale = Some((spec.hidden_size as f64).sqrt());
    spec.tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(true);
    if raw.hidden_activation.is_none() && raw.hidden_act.as_deref().is_none_or(|a| a == "gelu") {
        // HF Gemma ignores `hidden_act: gelu` and runs the tanh approximation.
        spec.activation = Activation::GeluTanh;
    }
    spec.o_proj_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = spec.o_proj_bias;
}
