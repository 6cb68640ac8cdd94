//! Loading weights from a memory-mapped checkpoint into candle tensors, each matrix prepared for
//! the kernel that multiplies it.

use super::ops;
use crate::checkpoint::ModelDir;
use crate::kernels::amx::PackedRows;
use crate::kernels::panels::Panels;
use crate::kernels::KernelConfig;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// How a linear's matrix `W` `[out, in]` is kept: the one copy its products read.
#[derive(Debug, Clone)]
pub(crate) enum PreparedWeight {
    /// Row-major, in its stored or the compute dtype (the few-rows kernel, gemm, candle's matmul).
    Rows(Tensor),
    /// f32 in AVX-512 panels, with no row-major copy.
    Panels(Panels),
    /// Values exact in bf16, tile-packed for the AMX products; `rows` is the matrix row-major
    /// beside them (bf16, or f32 with bf16 values) for the row ranges the tiles do not take.
    Amx { packed: PackedRows, rows: Tensor },
}

/// Which kernel's layout a matrix is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WeightLayout {
    /// Row-major.
    Rows,
    /// AVX-512 panels.
    Panels,
    /// Tile-packed for AMX.
    Amx,
}

impl PreparedWeight {
    /// Its layout.
    pub fn layout(&self) -> WeightLayout {
        match self {
            PreparedWeight::Rows(_) => WeightLayout::Rows,
            PreparedWeight::Panels(_) => WeightLayout::Panels,
            PreparedWeight::Amx { .. } => WeightLayout::Amx,
        }
    }

    /// `W` row-major (unpacked from the panels if it is there).
    pub fn rows(&self) -> candle_core::Result<Tensor> {
        match self {
            PreparedWeight::Rows(w) | PreparedWeight::Amx { rows: w, .. } => Ok(w.clone()),
            PreparedWeight::Panels(panels) => panels.unpack(),
        }
    }

    /// `w` (`[out, in]` row-major, an edited copy of this matrix) prepared as this one is:
    /// packed for the same kernel where its values allow it, else row-major.
    pub fn prepared_like(&self, w: Tensor) -> candle_core::Result<PreparedWeight> {
        Ok(match self {
            PreparedWeight::Rows(_) => PreparedWeight::Rows(w),
            PreparedWeight::Panels(_) => Panels::pack(&w)?.map_or(PreparedWeight::Rows(w), PreparedWeight::Panels),
            PreparedWeight::Amx { .. } => match PackedRows::pack(&w)? {
                Some(packed) => PreparedWeight::Amx { packed, rows: w },
                None => PreparedWeight::Rows(w),
            },
        })
    }

    /// Output rows `[from, from + n)`, sharing the storage where the layout allows a view of them.
    fn narrow(&self, from: usize, n: usize) -> candle_core::Result<PreparedWeight> {
        Ok(match self {
            PreparedWeight::Rows(w) => PreparedWeight::Rows(w.narrow(0, from, n)?),
            PreparedWeight::Panels(panels) => match panels.rows(from, n) {
                Some(view) => PreparedWeight::Panels(view),
                // Not at a panel boundary: the rows unpacked (a slow path no model's shapes take).
                None => PreparedWeight::Rows(panels.unpack()?.narrow(0, from, n)?),
            },
            PreparedWeight::Amx { packed, rows } => {
                let rows = rows.narrow(0, from, n)?;
                match packed.rows(from, n) {
                    Some(packed) => PreparedWeight::Amx { packed, rows },
                    None => PreparedWeight::Rows(rows),
                }
            }
        })
    }

    /// The bytes it takes in memory.
    fn bytes(&self) -> usize {
        match self {
            PreparedWeight::Rows(w) => tensor_bytes(w),
            PreparedWeight::Panels(panels) => panels.bytes(),
            PreparedWeight::Amx { packed, rows } => tensor_bytes(rows) + packed.bytes(),
        }
    }

    /// Output width.
    fn out_dim(&self) -> usize {
        match self {
            PreparedWeight::Rows(w) | PreparedWeight::Amx { rows: w, .. } => w.dims()[0],
            PreparedWeight::Panels(panels) => panels.dims().0,
        }
    }
}

/// The bytes a tensor's elements take.
fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// `y = x Wᵀ + b` with `W` `[out, in]` prepared for its kernel.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub w: PreparedWeight,
    pub b: Option<Tensor>,
}

impl Linear {
    /// A linear with `w` row-major.
    pub fn new(w: Tensor, b: Option<Tensor>) -> Linear {
        Linear { w: PreparedWeight::Rows(w), b }
    }

    /// `W` `[out, in]` row-major (unpacked from the panels if it is there).
    pub fn weight(&self) -> candle_core::Result<Tensor> {
        self.w.rows()
    }

    /// Apply to `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().expect("at least one dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = ops::matmul(&x.reshape((rows, inner))?, &self.w, self.b.as_ref())?;
        let mut out = dims;
        *out.last_mut().expect("at least one dim") = y.dim(1)?;
        y.reshape(out)
    }

    /// Rows `ids` of `W`, `[ids.len(), in]` (f32 from the panels, else in `W`'s dtype): the
    /// embedding lookup of a head tied to the embedding.
    pub fn gather_rows(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        match &self.w {
            PreparedWeight::Rows(w) | PreparedWeight::Amx { rows: w, .. } => {
                w.index_select(&Tensor::new(ids, w.device())?, 0)
            }
            PreparedWeight::Panels(panels) => panels.gather(ids),
        }
    }

    /// Stack several linears over the same input into one (`[Σ out, in]`, row-major), so that one
    /// product replaces several; a missing bias is zero when another part has one.
    pub fn fuse(parts: &[Linear]) -> candle_core::Result<Linear> {
        let weights = parts.iter().map(Linear::weight).collect::<candle_core::Result<Vec<_>>>()?;
        let w = Tensor::cat(&weights, 0)?;
        let b = if parts.iter().any(|p| p.b.is_some()) {
            let biases = parts
                .iter()
                .map(|p| match &p.b {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(p.out_dim(), bias_dtype(parts), w.device()),
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
        Linear { w: self.w.narrow(from, n)?, b }.forward(x)
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        self.w.bytes() + self.b.as_ref().map_or(0, tensor_bytes)
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.w.out_dim()
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
    /// bf16 with a tile-packed copy for the AMX products ([`crate::kernels::amx`]), the same memory.
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
/// says, packed for the kernels `kernels` allows).
pub(crate) struct Loader<'a> {
    pub model: &'a ModelDir,
    pub device: &'a Device,
    pub dtype: DType,
    pub storage: WeightStorage,
    pub kernels: KernelConfig,
}

/// Which packed kernels a loader's matrices are prepared for, from its compute dtype, device and
/// storage, the CPU's instruction sets and its [`KernelConfig`].
#[derive(Debug, Clone, Copy)]
struct Packing {
    /// Products run in f32 on the CPU, where the packed kernels apply.
    cpu_f32: bool,
    /// Matrices exact in bf16 are tile-packed for AMX.
    amx: bool,
    /// Every matrix goes in panels, a 16-bit one widened as it is packed.
    panels_any: bool,
    /// f32 matrices go in panels.
    panels_f32: bool,
}

impl Packing {
    /// A bf16 matrix (the embedding, a linear's) stays bf16 where AMX packs it (the packed copy
    /// is made from it; an f32 copy would go unused), and a linear's 16-bit matrix stays 16-bit
    /// until it is put in panels (an f32 row-major copy beside the panels would raise the peak).
    fn keeps_stored(self, stored: DType, linear: bool) -> bool {
        (self.amx && stored == DType::BF16) || (linear && self.panels_any && matches!(stored, DType::BF16 | DType::F16))
    }

    /// The one choice of a linear's layout: `w` (as loaded and fused) tile-packed for AMX where
    /// AMX is on and its values are exact in bf16, else in panels where they are on for its
    /// dtype, else row-major.
    fn prepare(self, w: Tensor) -> candle_core::Result<PreparedWeight> {
        if !self.cpu_f32 {
            return Ok(PreparedWeight::Rows(w));
        }
        if self.amx {
            if let Some(packed) = PackedRows::pack(&w)? {
                return Ok(PreparedWeight::Amx { packed, rows: w });
            }
        }
        if self.panels_any || (self.panels_f32 && w.dtype() == DType::F32) {
            if let Some(panels) = Panels::pack(&w)? {
                return Ok(PreparedWeight::Panels(panels));
            }
        }
        Ok(PreparedWeight::Rows(w))
    }
}

impl Loader<'_> {
    /// One tensor, converted to the compute dtype, with its shape checked.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.stored(name, shape)?.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// The packing of this loader's matrices. Packed copies are made only where the products
    /// run in f32 on the CPU, and, whatever the stored dtype, only where the storage is not
    /// [`WeightStorage::Checkpoint`] (chosen, or forced by the memory budget, for half the
    /// memory: a packed f32-sized copy would take it back); f32 matrices go in panels either way.
    fn packing(&self) -> Packing {
        let cpu_f32 = self.device.is_cpu() && self.dtype == DType::F32;
        let any = cpu_f32 && self.storage != WeightStorage::Checkpoint;
        let panels = self.kernels.uses_panels();
        Packing {
            cpu_f32,
            amx: any && self.kernels.uses_amx(),
            panels_any: any && panels,
            panels_f32: cpu_f32 && panels,
        }
    }

    /// A matrix in its stored dtype where [`Packing::keeps_stored`] says, else as
    /// [`WeightStorage::matrix_dtype`] says.
    fn matrix_as(&self, name: &str, shape: &[usize], linear: bool) -> Result<Tensor> {
        let t = self.stored(name, shape)?;
        let dtype = if self.packing().keeps_stored(t.dtype(), linear) {
            t.dtype()
        } else {
            self.storage.matrix_dtype(t.dtype(), self.dtype, self.device)
        };
        Ok(t.to_dtype(dtype)?.to_device(self.device)?)
    }

    /// The embedding matrix of an untied head.
    pub fn embedding(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.matrix_as(name, shape, false)
    }

    /// A loaded (and fused) linear, its matrix prepared for its kernel ([`Packing::prepare`]).
    pub fn finish(&self, linear: Linear) -> Result<Linear> {
        let Linear { w: PreparedWeight::Rows(w), b } = linear else { return Ok(linear) };
        Ok(Linear { w: self.packing().prepare(w)?, b })
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

    /// A linear layer `[out, in]` with an optional bias, row-major until [`Loader::finish`].
    pub fn linear(&self, weight: &str, bias: Option<&String>, out: usize, inp: usize) -> Result<Linear> {
        let w = self.matrix_as(weight, &[out, inp], true)?;
        Ok(Linear::new(w, bias.map(|b| self.tensor(b, &[out])).transpose()?))
    }

    /// The matrices of a tensor stacked over experts, `[n, out, inp]`, one linear per slice
    /// (each its own copy), row-major until [`Loader::finish`].
    pub fn stacked_linears(&self, name: &str, n: usize, out: usize, inp: usize) -> Result<Vec<Linear>> {
        let w = self.matrix_as(name, &[n, out, inp], true)?;
        (0..n).map(|e| Ok(Linear::new(w.get(e)?.copy()?, None))).collect()
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
            let in_panels = plain.clone().map(|l| {
                let w = l.weight().unwrap();
                let packing = Packing { cpu_f32: true, amx: false, panels_any: true, panels_f32: true };
                Linear { w: packing.prepare(w).unwrap(), b: l.b }
            });
            let layout = in_panels[0].w.layout();
            assert_eq!(layout == WeightLayout::Panels, crate::kernels::isa::has_avx512f(), "{layout:?}");
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
