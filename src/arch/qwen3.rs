//! Qwen 3: the Llama layout with per-head RMSNorm on queries and keys.

use super::{Family, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Qwen 3's config: q/k norms; `attention_bias` puts biases on q, k, v and o.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Qwen3, raw, path)?;
    spec.qk_norm = true;
    let attention_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_proj_bias = attention_bias;
    Ok(spec)
}
