//! Qwen2-MoE and Qwen3-MoE: the Qwen 2 / Qwen 3 layouts whose sparse layers' MLP (`mlp.`) is a
//! router `gate`, experts with `gate_proj`/`up_proj`/`down_proj`, and for Qwen2-MoE a shared
//! expert whose output is scaled by `sigmoid(shared_expert_gate · x)`. Dense layers
//! (`mlp_only_layers`, or off the `decoder_sparse_step`) keep Llama's MLP names.

use super::{Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Qwen2-MoE's config: q/k/v biases; `num_experts` (60) experts of `moe_intermediate_size`
/// (1408), top `num_experts_per_tok` (4), a shared expert of `shared_expert_intermediate_size`
/// (5632); the defaults are Hugging Face's.
pub(super) fn qwen2_moe(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Qwen2Moe, raw, path)?;
    spec.qkv_bias = true;
    if raw.use_sliding_window.unwrap_or(false) {
        spec.sliding_window = raw.sliding_window;
        spec.sliding_layers = vec![raw.sliding_window.is_some(); spec.num_layers];
    }
    let shared = raw.shared_expert_intermediate_size.unwrap_or(5632);
    spec.moe = moe(raw, &spec, path, (60, 4, 1408), Some(shared))?;
    Ok(spec)
}

/// Qwen3-MoE's config: q/k norms, `attention_bias` on q, k, v and o; `num_experts` (128) of
/// `moe_intermediate_size` (768), top `num_experts_per_tok` (8), no shared expert.
pub(super) fn qwen3_moe(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Qwen3Moe, raw, path)?;
    spec.qk_norm = true;
    let attention_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_proj_bias = attention_bias;
    spec.moe = moe(raw, &spec, path, (128, 8, 768), None)?;
    Ok(spec)
}

/// The experts of a Qwen MoE config, with `defaults` (experts, top-k, expert width) for the
/// fields it leaves out; none when it has no experts (every layer dense).
fn moe(
    raw: &RawConfig,
    spec: &ModelSpec,
    path: &Path,
    defaults: (usize, usize, usize),
    shared: Option<usize>,
) -> Result<Option<super::MoeSpec>> {
    let experts = raw.num_experts.unwrap_or(defaults.0);
    if experts == 0 {
        return Ok(None);
    }
    let sparse = super::moe::qwen_sparse_layers(raw, spec.num_layers, path)?;
    Ok(Some(super::moe::spec(
        experts,
        raw.num_experts_per_tok.unwrap_or(defaults.1),
        raw.moe_intermediate_size.unwrap_or(defaults.2),
        raw.norm_topk_prob.unwrap_or(false),
        shared,
        sparse,
    )))
}

/// Tensor names of a Qwen2-MoE / Qwen3-MoE layer.
pub(super) fn layer_names(spec: &ModelSpec, layer: usize, p: &str) -> LayerNames {
    let mut names = super::llama::layer_names(spec, p);
    if let (Some(moe), true) = (&spec.moe, spec.is_sparse(layer)) {
        let shared = moe.shared_expert_intermediate_size.is_some();
        let block = format!("{p}mlp.");
        names.mlp =
            MlpLayout::Sparse(super::moe::sparse_names(moe, &block, ["gate_proj", "up_proj", "down_proj"], shared));
        names.down_proj = String::new();
        names.down_proj_bias = None;
    }
    names
}
