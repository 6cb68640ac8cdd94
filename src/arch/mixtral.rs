//! Mixtral: the Mistral layout whose every MLP is a sparse mixture of experts
//! (`block_sparse_moe`: router `gate`, experts `w1` (gate), `w3` (up), `w2` (down)), the top-k
//! routing weights always renormalised, no shared expert.

use super::{Family, LayerNames, MlpLayout, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Mixtral's config: `num_local_experts` (8) experts of `intermediate_size`, each token routed to
/// `num_experts_per_tok` (2); a sliding window on every layer when configured.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Mixtral, raw, path)?;
    spec.norm_eps = raw.rms_norm_eps.unwrap_or(1e-5);
    spec.sliding_window = raw.sliding_window;
    spec.sliding_layers = vec![raw.sliding_window.is_some(); spec.num_layers];
    let experts = raw.num_local_experts.unwrap_or(8);
    let top_k = raw.num_experts_per_tok.unwrap_or(2);
    spec.moe = Some(super::moe::spec(experts, top_k, spec.intermediate_size, true, None, vec![true; spec.num_layers]));
    Ok(spec)
}

/// Tensor names of a Mixtral layer: Llama's attention; the experts under `block_sparse_moe.`
/// one by one, or under `mlp.` stacked (the layout of newer `transformers` releases).
pub(super) fn layer_names(spec: &ModelSpec, layer: usize, p: &str) -> LayerNames {
    let mut names = super::llama::layer_names(spec, p);
    if let (Some(moe), true) = (&spec.moe, spec.is_sparse(layer)) {
        let block = match moe.storage {
            super::ExpertStorage::PerExpert => format!("{p}block_sparse_moe."),
            super::ExpertStorage::Stacked => format!("{p}mlp."),
        };
        names.mlp = MlpLayout::Sparse(super::moe::sparse_names(moe, &block, ["w1", "w3", "w2"], false));
        names.down_proj = String::new();
        names.down_proj_bias = None;
    }
    names
}
