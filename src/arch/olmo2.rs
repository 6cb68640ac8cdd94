//! OLMo 2: no norm before a block; an RMSNorm on each block's output before the residual add
//! (so every writer sits behind a post-norm, as in Gemma 2/3, and is edited γ-aware), and q/k
//! norms over the whole projection rather than per head.

use super::{Family, LayerNames, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// OLMo 2's config: `attention_bias` puts biases on q, k, v and o; the head width is
/// `hidden / heads` (Hugging Face ignores a `head_dim` field).
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Olmo2, raw, path)?;
    spec.head_dim = spec.hidden_size / spec.num_heads;
    spec.norm_eps = raw.rms_norm_eps.unwrap_or(1e-5);
    let bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = bias;
    spec.o_proj_bias = bias;
    spec.qk_norm = true;
    spec.qk_norm_full = true;
    spec.pre_norms = false;
    Ok(spec)
}

/// Tensor names of an OLMo 2 layer. Its `post_attention_layernorm` is the attention *output*
/// norm (in Llama the same name is the pre-MLP norm); it has no pre-norms.
pub(super) fn layer_names(spec: &ModelSpec, p: &str) -> LayerNames {
    let mut names = super::llama::layer_names(spec, p);
    names.attn_norm = String::new();
    names.mlp_norm = String::new();
    names.attn_post_norm = Some(format!("{p}post_attention_layernorm.weight"));
    names.mlp_post_norm = Some(format!("{p}post_feedforward_layernorm.weight"));
    names
}
