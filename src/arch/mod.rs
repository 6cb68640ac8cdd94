//! Per-family knowledge: how config.json maps to a [`ModelSpec`] and which tensors are which.
//!
//! Each supported family (named by config.json's `model_type`) has its own file that reads the
//! family's config fields into a [`ModelSpec`] and names its tensors ([`LayerNames`]).
//! The spec is what the decoder runs and what the surgery edits: the embedding, each layer's
//! output-side writers (attention output and MLP output, with biases; in a sparse
//! mixture-of-experts layer every expert's output), and the post-norm weights that sit between a
//! writer and the residual stream (Gemma 2/3/4, OLMo 2, GLM-4).

mod config;
mod gemma;
mod gemma2;
mod gemma3;
mod gemma4;
mod glm4;
mod granite;
mod llama;
mod mistral;
mod mixtral;
mod moe;
mod olmo2;
mod phi3;
mod qwen;
mod qwen2;
mod qwen2_moe;
mod qwen3;
mod smollm3;
mod spec;

pub use config::RawConfig;
pub use spec::{
    Activation, AttentionLayout, ExpertNames, ExpertStorage, GatedNames, GlobalAttention, KvSharing, LayerNames,
    MlpLayout, MlpPart, MlpWriter, ModelSpec, MoeSpec, NormKind, PerLayerInputs, PerLayerNames, ProportionalRope,
    RopeScaling, SparseNames, Writer, WriterKind,
};

use crate::{Error, Result};
use std::path::Path;

/// A supported model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Llama 2/3, SmolLM, and other `LlamaForCausalLM` checkpoints.
    Llama,
    /// Mistral and Mistral-Nemo.
    Mistral,
    /// Qwen 2 / 2.5 (biases on q, k, v).
    Qwen2,
    /// Qwen 3 (q/k norms).
    Qwen3,
    /// Gemma 1 (scaled embeddings, `1 + w` norms).
    Gemma,
    /// Gemma 2 (post-norms, soft-capping, sliding window).
    Gemma2,
    /// Gemma 3 text (post-norms, q/k norms, local/global rope).
    Gemma3,
    /// Gemma 4 text (Gemma 3's layout with `w` norms, normed values, wider global heads with
    /// proportional rope, a scalar per layer).
    Gemma4,
    /// Phi-3 (fused qkv and gate/up projections).
    Phi3,
    /// Qwen-1 (`QWenLMHeadModel`, `transformer.h.N` names).
    Qwen,
    /// OLMo 2 (norms after the blocks only, q/k norms over the whole projection).
    Olmo2,
    /// Granite 3 (embedding, residual, attention and logit multipliers).
    Granite,
    /// SmolLM3 (the Llama layout with rotary-free layers).
    Smollm3,
    /// GLM-4-0414 (`Glm4ForCausalLM`: post-norms, fused gate/up, interleaved partial rope).
    Glm4,
    /// Mixtral (the Mistral layout with a sparse mixture of experts in every layer).
    Mixtral,
    /// Qwen2-MoE (Qwen 2 with sparse layers: routed experts plus a sigmoid-gated shared expert).
    Qwen2Moe,
    /// Qwen3-MoE (Qwen 3 with sparse layers of routed experts).
    Qwen3Moe,
}

impl Family {
    /// Every supported family.
    pub const ALL: [Family; 17] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Gemma,
        Family::Gemma2,
        Family::Gemma3,
        Family::Gemma4,
        Family::Phi3,
        Family::Qwen,
        Family::Olmo2,
        Family::Granite,
        Family::Smollm3,
        Family::Glm4,
        Family::Mixtral,
        Family::Qwen2Moe,
        Family::Qwen3Moe,
    ];

    /// The config.json `model_type` of this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma => "gemma",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3_text",
            Family::Gemma4 => "gemma4_text",
            Family::Phi3 => "phi3",
            Family::Qwen => "qwen",
            Family::Olmo2 => "olmo2",
            Family::Granite => "granite",
            Family::Smollm3 => "smollm3",
            Family::Glm4 => "glm4",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3Moe => "qwen3_moe",
        }
    }

    /// The family for a `model_type` (accepts the multimodal `gemma3` and `gemma4`).
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "gemma3" => Some(Family::Gemma3),
            "gemma4" => Some(Family::Gemma4),
            other => Family::ALL.into_iter().find(|f| f.model_type() == other),
        }
    }

    /// The family for a Hugging Face `architectures` entry.
    pub fn from_architecture(architecture: &str) -> Option<Family> {
        Some(match architecture {
            "LlamaForCausalLM" => Family::Llama,
            "MistralForCausalLM" => Family::Mistral,
            "Qwen2ForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            "GemmaForCausalLM" => Family::Gemma,
            "Gemma2ForCausalLM" => Family::Gemma2,
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => Family::Gemma3,
            "Gemma4ForCausalLM" | "Gemma4ForConditionalGeneration" => Family::Gemma4,
            "Phi3ForCausalLM" => Family::Phi3,
            "QWenLMHeadModel" => Family::Qwen,
            "Olmo2ForCausalLM" => Family::Olmo2,
            "GraniteForCausalLM" => Family::Granite,
            "SmolLM3ForCausalLM" => Family::Smollm3,
            "Glm4ForCausalLM" => Family::Glm4,
            "MixtralForCausalLM" => Family::Mixtral,
            "Qwen2MoeForCausalLM" => Family::Qwen2Moe,
            "Qwen3MoeForCausalLM" => Family::Qwen3Moe,
            _ => return None,
        })
    }

    /// The supported `model_type` names, comma separated (for error messages and help).
    pub fn supported_list() -> String {
        let mut names: Vec<&str> = Family::ALL.iter().map(|f| f.model_type()).collect();
        names.extend(["gemma3 (alias)", "gemma4 (alias)"]);
        names.join(", ")
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// Read `config.json` from a model folder and build its [`ModelSpec`].
pub fn load_spec(model_dir: &Path) -> Result<ModelSpec> {
    let path = model_dir.join("config.json");
    let text = crate::files::read_capped(&path, crate::files::JSON_CAP)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?;
    spec_from_config(&value, &path)
}

/// Build a [`ModelSpec`] from a parsed config.json (`path` is used in error messages).
pub fn spec_from_config(value: &serde_json::Value, path: &Path) -> Result<ModelSpec> {
    let family = detect_family(value, path)?;
    // Multimodal Gemma 3/4 checkpoints nest the text model's config under `text_config`; their
    // text tensors sit under `language_model.model.` (Gemma 3) and `model.language_model.` (Gemma 4).
    let multimodal = |name: &str| value.get("model_type").and_then(|v| v.as_str()) == Some(name);
    let (text_value, prefix) = match (family, value.get("text_config")) {
        (Family::Gemma3, Some(text)) if multimodal("gemma3") => (text.clone(), "language_model.model."),
        (Family::Gemma4, Some(text)) if multimodal("gemma4") => (text.clone(), "model.language_model."),
        (Family::Qwen, _) => (value.clone(), "transformer."),
        _ => (value.clone(), "model."),
    };
    let raw: RawConfig =
        serde_json::from_value(text_value).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    raw.check_limits(path)?;
    let mut spec = match family {
        Family::Llama => llama::spec(&raw, path),
        Family::Mistral => mistral::spec(&raw, path),
        Family::Qwen2 => qwen2::spec(&raw, path),
        Family::Qwen3 => qwen3::spec(&raw, path),
        Family::Gemma => gemma::spec(&raw, path),
        Family::Gemma2 => gemma2::spec(&raw, path),
        Family::Gemma3 => gemma3::spec(&raw, path),
        Family::Gemma4 => gemma4::spec(&raw, path),
        Family::Phi3 => phi3::spec(&raw, path),
        Family::Qwen => qwen::spec(&raw, path),
        Family::Olmo2 => olmo2::spec(&raw, path),
        Family::Granite => granite::spec(&raw, path),
        Family::Smollm3 => smollm3::spec(&raw, path),
        Family::Glm4 => glm4::spec(&raw, path),
        Family::Mixtral => mixtral::spec(&raw, path),
        Family::Qwen2Moe => qwen2_moe::qwen2_moe(&raw, path),
        Family::Qwen3Moe => qwen2_moe::qwen3_moe(&raw, path),
    }?;
    spec.tensor_prefix = prefix.to_string();
    if let Some(tied) = value.get("tie_word_embeddings").and_then(|v| v.as_bool()) {
        spec.tie_word_embeddings = tied;
    }
    spec.validate(path)?;
    Ok(spec)
}

fn detect_family(value: &serde_json::Value, path: &Path) -> Result<Family> {
    let model_type = value.get("model_type").and_then(|v| v.as_str());
    if let Some(family) = model_type.and_then(Family::from_model_type) {
        return Ok(family);
    }
    let architectures: Vec<&str> = value
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if let Some(family) = architectures.iter().find_map(|a| Family::from_architecture(a)) {
        return Ok(family);
    }
    let found = match (model_type, architectures.is_empty()) {
        (Some(t), true) => format!("model_type `{t}`"),
        (Some(t), false) => format!("model_type `{t}` (architectures {architectures:?})"),
        (None, false) => format!("architectures {architectures:?}"),
        (None, true) => "no model_type or architectures field".to_string(),
    };
    Err(Error::UnsupportedArchitecture { found, path: path.to_path_buf(), supported: Family::supported_list() })
}

#[cfg(test)]
mod tests;
