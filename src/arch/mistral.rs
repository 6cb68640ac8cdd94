//! Mistral / Mistral-Nemo: the Llama layout, `head_dim` from config, optional sliding window.

use super::{Family, ModelSpec, RawConfig};
use crate::Result;
use std::path::Path;

/// Mistral's config: no biases; a sliding window on every layer when configured.
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    let mut spec = ModelSpec::base(Family::Mistral, raw, path)?;
    spec.sliding_window = raw.sliding_window;
    spec.sliding_layers = vec![raw.sliding_window.is_some(); spec.num_layers];
    Ok(spec)
}
