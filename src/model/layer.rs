//! One decoder layer: attention and MLP blocks with their norms, for every supported family.

use super::rope;
use super::weights::{Linear, Loader};
use crate::arch::{Activation, AttentionLayout, MlpLayout, ModelSpec};
use crate::Result;
use candle_core::{DType, Tensor, D};

/// The attention input projections.
#[derive(Debug, Clone)]
pub(crate) enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// The MLP input projections.
#[derive(Debug, Clone)]
pub(crate) enum MlpIn {
    Gated { gate: Linear, up: Linear },
    FusedGateUp(Linear),
    QwenW1W2 { w1: Linear, w2: Linear },
}

/// A layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub attn_norm: Tensor,
    pub qkv: Qkv,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub o_proj: Linear,
    pub attn_post_norm: Option<Tensor>,
    pub mlp_norm: Tensor,
    pub mlp_in: MlpIn,
    pub down_proj: Linear,
    pub mlp_post_norm: Option<Tensor>,
}

/// RMSNorm over the last dimension with scale `gamma` (f32), computed in f32.
pub(crate) fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    normed.broadcast_mul(gamma)?.to_dtype(dtype)
}

fn activation(x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    match act {
        Activation::Silu => x.silu(),
        Activation::GeluTanh => x.gelu(),
        Activation::Gelu => x.gelu_erf(),
    }
}

impl Layer {
    /// Load layer `index` of `spec`.
    pub fn load(loader: &Loader<'_>, spec: &ModelSpec, index: usize) -> Result<Layer> {
        let n = spec.layer_names(index);
        let (h, hd, inter) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
        let (q_out, kv_out) = (spec.num_heads * hd, spec.num_kv_heads * hd);
        let qkv = match &n.attention {
            AttentionLayout::Separate { q, k, v, biases } => Qkv::Separate {
                q: loader.linear(q, biases.as_ref().map(|b| &b[0]), q_out, h)?,
                k: loader.linear(k, biases.as_ref().map(|b| &b[1]), kv_out, h)?,
                v: loader.linear(v, biases.as_ref().map(|b| &b[2]), kv_out, h)?,
            },
            AttentionLayout::Fused { qkv, bias } => {
                Qkv::Fused(loader.linear(qkv, bias.as_ref(), q_out + 2 * kv_out, h)?)
            }
        };
        let mlp_in = match &n.mlp {
            MlpLayout::Gated { gate, up, biases } => MlpIn::Gated {
                gate: loader.linear(gate, biases.as_ref().map(|b| &b[0]), inter, h)?,
                up: loader.linear(up, biases.as_ref().map(|b| &b[1]), inter, h)?,
            },
            MlpLayout::FusedGateUp { gate_up } => MlpIn::FusedGateUp(loader.linear(gate_up, None, 2 * inter, h)?),
            MlpLayout::QwenW1W2 { w1, w2 } => {
                MlpIn::QwenW1W2 { w1: loader.linear(w1, None, inter, h)?, w2: loader.linear(w2, None, inter, h)? }
            }
        };
        Ok(Layer {
            attn_norm: loader.norm(&n.attn_norm, h)?,
            qkv,
            q_norm: n.q_norm.as_deref().map(|q| loader.norm(q, hd)).transpose()?,
            k_norm: n.k_norm.as_deref().map(|k| loader.norm(k, hd)).transpose()?,
            o_proj: loader.linear(&n.o_proj, n.o_proj_bias.as_ref(), h, q_out)?,
            attn_post_norm: n.attn_post_norm.as_deref().map(|p| loader.norm(p, h)).transpose()?,
            mlp_norm: loader.norm(&n.mlp_norm, h)?,
            mlp_in,
            down_proj: loader.linear(&n.down_proj, n.down_proj_bias.as_ref(), h, inter)?,
            mlp_post_norm: n.mlp_post_norm.as_deref().map(|p| loader.norm(p, h)).transpose()?,
        })
    }

    /// The attention block's raw output (before any post-norm) for normed input `x` `[B, T, H]`.
    /// `cache` holds this layer's keys and values so far and is extended.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        spec: &ModelSpec,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let (q, k, v) = match &self.qkv {
            Qkv::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            Qkv::Fused(qkv) => {
                let y = qkv.forward(x)?;
                (y.narrow(2, 0, nh * hd)?, y.narrow(2, nh * hd, nkv * hd)?, y.narrow(2, (nh + nkv) * hd, nkv * hd)?)
            }
        };
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let (mut q, mut k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?);
        if let Some(g) = &self.q_norm {
            q = rms_norm(&q, g, spec.norm_eps)?;
        }
        if let Some(g) = &self.k_norm {
            k = rms_norm(&k, g, spec.norm_eps)?;
        }
        let q = rope::apply(&q, cos, sin)?;
        let k = rope::apply(&k, cos, sin)?;
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let (k, v) = if nkv == nh { (k, v) } else { (repeat_kv(&k, nh / nkv)?, repeat_kv(&v, nh / nkv)?) };
        let scale = spec.query_scale.unwrap_or(1.0 / (hd as f64).sqrt());
        let q32 = q.to_dtype(DType::F32)?;
        let k32 = k.to_dtype(DType::F32)?;
        let mut scores = (q32.matmul(&k32.t()?)? * scale)?;
        if let Some(cap) = spec.attn_logit_softcapping {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?;
        let out = probs.to_dtype(v.dtype())?.matmul(&v.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out)
    }

    /// The MLP's raw output (before any post-norm) for normed input `x`.
    pub fn mlp(&self, spec: &ModelSpec, x: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = match &self.mlp_in {
            MlpIn::Gated { gate, up } => (activation(&gate.forward(x)?, spec.activation)? * up.forward(x)?)?,
            MlpIn::FusedGateUp(gate_up) => {
                let y = gate_up.forward(x)?;
                let half = gate_up.out_dim() / 2;
                (activation(&y.narrow(D::Minus1, 0, half)?, spec.activation)? * y.narrow(D::Minus1, half, half)?)?
            }
            MlpIn::QwenW1W2 { w1, w2 } => (w1.forward(x)? * w2.forward(x)?.silu()?)?,
        };
        self.down_proj.forward(&hidden)
    }
}

/// `[B, kv, S, D]` → `[B, kv·n, S, D]`, each key/value head repeated for its query group.
fn repeat_kv(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let (b, kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, kv, n, s, d))?.reshape((b, kv * n, s, d))
}
