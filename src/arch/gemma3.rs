//! Gemma 3 (text): Gemma 2's layout with q/k norms, local/global rope and no soft-capping.

use super::{Family, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Gemma 3's config. Every `sliding_window_pattern`-th layer is global; the others use the
/// sliding window and the local rope base (`rope_local_base_freq`); rope scaling, when
/// configured, applies to the global layers only.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Gemma3, raw, path)?;
    super::gemma::apply_gemma_common(&mut spec, raw);
    spec.qk_norm = true;
    spec.query_scale = raw.query_pre_attn_scalar.map(|s| s.powf(-0.5));
    spec.attn_logit_softcapping = raw.attn_logit_softcapping;
    spec.final_logit_softcapping = raw.final_logit_softcapping;
    spec.rope_theta = raw.rope_theta.unwrap_or(1_000_000.0);
    spec.rope_local_theta = Some(raw.rope_local_base_freq.unwrap_or(10_000.0));
    spec.sliding_window = raw.sliding_window;
    let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
    spec.sliding_layers = match &raw.layer_types {
        Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
        None => (0..spec.num_layers).map(|l| (l + 1) % pattern != 0).collect(),
    };
    Ok(spec)
}
