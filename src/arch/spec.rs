//! The model description shared by the decoder and the surgery.

use super::{Family, RawConfig};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// How a norm's stored weight `w` becomes its scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    /// RMSNorm with scale `w`.
    Rms,
    /// Gemma's RMSNorm with scale `1 + w`.
    RmsOnePlus,
}

impl NormKind {
    /// What is added to a stored norm weight to get its scale `γ` (0 or 1).
    pub fn offset(self) -> f32 {
        match self {
            NormKind::Rms => 0.0,
            NormKind::RmsOnePlus => 1.0,
        }
    }
}

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// SiLU (swish).
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU.
    Gelu,
}

impl Activation {
    /// Parse a Hugging Face activation name.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }
}

/// Rotary-embedding frequency scaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Llama 3's piecewise scaling.
    Llama3 {
        /// Overall factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Context length the model was trained with before scaling.
        original_max_position_embeddings: f64,
    },
    /// Positions divided by `factor`.
    Linear {
        /// The factor.
        factor: f64,
    },
}

/// How a layer's attention input projections are stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AttentionLayout {
    /// Separate q, k, v projections (with optional biases).
    Separate {
        /// Query projection.
        q: String,
        /// Key projection.
        k: String,
        /// Value projection.
        v: String,
        /// Biases of q, k, v when the family has them.
        biases: Option<[String; 3]>,
    },
    /// q and k projections only: the values are the raw keys (before the k norm and rotation),
    /// as in Gemma 4's full-attention layers with `attention_k_eq_v`.
    KeysAsValues {
        /// Query projection.
        q: String,
        /// Key projection, which is also the value projection.
        k: String,
        /// Biases of q and k when the family has them.
        biases: Option<[String; 2]>,
    },
    /// A q projection only: the keys and values are an earlier layer's ([`KvSharing::Reuse`]).
    QueryOnly {
        /// Query projection.
        q: String,
        /// Its bias when the family has one.
        bias: Option<String>,
    },
    /// One fused `[q; k; v]` projection (Phi-3 `qkv_proj`, Qwen-1 `c_attn`).
    Fused {
        /// The fused weight.
        qkv: String,
        /// Its bias, if any.
        bias: Option<String>,
    },
}

/// How a layer's MLP input projections are stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MlpLayout {
    /// `down(act(gate(x)) * up(x))` with separate gate and up.
    Gated {
        /// Gate projection.
        gate: String,
        /// Up projection.
        up: String,
        /// Biases of gate and up when present.
        biases: Option<[String; 2]>,
    },
    /// Phi-3: one `[gate; up]` projection.
    FusedGateUp {
        /// The fused weight.
        gate_up: String,
    },
    /// Qwen-1: `c_proj(w1(x) * silu(w2(x)))`.
    QwenW1W2 {
        /// Multiplied branch.
        w1: String,
        /// Activated branch.
        w2: String,
    },
    /// A sparse mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE): a router, gated experts and
    /// possibly a shared expert. Its writers are the experts' output matrices, not `down_proj`.
    Sparse(SparseNames),
}

/// The tensors of one gated MLP `down(act(gate(x)) · up(x))` without biases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatedNames {
    /// Activated branch (Mixtral's `w1`).
    pub gate: String,
    /// Multiplied branch (Mixtral's `w3`).
    pub up: String,
    /// Output projection `[hidden, inter]`: a writer (Mixtral's `w2`).
    pub down: String,
}

/// How a sparse layer's experts are stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ExpertNames {
    /// One set of matrices per expert (`experts.{e}.…`).
    PerExpert(Vec<GatedNames>),
    /// Stacked over the experts: `gate_up` `[experts, 2·inter, hidden]` (each expert's gate rows
    /// over its up rows) and `down` `[experts, hidden, inter]`.
    Stacked {
        /// Gate and up projections of every expert.
        gate_up: String,
        /// Output projections of every expert: a writer per slice.
        down: String,
        /// Number of experts (the leading dimension).
        experts: usize,
    },
}

/// The tensors of a sparse mixture-of-experts block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseNames {
    /// The router `[experts, hidden]` (reads the stream; never edited).
    pub router: String,
    /// The routed experts.
    pub experts: ExpertNames,
    /// The shared expert and its sigmoid gate `[1, hidden]` (Qwen2-MoE).
    pub shared: Option<(GatedNames, String)>,
}

/// Which part of a layer's MLP block a writer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MlpPart {
    /// The MLP of a dense layer (and every non-MLP writer).
    #[default]
    Dense,
    /// Routed expert `e` of a sparse layer.
    Expert(usize),
    /// The shared expert of a sparse layer.
    SharedExpert,
}

impl MlpPart {
    /// Whether this is [`MlpPart::Dense`] (records leave the field out then).
    pub fn is_dense(&self) -> bool {
        *self == MlpPart::Dense
    }

    /// How reports name it: empty, `expert 3`, `shared expert`.
    pub fn describe(self) -> String {
        match self {
            MlpPart::Dense => String::new(),
            MlpPart::Expert(e) => format!("expert {e}"),
            MlpPart::SharedExpert => "shared expert".into(),
        }
    }
}

/// One MLP-side writer of a layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlpWriter {
    /// The weight tensor.
    pub weight: String,
    /// Its bias, if any.
    pub bias: Option<String>,
    /// Which part of the block it is.
    pub part: MlpPart,
    /// The slice of a stacked `[experts, hidden, inter]` tensor it is, if it is one.
    pub slice: Option<usize>,
}

/// How a layer's experts are stored in a checkpoint (config.json does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum ExpertStorage {
    /// `experts.{e}.…` matrices, one set per expert (Hugging Face's usual layout).
    #[default]
    PerExpert,
    /// `experts.gate_up_proj` `[E, 2I, H]` and `experts.down_proj` `[E, H, I]`.
    Stacked,
}

/// The mixture-of-experts part of a spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeSpec {
    /// Routed experts per sparse layer.
    pub num_experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Each expert's MLP width.
    pub expert_intermediate_size: usize,
    /// Whether the top-k routing weights are renormalised to sum to 1.
    pub norm_topk_prob: bool,
    /// The shared expert's MLP width, where the family has one (gated by a sigmoid).
    pub shared_expert_intermediate_size: Option<usize>,
    /// For each layer, whether its MLP is the sparse block (else a dense MLP of
    /// `intermediate_size`).
    pub sparse_layers: Vec<bool>,
    /// How the experts are stored.
    pub storage: ExpertStorage,
}

/// Every tensor name of one decoder layer, by role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerNames {
    /// Norm before attention (empty where the family has none: [`ModelSpec::pre_norms`]).
    pub attn_norm: String,
    /// Attention input projections (never edited by refusal ablation).
    pub attention: AttentionLayout,
    /// Per-head q norm (Qwen 3, Gemma 3).
    pub q_norm: Option<String>,
    /// Per-head k norm (Qwen 3, Gemma 3).
    pub k_norm: Option<String>,
    /// Attention output projection: writes into the residual stream.
    pub o_proj: String,
    /// Its bias, if the family has one.
    pub o_proj_bias: Option<String>,
    /// Norm applied to the attention output before the residual add (Gemma 2/3).
    pub attn_post_norm: Option<String>,
    /// Norm before the MLP (empty where the family has none: [`ModelSpec::pre_norms`]).
    pub mlp_norm: String,
    /// MLP input projections (never edited by refusal ablation).
    pub mlp: MlpLayout,
    /// MLP output projection: writes into the residual stream (empty in a sparse layer, whose
    /// writers are its experts': [`LayerNames::mlp_writers`]).
    pub down_proj: String,
    /// Its bias, if any.
    pub down_proj_bias: Option<String>,
    /// Norm applied to the MLP output before the residual add (Gemma 2/3).
    pub mlp_post_norm: Option<String>,
    /// A scalar `[1]` the layer's output stream is multiplied by (Gemma 4's `layer_scalar`).
    pub layer_scalar: Option<String>,
    /// The per-layer input block (Gemma 4's E models), if the model has one.
    pub per_layer: Option<PerLayerNames>,
}

/// The tensors of a layer's per-layer input block (Gemma 4's E models): after the MLP, the
/// stream is gated into the per-layer width, multiplied by this layer's per-layer input and
/// projected back through a norm into the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLayerNames {
    /// `per_layer_input_gate` `[width, hidden]` (reads the stream; never edited).
    pub gate: String,
    /// `per_layer_projection` `[hidden, width]`: writes into the residual stream.
    pub projection: String,
    /// `post_per_layer_input_norm` `[hidden]`, between the projection and the stream.
    pub post_norm: String,
}

/// Where a layer's attention takes its keys and values from (Gemma 4's E models share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum KvSharing {
    /// Its own projections.
    #[default]
    Own,
    /// Its own projections, which the later layers of its attention kind reuse.
    Store,
    /// The keys and values of the last storing layer of its attention kind (no k/v projections).
    Reuse,
}

/// Gemma 4's per-layer input embeddings: a second token table with a slice per layer, mixed
/// with a projection of the embedded stream, that each layer's per-layer block reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLayerInputs {
    /// Each layer's slice width (`hidden_size_per_layer_input`).
    pub width: usize,
    /// Rows of the per-layer token table (`vocab_size_per_layer_input`).
    pub vocab_size: usize,
}

impl LayerNames {
    /// The input-side matrices of this layer: read from the residual stream, never edited.
    pub fn input_side(&self) -> Vec<String> {
        let mut names = match &self.attention {
            AttentionLayout::Separate { q, k, v, .. } => vec![q.clone(), k.clone(), v.clone()],
            AttentionLayout::KeysAsValues { q, k, .. } => vec![q.clone(), k.clone()],
            AttentionLayout::Fused { qkv, .. } => vec![qkv.clone()],
            AttentionLayout::QueryOnly { q, .. } => vec![q.clone()],
        };
        names.extend(self.per_layer.iter().map(|p| p.gate.clone()));
        match &self.mlp {
            MlpLayout::Gated { gate, up, .. } => names.extend([gate.clone(), up.clone()]),
            MlpLayout::FusedGateUp { gate_up } => names.push(gate_up.clone()),
            MlpLayout::QwenW1W2 { w1, w2 } => names.extend([w1.clone(), w2.clone()]),
            MlpLayout::Sparse(sparse) => {
                names.push(sparse.router.clone());
                match &sparse.experts {
                    ExpertNames::PerExpert(experts) => {
                        names.extend(experts.iter().flat_map(|e| [e.gate.clone(), e.up.clone()]))
                    }
                    ExpertNames::Stacked { gate_up, .. } => names.push(gate_up.clone()),
                }
                if let Some((shared, gate)) = &sparse.shared {
                    names.extend([shared.gate.clone(), shared.up.clone(), gate.clone()]);
                }
            }
        }
        names
    }

    /// Every tensor of this layer ("" for a norm the family does not have).
    pub fn tensors(&self) -> Vec<String> {
        let mut names = self.input_side();
        names.extend(self.mlp_writers().into_iter().flat_map(|w| std::iter::once(w.weight).chain(w.bias)));
        names.extend([self.attn_norm.clone(), self.mlp_norm.clone(), self.o_proj.clone()]);
        let optional = [&self.o_proj_bias, &self.attn_post_norm, &self.mlp_post_norm, &self.q_norm, &self.k_norm];
        names.extend(optional.into_iter().chain([&self.layer_scalar]).flatten().cloned());
        match &self.attention {
            AttentionLayout::Separate { biases: Some(b), .. } => names.extend(b.iter().cloned()),
            AttentionLayout::KeysAsValues { biases: Some(b), .. } => names.extend(b.iter().cloned()),
            AttentionLayout::Fused { bias: Some(b), .. } | AttentionLayout::QueryOnly { bias: Some(b), .. } => {
                names.push(b.clone())
            }
            _ => {}
        }
        if let MlpLayout::Gated { biases: Some(b), .. } = &self.mlp {
            names.extend(b.iter().cloned());
        }
        if let Some(p) = &self.per_layer {
            names.extend([p.projection.clone(), p.post_norm.clone()]);
        }
        names
    }

    /// The MLP block's writers: `down_proj` of a dense layer; every expert's output matrix
    /// (or slice of the stacked one) and the shared expert's of a sparse layer.
    pub fn mlp_writers(&self) -> Vec<MlpWriter> {
        let MlpLayout::Sparse(sparse) = &self.mlp else {
            return vec![MlpWriter {
                weight: self.down_proj.clone(),
                bias: self.down_proj_bias.clone(),
                part: MlpPart::Dense,
                slice: None,
            }];
        };
        let mut writers: Vec<MlpWriter> = match &sparse.experts {
            ExpertNames::PerExpert(experts) => experts
                .iter()
                .enumerate()
                .map(|(e, names)| MlpWriter {
                    weight: names.down.clone(),
                    bias: None,
                    part: MlpPart::Expert(e),
                    slice: None,
                })
                .collect(),
            ExpertNames::Stacked { down, experts, .. } => (0..*experts)
                .map(|e| MlpWriter { weight: down.clone(), bias: None, part: MlpPart::Expert(e), slice: Some(e) })
                .collect(),
        };
        if let Some((shared, _)) = &sparse.shared {
            writers.push(MlpWriter {
                weight: shared.down.clone(),
                bias: None,
                part: MlpPart::SharedExpert,
                slice: None,
            });
        }
        writers
    }
}

/// Which part of the model writes into the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterKind {
    /// The token embedding (`[vocab, hidden]`; rows are written).
    Embed,
    /// A layer's attention output projection (`[hidden, heads·head_dim]`).
    Attn,
    /// A layer's MLP output projection (`[hidden, intermediate]`).
    Mlp,
    /// A layer's per-layer input projection (`[hidden, per-layer width]`, Gemma 4's E models).
    PerLayer,
}

impl WriterKind {
    /// Every writer kind.
    pub const ALL: [WriterKind; 4] = [WriterKind::Embed, WriterKind::Attn, WriterKind::Mlp, WriterKind::PerLayer];

    /// Short name used on the command line (`embed`, `attn`, `mlp`, `ple`).
    pub fn name(self) -> &'static str {
        match self {
            WriterKind::Embed => "embed",
            WriterKind::Attn => "attn",
            WriterKind::Mlp => "mlp",
            WriterKind::PerLayer => "ple",
        }
    }

    /// Parse a command-line name.
    pub fn parse(name: &str) -> Option<WriterKind> {
        WriterKind::ALL.into_iter().find(|k| k.name() == name.trim())
    }
}

/// One tensor that writes into the residual stream, with what sits between it and the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Writer {
    /// Embedding, attention output or MLP output.
    pub kind: WriterKind,
    /// The layer (None for the embedding).
    pub layer: Option<usize>,
    /// The weight tensor name.
    pub weight: String,
    /// The output bias, if any.
    pub bias: Option<String>,
    /// The post-norm weight between this writer and the stream (Gemma 2/3), if any.
    pub post_norm: Option<String>,
    /// Which part of the MLP block it is (an expert of a sparse layer), else dense.
    pub part: MlpPart,
    /// The slice of a stacked `[experts, hidden, in]` tensor it is, if it is one.
    pub slice: Option<usize>,
}

/// The full-attention layers' own attention geometry, where it differs from the sliding
/// layers' (Gemma 4: wider heads, fewer key/value heads, values that are the keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalAttention {
    /// Per-head width.
    pub head_dim: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// No value projection: the values are the raw keys ([`AttentionLayout::KeysAsValues`]).
    pub values_are_keys: bool,
}

/// Gemma 4's rotary layout: the tables span the whole head (rotate-half pairs `i, i + d/2`);
/// pair `i < fraction · d / 2` turns at `θ^(−2i/d)`, the others at frequency 0 (cos 1, sin 0:
/// left as they are). A fraction of 1 is the ordinary rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProportionalRope {
    /// The rotated fraction of the sliding-window layers.
    pub local_fraction: f64,
    /// The rotated fraction of the full-attention layers.
    pub global_fraction: f64,
}

/// Everything scalpel needs to know about a model, read from config.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// The family.
    pub family: Family,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Norm epsilon.
    pub norm_eps: f64,
    /// How norm weights are stored.
    pub norm_kind: NormKind,
    /// MLP activation.
    pub activation: Activation,
    /// Rotary base frequency (global layers).
    pub rope_theta: f64,
    /// Rotary base for sliding-window layers (Gemma 3).
    pub rope_local_theta: Option<f64>,
    /// Rotary scaling of the global layers.
    pub rope_scaling: Option<RopeScaling>,
    /// Fraction of each head that is rotated (1.0 for most families).
    pub partial_rotary_factor: f64,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Whether the output head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Embedding multiplied by this (Gemma: `sqrt(hidden)`).
    pub embedding_scale: Option<f64>,
    /// Queries scaled by this instead of `head_dim^-0.5` (Gemma 2/3).
    pub query_scale: Option<f64>,
    /// Attention logit soft-capping (Gemma 2).
    pub attn_logit_softcapping: Option<f64>,
    /// Output logit soft-capping (Gemma 2).
    pub final_logit_softcapping: Option<f64>,
    /// Sliding window size for the layers that use one.
    pub sliding_window: Option<usize>,
    /// For each layer, whether it uses the sliding window.
    pub sliding_layers: Vec<bool>,
    /// Biases on the q, k, v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_proj_bias: bool,
    /// Biases on the MLP projections (input side and output side).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen 3, Gemma 3).
    pub qk_norm: bool,
    /// Tensor name prefix (`model.`, `transformer.`, `language_model.model.`).
    pub tensor_prefix: String,
    /// Whether each block reads the stream through a norm (OLMo 2's blocks read it raw; its
    /// norms sit between the writers and the stream).
    pub pre_norms: bool,
    /// The q/k norms span the whole projection (`[heads · head_dim]`, OLMo 2), not each head.
    pub qk_norm_full: bool,
    /// Each block's output is multiplied by this before the residual add (Granite).
    pub residual_multiplier: Option<f64>,
    /// The logits are divided by this (Granite's `logits_scaling`).
    pub logits_scaling: Option<f64>,
    /// For each layer, whether it skips the rotary embedding (SmolLM3's NoPE layers).
    pub nope_layers: Vec<bool>,
    /// Rotary pairs are interleaved (dims `2i, 2i + 1`, GLM-4) rather than `i, i + d/2`.
    pub rope_interleaved: bool,
    /// The mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE), if the family has one.
    pub moe: Option<MoeSpec>,
    /// The full-attention layers' geometry where it differs from the others' (Gemma 4).
    pub global_attention: Option<GlobalAttention>,
    /// The rotary layout of Gemma 4 (in place of `partial_rotary_factor`'s).
    pub proportional_rope: Option<ProportionalRope>,
    /// Each head's values RMS-normalised without a learned scale (Gemma 4).
    pub v_norm: bool,
    /// Each layer's output stream is multiplied by its stored `layer_scalar` (Gemma 4).
    pub layer_scalars: bool,
    /// Per-layer input embeddings (Gemma 4's E models), if the model has them.
    pub per_layer_inputs: Option<PerLayerInputs>,
    /// For each layer, where its keys and values come from (Gemma 4's E models share them).
    pub kv_sharing: Vec<KvSharing>,
    /// The layers that reuse keys and values have an MLP twice `intermediate_size` wide.
    pub double_wide_mlp: bool,
}

impl ModelSpec {
    /// The spec fields every family has, read from config with family defaults applied later.
    pub(super) fn base(family: Family, raw: &RawConfig, path: &Path) -> Result<ModelSpec> {
        let need = |value: Option<usize>, field: &str| {
            value.ok_or_else(|| Error::BadConfig {
                path: path.to_path_buf(),
                message: format!("missing `{field}` (needed for {family})"),
            })
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        if num_heads == 0 || hidden_size == 0 {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                message: "hidden_size and num_attention_heads must be positive".into(),
            });
        }
        let activation_name =
            raw.hidden_activation.clone().or_else(|| raw.hidden_act.clone()).unwrap_or_else(|| "silu".into());
        let activation = Activation::from_name(&activation_name).ok_or_else(|| Error::BadConfig {
            path: path.to_path_buf(),
            message: format!("unsupported activation `{activation_name}`"),
        })?;
        let num_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        Ok(ModelSpec {
            family,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(hidden_size / num_heads),
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            norm_kind: NormKind::Rms,
            activation,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rope_local_theta: None,
            rope_scaling: parse_rope_scaling(raw.rope_scaling.as_ref(), path)?,
            partial_rotary_factor: raw.partial_rotary_factor.unwrap_or(1.0),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            embedding_scale: None,
            query_scale: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            sliding_window: None,
            sliding_layers: vec![false; num_layers],
            qkv_bias: false,
            o_proj_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tensor_prefix: "model.".into(),
            pre_norms: true,
            qk_norm_full: false,
            residual_multiplier: None,
            logits_scaling: None,
            nope_layers: vec![false; num_layers],
            rope_interleaved: false,
            moe: None,
            global_attention: None,
            proportional_rope: None,
            v_norm: false,
            layer_scalars: false,
            per_layer_inputs: None,
            kv_sharing: vec![KvSharing::Own; num_layers],
            double_wide_mlp: false,
        })
    }

    pub(super) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Error::BadConfig { path: path.to_path_buf(), message };
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.head_dim == 0 || self.num_layers == 0 || self.vocab_size == 0 {
            return Err(bad("head_dim, num_hidden_layers and vocab_size must be positive".into()));
        }
        if let Some(global) = &self.global_attention {
            if global.head_dim == 0 {
                return Err(bad("global_head_dim must be positive".into()));
            }
            if global.num_kv_heads == 0 || !self.num_heads.is_multiple_of(global.num_kv_heads) {
                return Err(bad(format!(
                    "num_attention_heads ({}) must be a multiple of num_global_key_value_heads ({})",
                    self.num_heads, global.num_kv_heads
                )));
            }
        }
        if self.sliding_layers.len() != self.num_layers {
            return Err(bad(format!(
                "layer_types lists {} layers but num_hidden_layers is {}",
                self.sliding_layers.len(),
                self.num_layers
            )));
        }
        if self.nope_layers.len() != self.num_layers {
            return Err(bad(format!(
                "no_rope_layers lists {} layers but num_hidden_layers is {}",
                self.nope_layers.len(),
                self.num_layers
            )));
        }
        if let Some(moe) = &self.moe {
            if moe.num_experts == 0 || moe.top_k == 0 || moe.top_k > moe.num_experts {
                return Err(bad(format!(
                    "num_experts_per_tok ({}) must be between 1 and the number of experts ({})",
                    moe.top_k, moe.num_experts
                )));
            }
            if moe.expert_intermediate_size == 0 || moe.shared_expert_intermediate_size == Some(0) {
                return Err(bad("the experts' intermediate sizes must be positive".into()));
            }
            if moe.sparse_layers.len() != self.num_layers {
                return Err(bad(format!(
                    "the sparse layers list {} layers but num_hidden_layers is {}",
                    moe.sparse_layers.len(),
                    self.num_layers
                )));
            }
        }
        Ok(())
    }

    /// Whether layer `layer`'s MLP is a sparse mixture of experts.
    pub fn is_sparse(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.sparse_layers.get(layer).copied().unwrap_or(false))
    }

    /// Set how the experts are stored from the checkpoint's tensor names (`contains`): stacked
    /// where the first sparse layer holds the stacked output tensor, else one set per expert.
    pub fn detect_expert_storage(&mut self, contains: impl Fn(&str) -> bool) {
        let Some(first) = (0..self.num_layers).find(|&l| self.is_sparse(l)) else { return };
        let stacked = {
            let mut probe = self.clone();
            if let Some(moe) = probe.moe.as_mut() {
                moe.storage = ExpertStorage::Stacked;
            }
            match probe.layer_names(first).mlp {
                MlpLayout::Sparse(SparseNames { experts: ExpertNames::Stacked { down, .. }, .. }) => contains(&down),
                _ => false,
            }
        };
        if let Some(moe) = self.moe.as_mut() {
            moe.storage = if stacked { ExpertStorage::Stacked } else { ExpertStorage::PerExpert };
        }
    }

    /// The global-attention geometry of `layer`, if it is a full-attention layer with one.
    pub fn global_attention_of(&self, layer: usize) -> Option<&GlobalAttention> {
        self.global_attention.as_ref().filter(|_| !self.sliding_layers.get(layer).copied().unwrap_or(false))
    }

    /// The per-head width of `layer`'s attention.
    pub fn head_dim_for(&self, layer: usize) -> usize {
        self.global_attention_of(layer).map_or(self.head_dim, |g| g.head_dim)
    }

    /// The key/value heads of `layer`'s attention.
    pub fn kv_heads_for(&self, layer: usize) -> usize {
        self.global_attention_of(layer).map_or(self.num_kv_heads, |g| g.num_kv_heads)
    }

    /// Where `layer`'s keys and values come from.
    pub fn kv_sharing_of(&self, layer: usize) -> KvSharing {
        self.kv_sharing.get(layer).copied().unwrap_or_default()
    }

    /// The dense MLP width of `layer` (twice `intermediate_size` in a double-wide layer).
    pub fn intermediate_size_for(&self, layer: usize) -> usize {
        let wide = self.double_wide_mlp && self.kv_sharing_of(layer) == KvSharing::Reuse;
        self.intermediate_size * if wide { 2 } else { 1 }
    }

    /// The per-layer input embedding table `[per-layer vocab, layers · width]`.
    pub fn per_layer_embed_name(&self) -> String {
        format!("{}embed_tokens_per_layer.weight", self.tensor_prefix)
    }

    /// The projection of the embedded stream into every layer's per-layer input
    /// `[layers · width, hidden]`.
    pub fn per_layer_model_projection_name(&self) -> String {
        format!("{}per_layer_model_projection.weight", self.tensor_prefix)
    }

    /// The norm `[width]` of that projection, per layer slice.
    pub fn per_layer_projection_norm_name(&self) -> String {
        format!("{}per_layer_projection_norm.weight", self.tensor_prefix)
    }

    /// Every tensor the model reads outside its layers (the head even where it is tied).
    pub fn model_tensors(&self) -> Vec<String> {
        let mut names = vec![self.embed_name(), self.final_norm_name(), self.lm_head_name()];
        names.extend(self.per_layer_input_tensors());
        names
    }

    /// The model-level tensors of the per-layer inputs, if the model has them.
    pub fn per_layer_input_tensors(&self) -> Vec<String> {
        match self.per_layer_inputs {
            Some(_) => vec![
                self.per_layer_embed_name(),
                self.per_layer_model_projection_name(),
                self.per_layer_projection_norm_name(),
            ],
            None => Vec::new(),
        }
    }

    /// Every tensor name of layer `layer`, by role.
    pub fn layer_names(&self, layer: usize) -> LayerNames {
        let p = format!("{}{}", self.tensor_prefix, if self.family == Family::Qwen { "h" } else { "layers" });
        let p = format!("{p}.{layer}.");
        match self.family {
            Family::Llama
            | Family::Mistral
            | Family::Qwen2
            | Family::Qwen3
            | Family::Gemma
            | Family::Granite
            | Family::Smollm3 => super::llama::layer_names(self, &p),
            Family::Olmo2 => super::olmo2::layer_names(self, &p),
            Family::Glm4 => super::glm4::layer_names(self, &p),
            Family::Gemma2 | Family::Gemma3 => super::gemma2::layer_names(self, &p),
            Family::Gemma4 => super::gemma4::layer_names(self, layer, &p),
            Family::Phi3 => super::phi3::layer_names(&p),
            Family::Qwen => super::qwen::layer_names(self, &p),
            Family::Mixtral => super::mixtral::layer_names(self, layer, &p),
            Family::Qwen2Moe | Family::Qwen3Moe => super::qwen2_moe::layer_names(self, layer, &p),
        }
    }

    /// The token embedding tensor.
    pub fn embed_name(&self) -> String {
        match self.family {
            Family::Qwen => format!("{}wte.weight", self.tensor_prefix),
            _ => format!("{}embed_tokens.weight", self.tensor_prefix),
        }
    }

    /// The final norm before the output head.
    pub fn final_norm_name(&self) -> String {
        match self.family {
            Family::Qwen => format!("{}ln_f.weight", self.tensor_prefix),
            _ => format!("{}norm.weight", self.tensor_prefix),
        }
    }

    /// The output head tensor name (used when embeddings are not tied).
    pub fn lm_head_name(&self) -> String {
        match self.tensor_prefix.as_str() {
            "language_model.model." => "language_model.lm_head.weight".into(),
            _ => "lm_head.weight".into(),
        }
    }

    /// The writers of the given kinds: the embedding (if asked) and, for each listed layer,
    /// its attention and/or MLP output projection (in a sparse layer, every expert's and the
    /// shared expert's).
    pub fn writers(&self, layers: &[usize], kinds: &[WriterKind]) -> Vec<Writer> {
        let mut writers = Vec::new();
        if kinds.contains(&WriterKind::Embed) {
            writers.push(Writer {
                kind: WriterKind::Embed,
                layer: None,
                weight: self.embed_name(),
                bias: None,
                post_norm: None,
                part: MlpPart::Dense,
                slice: None,
            });
        }
        for &layer in layers {
            let names = self.layer_names(layer);
            if kinds.contains(&WriterKind::Attn) {
                writers.push(Writer {
                    kind: WriterKind::Attn,
                    layer: Some(layer),
                    weight: names.o_proj.clone(),
                    bias: names.o_proj_bias.clone(),
                    post_norm: names.attn_post_norm.clone(),
                    part: MlpPart::Dense,
                    slice: None,
                });
            }
            if kinds.contains(&WriterKind::Mlp) {
                writers.extend(names.mlp_writers().into_iter().map(|w| Writer {
                    kind: WriterKind::Mlp,
                    layer: Some(layer),
                    weight: w.weight,
                    bias: w.bias,
                    post_norm: names.mlp_post_norm.clone(),
                    part: w.part,
                    slice: w.slice,
                }));
            }
            if let (true, Some(per_layer)) = (kinds.contains(&WriterKind::PerLayer), &names.per_layer) {
                writers.push(Writer {
                    kind: WriterKind::PerLayer,
                    layer: Some(layer),
                    weight: per_layer.projection.clone(),
                    bias: None,
                    post_norm: Some(per_layer.post_norm.clone()),
                    part: MlpPart::Dense,
                    slice: None,
                });
            }
        }
        writers
    }

    /// Rotary base frequency used by `layer`.
    pub fn rope_theta_for(&self, layer: usize) -> f64 {
        match (self.sliding_layers.get(layer), self.rope_local_theta) {
            (Some(true), Some(local)) => local,
            _ => self.rope_theta,
        }
    }

    /// The sliding window of `layer`, if it uses one.
    pub fn window_for(&self, layer: usize) -> Option<usize> {
        if self.sliding_layers.get(layer).copied().unwrap_or(false) {
            self.sliding_window
        } else {
            None
        }
    }
}

fn parse_rope_scaling(value: Option<&serde_json::Value>, path: &Path) -> Result<Option<RopeScaling>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    let num = |key: &str, default: f64| value.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor", 8.0),
            low_freq_factor: num("low_freq_factor", 1.0),
            high_freq_factor: num("high_freq_factor", 4.0),
            original_max_position_embeddings: num("original_max_position_embeddings", 8192.0),
        })),
        "linear" => Ok(Some(RopeScaling::Linear { factor: num("factor", 1.0) })),
        other => Err(Error::BadConfig {
            path: path.to_path_buf(),
            message: format!("unsupported rope_scaling type `{other}` (supported: llama3, linear)"),
        }),
    }
}
