//! The mixture-of-experts part shared by Mixtral, Qwen2-MoE and Qwen3-MoE: which layers are
//! sparse, how many experts a token is routed to, and the experts' tensor names in either
//! storage (one set of matrices per expert, or stacked over the experts).
//!
//! The router and every expert's gate/up projections read the stream and are never edited;
//! the writers of a sparse layer are each expert's output matrix (each slice of a stacked one)
//! and the shared expert's.

use super::{ExpertNames, ExpertStorage, GatedNames, MoeSpec, RawConfig, SparseNames};
use crate::{Error, Result};
use std::path::Path;

/// The Qwen MoE rule for which layers are sparse: not in `mlp_only_layers`, and `layer + 1` a
/// multiple of `decoder_sparse_step` (Hugging Face's `Qwen2MoeDecoderLayer`).
pub(super) fn qwen_sparse_layers(raw: &RawConfig, num_layers: usize, path: &Path) -> Result<Vec<bool>> {
    let step = raw.decoder_sparse_step.unwrap_or(1);
    if step == 0 {
        return Err(Error::BadConfig {
            path: path.to_path_buf(),
            message: "decoder_sparse_step must be positive".into(),
        });
    }
    let dense = raw.mlp_only_layers.clone().unwrap_or_default();
    Ok((0..num_layers).map(|l| !dense.contains(&l) && (l + 1) % step == 0).collect())
}

/// A [`MoeSpec`] with the experts stored per expert (a checkpoint's names may say otherwise:
/// [`super::ModelSpec::detect_expert_storage`]).
pub(super) fn spec(
    num_experts: usize,
    top_k: usize,
    expert_intermediate_size: usize,
    norm_topk_prob: bool,
    shared_expert_intermediate_size: Option<usize>,
    sparse_layers: Vec<bool>,
) -> MoeSpec {
    MoeSpec {
        num_experts,
        top_k,
        expert_intermediate_size,
        norm_topk_prob,
        shared_expert_intermediate_size,
        sparse_layers,
        storage: ExpertStorage::PerExpert,
    }
}

/// The names of a sparse block under `block` (`…mlp.`, Mixtral's `…block_sparse_moe.`):
/// `{block}gate.weight` and the experts per expert (`{block}experts.{e}.{gate,up,down}.weight`
/// with the family's projection names) or stacked (`{block}experts.gate_up_proj`,
/// `{block}experts.down_proj`).
pub(super) fn sparse_names(moe: &MoeSpec, block: &str, projections: [&str; 3], shared: bool) -> SparseNames {
    let [gate, up, down] = projections;
    let experts = match moe.storage {
        ExpertStorage::PerExpert => ExpertNames::PerExpert(
            (0..moe.num_experts)
                .map(|e| GatedNames {
                    gate: format!("{block}experts.{e}.{gate}.weight"),
                    up: format!("{block}experts.{e}.{up}.weight"),
                    down: format!("{block}experts.{e}.{down}.weight"),
                })
                .collect(),
        ),
        ExpertStorage::Stacked => ExpertNames::Stacked {
            gate_up: format!("{block}experts.gate_up_proj"),
            down: format!("{block}experts.down_proj"),
            experts: moe.num_experts,
        },
    };
    let shared = shared.then(|| {
        (
            GatedNames {
                gate: format!("{block}shared_expert.gate_proj.weight"),
                up: format!("{block}shared_expert.up_proj.weight"),
                down: format!("{block}shared_expert.down_proj.weight"),
            },
            format!("{block}shared_expert_gate.weight"),
        )
    });
    SparseNames { router: format!("{block}gate.weight"), experts, shared }
}
