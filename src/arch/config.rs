//! The union of the config.json fields that the supported families use.

use serde::Deserialize;

/// config.json fields scalpel reads, across families. Each family file decides which apply.
///
/// Field names mirror config.json; aliases cover the Qwen-1 and Gemma spellings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawConfig {
    /// Residual stream width.
    pub hidden_size: Option<usize>,
    /// MLP width (Qwen-1: twice the MLP width).
    pub intermediate_size: Option<usize>,
    /// Number of decoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Query heads.
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: Option<usize>,
    /// Per-head width, when not `hidden / heads`.
    pub head_dim: Option<usize>,
    /// Qwen-1's per-head width.
    pub kv_channels: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// Qwen-1's RMSNorm epsilon.
    pub layer_norm_epsilon: Option<f64>,
    /// Rotary base frequency.
    pub rope_theta: Option<f64>,
    /// Qwen-1's rotary base frequency.
    pub rotary_emb_base: Option<f64>,
    /// Gemma 3's rotary base for sliding-window layers.
    pub rope_local_base_freq: Option<f64>,
    /// Rotary scaling (llama3, linear, ...).
    pub rope_scaling: Option<serde_json::Value>,
    /// Fraction of the head that is rotated (Phi-3 variants, Qwen-1's `rotary_pct`).
    pub partial_rotary_factor: Option<f64>,
    /// Qwen-1's rotated fraction.
    pub rotary_pct: Option<f64>,
    /// Context length.
    pub max_position_embeddings: Option<usize>,
    /// Qwen-1's context length.
    pub seq_length: Option<usize>,
    /// Whether the output head shares the embedding matrix.
    pub tie_word_embeddings: Option<bool>,
    /// Llama / Qwen 3: biases on q, k, v and o projections.
    pub attention_bias: Option<bool>,
    /// Llama: biases on the MLP projections.
    pub mlp_bias: Option<bool>,
    /// Qwen-1: `true` when c_proj and the MLP have no biases.
    pub no_bias: Option<bool>,
    /// Activation name (`silu`, `gelu_pytorch_tanh`, ...).
    pub hidden_act: Option<String>,
    /// Gemma's activation name.
    pub hidden_activation: Option<String>,
    /// Sliding attention window.
    pub sliding_window: Option<usize>,
    /// Qwen 2's switch for the sliding window.
    pub use_sliding_window: Option<bool>,
    /// Gemma 3: every n-th layer is global.
    pub sliding_window_pattern: Option<usize>,
    /// Per-layer attention kinds (`sliding_attention` / `full_attention`).
    pub layer_types: Option<Vec<String>>,
    /// Gemma 2/3: the query scaling is `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: attention logit soft-capping.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: output logit soft-capping.
    pub final_logit_softcapping: Option<f64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<serde_json::Value>,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<serde_json::Value>,
    /// Granite: the embedding is multiplied by this.
    pub embedding_multiplier: Option<f64>,
    /// Granite: each block's output is multiplied by this before the residual add.
    pub residual_multiplier: Option<f64>,
    /// Granite: the attention scores' scale (in place of `head_dim^-0.5`).
    pub attention_multiplier: Option<f64>,
    /// Granite: the logits are divided by this.
    pub logits_scaling: Option<f64>,
    /// SmolLM3: per layer, 1 where it uses the rotary embedding and 0 where it does not.
    pub no_rope_layers: Option<Vec<u8>>,
    /// SmolLM3: without `no_rope_layers`, every n-th layer skips the rotary embedding.
    pub no_rope_layer_interval: Option<usize>,
    /// Mixtral: routed experts per layer.
    pub num_local_experts: Option<usize>,
    /// Qwen2-MoE / Qwen3-MoE: routed experts per sparse layer.
    pub num_experts: Option<usize>,
    /// Experts each token is routed to.
    pub num_experts_per_tok: Option<usize>,
    /// Qwen2-MoE / Qwen3-MoE: each routed expert's MLP width.
    pub moe_intermediate_size: Option<usize>,
    /// Qwen2-MoE: the shared expert's MLP width.
    pub shared_expert_intermediate_size: Option<usize>,
    /// Whether the top-k routing weights are renormalised to sum to 1.
    pub norm_topk_prob: Option<bool>,
    /// Every n-th layer (counting from 1) is sparse.
    pub decoder_sparse_step: Option<usize>,
    /// Layers whose MLP is dense whatever `decoder_sparse_step` says.
    pub mlp_only_layers: Option<Vec<usize>>,
    /// Gemma 4: rotary parameters per layer type (`sliding_attention`, `full_attention`).
    pub rope_parameters: Option<serde_json::Value>,
    /// Gemma 4: the head width of the full-attention layers.
    pub global_head_dim: Option<usize>,
    /// Gemma 4: key/value heads of the full-attention layers (with `attention_k_eq_v`).
    pub num_global_key_value_heads: Option<usize>,
    /// Gemma 4: the full-attention layers have no value projection; values are the raw keys.
    pub attention_k_eq_v: Option<bool>,
    /// Gemma 4: the width of the per-layer input embeddings. Absent means Hugging Face's
    /// default (256); `null` or 0 means none, so the two are told apart.
    #[serde(default, deserialize_with = "present")]
    pub hidden_size_per_layer_input: Option<Option<usize>>,
    /// Gemma 4: the rows of the per-layer input embedding table.
    pub vocab_size_per_layer_input: Option<usize>,
    /// Gemma 4: the last layers that reuse an earlier layer's keys and values.
    pub num_kv_shared_layers: Option<usize>,
    /// Gemma 4: the layers that reuse keys and values have an MLP twice as wide.
    pub use_double_wide_mlp: Option<bool>,
    /// Gemma 4: a mixture-of-experts block beside each layer's dense MLP.
    pub enable_moe_block: Option<bool>,
    /// Gemma 4: `all` makes every token attend both ways (`vision`: only image tokens do).
    pub use_bidirectional_attention: Option<String>,
}

/// A field that is present (possibly `null`) as `Some(value)`, so that an absent one (`None`,
/// through `#[serde(default)]`) can take a default other than "off".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

/// Upper bounds on config.json sizes, far above any released model, checked before anything is
/// allocated from them (the tensor shapes are checked against the files afterwards).
const LIMITS: [(&str, usize); 15] = [
    ("hidden_size", 1 << 20),
    ("intermediate_size", 1 << 22),
    ("num_hidden_layers", 4096),
    ("num_attention_heads", 1 << 16),
    ("num_key_value_heads", 1 << 16),
    ("head_dim", 1 << 16),
    ("vocab_size", 1 << 24),
    ("max_position_embeddings", 1 << 28),
    ("num_experts", 1 << 16),
    ("moe_intermediate_size", 1 << 22),
    ("shared_expert_intermediate_size", 1 << 22),
    ("global_head_dim", 1 << 16),
    ("num_global_key_value_heads", 1 << 16),
    ("hidden_size_per_layer_input", 1 << 16),
    ("vocab_size_per_layer_input", 1 << 24),
];

impl RawConfig {
    /// Refuse sizes beyond the limits on layers, heads, widths and vocabulary (an error naming
    /// the field and the file).
    pub fn check_limits(&self, path: &std::path::Path) -> crate::Result<()> {
        let values = [
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim.or(self.kv_channels),
            self.vocab_size,
            self.max_position_embeddings.or(self.seq_length),
            self.num_experts.or(self.num_local_experts),
            self.moe_intermediate_size,
            self.shared_expert_intermediate_size,
            self.global_head_dim,
            self.num_global_key_value_heads,
            self.hidden_size_per_layer_input.flatten(),
            self.vocab_size_per_layer_input,
        ];
        for ((field, limit), value) in LIMITS.iter().zip(values) {
            if let Some(v) = value.filter(|v| v > limit) {
                return Err(crate::Error::BadConfig {
                    path: path.to_path_buf(),
                    message: format!("`{field}` = {v} is beyond any supported model (at most {limit})"),
                });
            }
        }
        if let Some(types) = &self.layer_types {
            if types.len() > LIMITS[2].1 {
                return Err(crate::Error::BadConfig {
                    path: path.to_path_buf(),
                    message: format!("`layer_types` lists {} layers (at most {})", types.len(), LIMITS[2].1),
                });
            }
        }
        Ok(())
    }
}
