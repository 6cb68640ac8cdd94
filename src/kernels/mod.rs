//! Hand-written CPU compute kernels for the f32 forward pass, below the decoder: products of a
//! few rows with row-major weights ([`small_matmul`]), of weights packed in AVX-512 panels
//! ([`panels`]) or for AMX tiles ([`amx`]), fused elementwise ops, the attention of a batch, and
//! the detection of the instruction sets they need ([`isa`]). They read slices and candle
//! tensors and know nothing of the decoder; `model::ops` chooses between them and candle ops.

pub mod amx;
pub(crate) mod attention;
mod config;
pub(crate) mod fused;
pub mod isa;
pub(crate) mod packed;
pub mod panels;
mod slices;
pub mod small_matmul;
pub(crate) mod threads;

pub use config::KernelConfig;
