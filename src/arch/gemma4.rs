//! Gemma 4 (text): Gemma 3's four norms per layer and q/k norms, with norms that scale by `w`
//! (not `1 + w`), unscaled attention scores, values RMS-normalised without a scale, full-attention
//! layers with their own head width, key/value heads and proportional rope (optionally with the
//! keys as values), and a stored scalar that multiplies each layer's output stream.
//!
//! The E models (E2B, E4B) add per-layer input embeddings (`hidden_size_per_layer_input`: a
//! per-layer block after the MLP whose `per_layer_projection` is one more writer into the
//! stream, behind its own norm), last layers that reuse the keys and values of the last earlier
//! layer of their attention kind (`num_kv_shared_layers`), and optionally a double-wide MLP in
//! those (`use_double_wide_mlp`).
//!
//! What Gemma 4 has that scalpel does not run is refused by the field that turns it on: the
//! mixture-of-experts block beside the MLP (`enable_moe_block`) and bidirectional attention
//! (`use_bidirectional_attention: "all"`).

use super::RopeScaling;
use super::{
    AttentionLayout, Family, GlobalAttention, KvSharing, LayerNames, ModelSpec, NormKind, PerLayerInputs,
    PerLayerNames, ProportionalRope, RawConfig,
};
use crate::{Error, Result};
use std::path::Path;

/// The `layer_types` names (also the keys of `rope_parameters`).
const SLIDING: &str = "sliding_attention";
const FULL: &str = "full_attention";

/// Hugging Face's defaults where config.json leaves a field out.
const DEFAULT_HEAD_DIM: usize = 256;
const DEFAULT_GLOBAL_HEAD_DIM: usize = 512;
const DEFAULT_SLIDING_WINDOW: usize = 512;
const DEFAULT_PER_LAYER_INPUT: usize = 256;
const DEFAULT_PER_LAYER_VOCAB: usize = 262_144;
const DEFAULT_PATTERN: usize = 6;

/// Gemma 4's text config (the whole config of `Gemma4ForCausalLM`, `text_config` of the
/// multimodal `Gemma4ForConditionalGeneration`).
pub(super) fn spec(raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
    refuse_unsupported(raw, path)?;
    let mut spec = ModelSpec::base(Family::Gemma4, raw, path)?;
    super::gemma::apply_gemma_common(&mut spec, raw);
    spec.norm_kind = NormKind::Rms;
    spec.head_dim = raw.head_dim.unwrap_or(DEFAULT_HEAD_DIM);
    spec.max_position_embeddings = raw.max_position_embeddings.unwrap_or(131_072);
    spec.qk_norm = true;
    spec.v_norm = true;
    spec.layer_scalars = true;
    // The q/k norms set the scores' scale; Hugging Face multiplies them by 1.
    spec.query_scale = Some(1.0);
    spec.final_logit_softcapping = raw.final_logit_softcapping;
    spec.sliding_window = Some(raw.sliding_window.unwrap_or(DEFAULT_SLIDING_WINDOW));
    spec.sliding_layers = sliding_layers(raw, spec.num_layers, path)?;
    let values_are_keys = raw.attention_k_eq_v.unwrap_or(false);
    spec.global_attention = Some(GlobalAttention {
        head_dim: raw.global_head_dim.unwrap_or(DEFAULT_GLOBAL_HEAD_DIM),
        // Hugging Face reads `num_global_key_value_heads` only for models with the keys as values.
        num_kv_heads: match (values_are_keys, raw.num_global_key_value_heads) {
            (true, Some(n)) => n,
            _ => spec.num_kv_heads,
        },
        values_are_keys,
    });
    let local = rope_of(raw, SLIDING, 10_000.0, path)?;
    let global = rope_of(raw, FULL, 1_000_000.0, path)?;
    if local.factor != 1.0 {
        return Err(bad(
            path,
            format!("rope_parameters.{SLIDING}.factor = {} is not supported (only 1)", local.factor),
        ));
    }
    spec.rope_local_theta = Some(local.theta);
    spec.rope_theta = global.theta;
    spec.rope_scaling = (global.factor != 1.0).then_some(RopeScaling::Linear { factor: global.factor });
    spec.partial_rotary_factor = 1.0;
    spec.proportional_rope =
        Some(ProportionalRope { local_fraction: local.fraction, global_fraction: global.fraction });
    let width = match raw.hidden_size_per_layer_input {
        None => DEFAULT_PER_LAYER_INPUT,
        Some(width) => width.unwrap_or(0),
    };
    spec.per_layer_inputs = (width > 0).then(|| PerLayerInputs {
        width,
        vocab_size: raw.vocab_size_per_layer_input.unwrap_or(DEFAULT_PER_LAYER_VOCAB),
    });
    if spec.per_layer_inputs.as_ref().is_some_and(|p| p.vocab_size == 0) {
        return Err(bad(path, "vocab_size_per_layer_input must be positive".into()));
    }
    spec.kv_sharing = kv_sharing(&spec.sliding_layers, raw.num_kv_shared_layers.unwrap_or(0), path)?;
    spec.double_wide_mlp = raw.use_double_wide_mlp.unwrap_or(false);
    Ok(spec)
}

/// Hugging Face's `kv_sharing_modes`: the last `shared` layers reuse keys and values; the last
/// layer before them of each attention kind stores its own for them. Every kind a reusing layer
/// has must have such a layer.
fn kv_sharing(sliding: &[bool], shared: usize, path: &Path) -> Result<Vec<KvSharing>> {
    let n = sliding.len();
    if shared == 0 {
        return Ok(vec![KvSharing::Own; n]);
    }
    if shared >= n {
        return Err(bad(
            path,
            format!("num_kv_shared_layers = {shared} leaves no layer of the {n} to compute the keys and values"),
        ));
    }
    let first = n - shared;
    let mut modes: Vec<KvSharing> = (0..n).map(|l| if l < first { KvSharing::Own } else { KvSharing::Reuse }).collect();
    for kind in [true, false] {
        let reused = sliding[first..].contains(&kind);
        match (0..first).rev().find(|&l| sliding[l] == kind) {
            Some(store) => modes[store] = KvSharing::Store,
            None if reused => {
                return Err(bad(
                    path,
                    format!(
                        "num_kv_shared_layers = {shared}: a reusing {} layer has no earlier layer of its kind",
                        if kind { SLIDING } else { FULL }
                    ),
                ))
            }
            None => {}
        }
    }
    Ok(modes)
}

/// Tensor names of a Gemma 4 layer: Gemma 2/3's, its `layer_scalar`, and no value projection in
/// a full-attention layer whose values are its keys.
pub(super) fn layer_names(spec: &ModelSpec, layer: usize, p: &str) -> LayerNames {
    let mut names = super::gemma2::layer_names(spec, p);
    if spec.global_attention_of(layer).is_some_and(|g| g.values_are_keys) {
        if let AttentionLayout::Separate { q, k, biases, .. } = names.attention {
            let biases = biases.map(|[bq, bk, _]| [bq, bk]);
            names.attention = AttentionLayout::KeysAsValues { q, k, biases };
        }
    }
    names.layer_scalar = Some(format!("{p}layer_scalar"));
    if spec.kv_sharing_of(layer) == KvSharing::Reuse {
        // No k/v projections and no k norm: the keys and values are the storing layer's.
        let query = match &names.attention {
            AttentionLayout::Separate { q, biases, .. } => Some((q, biases.as_ref().map(|[bq, _, _]| bq))),
            AttentionLayout::KeysAsValues { q, biases, .. } => Some((q, biases.as_ref().map(|[bq, _]| bq))),
            AttentionLayout::QueryOnly { .. } | AttentionLayout::Fused { .. } => None,
        };
        if let Some((q, bias)) = query {
            names.attention = AttentionLayout::QueryOnly { q: q.clone(), bias: bias.cloned() };
        }
        names.k_norm = None;
    }
    if spec.per_layer_inputs.is_some() {
        names.per_layer = Some(PerLayerNames {
            gate: format!("{p}per_layer_input_gate.weight"),
            projection: format!("{p}per_layer_projection.weight"),
            post_norm: format!("{p}post_per_layer_input_norm.weight"),
        });
    }
    names
}

fn bad(path: &Path, message: String) -> Error {
    Error::BadConfig { path: path.to_path_buf(), message }
}

/// The fields that turn on what the decoder does not run, each refused by name.
fn refuse_unsupported(raw: &RawConfig, path: &Path) -> Result<()> {
    if raw.enable_moe_block == Some(true) {
        return Err(bad(path, "enable_moe_block = true: Gemma 4's mixture-of-experts block is not supported".into()));
    }
    match raw.use_bidirectional_attention.as_deref() {
        // `vision` makes image tokens attend both ways; text alone is causal.
        None | Some("vision") => Ok(()),
        Some(other) => Err(bad(
            path,
            format!(
                "use_bidirectional_attention = \"{other}\" is not supported (a causal decoder: null or \"vision\")"
            ),
        )),
    }
}

/// For each layer, whether it uses the sliding window: `layer_types`, or Hugging Face's default
/// of every sixth layer global; the last layer is always global (Hugging Face forces it).
fn sliding_layers(raw: &RawConfig, num_layers: usize, path: &Path) -> Result<Vec<bool>> {
    let mut sliding = match &raw.layer_types {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                SLIDING => Ok(true),
                FULL => Ok(false),
                other => Err(bad(path, format!("layer_types: unknown attention kind `{other}`"))),
            })
            .collect::<Result<Vec<_>>>()?,
        None => (0..num_layers).map(|l| (l + 1) % DEFAULT_PATTERN != 0).collect(),
    };
    if let Some(last) = sliding.last_mut() {
        *last = false;
    }
    Ok(sliding)
}

/// The rotary parameters of one layer type.
struct LayerRope {
    theta: f64,
    fraction: f64,
    factor: f64,
}

/// `rope_parameters[kind]`: `default` (the whole head rotates) or `proportional`; Hugging Face's
/// defaults where the config has no `rope_parameters` (sliding: default, θ 10⁴; full:
/// proportional, a quarter of the head, θ 10⁶).
fn rope_of(raw: &RawConfig, kind: &str, default_theta: f64, path: &Path) -> Result<LayerRope> {
    let Some(all) = raw.rope_parameters.as_ref().filter(|v| !v.is_null()) else {
        let fraction = if kind == FULL { 0.25 } else { 1.0 };
        return Ok(LayerRope { theta: default_theta, fraction, factor: 1.0 });
    };
    let params = all.get(kind).ok_or_else(|| {
        bad(path, format!("rope_parameters has no `{kind}` entry (Gemma 4 gives one per layer type)"))
    })?;
    let num = |key: &str| params.get(key).and_then(|v| v.as_f64());
    let theta = num("rope_theta").unwrap_or(default_theta);
    match params.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default") {
        "default" => Ok(LayerRope { theta, fraction: 1.0, factor: 1.0 }),
        "proportional" => {
            let fraction = num("partial_rotary_factor").unwrap_or(1.0);
            if !(0.0..=1.0).contains(&fraction) {
                return Err(bad(
                    path,
                    format!("rope_parameters.{kind}.partial_rotary_factor = {fraction} is outside [0, 1]"),
                ));
            }
            let factor = num("factor").unwrap_or(1.0);
            if !(factor.is_finite() && factor > 0.0) {
                return Err(bad(path, format!("rope_parameters.{kind}.factor = {factor} must be positive")));
            }
            Ok(LayerRope { theta, fraction, factor })
        }
        other => Err(bad(
            path,
            format!("rope_parameters.{kind}.rope_type `{other}` is not supported (default, proportional)"),
        )),
    }
}
