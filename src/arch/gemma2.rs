//! Gemma 2: post-attention and post-feedforward norms, soft-capping, alternating sliding window.

use super::{Family, LayerNames, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Gemma 2's config. Even layers (0, 2, ...) use the sliding window.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Gemma2, raw, path)?;
    super::gemma::apply_gemma_common(&mut spec, raw);
    spec.query_scale = raw.query_pre_attn_scalar.map(|s| s.powf(-0.5));
    spec.attn_logit_softcapping = raw.attn_logit_softcapping;
    spec.final_logit_softcapping = raw.final_logit_softcapping;
    spec.sliding_window = raw.sliding_window;
    spec.sliding_layers = match &raw.layer_types {
        Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
        None => (0..spec.num_layers).map(|l| l % 2 == 0).collect(),
    };
    Ok(spec)
}

/// Tensor names of a Gemma 2/3 layer: the Llama names plus the four norms around each block.
///
/// Note that Gemma's `post_attention_layernorm` is the attention *output* norm (in Llama the
/// same name is the pre-MLP norm); Gemma's pre-MLP norm is `pre_feedforward_layernorm`.
pub(super) fn layer_names(spec: &ModelSpec, p: &str) -> LayerNames {
    let mut names = super::llama::layer_names(spec, p);
    names.attn_post_norm = Some(format!("{p}post_attention_layernorm.weight"));
    names.mlp_norm = format!("{p}pre_feedforward_layernorm.weight");
    names.mlp_post_norm = Some(format!("{p}post_feedforward_layernorm.weight"));
    names
}
