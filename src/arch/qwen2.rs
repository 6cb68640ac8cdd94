//! Qwen 2 / 2.5: the Llama layout with biases on q, k and v (not on o).

use super::{Family, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Qwen 2's config: q/k/v biases always; the sliding window only with `use_sliding_window`.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Qwen2, raw, path)?;
    spec.qkv_bias = true;
    spec.o_proj_bias = false;
    if raw.use_sliding_window.unwrap_or(false) {
        spec.sliding_window = raw.sliding_window;
        spec.sliding_layers = vec![raw.sliding_window.is_some(); spec.num_layers];
    }
    Ok(spec)
}
