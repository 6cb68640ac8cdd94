//! Fused CPU kernels for the f32 forward pass, where candle would make several full-tensor
//! passes (each a fresh allocation and, for strided inputs, a single-threaded copy). Every
//! kernel has a candle-ops fallback for other devices and dtypes, with the same arithmetic.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per rayon task: enough work to amortise the task, enough tasks to balance two cores.
const ROWS_PER_TASK: usize = 8;

/// `silu(g) · u` for `x = [.., g | u]` (the fused gate/up product), as `[.., width / 2]`.
pub(crate) fn silu_mul(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        return x.apply_op1_no_bwd(&SiluMul);
    }
    let half = x.dim(D::Minus1)? / 2;
    x.narrow(D::Minus1, 0, half)?.silu()? * x.narrow(D::Minus1, half, half)?
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
        if width % 2 != 0 {
            candle_core::bail!("silu-mul needs an even last dimension, got {width}");
        }
        let half = width / 2;
        let mut dst = vec![0f32; src.len() / 2];
        dst.par_chunks_mut(half * ROWS_PER_TASK).zip(src.par_chunks(width * ROWS_PER_TASK)).for_each(|(out, inp)| {
            for (o, row) in out.chunks_exact_mut(half).zip(inp.chunks_exact(width)) {
                let (g, u) = row.split_at(half);
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    // candle's silu, `v / (1 + e^-v)`, so both paths agree bit for bit.
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
        });
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(dst), Shape::from(dims)))
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
        let diff = (fused - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "fused silu·up differs by {diff}");
    }
}
