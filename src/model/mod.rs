//! The instrumented decoder: one config-driven implementation of every supported family over
//! candle ops, with an explicit per-layer loop, named hook points, capture of chosen points and
//! positions, runtime interventions, a KV cache, sampling and generation.

mod decoder;
mod generate;
pub mod hooks;
pub mod interventions;
mod kernels;
mod layer;
pub(crate) mod rope;
mod sampling;
mod weights;

pub use decoder::{log_probs, Decoder, ForwardOutput, ForwardRequest, KvCache, LogitsMode};
pub use generate::{generate, GenerateOptions, Generation};
pub use hooks::{CaptureSpec, Captures, HookPoint};
pub use interventions::{basis_tensor, Intervention, Interventions};
pub use sampling::{argmax, Sampler, Sampling};

use crate::{Error, Result};
use candle_core::{DType, Device};

/// Parse a compute dtype name (`f32`, `bf16`, `f16`).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::Invalid(format!("unknown dtype `{other}` (choose f32, bf16 or f16)"))),
    }
}

/// The best available device: CUDA or Metal when compiled in and present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}
