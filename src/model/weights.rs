//! Loading weights from a memory-mapped checkpoint into candle tensors.

use super::amx;
use super::packed::{self, PackedWeight};
use super::panels::{self, Panels};
use crate::checkpoint::ModelDir;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// `y = x Wᵀ + b` with `W` stored `[out, in]`: row-major in `w`, or packed for a kernel of its
/// own — tile-packed for AMX (bf16-exact weights, `w` kept in bf16 beside it), or in panels
/// (f32 weights on AVX-512, in place of `w`).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// `W` `[out, in]`; an empty `[0, in]` placeholder where [`Linear::panels`] holds it.
    pub w: Tensor,
    pub b: Option<Tensor>,
    /// `w` packed for the AMX products ([`amx::PackedRows`]), when it is exact in bf16 and
    /// [`Linear::packed`] made it.
    pub amx: Option<amx::PackedRows>,
    /// `W` in panels ([`Panels`]), when it is f32 and [`Linear::packed`] made them.
    pub panels: Option<Panels>,
}

impl Linear {
    /// A linear without a packed copy.
    pub fn new(w: Tensor, b: Option<Tensor>) -> Linear {
        Linear { w, b, amx: None, panels: None }
    }

    /// This linear with `w` packed for its CPU kernel: for AMX where `amx` asks for it, AMX is
    /// on and `w`'s values are exact in bf16; else in panels where `panels` asks for them, `w`
    /// is f32 and the panels are on (the row-major copy is then dropped); else as it is.
    pub fn packed(mut self, amx: bool, panels: bool) -> candle_core::Result<Linear> {
        if amx {
            self.amx = amx::PackedRows::pack(&self.w)?;
        }
        if panels && self.amx.is_none() && self.panels.is_none() {
            if let Some(panels) = Panels::pack(&self.w)? {
                self.w = Tensor::zeros((0, self.w.dim(1)?), self.w.dtype(), self.w.device())?;
                self.panels = Some(panels);
            }
        }
        Ok(self)
    }

    /// `W` `[out, in]` row-major (unpacked from the panels if it is there).
    pub fn weight(&self) -> candle_core::Result<Tensor> {
        match &self.panels {
            Some(panels) => panels.unpack(),
            None => Ok(self.w.clone()),
        }
    }

    /// Apply to `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().expect("at least one dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x = x.reshape((rows, inner))?;
        let b = self.b.as_ref();
        let y = match (&self.amx, &self.panels) {
            (Some(packed), _) if packed::applies(&x, b) => packed::linear(&x, packed, b)?,
            (_, Some(panels)) if packed::applies(&x, b) => packed::linear(&x, panels, b)?,
            _ => super::small_matmul::linear(&x, &self.weight()?, b)?,
        };
        let mut out = dims;
        *out.last_mut().expect("at least one dim") = y.dim(1)?;
        y.reshape(out)
    }

    /// Rows `ids` of `W`, `[ids.len(), in]` (f32 from the panels, else in `W`'s dtype): the
    /// embedding lookup of a head tied to the embedding.
    pub fn gather_rows(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        match &self.panels {
            Some(panels) => panels.gather(ids),
            None => self.w.index_select(&Tensor::new(ids, self.w.device())?, 0),
        }
    }

    /// Stack several linears over the same input into one (`[Σ out, in]`), so that one product
    /// replaces several; a missing bias is zero when another part has one.
    pub fn fuse(parts: &[Linear]) -> candle_core::Result<Linear> {
        let weights = parts.iter().map(Linear::weight).collect::<candle_core::Result<Vec<_>>>()?;
        let w = Tensor::cat(&weights, 0)?;
        let b = if parts.iter().any(|p| p.b.is_some()) {
            let biases = parts
                .iter()
                .map(|p| match &p.b {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(p.out_dim(), bias_dtype(parts), p.w.device()),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Linear::new(w, b))
    }

    /// Apply only the output rows `[from, from + n)` of `W` and `b` to `x`: one part of a fused
    /// linear, as a contiguous output of its own (a row range of `W` is a contiguous view).
    pub fn forward_rows(&self, x: &Tensor, from: usize, n: usize) -> candle_core::Result<Tensor> {
        let b = self.b.as_ref().map(|b| b.narrow(0, from, n)).transpose()?;
        let part = match self.panels.as_ref().map(|p| p.rows(from, n)) {
            Some(Some(panels)) => Linear { w: self.w.clone(), b, amx: None, panels: Some(panels) },
            // Not at a panel boundary: the rows unpacked (a slow path no model's shapes take).
            Some(None) => Linear::new(self.weight()?.narrow(0, from, n)?, b),
            None => Linear {
                w: self.w.narrow(0, from, n)?,
                b,
                amx: self.amx.as_ref().and_then(|p| p.rows(from, n)),
                panels: None,
            },
        };
        part.forward(x)
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.w)
            + self.b.as_ref().map_or(0, size)
            + self.amx.as_ref().map_or(0, amx::PackedRows::bytes)
            + self.panels.as_ref().map_or(0, Panels::bytes)
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        match &self.panels {
            Some(panels) => panels.dims().0,
            None => self.w.dims()[0],
        }
    }
}

/// The dtype of the biases among `parts` (the first one's).
fn bias_dtype(parts: &[Linear]) -> DType {
    parts.iter().find_map(|p| p.b.as_ref().map(Tensor::dtype)).unwrap_or(DType::F32)
}

/// Environment variable that sets [`WeightStorage`] where no flag does: `auto`, `checkpoint` or
/// `compute`.
pub const WEIGHTS_DTYPE_ENV: &str = "SCALPEL_WEIGHTS_DTYPE";

/// The dtype the matrices of linears and the embedding/head are kept in.
///
/// The default is [`WeightStorage::Auto`]: matrices widened to the compute dtype when they fit
/// the memory with room to spare (16-bit weights make capture — probe's batches of hundreds of
/// rows, which widen every matrix for each product — slower), kept 16-bit when they would not
/// (half the memory, the same results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightStorage {
    /// A bf16/f16 checkpoint's matrices stay 16-bit when the compute dtype is f32 on the CPU
    /// (half the memory); products widen them exactly, so the results are those of
    /// [`WeightStorage::Compute`] bit for bit (to f32 accuracy where AMX multiplies
    /// `Compute`'s bf16 weights). Norms and biases are in the compute dtype.
    Checkpoint,
    /// Every tensor in the compute dtype; on a CPU with AMX, a bf16 checkpoint's matrices stay
    /// bf16 with a tile-packed copy for the AMX products ([`super::amx`]), the same memory.
    Compute,
    /// [`WeightStorage::Compute`] when the weights in the compute dtype, half again for
    /// activations and edited copies, fit the memory budget (or the budget is unknown), else
    /// [`WeightStorage::Checkpoint`]: see [`crate::model::memory::resolve_storage`].
    #[default]
    Auto,
}

impl WeightStorage {
    /// Parse `auto`, `checkpoint` or `compute` (also `f32`, as the compute dtype this matters for).
    pub fn parse(text: &str) -> Result<WeightStorage> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightStorage::Auto),
            "checkpoint" | "stored" => Ok(WeightStorage::Checkpoint),
            "compute" | "f32" => Ok(WeightStorage::Compute),
            other => Err(Error::Invalid(format!("weights dtype `{other}`: choose auto, checkpoint or compute"))),
        }
    }

    /// [`WEIGHTS_DTYPE_ENV`] if set, else the default ([`WeightStorage::Auto`]).
    pub fn from_env() -> Result<WeightStorage> {
        match std::env::var(WEIGHTS_DTYPE_ENV) {
            Ok(v) => WeightStorage::parse(&v).map_err(|e| Error::Invalid(format!("{WEIGHTS_DTYPE_ENV}: {e}"))),
            Err(_) => Ok(WeightStorage::default()),
        }
    }

    /// The dtype a matrix stored as `stored` is kept in, for compute dtype `compute` on `device`
    /// (an unresolved [`WeightStorage::Auto`] counts as [`WeightStorage::Compute`]).
    pub fn matrix_dtype(self, stored: DType, compute: DType, device: &Device) -> DType {
        let sixteen = matches!(stored, DType::BF16 | DType::F16);
        if self == WeightStorage::Checkpoint && sixteen && compute == DType::F32 && device.is_cpu() {
            stored
        } else {
            compute
        }
    }
}

/// Reads named tensors of a model onto a device in the compute dtype (matrices as `storage`
/// says).
pub(crate) struct Loader<'a> {
    pub model: &'a ModelDir,
    pub device: &'a Device,
    pub dtype: DType,
    pub storage: WeightStorage,
}

impl Loader<'_> {
    /// One tensor, converted to the compute dtype, with its shape checked.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.stored(name, shape)?.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// A matrix (the embedding, a tied head): in the checkpoint's 16-bit dtype or the compute
    /// dtype, as [`WeightStorage::matrix_dtype`] says; a bf16 matrix stays bf16 where AMX is on
    /// (a tied head's packed copy is made from it; its f32 copy would go unused).
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.matrix_kept(name, shape, |dtype| self.packs() && dtype == DType::BF16)
    }

    /// A linear's matrix: as [`Loader::matrix`], except that a 16-bit matrix that
    /// [`Loader::finish`] will put in panels stays 16-bit until then (packing widens it, so an
    /// f32 row-major copy never exists beside the panels, which for an LM head raises the peak).
    pub fn linear_matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.matrix_kept(name, shape, |dtype| {
            (self.packs() && dtype == DType::BF16) || (self.panels() && matches!(dtype, DType::BF16 | DType::F16))
        })
    }

    /// A matrix in its stored dtype where `kept(stored dtype)`, else as
    /// [`WeightStorage::matrix_dtype`] says.
    fn matrix_kept(&self, name: &str, shape: &[usize], kept: impl Fn(DType) -> bool) -> Result<Tensor> {
        let t = self.stored(name, shape)?;
        let dtype =
            if kept(t.dtype()) { t.dtype() } else { self.storage.matrix_dtype(t.dtype(), self.dtype, self.device) };
        Ok(t.to_dtype(dtype)?.to_device(self.device)?)
    }

    /// Whether the products run in f32 on the CPU, where the linears are packed for a kernel.
    fn cpu_f32(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// Whether this loader's linears are packed whatever their stored dtype (for AMX where
    /// exact in bf16, in panels otherwise): the products run in f32 on the CPU and the storage
    /// is not [`WeightStorage::Checkpoint`] (chosen, or forced by the memory budget, for half
    /// the memory: a packed f32-sized copy would take it back; its f32 matrices are packed).
    fn packs_any(&self) -> bool {
        self.cpu_f32() && self.storage != WeightStorage::Checkpoint
    }

    /// Whether the linears this loader makes are packed in panels whatever their stored dtype.
    fn panels(&self) -> bool {
        panels::enabled() && self.packs_any()
    }

    /// Whether the linears this loader makes are packed for AMX.
    fn packs(&self) -> bool {
        amx::enabled() && self.packs_any()
    }

    /// A loaded (and fused) linear, packed for its CPU kernel where the products run in f32 on
    /// the CPU: for AMX where [`Loader::packs`] says, else in panels if its matrix is f32 or
    /// [`Loader::panels`] says.
    pub fn finish(&self, linear: Linear) -> Result<Linear> {
        let panels = self.panels() || linear.w.dtype() == DType::F32;
        Ok(if self.cpu_f32() { linear.packed(self.packs(), panels)? } else { linear })
    }

    /// The embedding `[vocab, hidden]` and a head tied to it. The head is packed as
    /// [`Loader::finish`] packs a linear; where that puts it in panels, the embedding lookup
    /// gathers its rows from them ([`Linear::gather_rows`]) and no row-major embedding is kept
    /// (`None`): one copy of the matrix, and the head's product at panel speed. Packed for AMX, the head is a bf16 copy
    /// beside the embedding.
    pub fn tied_embedding(&self, name: &str, shape: &[usize]) -> Result<(Option<Tensor>, Linear)> {
        let w = self.linear_matrix(name, shape)?;
        let head = self.finish(Linear::new(w.clone(), None))?;
        Ok((head.panels.is_none().then_some(w), head))
    }

    /// One tensor in its stored dtype on the CPU, with its shape checked. Its pages of the
    /// memory-mapped file are released once copied, so that they do not count twice.
    fn stored(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
        self.model.checkpoint.release(name);
        Ok(t)
    }

    /// A linear layer `[out, in]` with an optional bias.
    pub fn linear(&self, weight: &str, bias: Option<&String>, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear::new(self.linear_matrix(weight, &[out, inp])?, bias.map(|b| self.tensor(b, &[out])).transpose()?))
    }

    /// A norm's scale `γ` (stored weight plus the family's offset, added in f32), in the compute
    /// dtype: the dtype of the stream it scales, so that a forward pass never casts it.
    pub fn norm(&self, name: &str, size: usize) -> Result<Tensor> {
        let offset = f64::from(self.model.spec.norm_kind.offset());
        let w = self.tensor(name, &[size])?.to_dtype(DType::F32)?;
        Ok((w + offset)?.to_dtype(self.dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_range_of_a_fused_linear_equals_that_part_of_its_output() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (70, 6), &device).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &device).unwrap();
        // 3 rows take the few-rows kernel, 300 take gemm: both must honour the view's offset.
        // In panels (where the CPU has them), a view at a group boundary (32) is a view of the
        // panels; one elsewhere unpacks its rows.
        for rows in [3, 300] {
            let x = Tensor::randn(0f32, 1.0, (rows, 6), &device).unwrap();
            let plain = [Linear::new(w.clone(), Some(b.clone())), Linear::new(w.clone(), None)];
            let in_panels = plain.clone().map(|l| l.packed(false, true).unwrap());
            assert_eq!(in_panels[0].panels.is_some(), super::super::panels::enabled());
            for linear in plain.into_iter().chain(in_panels) {
                let whole = linear.forward(&x).unwrap();
                for (from, n) in [(0, 4), (4, 6), (3, 5), (32, 38), (32, 20), (0, 70)] {
                    let part = linear.forward_rows(&x, from, n).unwrap();
                    let expected = whole.narrow(1, from, n).unwrap();
                    let diff = (part - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff < 1e-5, "rows {rows}, part [{from}, {}): off by {diff}", from + n);
                }
            }
        }
    }
}
