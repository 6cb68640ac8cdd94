//! The candle op for a product with a packed weight ([`super::amx::PackedRows`],
//! [`super::panels::Panels`]): `x` and the bias as f32 slices, the packed weight's own kernel.

use super::slices::f32_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

/// A weight `[n, k]` packed for a kernel of its own.
pub(crate) trait PackedWeight: Clone + Send + Sync + 'static {
    /// The op's name in candle's errors.
    const NAME: &'static str;

    /// `(n, k)`.
    fn dims(&self) -> (usize, usize);

    /// `x · Wᵀ + b` for `x` `[m, k]` row-major, as `[m, n]` row-major.
    fn product(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32>;
}

/// `x · Wᵀ + b` for a CPU f32 `x` `[m, k]`, `w` packed `[n, k]`, `b` `[n]` (converted to f32).
pub(crate) fn linear<P: PackedWeight>(x: &Tensor, w: &P, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let op = PackedLinear(w.clone());
    match b {
        Some(b) => x.apply_op2_no_bwd(&b.to_dtype(DType::F32)?.contiguous()?, &op),
        None => x.apply_op1_no_bwd(&op),
    }
}

/// Whether [`linear`] applies to `x` and `b`: `x` f32 on the CPU, `b` (if any) on the CPU.
pub(crate) fn applies(x: &Tensor, b: Option<&Tensor>) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && b.is_none_or(|b| b.device().is_cpu())
}

struct PackedLinear<P>(P);

impl<P: PackedWeight> PackedLinear<P> {
    fn forward(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = lx.shape().dims2()?;
        let (n, kw) = self.0.dims();
        if kw != k {
            candle_core::bail!("{}: x is [{m}, {k}] but w is [{n}, {kw}]", P::NAME);
        }
        let b = match bias {
            Some((sb, lb)) if lb.shape().dims() == [n] => Some(f32_slice(sb, lb, P::NAME)?),
            Some((_, lb)) => candle_core::bail!("{}: the bias is {:?}, expected [{n}]", P::NAME, lb.shape()),
            None => None,
        };
        let y = self.0.product(f32_slice(sx, lx, P::NAME)?, m, b);
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

impl<P: PackedWeight> CustomOp1 for PackedLinear<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s, l), None)
    }
}

impl<P: PackedWeight> CustomOp2 for PackedLinear<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), Some((s2, l2)))
    }
}
