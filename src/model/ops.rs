//! The decoder's compute ops, one entry point each: the CPU kernel of [`crate::kernels`] where
//! the inputs fit it, candle ops elsewhere (another device or dtype), so that the layers never
//! choose between kernel paths.

use super::rope;
use super::weights::{Linear, PreparedWeight};
use crate::arch::Activation;
use crate::kernels::{amx, attention as attention_kernel, fused, packed, panels, small_matmul};
use candle_core::{DType, Tensor};

pub(crate) use crate::kernels::threads::on_worker;

/// `x · Wᵀ + b` for `x` `[rows, in]` and a prepared `W` `[out, in]`: a packed weight's own
/// kernel for a CPU f32 `x`; a row-major one's few-rows kernel or gemm on the CPU, candle's
/// matmul (with `W` converted to `x`'s dtype for the call) elsewhere.
pub(crate) fn matmul(x: &Tensor, w: &PreparedWeight, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match w {
        PreparedWeight::Amx { packed: p, .. } if packed::applies(x, b) => amx::linear(x, p, b),
        PreparedWeight::Panels(p) if packed::applies(x, b) => panels::linear(x, p, b),
        PreparedWeight::Panels(p) => rows_matmul(x, &p.unpack()?, b),
        PreparedWeight::Amx { rows, .. } | PreparedWeight::Rows(rows) => rows_matmul(x, rows, b),
    }
}

/// `x · Wᵀ + b` for a row-major `w`.
fn rows_matmul(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    if small_matmul::fits(x, w, b) {
        return small_matmul::linear(x, w, b);
    }
    let w = if w.dtype() == x.dtype() { w.clone() } else { w.to_dtype(x.dtype())? };
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => add(&y, b),
        None => Ok(y),
    }
}

/// `a + b` for two tensors of one shape, or with `b` a `[width]` row added to every row of `a`.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match fused::add(a, b)? {
        Some(sum) => Ok(sum),
        None => a.broadcast_add(b),
    }
}

/// RMSNorm over the last dimension with scale `gamma` (in x's dtype, as `Loader::norm` keeps
/// it), in one fused pass that computes in f32 and writes x's dtype (candle-nn's kernel:
/// `x / sqrt(mean(x²) + eps) · γ`). A 16-bit `x` is read as it is, not widened and narrowed again.
pub(crate) fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, gamma, eps as f32)
}

/// The fused q/k/v product `[B, T, nh + 2·nkv, D]` split into heads-first q `[B, nh, T, D]`, k
/// and v `[B, nkv, T, D]`, each contiguous.
pub(crate) fn split_heads(y: &Tensor, nh: usize, nkv: usize) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let heads = |from: usize, n: usize| y.narrow(2, from, n)?.transpose(1, 2)?.contiguous();
    Ok((heads(0, nh)?, heads(nh, nkv)?, heads(nh + nkv, nkv)?))
}

/// Rotary embeddings (`cos`/`sin` `[B, T, D/2]`, rotate-half) applied to `x` `[B, heads, T, D]`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    rope::apply(x, cos, sin)
}

/// [`split_heads`] with [`rope`] applied to q and k: in one pass on the CPU in f32.
pub(crate) fn split_heads_rope(
    y: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    nh: usize,
    nkv: usize,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    if let Some(qkv) = fused::split_heads_rope(y, cos, sin, nh, nkv)? {
        return Ok(qkv);
    }
    let (q, k, v) = split_heads(y, nh, nkv)?;
    Ok((rope(&q, cos, sin)?, rope(&k, cos, sin)?, v))
}

/// `softmax(q kᵀ · scale + mask) v` for `q` `[B, heads, T, D]`, `k` and `v` `[B, kv_heads, S, D]`
/// (a view of the KV cache), the additive `mask` `[B, 1, T, S]`, with the scores soft-capped at
/// `softcap` if given, as `[B, T, heads · D]`: one op over every (sequence, key/value head) on
/// the CPU in f32 without soft-capping, candle ops elsewhere.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    softcap: Option<f64>,
) -> candle_core::Result<Tensor> {
    if softcap.is_none() {
        if let Some(out) = attention_kernel::fused(q, k, v, mask, scale)? {
            return Ok(out);
        }
    }
    // Grouped-query attention without repeating K/V: the n_rep query heads that share a
    // key/value head are stacked along the rows of one product, so each (batch, kv head)
    // is a single gemm; q and the scores are contiguous, so the reshapes are free.
    let (b, nh, t, hd) = q.dims4()?;
    let (nkv, s) = (k.dim(1)?, k.dim(2)?);
    let n_rep = nh / nkv;
    let q32 = q.to_dtype(DType::F32)?.reshape((b, nkv, n_rep * t, hd))?;
    let k32 = k.to_dtype(DType::F32)?;
    let scores = q32.matmul(&k32.t()?)?.reshape((b, nh, t, s))?;
    let probs = match softcap {
        None => masked_softmax(&scores, mask, scale)?,
        Some(cap) => masked_softmax(&(((scores * scale)? / cap)?.tanh()? * cap)?, mask, 1.0)?,
    };
    let probs = probs.to_dtype(v.dtype())?.reshape((b, nkv, n_rep * t, s))?;
    let out = probs.matmul(v)?.reshape((b, nh, t, hd))?;
    out.transpose(1, 2)?.reshape((b, t, nh * hd))
}

/// `softmax(scores · scale + mask)` over the last dimension.
fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    match fused::masked_softmax(scores, mask, scale)? {
        Some(probs) => Ok(probs),
        None => candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(mask)?),
    }
}

/// A gated MLP's hidden activations `act(gate) · up` for input `x`, where `gate_up` stacks the
/// gate's rows over the up projection's: on the CPU in f32 with SiLU one product, then one pass
/// over its output; elsewhere one product per half, so that the activation and the product read
/// contiguous tensors (on a GPU candle's kernels over the strided halves of one output take
/// several times the product's own time).
pub(crate) fn gated(x: &Tensor, gate_up: &Linear, act: Activation) -> candle_core::Result<Tensor> {
    if act == Activation::Silu && fused::fusable(&[x]) {
        return fused::silu_mul(&gate_up.forward(x)?);
    }
    let half = gate_up.out_dim() / 2;
    activation(&gate_up.forward_rows(x, 0, half)?, act)? * gate_up.forward_rows(x, half, half)?
}

pub(crate) fn activation(x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    match act {
        Activation::Silu => x.silu(),
        Activation::GeluTanh => x.gelu(),
        Activation::Gelu => x.gelu_erf(),
    }
}
