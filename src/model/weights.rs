//! Loading weights from a memory-mapped checkpoint into candle tensors.

use crate::checkpoint::ModelDir;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// `y = x Wᵀ + b` with `W` stored `[out, in]`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// Apply to `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().expect("at least one dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = super::small_matmul::linear(&x.reshape((rows, inner))?, &self.w, self.b.as_ref())?;
        let mut out = dims;
        *out.last_mut().expect("at least one dim") = y.dim(1)?;
        y.reshape(out)
    }

    /// Stack several linears over the same input into one (`[Σ out, in]`), so that one product
    /// replaces several; a missing bias is zero when another part has one.
    pub fn fuse(parts: &[Linear]) -> candle_core::Result<Linear> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.w).collect();
        let w = Tensor::cat(&weights, 0)?;
        let b = if parts.iter().any(|p| p.b.is_some()) {
            let biases = parts
                .iter()
                .map(|p| match &p.b {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(p.out_dim(), p.w.dtype(), p.w.device()),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.w.dims()[0]
    }
}

/// Reads named tensors of a model onto a device in the compute dtype.
pub(crate) struct Loader<'a> {
    pub model: &'a ModelDir,
    pub device: &'a Device,
    pub dtype: DType,
}

impl Loader<'_> {
    /// One tensor, converted to the compute dtype, with its shape checked.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self.model.checkpoint.tensor(name)?;
        if view.shape != shape {
            return Err(Error::bad_tensor(name, format!("shape {:?}, expected {shape:?}", view.shape)));
        }
        let dtype = match view.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::bad_tensor(name, format!("dtype {other:?} cannot be run (F32, F16, BF16 only)")))
            }
        };
        let t = Tensor::from_raw_buffer(view.data, dtype, view.shape, &Device::Cpu)?;
        Ok(t.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// A linear layer `[out, in]` with an optional bias.
    pub fn linear(&self, weight: &str, bias: Option<&String>, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear { w: self.tensor(weight, &[out, inp])?, b: bias.map(|b| self.tensor(b, &[out])).transpose()? })
    }

    /// A norm's scale `γ` (stored weight plus the family's offset), in f32.
    pub fn norm(&self, name: &str, size: usize) -> Result<Tensor> {
        let offset = f64::from(self.model.spec.norm_kind.offset());
        let w = self.tensor(name, &[size])?.to_dtype(DType::F32)?;
        Ok((w + offset)?)
    }
}
