//! SmolLM3: the Llama layout in which some layers use no rotary embedding (NoPE).

use super::{Family, ModelSpec, RawConfig};
use crate::{Error, Result};
use std::path::Path;

/// SmolLM3's config: `no_rope_layers[l]` is 1 where layer `l` uses the rotary embedding and 0
/// where it does not; without it, every `no_rope_layer_interval`-th layer (default 4) skips it,
/// as Hugging Face's config fills the list in.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Smollm3, raw, path)?;
    let attention_bias = raw.attention_bias.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_proj_bias = attention_bias;
    spec.mlp_bias = raw.mlp_bias.unwrap_or(false);
    if raw.use_sliding_window.unwrap_or(false) && raw.sliding_window.is_some() {
        return Err(Error::BadConfig {
            path: path.to_path_buf(),
            message: "SmolLM3 with use_sliding_window is not supported".into(),
        });
    }
    spec.nope_layers = match &raw.no_rope_layers {
        Some(list) => list.iter().map(|&uses_rope| uses_rope == 0).collect(),
        None => {
            let interval = raw.no_rope_layer_interval.unwrap_or(4).max(1);
            (0..spec.num_layers).map(|l| (l + 1) % interval == 0).collect()
        }
    };
    Ok(spec)
}
