//! GLM-4-0414 (`Glm4ForCausalLM`, `model_type: glm4`): the Llama layout with a norm after each
//! block's writer (`post_self_attn_layernorm`, `post_mlp_layernorm`: the writers are edited
//! γ-aware, as behind Gemma 2/3's post-norms), a fused `gate_up_proj`, q/k/v biases, and a rotary
//! embedding on the first half of each head with interleaved pairs. (The older ChatGLM layout,
//! `model_type: chatglm`, is a different family.)

use super::{Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// GLM-4's config, with Hugging Face's defaults: `attention_bias` on q, k, v (never o),
/// `partial_rotary_factor` 0.5.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Glm4, raw, path)?;
    spec.qkv_bias = raw.attention_bias.unwrap_or(true);
    spec.o_proj_bias = false;
    spec.norm_eps = raw.rms_norm_eps.unwrap_or(1.5625e-7);
    spec.partial_rotary_factor = raw.partial_rotary_factor.unwrap_or(0.5);
    spec.rope_interleaved = true;
    Ok(spec)
}

/// Tensor names of a GLM-4 layer: `post_attention_layernorm` is the pre-MLP norm, as in Llama.
pub(super) fn layer_names(spec: &ModelSpec, p: &str) -> LayerNames {
    let mut names = super::llama::layer_names(spec, p);
    names.attn_post_norm = Some(format!("{p}post_self_attn_layernorm.weight"));
    names.mlp = MlpLayout::FusedGateUp { gate_up: format!("{p}mlp.gate_up_proj.weight") };
    names.mlp_post_norm = Some(format!("{p}post_mlp_layernorm.weight"));
    names
}
