//! One decoder layer: attention and MLP blocks with their norms, for every supported family.

use super::decoder::{LayerCache, SharedKv};
use super::moe::{Mlp, Moe};
use super::ops::{self, rms_norm};
use super::per_layer::PerLayerBlock;
use super::weights::{Linear, Loader};
use crate::arch::{Activation, AttentionLayout, KvSharing, MlpLayout, ModelSpec};
use crate::{Error, Result};
use candle_core::Tensor;

/// A layer's MLP block: a dense gated MLP, or a sparse mixture of experts.
#[derive(Debug, Clone)]
pub(crate) enum Ffn {
    Dense(Mlp),
    Sparse(Moe),
}

impl Ffn {
    /// Every linear of the block.
    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            Ffn::Dense(mlp) => vec![&mlp.gate_up, &mlp.down_proj],
            Ffn::Sparse(moe) => moe.linears(),
        }
    }
}

/// A layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// None where the family has no pre-norms (OLMo 2).
    pub attn_norm: Option<Tensor>,
    /// q, k and v fused into one product (`[nh·hd + 2·nkv·hd, hidden]`; q alone, `[nh·hd,
    /// hidden]`, where the layer reuses an earlier layer's keys and values).
    pub qkv: Linear,
    /// Where the keys and values come from.
    pub kv: KvSharing,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub o_proj: Linear,
    pub attn_post_norm: Option<Tensor>,
    pub mlp_norm: Option<Tensor>,
    pub ffn: Ffn,
    pub mlp_post_norm: Option<Tensor>,
    /// Ones of one head's width where values are RMS-normalised without a scale (Gemma 4).
    pub v_norm: Option<Tensor>,
    /// The scalar `[1]` the layer's output stream is multiplied by (Gemma 4).
    pub layer_scalar: Option<Tensor>,
    /// Key/value heads and per-head width of this layer (Gemma 4's full-attention layers differ).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The per-layer input block (Gemma 4's E models).
    pub per_layer: Option<PerLayerBlock>,
    /// Whether the layer uses a sliding window (which keys and values it shares).
    pub sliding: bool,
}

/// A q or k projection whose rotary pairs are interleaved (GLM-4: dims `2i, 2i + 1` of each
/// head's rotated part) with its rows reordered into the rotate-half layout (`i, i + r/2`) that
/// [`ops::split_heads_rope`] uses. The same reordering of q's and k's head dims
/// leaves every score `q·k` unchanged, so attention is exactly the interleaved one; nothing
/// outside the layer sees q or k.
fn rope_pairs_halved(spec: &ModelSpec, hd: usize, linear: Linear) -> Result<Linear> {
    if !spec.rope_interleaved {
        return Ok(linear);
    }
    let rotary = ((hd as f64 * spec.partial_rotary_factor) as usize) & !1;
    let w = linear.weight()?;
    let rows = w.dim(0)?;
    let order: Vec<u32> = (0..rows)
        .map(|row| {
            let (head, d) = (row / hd, row % hd);
            let from = match d {
                d if d < rotary / 2 => 2 * d,
                d if d < rotary => 2 * (d - rotary / 2) + 1,
                d => d,
            };
            (head * hd + from) as u32
        })
        .collect();
    let index = Tensor::new(order.as_slice(), w.device())?;
    let b = linear.b.as_ref().map(|b| b.index_select(&index, 0)).transpose()?;
    Ok(Linear::new(w.index_select(&index, 0)?, b))
}

impl Layer {
    /// Load layer `index` of `spec`.
    pub fn load(loader: &Loader<'_>, spec: &ModelSpec, index: usize) -> Result<Layer> {
        let n = spec.layer_names(index);
        let (h, hd, inter) = (spec.hidden_size, spec.head_dim_for(index), spec.intermediate_size_for(index));
        let kv_heads = spec.kv_heads_for(index);
        let (q_out, kv_out) = (spec.num_heads * hd, kv_heads * hd);
        // Fused at load: one product per block instead of two or three smaller ones.
        let qkv = match &n.attention {
            AttentionLayout::Separate { q, k, v, biases } => Linear::fuse(&[
                rope_pairs_halved(spec, hd, loader.linear(q, biases.as_ref().map(|b| &b[0]), q_out, h)?)?,
                rope_pairs_halved(spec, hd, loader.linear(k, biases.as_ref().map(|b| &b[1]), kv_out, h)?)?,
                loader.linear(v, biases.as_ref().map(|b| &b[2]), kv_out, h)?,
            ])?,
            // The values are the raw keys: the key rows twice give them exactly, in the same product.
            AttentionLayout::KeysAsValues { q, k, biases } => {
                let keys = loader.linear(k, biases.as_ref().map(|b| &b[1]), kv_out, h)?;
                Linear::fuse(&[loader.linear(q, biases.as_ref().map(|b| &b[0]), q_out, h)?, keys.clone(), keys])?
            }
            AttentionLayout::QueryOnly { q, bias } => loader.linear(q, bias.as_ref(), q_out, h)?,
            AttentionLayout::Fused { qkv, bias } => loader.linear(qkv, bias.as_ref(), q_out + 2 * kv_out, h)?,
        };
        let kv = spec.kv_sharing_of(index);
        if (kv == KvSharing::Reuse) != matches!(n.attention, AttentionLayout::QueryOnly { .. }) {
            return Err(Error::Invalid(format!(
                "layer {index}: its attention tensors do not fit where its keys and values come from ({kv:?})"
            )));
        }
        let dense = |gate_up: Linear, act: Activation| -> Result<Ffn> {
            let down_proj = loader.linear(&n.down_proj, n.down_proj_bias.as_ref(), h, inter)?;
            Ok(Ffn::Dense(Mlp { gate_up: loader.finish(gate_up)?, act, down_proj: loader.finish(down_proj)? }))
        };
        let ffn = match &n.mlp {
            MlpLayout::Gated { gate, up, biases } => dense(
                Linear::fuse(&[
                    loader.linear(gate, biases.as_ref().map(|b| &b[0]), inter, h)?,
                    loader.linear(up, biases.as_ref().map(|b| &b[1]), inter, h)?,
                ])?,
                spec.activation,
            )?,
            MlpLayout::FusedGateUp { gate_up } => dense(loader.linear(gate_up, None, 2 * inter, h)?, spec.activation)?,
            // Qwen-1: `w1(x) · silu(w2(x))`, so w2 is the gate.
            MlpLayout::QwenW1W2 { w1, w2 } => dense(
                Linear::fuse(&[loader.linear(w2, None, inter, h)?, loader.linear(w1, None, inter, h)?])?,
                Activation::Silu,
            )?,
            MlpLayout::Sparse(names) => {
                let moe = spec.moe.as_ref().ok_or_else(|| {
                    Error::Invalid(format!("layer {index} names experts but the spec has no mixture of experts"))
                })?;
                Ffn::Sparse(Moe::load(loader, spec, moe, names)?)
            }
        };
        let pre_norm = |name: &str| spec.pre_norms.then(|| loader.norm(name, h)).transpose();
        let (q_size, k_size) = if spec.qk_norm_full { (q_out, kv_out) } else { (hd, hd) };
        Ok(Layer {
            attn_norm: pre_norm(&n.attn_norm)?,
            qkv: loader.finish(qkv)?,
            kv,
            q_norm: n.q_norm.as_deref().map(|q| loader.norm(q, q_size)).transpose()?,
            k_norm: n.k_norm.as_deref().map(|k| loader.norm(k, k_size)).transpose()?,
            o_proj: loader.finish(loader.linear(&n.o_proj, n.o_proj_bias.as_ref(), h, q_out)?)?,
            attn_post_norm: n.attn_post_norm.as_deref().map(|p| loader.norm(p, h)).transpose()?,
            mlp_norm: pre_norm(&n.mlp_norm)?,
            ffn,
            mlp_post_norm: n.mlp_post_norm.as_deref().map(|p| loader.norm(p, h)).transpose()?,
            v_norm: spec.v_norm.then(|| Tensor::ones(hd, loader.dtype, loader.device)).transpose()?,
            layer_scalar: n.layer_scalar.as_deref().map(|s| loader.tensor(s, &[1])).transpose()?,
            kv_heads,
            head_dim: hd,
            per_layer: n.per_layer.as_ref().map(|p| PerLayerBlock::load(loader, spec, p)).transpose()?,
            sliding: spec.sliding_layers.get(index).copied().unwrap_or(false),
        })
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let norms = [self.attn_norm.as_ref(), self.q_norm.as_ref(), self.k_norm.as_ref(), self.attn_post_norm.as_ref()]
            .into_iter()
            .chain([
                self.mlp_norm.as_ref(),
                self.mlp_post_norm.as_ref(),
                self.v_norm.as_ref(),
                self.layer_scalar.as_ref(),
            ])
            .flatten()
            .map(size)
            .sum::<usize>();
        let ffn = match &self.ffn {
            Ffn::Dense(mlp) => mlp.bytes(),
            Ffn::Sparse(moe) => moe.bytes(),
        };
        let per_layer = self.per_layer.as_ref().map_or(0, PerLayerBlock::bytes);
        norms + self.qkv.bytes() + self.o_proj.bytes() + ffn + per_layer
    }

    /// The attention block's raw output (before any post-norm) for normed input `x` `[B, T, H]`.
    /// `cache` holds this layer's keys and values so far and is extended; `shared` holds the
    /// keys and values a storing layer leaves for the layers that reuse them.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        spec: &ModelSpec,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<LayerCache>>,
        shared: &SharedKv,
    ) -> candle_core::Result<Tensor> {
        let scale = spec.query_scale.unwrap_or(1.0 / (self.head_dim as f64).sqrt());
        if self.kv == KvSharing::Reuse {
            let (b, t, _) = x.dims3()?;
            let q =
                self.qkv.forward(x)?.reshape((b, t, spec.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()?;
            let q = match &self.q_norm {
                Some(g) => rms_norm(&q, g, spec.norm_eps)?,
                None => q,
            };
            let (k, v) = shared.get(self.sliding)?;
            let out = ops::attention(&ops::rope(&q, cos, sin)?, &k, &v, mask, scale, spec.attn_logit_softcapping)?;
            return self.o_proj.forward(&out);
        }
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (spec.num_heads, self.kv_heads, self.head_dim);
        // One product for q, k and v; each head block is then copied once into [B, heads, T, D].
        let mut y = self.qkv.forward(x)?;
        if let (true, Some(gq), Some(gk)) = (spec.qk_norm_full, &self.q_norm, &self.k_norm) {
            // OLMo 2: q and k normed over their whole projection, before the split into heads.
            let q = rms_norm(&y.narrow(2, 0, nh * hd)?, gq, spec.norm_eps)?;
            let k = rms_norm(&y.narrow(2, nh * hd, nkv * hd)?, gk, spec.norm_eps)?;
            y = Tensor::cat(&[q, k, y.narrow(2, (nh + nkv) * hd, nkv * hd)?], 2)?;
        }
        let y = y.reshape((b, t, nh + 2 * nkv, hd))?;
        let per_head_norms =
            !spec.qk_norm_full && (self.q_norm.is_some() || self.k_norm.is_some() || self.v_norm.is_some());
        let (q, k, v) = if per_head_norms {
            // Gemma 3/4, Qwen 3: each head of q and k normed between the split and the rotation
            // (Gemma 4: and each head of v).
            let (mut q, mut k, mut v) = ops::split_heads(&y, nh, nkv)?;
            if let Some(g) = &self.q_norm {
                q = rms_norm(&q, g, spec.norm_eps)?;
            }
            if let Some(g) = &self.k_norm {
                k = rms_norm(&k, g, spec.norm_eps)?;
            }
            if let Some(ones) = &self.v_norm {
                v = rms_norm(&v, ones, spec.norm_eps)?;
            }
            (ops::rope(&q, cos, sin)?, ops::rope(&k, cos, sin)?, v)
        } else {
            ops::split_heads_rope(&y, cos, sin, nh, nkv)?
        };
        let (k, v) = match cache {
            Some(slot) => LayerCache::append(slot, k, v)?,
            None => (k, v),
        };
        if self.kv == KvSharing::Store {
            shared.put(self.sliding, &k, &v)?;
        }
        let out = ops::attention(&q, &k, &v, mask, scale, spec.attn_logit_softcapping)?;
        self.o_proj.forward(&out)
    }

    /// The MLP block's raw output (before any post-norm) for normed input `x`. With `chosen`, a
    /// sparse block writes each token's experts into it ([`Moe::forward`]); a dense one leaves
    /// it untouched.
    pub fn mlp(&self, x: &Tensor, chosen: Option<&mut Vec<Vec<usize>>>) -> candle_core::Result<Tensor> {
        match &self.ffn {
            Ffn::Dense(mlp) => mlp.forward(x),
            Ffn::Sparse(moe) => moe.forward(x, chosen),
        }
    }

    /// Whether the MLP block is a sparse mixture of experts.
    pub fn is_sparse(&self) -> bool {
        matches!(self.ffn, Ffn::Sparse(_))
    }
}
