//! Llama (and SmolLM): the reference layout that Mistral, Qwen 2/3 and Gemma share.

use super::{AttentionLayout, Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Llama's config: optional `attention_bias` (q, k, v and o) and `mlp_bias`.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Llama, raw, path)?;
    let attention_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_proj_bias = attention_bias;
    spec.mlp_bias = raw.mlp_bias.unwrap_or(false);
    spec.norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
    Ok(spec)
}

/// Tensor names of a `model.layers.N.` layer in the Llama layout.
pub(super) fn layer_names(spec: &ModelSpec, p: &str) -> LayerNames {
    let attn = format!("{p}self_attn.");
    let mlp = format!("{p}mlp.");
    LayerNames {
        attn_norm: format!("{p}input_layernorm.weight"),
        attention: AttentionLayout::Separate {
            q: format!("{attn}q_proj.weight"),
            k: format!("{attn}k_proj.weight"),
            v: format!("{attn}v_proj.weight"),
            biases: spec
                .qkv_bias
                .then(|| [format!("{attn}q_proj.bias"), format!("{attn}k_proj.bias"), format!("{attn}v_proj.bias")]),
        },
        q_norm: spec.qk_norm.then(|| format!("{attn}q_norm.weight")),
        k_norm: spec.qk_norm.then(|| format!("{attn}k_norm.weight")),
        o_proj: format!("{attn}o_proj.weight"),
        o_proj_bias: spec.o_proj_bias.then(|| format!("{attn}o_proj.bias")),
        attn_post_norm: None,
        mlp_norm: format!("{p}post_attention_layernorm.weight"),
        mlp: MlpLayout::Gated {
            gate: format!("{mlp}gate_proj.weight"),
            up: format!("{mlp}up_proj.weight"),
            biases: spec.mlp_bias.then(|| [format!("{mlp}gate_proj.bias"), format!("{mlp}up_proj.bias")]),
        },
        down_proj: format!("{mlp}down_proj.weight"),
        down_proj_bias: spec.mlp_bias.then(|| format!("{mlp}down_proj.bias")),
        mlp_post_norm: None,
        layer_scalar: None,
        per_layer: None,
    }
}
