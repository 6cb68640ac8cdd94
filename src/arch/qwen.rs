//! Qwen-1 (`QWenLMHeadModel`): `transformer.h.N` names, fused `c_attn` with bias, `w1`/`w2` MLP.
//!
//! The writers are `attn.c_proj` and `mlp.c_proj`. The MLP's `w1` and `w2` are input-side
//! matrices (they read from the residual stream) and are never edited by refusal ablation.

use super::{AttentionLayout, Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::{Error, Result};
use std::path::Path;

/// Qwen-1's config: `kv_channels`, `layer_norm_epsilon`, `rotary_emb_base`, `seq_length`, and an
/// `intermediate_size` that is twice the MLP width.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Qwen, raw, path)?;
    if spec.intermediate_size % 2 != 0 {
        return Err(Error::BadConfig {
            path: path.to_path_buf(),
            message: format!("Qwen-1 intermediate_size {} must be even", spec.intermediate_size),
        });
    }
    spec.intermediate_size /= 2;
    spec.num_kv_heads = spec.num_heads;
    spec.head_dim = raw.kv_channels.unwrap_or(spec.hidden_size / spec.num_heads);
    spec.norm_eps = raw.layer_norm_epsilon.unwrap_or(1e-6);
    spec.rope_theta = raw.rotary_emb_base.unwrap_or(10_000.0);
    spec.partial_rotary_factor = raw.rotary_pct.unwrap_or(1.0);
    spec.max_position_embeddings = raw.seq_length.unwrap_or(8192);
    spec.qkv_bias = true;
    let has_bias = !raw.no_bias.unwrap_or(true);
    spec.o_proj_bias = has_bias;
    spec.mlp_bias = has_bias;
    Ok(spec)
}

/// Tensor names of a `transformer.h.N.` layer.
pub(super) fn layer_names(spec: &ModelSpec, p: &str) -> LayerNames {
    LayerNames {
        attn_norm: format!("{p}ln_1.weight"),
        attention: AttentionLayout::Fused {
            qkv: format!("{p}attn.c_attn.weight"),
            bias: Some(format!("{p}attn.c_attn.bias")),
        },
        q_norm: None,
        k_norm: None,
        o_proj: format!("{p}attn.c_proj.weight"),
        o_proj_bias: spec.o_proj_bias.then(|| format!("{p}attn.c_proj.bias")),
        attn_post_norm: None,
        mlp_norm: format!("{p}ln_2.weight"),
        mlp: MlpLayout::QwenW1W2 { w1: format!("{p}mlp.w1.weight"), w2: format!("{p}mlp.w2.weight") },
        down_proj: format!("{p}mlp.c_proj.weight"),
        down_proj_bias: spec.mlp_bias.then(|| format!("{p}mlp.c_proj.bias")),
        mlp_post_norm: None,
        layer_scalar: None,
        per_layer: None,
    }
}
