//! Phi-3: fused `qkv_proj` and `gate_up_proj`.

use super::{AttentionLayout, Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Phi-3's config (no biases; `partial_rotary_factor` when present).
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Phi3, raw, path)?;
    spec.norm_eps = raw.rms_norm_eps.unwrap_or(1e-5);
    if let Some(window) = raw.sliding_window {
        spec.sliding_window = Some(window);
        spec.sliding_layers = vec![true; spec.num_layers];
    }
    Ok(spec)
}

/// Tensor names of a Phi-3 layer.
pub(super) fn layer_names(p: &str) -> LayerNames {
    let attn = format!("{p}self_attn.");
    let mlp = format!("{p}mlp.");
    LayerNames {
        attn_norm: format!("{p}input_layernorm.weight"),
        attention: AttentionLayout::Fused { qkv: format!("{attn}qkv_proj.weight"), bias: None },
        q_norm: None,
        k_norm: None,
        o_proj: format!("{attn}o_proj.weight"),
        o_proj_bias: None,
        attn_post_norm: None,
        mlp_norm: format!("{p}post_attention_layernorm.weight"),
        mlp: MlpLayout::FusedGateUp { gate_up: format!("{mlp}gate_up_proj.weight") },
        down_proj: format!("{mlp}down_proj.weight"),
        down_proj_bias: None,
        mlp_post_norm: None,
        layer_scalar: None,
        per_layer: None,
    }
}
