//! GGUF metadata → Hugging Face config.json and generation_config.json.

use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};
use std::path::Path;

/// The GGUF architectures scalpel imports and their Hugging Face names.
pub const SUPPORTED: &[&str] = &[
    "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma4", "phi3", "olmo2", "granite", "glm4", "smollm3",
    "qwen2moe", "qwen3moe",
];

/// The architectures whose experts (`ffn_*_exps`) the importer reads: `llama` with
/// `expert_count` is Mixtral.
const WITH_EXPERTS: &[&str] = &["llama", "qwen2moe", "qwen3moe"];

/// Typed access to GGUF metadata with errors that name the key.
pub(super) struct Meta<'a> {
    pub content: &'a Content,
    pub path: &'a Path,
    pub arch: String,
}

impl<'a> Meta<'a> {
    pub fn new(content: &'a Content, path: &'a Path) -> Result<Meta<'a>> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| Error::bad_checkpoint(path, "GGUF has no general.architecture"))?;
        if !SUPPORTED.contains(&arch.as_str()) {
            return Err(Error::UnsupportedArchitecture {
                found: format!("GGUF architecture `{arch}`"),
                path: path.to_path_buf(),
                supported: SUPPORTED.join(", "),
            });
        }
        // Experts in an architecture the importer reads without them would be left out, and the
        // folder would describe a dense model.
        let experts = content.metadata.get(&format!("{arch}.expert_count")).and_then(|v| v.to_u32().ok());
        if let Some(n) = experts.filter(|&n| n > 0 && !WITH_EXPERTS.contains(&arch.as_str())) {
            return Err(Error::UnsupportedArchitecture {
                found: format!("GGUF architecture `{arch}` with {n} experts (a mixture of experts)"),
                path: path.to_path_buf(),
                supported: format!("{} (experts: {})", SUPPORTED.join(", "), WITH_EXPERTS.join(", ")),
            });
        }
        let meta = Meta { content, path, arch };
        meta.check_variant()?;
        Ok(meta)
    }

    /// Variants llama.cpp files under a supported architecture that the family scalpel reads
    /// it as lacks: read as that family, they would lose a setting and compute another model.
    fn check_variant(&self) -> Result<()> {
        let variant = match self.arch.as_str() {
            "olmo2" if self.opt_usize("attention.sliding_window").is_some_and(|w| w > 0) => {
                Some("sliding-window attention (OLMo 3)")
            }
            "glm4" if self.get(&self.arch_key("rope.dimension_sections")).is_some() => {
                Some("multimodal rotary sections (GLM-4V)")
            }
            "granite" if self.get(&self.arch_key("deepstack_mapping")).is_some() => Some("vision deepstack layers"),
            "phi3" if self.content.tensor_infos.contains_key("rope_factors_long.weight") => {
                Some("long-context rope factors (LongRoPE)")
            }
            "gemma4" if self.opt_usize("embedding_length_per_layer_input").is_some_and(|n| n > 0) => {
                Some("per-layer input embeddings")
            }
            "gemma4" if self.opt_usize("attention.shared_kv_layers").is_some_and(|n| n > 0) => {
                Some("layers that share keys and values")
            }
            _ => None,
        };
        match variant {
            Some(what) => Err(Error::UnsupportedArchitecture {
                found: format!("GGUF architecture `{}` with {what}", self.arch),
                path: self.path.to_path_buf(),
                supported: SUPPORTED.join(", "),
            }),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.content.metadata.get(key)
    }

    pub fn arch_key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let full = self.arch_key(key);
        self.get(&full)
            .and_then(|v| {
                v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)).or_else(|| v.to_i32().ok().map(|x| x as u64))
            })
            .map(|v| v as usize)
            .ok_or_else(|| Error::bad_checkpoint(self.path, format!("GGUF metadata lacks `{full}`")))
    }

    /// Head counts, widths and the layer count in range (and consistent) before anything is
    /// derived from them.
    pub fn check_sizes(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::bad_checkpoint(self.path, format!("GGUF metadata `{}` {why}", self.arch_key(key))))
        };
        for (key, limit) in [("attention.head_count", 1 << 16), ("embedding_length", 1 << 20), ("block_count", 4096)] {
            let v = self.usize(key)?;
            if v == 0 || v > limit {
                return bad(key, format!("= {v}: it must lie in 1..={limit}"));
            }
        }
        let heads = self.usize("attention.head_count")?;
        for kv in self.per_layer("attention.head_count_kv").unwrap_or_default() {
            if kv == 0 || !heads.is_multiple_of(kv) {
                return bad(
                    "attention.head_count_kv",
                    format!("has {kv} for a layer: each must divide attention.head_count ({heads})"),
                );
            }
        }
        if let Some(kv) = self.opt_usize("attention.head_count_kv") {
            if kv == 0 || !heads.is_multiple_of(kv) {
                return bad(
                    "attention.head_count_kv",
                    format!("= {kv}: it must divide attention.head_count ({heads})"),
                );
            }
        }
        for (key, limit) in
            [("attention.key_length", 1 << 16), ("feed_forward_length", 1 << 22), ("context_length", 1 << 28)]
        {
            if let Some(v) = self.opt_usize(key).filter(|&v| v == 0 || v > limit) {
                return bad(key, format!("= {v}: it must lie in 1..={limit}"));
            }
        }
        Ok(())
    }

    pub fn opt_usize(&self, key: &str) -> Option<usize> {
        self.usize(key).ok()
    }

    pub fn opt_f64(&self, key: &str) -> Option<f64> {
        // f32 values are widened through their shortest decimal form (1e-5, not 9.99999974e-6).
        self.get(&self.arch_key(key))
            .and_then(|v| v.to_f32().ok().and_then(|x| x.to_string().parse().ok()).or_else(|| v.to_f64().ok()))
    }

    /// llama.cpp's per-layer `attention.sliding_window_pattern` flags (true: the layer slides),
    /// when the file has them as an array.
    pub fn sliding_flags(&self) -> Option<Vec<bool>> {
        match self.get(&self.arch_key("attention.sliding_window_pattern"))? {
            Value::Array(items) => items.iter().map(|v| v.to_bool().ok()).collect(),
            _ => None,
        }
    }

    /// A per-layer u32 array (such as Gemma 4's `attention.head_count_kv`), if the key is one.
    pub fn per_layer(&self, key: &str) -> Option<Vec<usize>> {
        match self.get(&self.arch_key(key))? {
            Value::Array(items) => items.iter().map(|v| v.to_u32().ok().map(|x| x as usize)).collect(),
            _ => None,
        }
    }

    pub fn token_id(&self, key: &str) -> Option<u32> {
        self.get(&format!("tokenizer.ggml.{key}")).and_then(|v| v.to_u32().ok())
    }
}

/// config.json for the imported model.
pub(super) fn config(meta: &Meta<'_>, vocab_size: usize, tied: bool, torch_dtype: &str) -> Result<Json> {
    let hidden = meta.usize("embedding_length")?;
    let heads = meta.usize("attention.head_count")?;
    let kv_per_layer = meta.per_layer("attention.head_count_kv");
    let kv = meta.opt_usize("attention.head_count_kv").unwrap_or(heads);
    let head_dim = meta.opt_usize("attention.key_length").unwrap_or(hidden / heads);
    let layers = meta.usize("block_count")?;
    let has = |tensor: &str| meta.content.tensor_infos.contains_key(tensor);
    let sliding = meta.sliding_flags();
    if let Some(flags) = sliding.as_ref().filter(|f| f.len() != layers) {
        return Err(Error::bad_checkpoint(
            meta.path,
            format!(
                "GGUF metadata `{}` has {} layer flags for {layers} layers",
                meta.arch_key("attention.sliding_window_pattern"),
                flags.len()
            ),
        ));
    }
    let mut c = json!({
        "hidden_size": hidden,
        "intermediate_size": meta.usize("feed_forward_length")?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "vocab_size": vocab_size,
        "max_position_embeddings": meta.opt_usize("context_length").unwrap_or(4096),
        "rms_norm_eps": meta.opt_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        "rope_theta": meta.opt_f64("rope.freq_base").unwrap_or(10_000.0),
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "bos_token_id": meta.token_id("bos_token_id"),
        "eos_token_id": meta.token_id("eos_token_id"),
        "pad_token_id": meta.token_id("padding_token_id"),
    });
    let experts = meta.opt_usize("expert_count").filter(|&n| n > 0);
    let top_k = meta.opt_usize("expert_used_count");
    let expert_width = meta.opt_usize("expert_feed_forward_length");
    let extra = match meta.arch.as_str() {
        // llama.cpp runs every layer sparse and renormalises the top-k routing weights of
        // Mixtral and Qwen3-MoE, not of Qwen2-MoE.
        "llama" if experts.is_some() => json!({
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_act": "silu",
            "num_local_experts": experts, "num_experts_per_tok": top_k, "sliding_window": null,
        }),
        "qwen2moe" => json!({
            "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_act": "silu",
            "use_sliding_window": false, "sliding_window": 32768, "num_experts": experts,
            "num_experts_per_tok": top_k, "moe_intermediate_size": expert_width,
            "shared_expert_intermediate_size": meta.opt_usize("expert_shared_feed_forward_length"),
            "norm_topk_prob": false, "decoder_sparse_step": 1, "mlp_only_layers": [],
        }),
        "qwen3moe" => json!({
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_act": "silu",
            "attention_bias": has("blk.0.attn_q.bias"),
            "use_sliding_window": false, "sliding_window": null, "num_experts": experts,
            "num_experts_per_tok": top_k, "moe_intermediate_size": expert_width,
            "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
        }),
        "llama" => json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
                          "attention_bias": false, "mlp_bias": false}),
        "qwen2" => json!({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
                          "use_sliding_window": false, "sliding_window": 32768}),
        "qwen3" => json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
                          "attention_bias": has("blk.0.attn_q.bias"), "use_sliding_window": false, "sliding_window": null}),
        "gemma" => json!({"architectures": ["GemmaForCausalLM"], "model_type": "gemma",
                          "hidden_act": "gelu_pytorch_tanh", "attention_bias": false}),
        // llama.cpp runs Phi-3 with full attention, its window or not.
        "phi3" => json!({
            "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu", "sliding_window": null,
            "partial_rotary_factor": meta.opt_usize("rope.dimension_count").map_or(1.0, |r| r as f64 / head_dim as f64),
            "original_max_position_embeddings": meta.opt_usize("rope.scaling.original_context_length")
                .or(meta.opt_usize("context_length")).unwrap_or(4096),
        }),
        "olmo2" => json!({"architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", "hidden_act": "silu",
                          "attention_bias": has("blk.0.attn_q.bias")}),
        // Without `attention.scale` llama.cpp scales the scores by `head_dim^-0.5`; Hugging
        // Face's default multiplier is 1.
        "granite" => json!({
            "architectures": ["GraniteForCausalLM"], "model_type": "granite", "hidden_act": "silu",
            "attention_bias": has("blk.0.attn_q.bias") || has("blk.0.attn_output.bias"), "mlp_bias": has("blk.0.ffn_down.bias"),
            "attention_multiplier": meta.opt_f64("attention.scale").unwrap_or(1.0 / (head_dim as f64).sqrt()),
            "embedding_multiplier": meta.opt_f64("embedding_scale").unwrap_or(1.0),
            "residual_multiplier": meta.opt_f64("residual_scale").unwrap_or(1.0),
            "logits_scaling": meta.opt_f64("logit_scale").unwrap_or(1.0),
        }),
        "glm4" => json!({
            "architectures": ["Glm4ForCausalLM"], "model_type": "glm4", "hidden_act": "silu",
            "attention_bias": has("blk.0.attn_q.bias"),
            "partial_rotary_factor": meta.opt_usize("rope.dimension_count").map_or(0.5, |r| r as f64 / head_dim as f64),
        }),
        // llama.cpp skips the rotary embedding on every fourth layer.
        "smollm3" => json!({
            "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", "hidden_act": "silu",
            "attention_bias": has("blk.0.attn_q.bias"), "mlp_bias": false, "use_sliding_window": false,
            "sliding_window": null, "no_rope_layer_interval": 4,
            "no_rope_layers": (0..layers).map(|l| u8::from((l + 1) % 4 != 0)).collect::<Vec<_>>(),
        }),
        "gemma2" => json!({
            "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": head_dim, "sliding_window": meta.opt_usize("attention.sliding_window").unwrap_or(4096),
            "attn_logit_softcapping": meta.opt_f64("attn_logit_softcapping"),
            "final_logit_softcapping": meta.opt_f64("final_logit_softcapping"),
        }),
        "gemma4" => gemma4(meta, sliding.as_deref(), kv_per_layer.as_deref(), head_dim)?,
        "gemma3" => json!({
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": head_dim, "sliding_window": meta.opt_usize("attention.sliding_window").unwrap_or(512),
            "sliding_window_pattern": meta.opt_usize("attention.sliding_window_type").unwrap_or(6),
            "layer_types": sliding.map(|flags| flags.iter()
                .map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>()),
            "rope_local_base_freq": 10_000.0,
            "rope_theta": meta.opt_f64("rope.freq_base").unwrap_or(1_000_000.0),
            "rope_scaling": meta.opt_f64("rope.scaling.factor").filter(|f| *f > 1.0).map(|f| json!({"rope_type": "linear", "factor": f})),
        }),
        other => {
            return Err(Error::UnsupportedArchitecture {
                found: format!("GGUF architecture `{other}`"),
                path: meta.path.to_path_buf(),
                supported: SUPPORTED.join(", "),
            })
        }
    };
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    Ok(c)
}

/// Gemma 4's fields: the sliding layers' head width and key/value heads are the `_swa` keys, the
/// full layers' the plain ones; the full layers' rotated fraction comes from `rope_freqs`, which
/// the importer passes in as `partial_rotary_factor` afterwards (one quarter until then).
fn gemma4(meta: &Meta<'_>, sliding: Option<&[bool]>, kv: Option<&[usize]>, global_head_dim: usize) -> Result<Json> {
    let bad = |what: String| Error::bad_checkpoint(meta.path, format!("Gemma 4 GGUF: {what}"));
    let sliding = sliding.ok_or_else(|| bad("no per-layer attention.sliding_window_pattern".into()))?;
    let kv_of = |slides: bool| -> Result<usize> {
        let kv = kv.ok_or_else(|| bad("no per-layer attention.head_count_kv".into()))?;
        let mut of_kind = sliding.iter().zip(kv).filter(|(s, _)| **s == slides).map(|(_, k)| *k);
        let first = of_kind.next().unwrap_or(0);
        match of_kind.find(|k| *k != first) {
            Some(other) => Err(bad(format!("layers of one kind have {first} and {other} key/value heads"))),
            None => Ok(first),
        }
    };
    let first_full = sliding.iter().position(|s| !s).unwrap_or(0);
    let values_are_keys = !meta.content.tensor_infos.contains_key(&format!("blk.{first_full}.attn_v.weight"));
    let head_dim = meta.opt_usize("attention.key_length_swa").unwrap_or(global_head_dim);
    let sliding_kv = if sliding.iter().any(|s| *s) { kv_of(true)? } else { kv_of(false)? };
    Ok(json!({
        "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_activation": "gelu_pytorch_tanh",
        "head_dim": head_dim, "global_head_dim": global_head_dim,
        "num_key_value_heads": sliding_kv, "num_global_key_value_heads": kv_of(false)?,
        "attention_k_eq_v": values_are_keys, "attention_bias": false,
        "sliding_window": meta.opt_usize("attention.sliding_window").unwrap_or(512),
        "layer_types": sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>(),
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": meta.opt_f64("rope.freq_base_swa").unwrap_or(10_000.0)},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": meta.opt_f64("rope.freq_base").unwrap_or(1_000_000.0)},
        },
        "final_logit_softcapping": meta.opt_f64("final_logit_softcapping"),
        "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0, "enable_moe_block": false,
        "use_double_wide_mlp": false,
    }))
}

/// generation_config.json.
pub(super) fn generation_config(meta: &Meta<'_>, eos_ids: &[u32]) -> Json {
    json!({
        "bos_token_id": meta.token_id("bos_token_id"),
        "eos_token_id": eos_ids,
        "pad_token_id": meta.token_id("padding_token_id"),
        "do_sample": false,
    })
}
