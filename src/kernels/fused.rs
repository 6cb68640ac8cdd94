//! Fused CPU kernels for the f32 forward pass, where candle would make several full-tensor
//! passes (each a fresh allocation and, for strided inputs, a single-threaded copy). Each takes
//! CPU f32 inputs only (`None`, or [`fusable`] false, elsewhere); the caller's candle ops for
//! other devices and dtypes do the same arithmetic but for SiLU's `exp`, which is vectorized
//! here (to a few ulp).

use super::slices::f32_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per rayon task: enough work to amortise the task, enough tasks to balance two cores.
const ROWS_PER_TASK: usize = 8;
/// Elements per rayon task of elementwise kernels.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// `silu(g) · u` for `x = [.., g | u]` (the fused gate/up product), as `[.., width / 2]`, in one
/// pass, for an `x` that is [`fusable`].
pub(crate) fn silu_mul(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1_no_bwd(&SiluMul)
}

struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(src), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("silu-mul needs a contiguous f32 input");
        };
        let src = &src[start..end];
        let mut dims = layout.dims().to_vec();
        let width = *dims.last().unwrap_or(&0);
        if !width.is_multiple_of(2) {
            candle_core::bail!("silu-mul needs an even last dimension, got {width}");
        }
        let half = width / 2;
        let mut dst = vec![0f32; src.len() / 2];
        dst.par_chunks_mut(half * ROWS_PER_TASK).zip(src.par_chunks(width * ROWS_PER_TASK)).for_each(|(out, inp)| {
            for (o, row) in out.chunks_exact_mut(half).zip(inp.chunks_exact(width)) {
                let (g, u) = row.split_at(half);
                silu_mul_row(o, g, u);
            }
        });
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(dst), Shape::from(dims)))
    }
}

/// `o ← silu(g) · u`, compiled for AVX-512 where the CPU has it.
fn silu_mul_row(o: &mut [f32], g: &[f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::isa::has_avx512f() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { silu_mul_row_avx512(o, g, u) };
    }
    silu_mul_row_portable(o, g, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_row_avx512(o: &mut [f32], g: &[f32], u: &[f32]) {
    silu_mul_row_portable(o, g, u)
}

#[inline(always)]
fn silu_mul_row_portable(o: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        // candle's silu, `v / (1 + e^-v)`, with an exp the compiler vectorizes.
        *o = g / (1.0 + exp_vectorizable(-g)) * u;
    }
}

/// `e^x` within a few ulp for `x` in [−87, 88] (clamped there: results from 1.6e-38 to 1.7e38),
/// as Cephes' `expf` computes it (`2^n · p(r)`, `r = x − n·ln 2`, a degree-7 polynomial), in
/// branch-free arithmetic that the compiler vectorizes; libm's `expf` is a call per value.
#[inline(always)]
pub(crate) fn exp_vectorizable(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32) + 127;
    p * f32::from_bits((exponent << 23) as u32)
}

/// Whether `xs` can take the fused CPU path: all on the CPU, f32, contiguous.
pub(crate) fn fusable(xs: &[&Tensor]) -> bool {
    xs.iter().all(|x| x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous())
}

/// `a + b` for two tensors of one shape, or `a + b` with `b` a `[width]` row added to every row
/// of `a` (a bias); `None` where they are not [`fusable`] or of other shapes.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if fusable(&[a, b]) && (a.dims() == b.dims() || (b.rank() == 1 && a.dim(D::Minus1)? == b.dim(0)?)) {
        return Ok(Some(a.apply_op2_no_bwd(b, &Add)?));
    }
    Ok(None)
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "fused-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_slice(s1, l1, "add")?, f32_slice(s2, l2, "add")?);
        let mut dst = vec![0f32; a.len()];
        if b.is_empty() {
            // nothing to add to
        } else if a.len() == b.len() {
            let chunk = ELEMENTS_PER_TASK;
            dst.par_chunks_mut(chunk).zip(a.par_chunks(chunk).zip(b.par_chunks(chunk))).for_each(|(o, (a, b))| {
                o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = x + y);
            });
        } else {
            let chunk = b.len() * (ELEMENTS_PER_TASK / b.len()).max(1);
            dst.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).for_each(|(o, a)| {
                for (o, a) in o.chunks_exact_mut(b.len()).zip(a.chunks_exact(b.len())) {
                    o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = x + y);
                }
            });
        }
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// Attention probabilities `softmax(scores · scale + mask)` over the last dimension, for scores
/// `[B, H, T, S]` and an additive mask `[B, 1, T, S]`, in one pass; `None` where they are not
/// [`fusable`] or the mask has another shape.
pub(crate) fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> candle_core::Result<Option<Tensor>> {
    let (b, _, t, s) = scores.dims4()?;
    if fusable(&[scores, mask]) && mask.dims() == [b, 1, t, s] {
        return Ok(Some(scores.apply_op2_no_bwd(mask, &MaskedSoftmax { scale: scale as f32 })?));
    }
    Ok(None)
}

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (scores, mask) = (f32_slice(s1, l1, "masked-softmax")?, f32_slice(s2, l2, "masked-softmax")?);
        let (_, h, t, s) = l1.shape().dims4()?;
        let mut dst = vec![0f32; scores.len()];
        dst.par_chunks_mut(s).zip(scores.par_chunks(s)).enumerate().for_each(|(row, (out, x))| {
            // row = (batch · h + head) · t + query; the mask row is (batch, query).
            out.copy_from_slice(x);
            softmax_in_place(out, &mask[((row / (h * t)) * t + row % t) * s..][..s], self.scale);
        });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// `row ← softmax(row · scale + mask)`, one row of attention probabilities in place.
pub(crate) fn softmax_in_place(row: &mut [f32], mask: &[f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for (x, &m) in row.iter_mut().zip(mask) {
        *x = *x * scale + m;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = exp_at_most_zero(*x - max);
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// `e^x` for `x ≤ 0`, with masked entries (far below any real score) answered without calling
/// `exp`: below −104 it is 0 in f32 either way, and libm's slow path for underflow is costly.
#[inline]
fn exp_at_most_zero(x: f32) -> f32 {
    if x < -104.0 {
        0.0
    } else {
        x.exp()
    }
}

/// Split the fused q/k/v product `[B, T, nh + 2·nkv, D]` into heads-first q `[B, nh, T, D]`,
/// k and v `[B, nkv, T, D]`, with rotary embeddings (`cos`/`sin` `[B, T, D/2]`, the "rotate
/// half" layout over the whole head) applied to q and k, in one pass. `None` when the inputs
/// do not fit the fused path.
pub(crate) fn split_heads_rope(
    y: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    nh: usize,
    nkv: usize,
) -> candle_core::Result<Option<(Tensor, Tensor, Tensor)>> {
    let (b, t, heads, d) = y.dims4()?;
    if !fusable(&[y, cos, sin]) || heads != nh + 2 * nkv || cos.dims() != [b, t, d / 2] || sin.dims() != cos.dims() {
        return Ok(None);
    }
    let flat = y.apply_op3_no_bwd(cos, sin, &SplitHeadsRope { nh, nkv })?;
    let (q_len, kv_len) = (b * nh * t * d, b * nkv * t * d);
    let q = flat.narrow(0, 0, q_len)?.reshape((b, nh, t, d))?;
    let k = flat.narrow(0, q_len, kv_len)?.reshape((b, nkv, t, d))?;
    let v = flat.narrow(0, q_len + kv_len, kv_len)?.reshape((b, nkv, t, d))?;
    Ok(Some((q, k, v)))
}

struct SplitHeadsRope {
    nh: usize,
    nkv: usize,
}

impl CustomOp3 for SplitHeadsRope {
    fn name(&self) -> &'static str {
        "split-heads-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, "split-heads-rope")?;
        let (cos, sin) = (f32_slice(s2, l2, "split-heads-rope")?, f32_slice(s3, l3, "split-heads-rope")?);
        let (b, t, heads, d) = l1.shape().dims4()?;
        let (nh, nkv, half) = (self.nh, self.nkv, d / 2);
        let mut dst = vec![0f32; y.len()];
        // Output blocks of [T, D] in order: q (batch, head), then k, then v.
        dst.par_chunks_mut(t * d).enumerate().for_each(|(block, out)| {
            let (first, count, index) = if block < b * nh {
                (0, nh, block)
            } else if block < b * (nh + nkv) {
                (nh, nkv, block - b * nh)
            } else {
                (nh + nkv, nkv, block - b * (nh + nkv))
            };
            let (batch, head) = (index / count, first + index % count);
            let rotate = first < nh + nkv;
            for (ti, o) in out.chunks_exact_mut(d).enumerate() {
                let x = &y[((batch * t + ti) * heads + head) * d..][..d];
                if !rotate {
                    o.copy_from_slice(x);
                    continue;
                }
                let cs = &cos[(batch * t + ti) * half..][..half];
                let sn = &sin[(batch * t + ti) * half..][..half];
                let (o1, o2) = o.split_at_mut(half);
                let (x1, x2) = x.split_at(half);
                for i in 0..half {
                    // candle-nn's rope, term for term.
                    o1[i] = x1[i] * cs[i] - x2[i] * sn[i];
                    o2[i] = x1[i] * sn[i] + x2[i] * cs[i];
                }
            }
        });
        Ok((CpuStorage::F32(dst), Shape::from(y.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn silu_mul_matches_candle_ops() {
        let x = Tensor::randn(0f32, 2.0, (3, 5, 14), &Device::Cpu).unwrap();
        let fused = silu_mul(&x).unwrap();
        let reference = (x.narrow(2, 0, 7).unwrap().silu().unwrap() * x.narrow(2, 7, 7).unwrap()).unwrap();
        assert_eq!(fused.dims(), &[3, 5, 7]);
        let diff = (&fused - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        // A vectorized exp: a few ulp of each value, not bit for bit.
        let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6 * scale.max(1.0), "fused silu·up differs by {diff}");
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn add_matches_broadcast_add() {
        let a = Tensor::randn(0f32, 1.0, (4, 3, 8), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (4, 3, 8), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 8, &Device::Cpu).unwrap();
        assert_eq!(max_diff(&add(&a, &b).unwrap().unwrap(), &(&a + &b).unwrap()), 0.0);
        assert_eq!(max_diff(&add(&a, &bias).unwrap().unwrap(), &a.broadcast_add(&bias).unwrap()), 0.0);
        assert!(add(&a.to_dtype(DType::F16).unwrap(), &bias).unwrap().is_none(), "f16 is not fused");
    }

    #[test]
    fn masked_softmax_matches_candle_ops() {
        let scores = Tensor::randn(0f32, 3.0, (2, 3, 4, 6), &Device::Cpu).unwrap();
        let mask = Tensor::randn(0f32, 1.0, (2, 1, 4, 6), &Device::Cpu).unwrap();
        let fused = masked_softmax(&scores, &mask, 0.125).unwrap().unwrap();
        let reference =
            candle_nn::ops::softmax_last_dim(&(&scores * 0.125).unwrap().broadcast_add(&mask).unwrap()).unwrap();
        assert!(max_diff(&fused, &reference) < 1e-6);
    }

    #[test]
    fn exp_vectorizable_is_exp_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp_vectorizable(x)) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp_vectorizable(0.0), 1.0);
        // Clamped beyond the range: finite, and far below or above 1.
        assert!(exp_vectorizable(-1e4) < 1e-37 && exp_vectorizable(1e4) > 1e38 && exp_vectorizable(1e4).is_finite());
    }

    #[test]
    fn exp_at_most_zero_is_exp() {
        for x in [0.0f32, -1.0, -87.0, -103.9, -104.0, -104.1, -150.0, -1e30] {
            assert_eq!(exp_at_most_zero(x), x.exp(), "{x}");
        }
    }

    #[test]
    fn split_heads_rope_matches_candle_ops() {
        let (b, t, nh, nkv, d) = (2, 5, 4, 2, 8);
        let y = Tensor::randn(0f32, 1.0, (b, t, nh + 2 * nkv, d), &Device::Cpu).unwrap();
        let cos = Tensor::randn(0f32, 1.0, (b, t, d / 2), &Device::Cpu).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (b, t, d / 2), &Device::Cpu).unwrap();
        let (q, k, v) = split_heads_rope(&y, &cos, &sin, nh, nkv).unwrap().expect("fusable");
        let heads = |from, n| y.narrow(2, from, n).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let rope = |x: Tensor| candle_nn::rotary_emb::rope(&x, &cos, &sin).unwrap();
        assert_eq!(max_diff(&q, &rope(heads(0, nh))), 0.0);
        assert_eq!(max_diff(&k, &rope(heads(nh, nkv))), 0.0);
        assert_eq!(max_diff(&v, &heads(nh + nkv, nkv)), 0.0);
    }
}
