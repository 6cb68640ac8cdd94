//! Slices of candle's CPU storage and raw output pointers shared by the kernels.

use candle_core::{CpuStorage, Layout};

/// The contiguous f32 slice of a CPU storage; `op` names the kernel in the error.
pub(crate) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op} needs contiguous f32 inputs"),
    }
}

/// A raw pointer to an output for tasks that write disjoint elements of it.
#[derive(Clone, Copy)]
pub(crate) struct Columns(pub(crate) *mut f32);
// SAFETY: the tasks write disjoint elements, and the scope ends before the output is used again.
unsafe impl Send for Columns {}
// SAFETY: as for `Send`: shared only among tasks that write disjoint elements.
unsafe impl Sync for Columns {}

impl Columns {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
